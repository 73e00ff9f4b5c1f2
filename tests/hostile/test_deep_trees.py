"""Trees as deep as a build context or a RUN makes them: walked, measured and removed
without recursion (Python's stack stops at 1,000 frames; ``os.walk``,
``shutil.rmtree`` and ``os.makedirs`` recurse once per level in Python 3.11).

Regression tests of the RecursionErrors these trees gave (docs/limits.md, "Depth").
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lamina.core.accounting.plans import PruneRequest
from lamina.core.context.dockerignore import MemoryFS, walk_context
from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.fsck import fsck
from lamina.core.embedded.prune import apply_prune, plan_prune
from lamina.core.embedded.store import Store
from lamina.core.events import BuildFinished
from lamina.core.model import BuildRequest

DEPTH = 1_500
DEEP = "/".join(["d"] * 1_200)  # within PATH_MAX, so `mkdir -p` makes it in one call


def deep_dir(top: Path, depth: int = DEPTH) -> None:
    """``top/d/d/…/d/leaf``, ``depth`` levels, made through directory fds."""
    top.mkdir(parents=True, exist_ok=True)
    fd = os.open(top, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    os.close(os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    os.close(fd)


def test_a_deep_context_is_walked_with_its_dockerignore(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    deep_dir(ctx)
    (ctx / ".dockerignore").write_text("**/leaf\n!d/d/leaf\n")
    seen = list(walk_context(ctx, exclude=["**/leaf", "!d/d/leaf"]))
    dirs = [rel for rel, is_dir in seen if is_dir]
    assert len(dirs) == DEPTH and dirs[-1].count("/") == DEPTH - 1
    assert [rel for rel, is_dir in seen if not is_dir] == [".dockerignore"]


def test_a_deep_tree_in_memory_is_walked_parents_first() -> None:
    entries = [("/".join(["d"] * (i + 1)), True) for i in range(DEPTH)]
    seen: list[str] = []
    MemoryFS(entries[::-1]).walk(lambda path, is_dir: seen.append(path))
    assert seen == [path for path, _ in entries]


def _build(store: Store, ctx: Path, text: str) -> BuildFinished:
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(text)
    end = list(run_build(store, BuildRequest(context=str(ctx))))[-1]
    assert isinstance(end, BuildFinished), end
    return end


@pytest.mark.root
@pytest.mark.usefixtures("busybox_store")
@pytest.mark.parametrize(
    "run",
    [
        f"VOLUME /v\nRUN mkdir -p /v/{DEEP}",
        f"RUN --mount=type=cache,target=/c mkdir -p /c/{DEEP}",
        f"RUN --mount=type=cache,target=/c,sharing=private mkdir -p /c/{DEEP}",
        f"RUN --mount=type=tmpfs,target=/t/{DEEP} true",
    ],
    ids=["volume", "cache-mount", "private-cache-mount", "deep-mount-target"],
)
def test_a_run_that_makes_a_deep_tree_builds_and_is_pruned(
    store: Store, tmp_path: Path, run: str
) -> None:
    _build(store, tmp_path / "ctx", f"FROM busybox\n{run}\n")
    for mount in store.cache_mounts.entries():
        assert mount.size > 1_000 * 4096  # measured, every level counted
    plan = plan_prune(store, PruneRequest("builder", all=True, grace=0.0))
    apply_prune(store, plan)
    assert store.cache_mounts.entries() == []
    assert list((store.home / "cachemounts").iterdir()) == []
    assert fsck(store).ok
