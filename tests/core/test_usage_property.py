"""Property: in every store, a category's reclaimable bytes never exceed its size.

Hypothesis draws reference graphs as a store holds them (layer forests of any shape,
images on any layer with or without tags and parents, cache entries on images, on
scratch and on layers images use too, fresh and old layers, leftovers, a running
build's references) and accounts them as ``system df`` does. Whatever the shape:

* every category's ``reclaimable`` and ``reclaimable_all`` are at most its ``size``;
* what ``system prune [-a]`` frees is at most the layers' size plus the leftovers;
* a category's ``reclaimable`` is its prune's dry run, so no view can show one number
  and prune another.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.core.accounting.graph import CacheRow, ImageRow, LayerRow, RefGraph
from lamina.core.accounting.plans import Leftover, PruneRequest, Sizer, build_plan
from lamina.core.accounting.usage import account

NOW = 1_000_000.0


def digest(kind: str, n: int) -> str:
    return "sha256:" + f"{kind}{n}".encode().hex().ljust(64, "0")[:64]


@st.composite
def graphs(draw: Any) -> tuple[RefGraph, list[Leftover]]:
    n_layers = draw(st.integers(0, 12))
    layers: dict[str, LayerRow] = {}
    for i in range(n_layers):
        parent = draw(st.one_of(st.none(), st.sampled_from(sorted(layers)))) if layers else None
        layers[digest("l", i)] = LayerRow(
            digest("l", i),
            parent,
            draw(st.integers(0, 50_000)),
            # Some layers are younger than the grace period (a build may record them).
            NOW - draw(st.sampled_from((10.0, 10_000.0))),
            disk=draw(st.integers(0, 80_000)),
        )
    tops = st.one_of(st.none(), st.sampled_from(sorted(layers))) if layers else st.none()
    images: dict[str, ImageRow] = {}
    for i in range(draw(st.integers(0, 6))):
        parent = draw(st.one_of(st.none(), st.sampled_from(sorted(images)))) if images else None
        tags = draw(st.sampled_from(((), (f"app:{i}",), (f"app:{i}", f"other:{i}"))))
        images[digest("i", i)] = ImageRow(
            digest("i", i), draw(tops), NOW - 5000 - i, NOW - 5000 - i, parent, tags
        )
    cache: dict[str, CacheRow] = {}
    parents = st.sampled_from(["scratch", *sorted(images)])
    for i in range(draw(st.integers(0, 8))):
        own = st.just(digest("r", i))
        result = draw(st.one_of(st.sampled_from(sorted(images)), own) if images else own)
        cache[digest("c", i)] = CacheRow(
            digest("c", i),
            draw(parents),
            "RUN x",
            result,
            draw(tops),
            NOW - 9000,
            NOW - draw(st.integers(0, 9000)),
            draw(st.integers(0, 3)),
        )
    busy = frozenset(draw(st.sets(st.sampled_from(sorted(cache))))) if cache else frozenset()
    graph = RefGraph(
        layers,
        images,
        cache,
        live_build_start=NOW - 20 if busy else None,
        busy_cache=busy,
        loaded_at=NOW,
    )
    leftovers = [
        Leftover(f"tmp/work-{i}", "tmp", draw(st.integers(0, 10_000)), "dead work")
        for i in range(draw(st.integers(0, 2)))
    ]
    return graph, leftovers


def sizer() -> Sizer:
    return Sizer(layer_extra=lambda _c: 8192, blob=lambda _d: 4096, blob_mtime=lambda _d: 0.0)


@settings(max_examples=400, deadline=None)
@given(drawn=graphs())
def test_reclaimable_never_exceeds_size(drawn: tuple[RefGraph, list[Leftover]]) -> None:
    graph, leftovers = drawn
    usage = account(graph, NOW, sizer(), leftovers)
    for category in usage.categories:
        assert 0 <= category.reclaimable <= category.size, category
        assert category.reclaimable <= category.reclaimable_all <= category.size, category
    ceiling = usage.layers_size + sum(left.bytes for left in leftovers)
    assert usage.reclaimable <= usage.reclaimable_all <= ceiling
    # On disk a prune also frees directory blocks and configs: never less.
    assert usage.reclaimable_disk >= sum(left.bytes for left in leftovers)


@settings(max_examples=200, deadline=None)
@given(drawn=graphs())
def test_each_category_is_the_dry_run_of_its_prune(drawn: tuple[RefGraph, list[Leftover]]) -> None:
    graph, leftovers = drawn
    usage = account(graph, NOW, sizer(), leftovers)

    def plan(kind: str, all_: bool = False) -> Any:
        return build_plan(graph, PruneRequest(kind, all=all_), NOW, sizer(), leftovers)

    images, builder, system = plan("image"), plan("builder"), plan("system")
    assert usage.category("images").reclaimable == sum(p.bytes for p in images.images)
    assert usage.category("build_cache").reclaimable == sum(p.bytes for p in builder.cache)
    assert usage.reclaimable == system.reclaimable_bytes
    assert usage.reclaimable_disk == system.disk_bytes
    assert usage.reclaimable_all == plan("system", True).reclaimable_bytes
    # Each item's bytes add up to the plan's, in both measures.
    for p in (images, builder, system):
        items = sum(i.bytes for i in p.images) + sum(c.bytes for c in p.cache)
        orphans = sum(x.bytes for x in p.layers if x.reason == "referenced by nothing")
        assert items + orphans + sum(left.bytes for left in p.leftovers) == p.reclaimable_bytes
