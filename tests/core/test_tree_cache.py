"""The tree cache: an unchanged COPY source is checksummed from its fingerprint alone.

Builds run for real on a store under tmp_path, with context files old enough to be
trusted (a file modified moments ago never is, as in the stat cache). Each test checks
the decisions a build makes and whether files were looked at one by one, counted by
wrapping ``StatCache.lookup``, the per-file step the tree cache skips.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from lamina.core.context import checksum
from lamina.core.embedded.builder.records import list_builds
from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.store import Store
from lamina.core.events import BuildFinished, StepFinished
from lamina.core.model import BuildRequest

pytestmark = pytest.mark.usefixtures("busybox_store")

OLD = 1_600_000_000
DOCKERFILE = "FROM busybox:latest\nCOPY a.txt /one/\nCOPY . /src\n"


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    for rel, text in {"a.txt": "a\n", "d/b.txt": "b\n", "d/e/c.txt": "c\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "Dockerfile").write_text(DOCKERFILE)
    (root / ".dockerignore").write_text("Dockerfile\n")
    age(root)
    return root


def age(root: Path) -> None:
    """Every entry as old as a checkout nobody touched today."""
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            os.utime(os.path.join(dirpath, name), (OLD, OLD))
    os.utime(root, (OLD, OLD))


@pytest.fixture
def looked_at(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every context path the stat cache is asked about, one by one."""
    seen: list[str] = []
    real = checksum.StatCache.lookup

    def counting(self: checksum.StatCache, path: Any, name: str, st: os.stat_result) -> Any:
        seen.append(name)
        return real(self, path, name, st)

    monkeypatch.setattr(checksum.StatCache, "lookup", counting)
    return seen


def build(store: Store, ctx: Path, builder: str | None = None) -> list[bool | None]:
    events = list(run_build(store, BuildRequest(context=str(ctx), builder=builder)))
    assert isinstance(events[-1], BuildFinished), events[-1]
    return [e.step.cached for e in events if isinstance(e, StepFinished)]


@pytest.mark.parametrize("builder", ["buildkit", "classic"])
def test_an_unchanged_context_is_checksummed_without_a_per_file_step(
    store: Store, ctx: Path, looked_at: list[str], builder: str
) -> None:
    first = build(store, ctx, builder)
    assert first[1:] == [False, False] and looked_at
    looked_at.clear()
    assert build(store, ctx, builder)[1:] == [True, True]
    assert looked_at == [], "every COPY source came from its tree's fingerprint"
    # What advice replays: the cached build recorded the same paths and hashes.
    first_id, second_id = sorted(r.id for r in list_builds(store))[-2:]
    recorded = store.builds.sources([first_id, second_id])
    assert recorded[first_id].paths and recorded[second_id].paths == recorded[first_id].paths
    assert set(recorded[second_id].paths) >= {"a.txt", "d/b.txt", "d/e/c.txt"}


def test_a_changed_file_is_recorded_with_its_new_hash(store: Store, ctx: Path) -> None:
    build(store, ctx)
    (ctx / "d/e/c.txt").write_text("C\n")
    age(ctx)
    build(store, ctx)
    first_id, second_id = sorted(r.id for r in list_builds(store))[-2:]
    recorded = store.builds.sources([first_id, second_id])
    before, after = recorded[first_id].paths, recorded[second_id].paths
    assert before["d/e/c.txt"] != after["d/e/c.txt"]
    assert before["d/b.txt"] == after["d/b.txt"] and before["a.txt"] == after["a.txt"]


@pytest.mark.parametrize(
    "change",
    ["content, times put back", "mode", "new file", "renamed", "ignored", "xattr"],
)
def test_any_change_below_a_source_misses_its_tree(
    store: Store, ctx: Path, looked_at: list[str], change: str
) -> None:
    build(store, ctx)
    target = ctx / "d/e/c.txt"
    if change == "content, times put back":
        target.write_text("C\n")  # same size; the walk's times are put back below
    elif change == "mode":
        os.chmod(target, 0o600)
    elif change == "new file":
        (ctx / "d/new.txt").write_text("n\n")
    elif change == "renamed":
        target.rename(ctx / "d/e/d.txt")
    elif change == "ignored":
        (ctx / ".dockerignore").write_text("Dockerfile\nd/e\n")
    else:
        try:
            os.setxattr(target, "user.lamina-test", b"1")
        except OSError:
            pytest.skip("no user xattrs on this filesystem")
    age(ctx)  # the change is not racy: only the ctime (or the paths) can tell
    looked_at.clear()
    cached = build(store, ctx)
    if change == "xattr":
        # An xattr is no part of the checksum: the tree missed, the files decided.
        assert cached[1:] == [True, True] and looked_at
    else:
        assert cached[1] is True, "the COPY of the untouched file hit"
        assert cached[2] is False, "the COPY of the changed tree missed"


def test_a_file_modified_moments_ago_keeps_the_tree_uncached(
    store: Store, ctx: Path, looked_at: list[str]
) -> None:
    (ctx / "d/b.txt").write_text("racy\n")
    build(store, ctx)
    looked_at.clear()
    build(store, ctx)
    assert "d/b.txt" in looked_at, "a racy tree is checksummed file by file every time"
