"""``COPY --link`` under BuildKit's rules: a linked copy does not depend on the layers
below it.

Docker 20.10's built-in BuildKit frontend cannot parse ``--link`` (it needs a
``# syntax=`` image, which cannot be pulled offline), so these run on lamina alone,
against the documented semantics (moby/buildkit's Dockerfile reference, "Benefits of
using --link"; ``dockerfile2llb`` copies onto ``llb.Scratch()`` and merges the result
onto the parent): after an edit above it the linked step is reused, with the same
diffID, on the new parent, while the steps after it chain on both and decide by their
own rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lamina.core.embedded.builder.rootfs import RootFS
from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.store import Store
from lamina.core.events import BuildFinished, StepFinished
from lamina.core.model import BuildRequest

pytestmark = pytest.mark.usefixtures("busybox_store")

DOCKERFILE = (
    "FROM busybox\nCOPY b.txt /b\nCOPY --link a.txt /app/a\nCOPY --link c.txt /c\nCOPY d.txt /d\n"
)


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    d = tmp_path / "ctx"
    d.mkdir()
    for name in ("a", "b", "c", "d"):
        (d / f"{name}.txt").write_text(name)
    (d / "Dockerfile").write_text(DOCKERFILE)
    return d


def build(store: Store, ctx: Path, **kw: Any) -> tuple[str | None, list[Any]]:
    events = list(run_build(store, BuildRequest(context=str(ctx), builder="buildkit", **kw)))
    end = events[-1]
    assert isinstance(end, BuildFinished), end
    return end.image, [e.step for e in events if isinstance(e, StepFinished) and e.step.index]


def diff_ids(store: Store, image: str) -> list[str]:
    return list(store.images.get_config(image)["rootfs"]["diff_ids"])


def test_an_edit_above_a_linked_copy_reuses_its_layer(store: Store, ctx: Path) -> None:
    first, steps = build(store, ctx)
    assert first is not None
    assert [s.cached for s in steps] == [False, False, False, False]
    (ctx / "b.txt").write_text("B")
    second, steps = build(store, ctx)
    assert second is not None
    # The edited COPY misses; both linked copies are reused on the new parent; the
    # COPY after them chains on the merge, so it misses.
    assert [s.cached for s in steps] == [False, True, True, False]
    # ... and says why: the miss above, not the linked hits in between.
    assert steps[3].reason is not None
    assert steps[3].reason["kind"] == "parent_missed"
    assert steps[3].reason["instruction"] == "COPY b.txt /b"
    old, new = diff_ids(store, first), diff_ids(store, second)
    assert new[0] == old[0] and new[1] != old[1]
    assert new[2:4] == old[2:4]  # the same linked layers, by diffID
    # The layer chain is rebased: every layer of the new image is in the store, on the
    # new parent.
    top = store.images.summary(second).layers
    assert [info.diff_id for info in store.layers.chain(top[-1])] == new
    root = RootFS([store.layers.diff_path(c) for c in reversed(top)])
    assert root.read_file("/b") == b"B"
    assert root.read_file("/app/a") == b"a"
    assert root.read_file("/c") == b"c"
    # A rebuild hits everything, the rebased chain included.
    third, steps = build(store, ctx)
    assert [s.cached for s in steps] == [True, True, True, True]
    assert diff_ids(store, third or "") == new


def test_a_dry_run_predicts_the_linked_hit(store: Store, ctx: Path) -> None:
    build(store, ctx)
    (ctx / "b.txt").write_text("B")
    _, steps = build(store, ctx, dry_run=True)
    assert [s.cached for s in steps] == [False, True, True, False]


def test_without_link_an_edit_above_misses_the_copy(store: Store, ctx: Path) -> None:
    # The contrast: the same Dockerfile without --link chains each COPY on its parent.
    (ctx / "Dockerfile").write_text(DOCKERFILE.replace("--link ", ""))
    build(store, ctx)
    (ctx / "b.txt").write_text("B")
    _, steps = build(store, ctx)
    assert [s.cached for s in steps] == [False, False, False, False]


@pytest.mark.root
def test_a_linked_layer_reads_nothing_below_it(store: Store, ctx: Path) -> None:
    # /app exists below with mode 0700: a plain COPY keeps it; a linked copy makes its
    # own /app (0755) in a layer that fits on any parent.
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nRUN mkdir -m 700 /app\nCOPY --link a.txt /app/a\n"
    )
    image, steps = build(store, ctx)
    assert image is not None
    layer = store.layers.diff_path(steps[-1].layer)
    assert (layer / "app").stat().st_mode & 0o777 == 0o755
    assert (layer / "app" / "a").read_text() == "a"
