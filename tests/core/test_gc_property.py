"""Property: whatever users do (build, tag, rmi, prune), GC never removes what is referenced.

Hypothesis draws sequences of real builds (the builder over COPY-only Dockerfiles that
share prefixes), tags, rmis and prunes of every kind on a fresh store. After each
step: every tagged image's config opens and every layer of it exists and rehashes to
its diffID; every cache entry's layer and configs exist; every prune deletes exactly its
plan, and the store directory shrinks by exactly the bytes the plan predicted.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import prune_support
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamina.core.accounting.graph import Liveness
from lamina.core.accounting.plans import PruneRequest
from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.prune import (
    apply_prune,
    plan_prune,
)
from lamina.core.embedded.store import Store
from lamina.core.embedded.store.graph import load_graph
from lamina.core.embedded.trash import find_leftovers
from lamina.core.events import BuildFinished
from lamina.core.model import BuildRequest

S = prune_support
TAGS = ("app:a", "app:b", "app:c")
VARIANTS = 4


def make_contexts(root: Path) -> list[Path]:
    """Contexts sharing a base file, each with its own layer(s) on top."""
    out = []
    for v in range(VARIANTS):
        ctx = root / f"ctx{v}"
        ctx.mkdir()
        (ctx / "base").write_bytes(b"base-" * 3000)
        (ctx / "mid").write_bytes(f"mid-{v % 2}-".encode() * 2000)
        (ctx / "top").write_bytes(f"top-{v}-".encode() * (1000 + 500 * v))
        (ctx / "Dockerfile").write_text(
            "FROM scratch\nCOPY base /base\nCOPY mid /mid\nLABEL variant=" + str(v % 2) + "\n"
            "COPY top /top\n"
        )
        out.append(ctx)
    return out


build_op = st.tuples(st.just("build"), st.integers(0, VARIANTS - 1), st.sampled_from(TAGS))
tag_op = st.tuples(st.just("tag"), st.sampled_from(TAGS), st.sampled_from(TAGS))
rmi_op = st.tuples(st.just("rmi"), st.sampled_from(TAGS), st.none())
prune_op = st.tuples(
    st.just("prune"),
    st.sampled_from(("image", "builder", "system")),
    st.tuples(st.booleans(), st.sampled_from((None, 0, 20_000, 10**9))),
)
ops = st.lists(st.one_of(build_op, build_op, tag_op, rmi_op, prune_op), min_size=1, max_size=10)


def check_references(store: Store) -> None:
    S.assert_tagged_intact(store)
    graph = load_graph(store)
    for entry in graph.cache.values():
        if entry.top_layer is not None:
            assert entry.top_layer in graph.layers
            assert store.layers.diff_path(entry.top_layer).is_dir()
        assert store.images.has_blob(entry.result)
    for image in graph.images.values():
        assert store.images.has_blob(image.id)
        for chain_id in graph.chain(image.top_layer):
            assert store.layers.diff_path(chain_id).is_dir()


def prune(store: Store, kind: str, all_: bool, keep: int | None) -> None:
    request = PruneRequest(
        kind, all=all_, keep_storage=None if kind == "image" else keep, grace=0.0
    )
    plan = plan_prune(store, request)
    before = S.disk_bytes_of_store(store.home)
    result = apply_prune(store, plan)
    after = S.disk_bytes_of_store(store.home)
    assert result.skipped == ()
    assert set(result.layers) == {p.chain_id for p in plan.layers}
    assert set(result.images) == {p.id for p in plan.images}
    assert before - after == result.disk_reclaimed_bytes == plan.disk_bytes
    assert result.reclaimed_bytes == plan.reclaimable_bytes
    if kind == "system" and not all_ and keep is None:
        graph = load_graph(store)
        # Nothing remains that no tagged image needs, except cache shared with images.
        live = Liveness(graph)
        assert all(live.live(c) for c in graph.layers)
        assert find_leftovers(store, graph, grace=0.0) == []
        tagged = {i for i, img in graph.images.items() if img.tags}
        needed = set(tagged)
        for i in tagged:
            cur = graph.images[i].parent
            while cur is not None and cur in graph.images:
                needed.add(cur)
                cur = graph.images[cur].parent
        assert set(graph.images) == needed


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(sequence=ops)
def test_nothing_referenced_is_ever_removed(sequence: list[tuple[Any, Any, Any]]) -> None:
    with tempfile.TemporaryDirectory(prefix="lamina-gc-") as tmp:
        root = Path(tmp)
        contexts = make_contexts(root)
        store = Store(root / "store")
        try:
            for op, a, b in sequence:
                if op == "build":
                    events = list(
                        run_build(store, BuildRequest(context=str(contexts[a]), tags=(b,)))
                    )
                    assert isinstance(events[-1], BuildFinished), events[-1]
                elif op == "tag":
                    rows = (
                        store.index.connection()
                        .execute("SELECT image_id FROM tags WHERE name = ?", (a,))
                        .fetchall()
                    )
                    if rows:  # tagging needs an existing source tag
                        store.images.tag(rows[0][0], b)
                elif op == "rmi":
                    rows = (
                        store.index.connection()
                        .execute("SELECT image_id FROM tags WHERE name = ?", (a,))
                        .fetchall()
                    )
                    if not rows:
                        continue
                    image_id = rows[0][0]
                    store.images.untag(a)
                    if not store.images.tags_of(image_id) and not store.images.children(image_id):
                        store.images.remove(image_id)
                else:
                    all_, keep = b
                    prune(store, a, all_, keep)
                check_references(store)
            prune(store, "system", False, None)
            check_references(store)
        finally:
            store.close()
