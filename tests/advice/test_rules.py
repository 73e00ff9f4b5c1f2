"""Each rule fires on a Dockerfile that has its problem and stays silent on the fixed one,
after real builds on the busybox base; the rewrites of ``apt-update-alone`` and
``volatile-copy-first`` apply with ``patch`` and the patched Dockerfile builds."""

from __future__ import annotations

from pathlib import Path

import pytest
from advice_builds import Engines, Project, one

pytestmark = pytest.mark.root


def _fresh(tmp_path: Path, engines: Engines, name: str, builder: str = "buildkit") -> Project:
    return Project(tmp_path / name, engines(name), builder)


# -- apt-update-alone ---------------------------------------------------------------------

APT = """\
FROM busybox
COPY bin/apt-get /usr/local/bin/apt-get
RUN apt-get update
RUN apt-get install -y curl
"""
APT_FIXED = """\
FROM busybox
COPY bin/apt-get /usr/local/bin/apt-get
RUN apt-get update && apt-get install -y curl && rm -rf /var/lib/apt/lists/*
"""


def test_apt_update_alone_fires_applies_and_builds(tmp_path: Path, engines: Engines) -> None:
    p = _fresh(tmp_path, engines, "apt")
    p.stand_ins()
    p.dockerfile(APT)
    p.build()
    p.build()  # the update is cached now: its lists never refresh
    advice = one(p.advise(), "apt-update-alone")
    assert advice.line == 3 and advice.lines == (3, 4)
    assert "apt-get update" in advice.message and "line 4" in advice.message
    assert any("fetched by build #1 and reused by 1 build since" in e for e in advice.evidence)
    assert advice.saving.layers_now == 3 and advice.saving.layers_after == 2
    assert advice.diff is not None
    p.patch(advice.diff)
    text = (p.root / "Dockerfile").read_text()
    assert (
        "RUN apt-get update \\\n    && apt-get install -y curl \\\n    && rm -rf /var/lib/apt/lists/*\n"
        in text
    )
    steps = p.build()
    assert any(s.instruction.startswith("RUN apt-get update") and s.cached is False for s in steps)
    assert "apt-update-alone" not in p.rules()


def test_apt_update_alone_is_silent_when_update_and_install_share_a_run(
    tmp_path: Path, engines: Engines
) -> None:
    p = _fresh(tmp_path, engines, "apt-fixed")
    p.stand_ins()
    p.dockerfile(APT_FIXED)
    p.build()
    assert "apt-update-alone" not in p.rules()


# -- group-runs -----------------------------------------------------------------------------


def test_group_runs_fires_on_consecutive_runs_and_not_on_one(
    tmp_path: Path, engines: Engines
) -> None:
    p = _fresh(tmp_path, engines, "group")
    p.dockerfile("FROM busybox\nRUN echo a > /a\nRUN echo b > /b\nRUN echo c > /c\n")
    p.build()
    advice = one(p.advise(), "group-runs")
    assert advice.lines == (2, 3, 4)
    assert advice.saving.layers_now == 3 and advice.saving.layers_after == 1
    assert any("3 layers; with these as one RUN, 1" in e for e in advice.evidence)
    p.patch(advice.diff or "")
    p.build()
    assert "group-runs" not in p.rules()


def test_group_runs_keeps_a_slow_run_apart(tmp_path: Path, engines: Engines) -> None:
    # The slow RUN keeps its own layer: editing a cheap neighbour must not rerun it.
    p = _fresh(tmp_path, engines, "group-slow")
    p.dockerfile("FROM busybox\nRUN sleep 1.2\nRUN echo b > /b\n")
    p.build()
    assert "group-runs" not in p.rules()


# -- volatile-copy-first --------------------------------------------------------------------

VOLATILE = """\
FROM busybox
COPY bin/pip /usr/local/bin/pip
WORKDIR /app
COPY . .
RUN pip install -r requirements.txt
"""
VOLATILE_FIXED = """\
FROM busybox
COPY bin/pip /usr/local/bin/pip
WORKDIR /app
COPY requirements.txt ./
RUN pip install -r requirements.txt
COPY . .
"""


def _edit_app(p: Project, times: int) -> None:
    for i in range(times):
        p.write("app.py", f"print({i})\n")
        p.build()


def test_volatile_copy_first_fires_on_history_and_its_rewrite_builds(
    tmp_path: Path, engines: Engines
) -> None:
    p = _fresh(tmp_path, engines, "volatile")
    p.stand_ins()
    p.write("requirements.txt", "flask==3.0\n")
    p.dockerfile(VOLATILE)
    _edit_app(p, 3)
    advice = one(p.advise(), "volatile-copy-first")
    assert advice.line == 4 and "requirements.txt" in advice.message
    assert any("changed in 2 of 2 rebuilds (app.py 2×)" in e for e in advice.evidence)
    assert advice.saving.reruns_now == 3 and advice.saving.reruns_after == 1
    p.patch(advice.diff or "")
    assert (p.root / "Dockerfile").read_text() == VOLATILE_FIXED
    p.build()


def test_volatile_copy_first_is_silent_once_the_manifest_comes_first(
    tmp_path: Path, engines: Engines
) -> None:
    p = _fresh(tmp_path, engines, "volatile-fixed")
    p.stand_ins()
    p.write("requirements.txt", "flask==3.0\n")
    p.dockerfile(VOLATILE_FIXED)
    _edit_app(p, 3)
    assert "volatile-copy-first" not in p.rules()


# -- arg-too-early --------------------------------------------------------------------------

ARG_EARLY = """\
FROM busybox
ARG VERSION=1
RUN echo deps > /deps
RUN echo cheap > /cheap
RUN echo "$VERSION" > /version
"""
ARG_FIXED = """\
FROM busybox
RUN echo deps > /deps
RUN echo cheap > /cheap
ARG VERSION=1
RUN echo "$VERSION" > /version
"""


