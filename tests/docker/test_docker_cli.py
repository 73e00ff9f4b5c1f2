"""``lamina --engine docker`` verbs agree with the ``docker`` CLI on the same daemon."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemon_state import docker_2010

from lamina.tui.cli import main

pytestmark = pytest.mark.docker

CLASSIC = ("build", "--builder", "classic")


def lamina(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--engine", "docker", *args])
    out, err = capsys.readouterr()
    return code, out, err


def docker(*args: str, buildkit: bool = False) -> str:
    exe = shutil.which("docker")
    if exe is None:
        pytest.fail("the docker CLI is needed to compare lamina with Docker's own output")
    env = dict(os.environ, DOCKER_BUILDKIT="1" if buildkit else "0")
    proc = subprocess.run([exe, *args], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def built(
    capsys: pytest.CaptureFixture[str],
    docker_base: str,
    docker_tag: Callable[[str], str],
    tmp_path: Path,
    tree: Any,
) -> tuple[str, Path]:
    """An image built with ``lamina --engine docker build --builder classic --progress json``
    (compared below with Docker's classic builder)."""
    token = os.urandom(6).hex()
    ctx = tree(
        tmp_path / "ctx",
        {
            "Dockerfile": f"FROM {docker_base}\nRUN echo {token} > /token\nCOPY f /f\nENV K=v\n",
            "f": "content",
        },
    )
    tag = docker_tag("cli")
    code, out, err = lamina(capsys, *CLASSIC, "--progress", "json", "-t", tag, str(ctx))
    assert code == 0, err
    events = json_lines(out)
    steps = [e for e in events if e["type"] == "step"]
    assert [s["cached"] for s in steps] == [None, False, False, False]
    assert events[-1]["type"] == "result" and events[-1]["tags"] == [tag]
    return tag, ctx


def test_build_progress_json_agrees_with_docker_build(
    capsys: pytest.CaptureFixture[str], built: tuple[str, Path]
) -> None:
    tag, ctx = built
    # Docker's own classic build of the same context hits every step lamina stored: the
    # CLI that ships with this 20.10 daemon, named explicitly (a newer CLI on PATH writes
    # the context tar differently; see lamina.core.docker.context).
    out = docker_2010("build", "--network", "none", "-t", tag, str(ctx))
    assert out.count(" ---> Using cache") == 3
    code, out, _ = lamina(capsys, *CLASSIC, "--progress", "json", "-t", tag, str(ctx))
    assert code == 0
    steps = [e for e in json_lines(out) if e["type"] == "step"]
    assert [s["cached"] for s in steps] == [None, True, True, True]
    (ctx / "f").write_text("changed")
    code, out, _ = lamina(capsys, *CLASSIC, "--progress", "json", "-t", tag, str(ctx))
    steps = [e for e in json_lines(out) if e["type"] == "step"]
    assert [s["cached"] for s in steps] == [None, True, False, False]
    assert steps[2]["reason"]["kind"] == "sources_changed"
    assert steps[2]["reason"]["changed"] == [{"path": "f", "what": ["content"]}]


def test_images_and_history_agree_with_docker(
    capsys: pytest.CaptureFixture[str], built: tuple[str, Path]
) -> None:
    tag, _ = built
    code, out, _ = lamina(capsys, "images", "--format", "json")
    assert code == 0
    ours = {(r["Repository"], r["Tag"], r["FullID"]) for r in json_lines(out)}
    theirs = {
        (r["Repository"], r["Tag"], r["ID"])
        for r in json_lines(docker("images", "--no-trunc", "--format", "{{json .}}"))
    }
    assert ours == theirs
    code, out, _ = lamina(capsys, "history", "--format", "json", "--no-trunc", tag)
    assert code == 0
    ours_h = [(r["CreatedBy"], r["SizeBytes"]) for r in json_lines(out)]
    theirs_h = [
        (r["CreatedBy"], int(r["Size"]))
        for r in json_lines(
            docker("history", "--no-trunc", "--human=false", "--format", "{{json .}}", tag)
        )
    ]
    assert ours_h == theirs_h


def test_system_df_agrees_with_docker(
    capsys: pytest.CaptureFixture[str], built: tuple[str, Path]
) -> None:
    code, out, _ = lamina(capsys, "system", "df", "--format", "json")
    assert code == 0
    usage = json.loads(out)
    theirs = {r["Type"]: r for r in json_lines(docker("system", "df", "--format", "{{json .}}"))}
    images = next(c for c in usage["categories"] if c["name"] == "images")
    assert images["count"] == int(theirs["Images"]["TotalCount"])
    df = json.loads(docker("system", "df", "-v", "--format", "{{json .}}"))
    theirs_images = {i["ID"]: i for i in df["Images"]}
    ours_images = {i["id"]: i for i in usage["images"]}
    assert set(ours_images) == set(theirs_images)
    for image_id, row in theirs_images.items():
        ours = ours_images[image_id]
        # Docker prints go-units sizes (decimal, 3 or 4 significant digits).
        assert row["Size"] in go_human(ours["size"]), image_id
        assert row["SharedSize"] in go_human(ours["shared_size"]), image_id
        assert row["UniqueSize"] in go_human(ours["unique_size"]), image_id


def go_human(size: int) -> set[str]:
    """docker/go-units HumanSizeWithPrecision at precisions 3 and 4."""
    out = set()
    for precision in (3, 4):
        value, unit = float(size), 0
        units = ["B", "kB", "MB", "GB", "TB", "PB"]
        while value >= 1000 and unit < len(units) - 1:
            value /= 1000
            unit += 1
        out.add(f"{value:.{precision}g}{units[unit]}")
    return out


def test_image_prune_dry_run_then_prune(
    capsys: pytest.CaptureFixture[str], built: tuple[str, Path]
) -> None:
    tag, ctx = built
    old = docker("images", "--no-trunc", "-q", tag).strip()
    (ctx / "f").write_text("next")
    assert lamina(capsys, "build", "--progress", "json", "-t", tag, str(ctx))[0] == 0
    code, out, _ = lamina(capsys, "image", "prune", "--dry-run", "--format", "json")
    assert code == 0
    plan = json.loads(out)
    planned = {i["id"] for i in plan["images"]}
    assert old in planned
    assert docker("images", "--no-trunc", "-q", "--filter", "dangling=true").split() != []
    code, out, _ = lamina(capsys, "image", "prune", "-f", "--format", "json")
    assert code == 0
    result = json.loads(out)
    assert set(result["images"]) == planned
    assert result["reclaimed_bytes"] == plan["reclaimable_bytes"]
    left = docker("images", "-a", "--no-trunc", "-q").split()
    assert not planned & set(left)


def test_builder_prune_agrees_with_docker(
    capsys: pytest.CaptureFixture[str], docker_base: str, tmp_path: Path, tree: Any
) -> None:
    ctx = tree(
        tmp_path / "bk",
        {"Dockerfile": f"FROM {docker_base}\nCOPY x /x\n", "x": os.urandom(8).hex()},
    )
    exe = "/usr/bin/docker"
    if not os.path.exists(exe):
        pytest.fail("Debian's docker.io CLI (/usr/bin/docker) is needed to make BuildKit cache")
    env = dict(os.environ, DOCKER_BUILDKIT="1")
    env.pop("DOCKER_API_VERSION", None)
    subprocess.run([exe, "build", "-q", str(ctx)], check=True, env=env, capture_output=True)
    code, out, _ = lamina(capsys, "builder", "prune", "--all", "--dry-run", "--format", "json")
    assert code == 0
    plan = json.loads(out)
    assert plan["cache"], "BuildKit left cache records for lamina to plan"
    code, out, _ = lamina(capsys, "builder", "prune", "--all", "-f", "--format", "json")
    assert code == 0
    result = json.loads(out)
    assert set(result["cache"]) == {c["key"] for c in plan["cache"]}
    remaining = docker("system", "df", "--format", "{{json .}}")
    build_cache = next(r for r in json_lines(remaining) if r["Type"] == "Build Cache")
    assert build_cache["Size"] == "0B"


def test_system_df_and_dry_run_state_where_docker_differs(
    capsys: pytest.CaptureFixture[str], built: tuple[str, Path]
) -> None:
    from lamina.core.docker.prune import DIFFERENCES

    for args in (("system", "df"), ("image", "prune", "--dry-run")):
        code, out, _ = lamina(capsys, *args)
        assert code == 0
        assert "Where Docker's own numbers differ from lamina's:" in out, args
        assert all(line in out for line in DIFFERENCES), args
