"""``lamina advise`` as a user runs it: the table, ``--format json`` and ``--diff`` piped
into ``patch -p0`` from the current directory."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from advice_builds import Project

from lamina.core.embedded.engine import EmbeddedEngine
from lamina.tui.cli import main

DOCKERFILE = """\
FROM busybox
COPY . /app
RUN wget -O /tmp/x.tgz http://example.invalid/x
RUN rm /tmp/x.tgz
"""


@pytest.fixture
def ctx(
    tmp_path: Path, busybox_tar: Path, lamina_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A context with a .git directory, built twice (COPY only: no sandbox needed)."""
    engine = EmbeddedEngine(lamina_home)
    engine.import_rootfs(busybox_tar, "busybox:latest")
    p = Project(tmp_path / "ctx", engine)
    p.write("app.sh", "echo hi\n")
    p.write(".git/HEAD", "ref: refs/heads/main\n")
    p.dockerfile("FROM busybox\nCOPY . /app\n")
    p.build()
    p.write(".git/HEAD", "ref: refs/heads/other\n")
    p.build()
    engine.close()
    p.dockerfile(DOCKERFILE)
    monkeypatch.chdir(tmp_path)
    return p.root


def test_json_lists_every_piece_of_advice_with_its_fields(
    ctx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["advise", "--format", "json", "ctx"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [a["rule"] for a in doc] == ["missing-dockerignore", "group-runs", "wasted-space"]
    for a in doc:
        assert {"rule", "line", "message", "evidence", "saving", "diff"} <= set(a)
        assert {"reruns_now", "reruns_after", "bytes"} <= set(a["saving"])
        assert isinstance(a["evidence"], list) and isinstance(a["line"], int)
    ignore = doc[0]
    assert ignore["line"] == 2 and ignore["saving"]["bytes"] == len("ref: refs/heads/other\n")
    assert ignore["diff"].startswith("--- /dev/null\n+++ ctx/.dockerignore\n")
    wasted = doc[2]
    assert wasted["saving"]["bytes"] is None and wasted["diff"].startswith("--- ctx/Dockerfile")


def test_the_table_names_rule_line_evidence_and_notes(
    ctx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["advise", "-f", "ctx/Dockerfile", "ctx"]) == 0
    out = capsys.readouterr().out
    assert "2 recorded builds, 2 replayable (BuildKit's rules)" in out
    assert "line 2  missing-dockerignore  .git reach the image through COPY on line 2" in out
    assert "they changed the copied files in 1 of 1 rebuilds, and were the only change in 1" in out
    assert "note: history too short to replay: 2 builds" in out


def test_the_diff_applies_with_patch_from_the_current_directory(
    ctx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["advise", "--diff", "ctx"]) == 0
    diff = capsys.readouterr().out
    done = subprocess.run(
        ["patch", "-p0", "--batch"], input=diff, text=True, capture_output=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (ctx / ".dockerignore").read_text() == ".git\n"
    assert (ctx / "Dockerfile").read_text() == (
        "FROM busybox\nCOPY . /app\nRUN wget -O /tmp/x.tgz http://example.invalid/x \\\n"
        "    && rm /tmp/x.tgz\n"
    )
    # Applied, the Dockerfile draws no rewrite any more.
    assert main(["advise", "--diff", "ctx"]) == 0
    assert capsys.readouterr().out == ""


def test_a_missing_dockerfile_is_one_line(
    tmp_path: Path,
    lamina_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["advise", "empty"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("lamina: cannot read Dockerfile empty/Dockerfile") and err.count("\n") == 1
    )
