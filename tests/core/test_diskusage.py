"""Disk accounting on a real store: shared/unique sizes, users, reclaimable, what frees what."""

from __future__ import annotations

import json
from typing import Any

import prune_support
import pytest

from lamina.core.accounting.plans import PruneRequest
from lamina.core.embedded.prune import (
    apply_prune,
    plan_prune,
)
from lamina.core.embedded.store import Store
from lamina.core.embedded.usage import (
    disk_usage,
    frees,
)
from lamina.core.errors import NotFound

S = prune_support


@pytest.fixture
def world(store: Store) -> dict[str, Any]:
    """Two images sharing a two-layer base, a dangling one, cache, an orphan."""
    base = S.stack(store, [40_000, 20_000], "base")
    a = S.stack(store, [30_000], "a", parent=base[-1])
    b = S.stack(store, [50_000], "b", parent=base[-1])
    c = S.stack(store, [8_000], "c", parent=base[0])
    img_a = S.image(store, base + a, tag="app:a")
    img_b = S.image(store, base + b, tag="app:b")
    dangling = S.image(store, [base[0]] + c, nonce="dangling")
    step = S.stack(store, [16_000], "step", parent=a[0])
    S.cache_entry(store, S.key("step"), step[0], parent=img_a, use_count=3)
    S.cache_entry(store, S.key("meta"), a[0], parent=img_a, result=img_a)
    orphan = S.stack(store, [12_000], "orphan")
    return {
        "base": base,
        "a": a,
        "b": b,
        "c": c,
        "step": step,
        "orphan": orphan,
        "img_a": img_a,
        "img_b": img_b,
        "dangling": dangling,
    }


def test_shared_and_unique_sizes_follow_chain_ids(store: Store, world: dict[str, Any]) -> None:
    usage = disk_usage(store)
    size = {c: store.layers.get(c).size for c in store_layers(store)}
    by_id = {i.id: i for i in usage.images}
    base0, base1 = world["base"]
    a = by_id[world["img_a"]]
    assert a.size == size[base0] + size[base1] + size[world["a"][0]]
    assert a.shared_size == size[base0] + size[base1]
    assert a.unique_size == size[world["a"][0]]
    d = by_id[world["dangling"]]
    # The dangling image shares only the first base layer (its second layer differs).
    assert d.shared_size == size[base0]
    assert d.unique_size == size[world["c"][0]]
    assert d.dangling and usage.dangling == (world["dangling"],)
    assert a.layers == 3


def test_layer_users_and_orphans(store: Store, world: dict[str, Any]) -> None:
    usage = disk_usage(store)
    layers = {u.chain_id: u for u in usage.layers}
    assert set(layers[world["base"][0]].images) == {
        world["img_a"],
        world["img_b"],
        world["dangling"],
    }
    assert set(layers[world["a"][0]].cache) == {S.key("step"), S.key("meta")}
    assert layers[world["step"][0]].images == ()
    assert usage.orphans == (world["orphan"][0],)


def test_cache_entries_report_their_own_layer_and_sharing(
    store: Store, world: dict[str, Any]
) -> None:
    usage = disk_usage(store)
    cache = {c.key: c for c in usage.cache}
    step = cache[S.key("step")]
    assert step.size == store.layers.get(world["step"][0]).size
    assert not step.shared and step.use_count == 3
    meta = cache[S.key("meta")]
    # A metadata step on top of app:a adds no layer and shares app:a's.
    assert meta.size == 0 and meta.shared and meta.frees == 0


def test_reclaimable_equals_the_dry_run_of_each_prune(store: Store, world: dict[str, Any]) -> None:
    usage = disk_usage(store, now=None)
    grace = PruneRequest().grace
    assert usage.category("images").reclaimable == sum(
        p.bytes for p in plan_prune(store, PruneRequest("image", grace=grace)).images
    )
    assert usage.category("build_cache").reclaimable == sum(
        p.bytes for p in plan_prune(store, PruneRequest("builder")).cache
    )
    assert usage.reclaimable == plan_prune(store, PruneRequest("system")).reclaimable_bytes
    assert (
        usage.reclaimable_all
        == plan_prune(store, PruneRequest("system", all=True)).reclaimable_bytes
    )
    assert usage.reclaimable <= usage.reclaimable_all
    assert 0 < usage.fs_free <= usage.fs_total
    doc = json.loads(json.dumps(usage.to_json()))
    assert doc["reclaimable_bytes"] == usage.reclaimable
    assert [layer["chain_id"] for layer in doc["layers"] if layer["orphan"]] == list(usage.orphans)
    # lamina's own store has no containers or volumes: their rows read 0.
    assert {c["name"]: c["count"] + c["size"] for c in doc["categories"]}["containers"] == 0
    assert {c["name"]: c["count"] + c["size"] for c in doc["categories"]}["volumes"] == 0
    assert {c["name"] for c in doc["categories"]} == {
        "images",
        "containers",
        "volumes",
        "build_cache",
        "orphan_layers",
        "leftovers",
    }


def test_frees_predicts_what_removing_each_target_frees(
    store: Store, world: dict[str, Any]
) -> None:
    # The dangling image: its own layer (Docker's size; its config counts nothing).
    # Measured by removing it for real.
    predicted = frees(store, world["dangling"])
    assert predicted == frees(store, world["dangling"][7:19])  # a unique ID prefix
    store.images.remove(world["dangling"])
    plan = plan_prune(store, PruneRequest("image", grace=0.0))
    result = apply_prune(store, plan)
    assert set(result.layers) == {p.chain_id for p in plan.layers}
    sizes = [p.bytes for p in plan.layers if p.chain_id != world["orphan"][0]]
    assert sum(sizes) == predicted == 8_000


def test_frees_of_tags_and_cache_entries(store: Store, world: dict[str, Any]) -> None:
    # app:b's own layer; the base stays for app:a.
    assert frees(store, "app:b") == frees(store, world["img_b"]) == 50_000
    store.images.tag(world["img_b"], "app:b2")
    assert frees(store, "app:b") == 0  # only untags
    # app:a's layer is also kept by the cache: removing the image frees only its config,
    # which Docker's sizes do not count.
    assert frees(store, "app:a") == 0
    assert frees(store, S.key("step")) == 16_000
    with pytest.raises(NotFound):
        frees(store, "nosuch:tag")


def store_layers(store: Store) -> list[str]:
    return [r[0] for r in store.index.connection().execute("SELECT chain_id FROM layers")]
