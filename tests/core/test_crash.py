"""Crash safety: ``kill -9`` a process that builds and prunes, at random points.

A subprocess loops over real builds (the builder, COPY-only Dockerfiles with many
files, so commits and deletions take a while) whose content changes every round, so
tags move, old images dangle, and a ``system prune`` after each build deletes images,
cache entries, layers, configs and directories. The parent kills it with SIGKILL after
a random delay (several seeds, bounded time) and then checks what the issue promises:

* fsck finds nothing but leftovers and the interrupted build record, and is clean after
  ``--repair``;
* every tagged image opens, its layers rehash to their diffIDs, and rebuilding it from
  the same content hits the cache on every step and gives the same image ID;
* the next prune removes every leftover (nothing unreferenced remains).
"""

from __future__ import annotations

import os
import random
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
from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.fsck import fsck
from lamina.core.embedded.prune import (
    apply_prune,
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
CONTEXTS = 3
DOCKERFILE = "FROM scratch\nCOPY base /base\nLABEL k=v\nCOPY many /many\nCOPY top /top\n"

WORKER = textwrap.dedent(
    """
    import random, sys, time
    from pathlib import Path
    from lamina.core.embedded.builder.walk import run_build
    from lamina.core.model import BuildRequest
    from lamina.core.accounting.plans import PruneRequest
    from lamina.core.embedded.prune import (
        apply_prune,
        plan_prune,
    )
    from lamina.core.embedded.store import Store

    home, root, seed, mode = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rng = random.Random(seed)
    store = Store(home)
    round_ = 0
    while True:
        if mode == "prune" and round_ == 6:
            # One big prune of everything the rounds left dangling.
            print("pruning", flush=True)
            apply_prune(store, plan_prune(store, PruneRequest("system", grace=0.0)))
            print("pruned", flush=True)
            time.sleep(3600)
        k = rng.randrange(%(contexts)d)
        ctx = root / f"ctx{k}"
        (ctx / "top").write_bytes(f"round {round_} seed {seed}\\n".encode() * 2000)
        many = ctx / "many" / f"r{round_ %% 3}"
        many.mkdir(parents=True, exist_ok=True)
        for i in range(40):
            (many / f"f{i}").write_bytes(rng.randbytes(3000))
        events = list(run_build(store, BuildRequest(context=str(ctx), tags=(f"app:{k}",))))
        round_ += 1
        if mode == "prune":
            continue
        print(type(events[-1]).__name__, flush=True)
        apply_prune(store, plan_prune(store, PruneRequest("system", grace=0.0)))
        print("pruned", flush=True)
    """
) % {"contexts": CONTEXTS}


def make_contexts(root: Path) -> None:
    for k in range(CONTEXTS):
        ctx = root / f"ctx{k}"
        (ctx / "many").mkdir(parents=True)
        (ctx / "base").write_bytes(b"shared base\n" * 4000)
        (ctx / "Dockerfile").write_text(DOCKERFILE)


def run_and_kill(home: Path, root: Path, seed: int, mode: str) -> None:
    """Runs the worker and SIGKILLs it at a random moment.

    ``loop``: after two build+prune rounds, during the following rounds (mostly builds).
    ``prune``: during one large prune of six rounds' worth of dangling images.
    """
    rng = random.Random(seed)
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(home), str(root), str(seed), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for _ in range(2 if mode == "loop" else 1):
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "worker died"
        time.sleep(rng.uniform(0.0, 0.6 if mode == "loop" else 0.4))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL


def rebuild_hits(store: Store, root: Path, tag: str) -> None:
    """Rebuilds the tagged image from the content its layers hold: every step hits."""
    image_id = store.images.resolve(tag)
    k = tag.split(":")[1]
    ctx = root / f"rebuild-{k}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    chain = store.images.chain_of(store.images.get_config(image_id))
    # COPY base, COPY many, COPY top: each layer holds exactly what was copied.
    base, many, top = (store.layers.diff_path(c) for c in chain)
    (ctx / "base").write_bytes((base / "base").read_bytes())
    (ctx / "top").write_bytes((top / "top").read_bytes())
    for path in sorted((many / "many").rglob("*")):
        dest = ctx / "many" / path.relative_to(many / "many")
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(path.read_bytes())
            os.chmod(dest, path.stat().st_mode & 0o7777)
    events = list(run_build(store, BuildRequest(context=str(ctx), tags=(tag,))))
    assert isinstance(events[-1], BuildFinished), events[-1]
    steps = [e.step for e in events if isinstance(e, StepFinished)]
    assert [s.cached for s in steps if s.cached is not None] == [True] * 4, steps
    assert events[-1].image == image_id


def assert_nothing_unreferenced(store: Store) -> None:
    graph = load_graph(store)
    live = Liveness(graph)
    assert all(live.live(c) for c in graph.layers)
    assert find_leftovers(store, graph, grace=0.0) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "seed"),
    [("loop", 1), ("loop", 2), ("loop", 3), ("prune", 4), ("prune", 5), ("prune", 6), ("prune", 7)],
)
def test_kill_9_during_builds_and_prunes_loses_nothing(
    tmp_path: Path, mode: str, seed: int
) -> None:
    home, root = tmp_path / "store", tmp_path / "ctx"
    make_contexts(root)
    Store(home).close()
    run_and_kill(home, root, seed, mode)

    store = Store(home)
    try:
        # A plain fsck (no --repair, the default grace) calls a killed store healthy.
        assert fsck(store).ok, fsck(store).remaining
        report = fsck(store, grace=0.0)
        assert {p.kind for p in report.problems} <= {"leftover", "interrupted-build"}, (
            report.problems
        )
        if seed % 2:
            # The next prune alone removes the leftovers; fsck then only needs the
            # interrupted build record fixed.
            result = apply_prune(store, plan_prune(store, PruneRequest("system", grace=0.0)))
            assert result.skipped == ()
            report = fsck(store, grace=0.0)
            assert {p.kind for p in report.problems} <= {"interrupted-build"}, report.problems
        repaired = fsck(store, repair=True, grace=0.0)
        assert repaired.ok, repaired.remaining
        assert fsck(store, deep=True, grace=0.0).problems == ()
        S.assert_tagged_intact(store)
        tags = [r[0] for r in store.index.connection().execute("SELECT name FROM tags")]
        assert tags, "the worker finished at least one build"
        for tag in sorted(tags):
            rebuild_hits(store, root, tag)
        apply_prune(store, plan_prune(store, PruneRequest("system", grace=0.0)))
        assert_nothing_unreferenced(store)
        assert fsck(store, grace=0.0).problems == ()
    finally:
        store.close()
