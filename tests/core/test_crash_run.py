"""In-flight builds and RUN steps: a prune never collects them, a kill -9 loses nothing.

These run real RUN steps in the sandbox (marked ``root``) from a busybox base image
imported into the store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import prune_support
import pytest

from lamina.core.accounting.graph import Liveness
from lamina.core.accounting.plans import PruneRequest
from lamina.core.embedded.archive import import_rootfs
from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.fsck import fsck
from lamina.core.embedded.prune import (
    apply_prune,
    collect,
    plan_prune,
)
from lamina.core.embedded.store import Store
from lamina.core.embedded.store.graph import load_graph
from lamina.core.embedded.trash import find_leftovers
from lamina.core.events import BuildFinished, StepFinished
from lamina.core.model import BuildRequest

# These tests state the classic builder's rules.
pytestmark = pytest.mark.usefixtures("classic_builder")

S = prune_support

DOCKERFILE = (
    "FROM busybox\n"
    "COPY a /a\n"
    "RUN echo started > /started && sleep {sleep} && echo done > /done\n"
    "COPY b /b\n"
)

BUILDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from lamina.core.embedded.builder.walk import run_build
    from lamina.core.model import BuildRequest
    from lamina.core.embedded.store import Store

    store = Store(Path(sys.argv[1]))
    for event in run_build(store, BuildRequest(context=sys.argv[2], tags=("app:1",))):
        print(type(event).__name__, getattr(event, "message", ""), flush=True)
    """
)


@pytest.fixture
def setup(tmp_path: Path, busybox_tar: Path) -> tuple[Path, Path]:
    home = tmp_path / "store"
    store = Store(home)
    import_rootfs(store, busybox_tar, "busybox:latest")
    store.close()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a").write_bytes(b"a" * 20_000)
    (ctx / "b").write_bytes(b"b" * 20_000)
    return home, ctx


def start_build(home: Path, ctx: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", BUILDER, str(home), str(ctx)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_run_step(home: Path, proc: subprocess.Popen[str], timeout: float = 60.0) -> Path:
    """Waits until the RUN step is executing; returns the build's tmp directory."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "builder died"
        for work in (home / "tmp").iterdir():
            pid = work / "pid"
            mine = pid.is_file() and pid.read_text().strip() == str(proc.pid)
            if mine and any(work.rglob("started")):
                return work
        time.sleep(0.05)
    raise AssertionError("the RUN step did not start")


def mounts_under(path: Path) -> list[str]:
    with open("/proc/mounts") as f:
        return [line for line in f if str(path) in line]


@pytest.mark.root
def test_a_prune_during_a_build_leaves_the_build_alone(setup: tuple[Path, Path]) -> None:
    home, ctx = setup
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(sleep=2))
    proc = start_build(home, ctx)
    try:
        work = wait_for_run_step(home, proc)
        store = Store(home)
        try:
            # The most aggressive prune there is, with no grace period at all.
            plan = plan_prune(store, PruneRequest("system", all=True, grace=0.0))
            assert not any(left.path == f"tmp/{work.name}" for left in plan.leftovers)
            apply_prune(store, plan)
            assert work.is_dir()
        finally:
            store.close()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "BuildFinished" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    store = Store(home)
    try:
        S.assert_tagged_intact(store)
        assert fsck(store, deep=True, grace=0.0).problems == ()
        events = list(run_build(store, BuildRequest(context=str(ctx), tags=("app:1",))))
        assert isinstance(events[-1], BuildFinished)
        cached = [e.step.cached for e in events if isinstance(e, StepFinished)]
        assert cached[1:] == [True, True, True]
    finally:
        store.close()


@pytest.mark.root
def test_kill_9_during_run_leaves_only_leftovers(setup: tuple[Path, Path]) -> None:
    home, ctx = setup
    (ctx / "Dockerfile").write_text(DOCKERFILE.format(sleep=30))
    proc = start_build(home, ctx)
    try:
        wait_for_run_step(home, proc)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    # The sandbox's mount namespace died with it: nothing stays mounted in the store.
    deadline = time.monotonic() + 10
    while mounts_under(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mounts_under(home) == []
    store = Store(home)
    try:
        # A plain fsck (no --repair, the default grace) calls the killed store healthy.
        report = fsck(store)
        assert report.ok, report.remaining
        kinds = {p.kind for p in report.problems}
        assert kinds <= {"leftover", "interrupted-build"} and "interrupted-build" in kinds
        # The next collection removes the dead build's work directories.
        result = collect(store, grace=0.0)
        assert result.images == () and result.cache == ()
        assert any(path.startswith("tmp/") for path in result.leftovers)
        assert find_leftovers(store, load_graph(store), grace=0.0) == []
        assert fsck(store, repair=True, grace=0.0).ok
        S.assert_tagged_intact(store)
        # The step that finished before the kill is still cached.
        (ctx / "Dockerfile").write_text(DOCKERFILE.format(sleep=0))
        events = list(run_build(store, BuildRequest(context=str(ctx), tags=("app:1",))))
        assert isinstance(events[-1], BuildFinished), events[-1]
        cached = [e.step.cached for e in events if isinstance(e, StepFinished)]
        assert cached[1:] == [True, False, False]  # COPY a hits; RUN changed
        apply_prune(store, plan_prune(store, PruneRequest("system", grace=0.0)))
        graph = load_graph(store)
        live = Liveness(graph)
        assert all(live.live(c) for c in graph.layers)
        assert fsck(store, deep=True, grace=0.0).problems == ()
    finally:
        store.close()