def test_arg_too_early_fires_when_its_value_changes_and_moves_it(
    tmp_path: Path, engines: Engines
) -> None:
    p = _fresh(tmp_path, engines, "arg")
    p.dockerfile(ARG_EARLY)
    for version in ("1", "2", "3"):
        p.build(build_args={"VERSION": version})
    advice = one(p.advise(), "arg-too-early")
    assert advice.line == 2 and "first used on line 5" in advice.message
    assert any("VERSION changed in 2 recorded builds" in e for e in advice.evidence)
    assert any("build_arg" in e or "build arg VERSION changed" in e for e in advice.evidence)
    # RUN echo deps and RUN echo cheap reran in all 3 builds; moved, only in the first.
    assert advice.saving.reruns_now == 6 and advice.saving.reruns_after == 2
    p.patch(advice.diff or "")
    assert (p.root / "Dockerfile").read_text() == ARG_FIXED


def test_arg_too_early_is_silent_before_its_first_use_or_when_it_never_changes(
    tmp_path: Path, engines: Engines
) -> None:
    p = _fresh(tmp_path, engines, "arg-fixed")
    p.dockerfile(ARG_FIXED)
    for version in ("1", "2", "3"):
        p.build(build_args={"VERSION": version})
    assert "arg-too-early" not in p.rules()
    steady = _fresh(tmp_path, engines, "arg-steady")
    steady.dockerfile(ARG_EARLY)
    steady.build()
    steady.build()
    assert "arg-too-early" not in steady.rules()


# -- wasted-space ---------------------------------------------------------------------------


def test_wasted_space_measures_what_a_later_run_removes(tmp_path: Path, engines: Engines) -> None:
    p = _fresh(tmp_path, engines, "waste")
    p.dockerfile(
        "FROM busybox\nRUN dd if=/dev/zero of=/tmp/big bs=1024 count=64 2>/dev/null\n"
        "RUN rm /tmp/big\n"
    )
    p.build()
    advice = one(p.advise(), "wasted-space")
    assert advice.saving.bytes == 65536
    assert "/tmp/big" in advice.evidence[0] and "line 3 removes what line 2 added" in advice.message
    p.patch(advice.diff or "")
    p.build()
    assert "wasted-space" not in p.rules()


def test_wasted_space_without_a_build_reads_the_dockerfile(
    tmp_path: Path, engines: Engines
) -> None:
    p = _fresh(tmp_path, engines, "waste-static")
    p.dockerfile(
        "FROM busybox\nRUN wget -O /tmp/x.tgz http://example.invalid/x\nRUN rm /tmp/x.tgz\n"
    )
    advice = one(p.advise(), "wasted-space")
    assert advice.saving.bytes is None and "build it once" in advice.evidence[0]


# -- missing-dockerignore -------------------------------------------------------------------


def test_missing_dockerignore_counts_bytes_and_changes_and_writes_the_file(
    tmp_path: Path, engines: Engines
) -> None:
    p = _fresh(tmp_path, engines, "ignore")
    p.write("app.sh", "echo hi\n")
    p.write(".git/objects/pack", "x" * 3000)
    p.write("src/__pycache__/m.cpython-311.pyc", "y" * 500)
    p.dockerfile("FROM busybox\nCOPY . /app\nRUN ls /app > /listing\n")
    for i in range(3):
        p.write(".git/HEAD", f"ref: refs/heads/b{i}\n")
        p.build()
    advice = one(p.advise(), "missing-dockerignore")
    assert advice.dockerignore == ("**/__pycache__", ".git")
    assert advice.saving.bytes == 3000 + 500 + len("ref: refs/heads/b2\n")
    assert any("only change in 2" in e for e in advice.evidence)
    # Ignored, the .git edits would have rerun the COPY only in the first build.
    assert advice.saving.reruns_now == 3 and advice.saving.reruns_after == 1
    assert advice.diff is not None and advice.diff.startswith("--- /dev/null\n+++ .dockerignore\n")
    p.patch(advice.diff)
    assert (p.root / ".dockerignore").read_text() == "**/__pycache__\n.git\n"
    p.build()
    assert "missing-dockerignore" not in p.rules()


# -- cache-mount ----------------------------------------------------------------------------

PIP_RUN = """\
FROM busybox
COPY bin/pip /usr/local/bin/pip
COPY requirements.txt /
RUN pip install --no-cache-dir -r /requirements.txt
"""


def test_cache_mount_fires_under_buildkit_and_its_rewrite_builds(
    tmp_path: Path, engines: Engines
) -> None:
    p = _fresh(tmp_path, engines, "mount")
    p.stand_ins()
    p.write("requirements.txt", "flask==3.0\n")
    p.dockerfile(PIP_RUN)
    p.build()
    advice = one(p.advise(), "cache-mount")
    assert advice.line == 4 and "/root/.cache/pip" in advice.message
    assert advice.saving.reruns_now == 1
    p.patch(advice.diff or "")
    text = (p.root / "Dockerfile").read_text()
    assert (
        "RUN --mount=type=cache,target=/root/.cache/pip pip install -r /requirements.txt\n" in text
    )
    p.build()
    assert "cache-mount" not in p.rules()


def test_cache_mount_is_silent_under_the_classic_builder(tmp_path: Path, engines: Engines) -> None:
    p = _fresh(tmp_path, engines, "mount-classic", builder="classic")
    p.stand_ins()
    p.write("requirements.txt", "flask==3.0\n")
    p.dockerfile(PIP_RUN)
    p.build()
    assert "cache-mount" not in p.rules()
