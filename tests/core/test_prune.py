"""Prune as plan, then apply, on a real store under tmp_path.

Bytes are checked two ways. What a plan frees on disk (``disk_bytes``) is compared with
a real walk of the store directory (st_blocks, each inode once) before and after
applying, so "what the plan says" and "what the disk lost" are compared, not two
computations of the same formula. What it frees in Docker's sizes
(``reclaimable_bytes``) is compared with the sizes of the layers it removes, as the
store recorded them.
"""

from __future__ import annotations

import time
from typing import Any

import prune_support
import pytest

from lamina.core.accounting.plans import (
    PrunePlan,
    PruneRequest,
)
from lamina.core.embedded.prune import (
    apply_prune,
    plan_prune,
)
from lamina.core.embedded.store import Store
from lamina.core.errors import UsageError

S = prune_support


def req(kind: str, **kw: Any) -> PruneRequest:
    kw.setdefault("grace", 0.0)
    return PruneRequest(kind, **kw)


def applied(store: Store, plan: PrunePlan) -> int:
    """Applies the plan and returns the bytes the store directory really lost."""
    docker_sizes = sum(store.layers.get(p.chain_id).size for p in plan.layers)
    before = S.disk_bytes_of_store(store.home)
    result = apply_prune(store, plan)
    after = S.disk_bytes_of_store(store.home)
    assert result.skipped == ()
    assert set(result.images) == {p.id for p in plan.images}
    assert set(result.cache) == {p.key for p in plan.cache}
    assert set(result.layers) == {p.chain_id for p in plan.layers}
    assert set(result.blobs) == {p.digest for p in plan.blobs}
    # Docker's measure: the removed layers' sizes (configs count nothing), plus leftovers.
    leftovers = sum(left.bytes for left in plan.leftovers)
    assert result.reclaimed_bytes == plan.reclaimable_bytes == docker_sizes + leftovers
    assert result.disk_reclaimed_bytes == plan.disk_bytes
    return before - after


def layer_ids(store: Store) -> set[str]:
    return {r[0] for r in store.index.connection().execute("SELECT chain_id FROM layers")}


def test_dangling_prune_frees_exactly_the_unshared_layers_and_config(store: Store) -> None:
    base = S.stack(store, [40_000, 20_000], "base")
    a = S.stack(store, [30_000], "a", parent=base[-1])
    b = S.stack(store, [50_000, 10_000], "b", parent=base[-1])
    tagged = S.image(store, base + a, tag="app:a")
    old = S.image(store, base + b, tag="app:b")
    S.image(store, base + b[:1], tag="app:b", nonce="moved")  # app:b moves on; old dangles

    plan = plan_prune(store, req("image"))
    assert [p.id for p in plan.images] == [old]
    assert [p.chain_id for p in plan.layers] == [b[1]]  # b[0] is still used by app:b
    assert [p.digest for p in plan.blobs] == [old]
    assert plan.images[0].reason == "dangling image"
    # Docker's size of the one layer that goes: its file's 10,000 bytes, exactly.
    assert plan.reclaimable_bytes == plan.images[0].bytes == 10_000
    # On disk it frees the layer's directory and the config too.
    assert plan.disk_bytes == plan.images[0].disk_bytes > 10_000 + plan.blobs[0].disk_bytes

    freed = applied(store, plan)
    assert freed == plan.disk_bytes
    assert not store.images.exists(old) and store.images.exists(tagged)
    assert b[1] not in layer_ids(store)
    assert not store.layers.diff_path(b[1]).parent.exists()
    S.assert_tagged_intact(store)
    # Nothing left to do: a second plan is empty.
    assert plan_prune(store, req("image")).empty


def test_prune_all_removes_tagged_images_and_reports_untags(store: Store) -> None:
    base = S.stack(store, [20_000], "base")
    one = S.image(store, base, tag="one:1")
    store.images.tag(one, "one:also")
    plan = plan_prune(store, req("image", all=True))
    assert [(p.id, p.tags) for p in plan.images] == [(one, ("one:1", "one:also"))]
    before = S.disk_bytes_of_store(store.home)
    result = apply_prune(store, plan)
    assert sorted(result.untagged) == ["one:1", "one:also"]
    assert before - S.disk_bytes_of_store(store.home) == result.disk_reclaimed_bytes > 20_000
    assert result.reclaimed_bytes == 20_000
    assert layer_ids(store) == set()


def test_dangling_false_prunes_every_unused_image_as_all_does(store: Store) -> None:
    base = S.stack(store, [4_000], "base")
    tagged = S.image(store, base, tag="one:1")
    dangling = S.image(store, S.stack(store, [4_000], "d"), nonce="d")
    everything = plan_prune(store, req("image", all=True))
    assert {p.id for p in everything.images} == {tagged, dangling}
    for value in ("false", "0"):
        plan = plan_prune(store, req("image", filters=(f"dangling={value}",)))
        assert [(p.id, p.tags, p.reason) for p in plan.images] == [
            (p.id, p.tags, p.reason) for p in everything.images
        ]
        assert plan.reclaimable_bytes == everything.reclaimable_bytes
    for value in ("true", "1"):
        plan = plan_prune(store, req("image", filters=(f"dangling={value}",)))
        assert [p.id for p in plan.images] == [dangling]
    # As the daemon reads several values: one false among them asks for everything.
    plan = plan_prune(store, req("image", filters=("dangling=true", "dangling=false")))
    assert {p.id for p in plan.images} == {tagged, dangling}
    assert applied(store, plan) == plan.disk_bytes
    assert store.images.list() == []


def test_dangling_image_a_kept_image_was_built_from_stays(store: Store) -> None:
    base = S.stack(store, [8_000], "base")
    parent = S.image(store, base, nonce="parent")  # dangling, but app was built FROM it
    child_layers = S.stack(store, [8_000], "child", parent=base[-1])
    S.image(store, base + child_layers, tag="app:1", parent=parent)
    lone = S.image(store, base, nonce="lone")
    plan = plan_prune(store, req("image"))
    assert [p.id for p in plan.images] == [lone]


def test_dry_run_plan_equals_apply_with_cache_and_orphans(store: Store) -> None:
    base = S.stack(store, [30_000], "base")
    kept = S.image(store, base, tag="kept:1")
    cached = S.stack(store, [25_000, 5_000], "cached", parent=base[-1])
    S.cache_entry(store, S.key(1), cached[0], parent=kept)
    S.cache_entry(store, S.key(2), cached[1])
    orphan = S.stack(store, [12_000], "orphan")
    dangling = S.image(store, S.stack(store, [9_000], "d"), nonce="d")

    plan = plan_prune(store, req("system"))
    assert {p.id for p in plan.images} == {dangling}
    assert {p.key for p in plan.cache} == {S.key(1), S.key(2)}
    reasons = {p.chain_id: p.reason for p in plan.layers}
    assert reasons[orphan[0]] == "referenced by nothing"
    assert set(reasons) == {
        orphan[0],
        cached[0],
        cached[1],
        store.images.chain_of(store.images.get_config(dangling))[0],
    }
    # Children are deleted before their parents (the index's foreign key needs it).
    order = [p.chain_id for p in plan.layers]
    assert order.index(cached[1]) < order.index(cached[0])
    assert applied(store, plan) == plan.disk_bytes
    assert layer_ids(store) == set(base)
    S.assert_tagged_intact(store)
    # The cache entries leave tombstones so a later miss can say "pruned".
    tomb = store.index.connection().execute("SELECT key FROM pruned_cache ORDER BY key")
    assert [r[0] for r in tomb] == [S.key(1), S.key(2)]


def test_builder_prune_keeps_entries_shared_with_images_unless_all(store: Store) -> None:
    base = S.stack(store, [10_000], "base")
    img = S.image(store, base, tag="base:1")
    S.cache_entry(store, S.key("shared"), base[0], result=img)
    own = S.stack(store, [10_000], "own", parent=base[0])
    S.cache_entry(store, S.key("own"), own[0])
    plan = plan_prune(store, req("builder"))
    assert [p.key for p in plan.cache] == [S.key("own")]
    plan_all = plan_prune(store, req("builder", all=True))
    assert {p.key for p in plan_all.cache} == {S.key("own"), S.key("shared")}
    # The shared entry's layer and config stay: the image still uses them.
    assert {p.chain_id for p in plan_all.layers} == {own[0]}
    assert img not in {b.digest for b in plan_all.blobs}
    assert applied(store, plan_all) == plan_all.disk_bytes
    S.assert_tagged_intact(store)


def test_builder_until_keeps_recently_used_entries(store: Store) -> None:
    now = time.time()
    old = S.stack(store, [4_000], "old")
    new = S.stack(store, [4_000], "new")
    S.cache_entry(store, S.key("old"), old[0], last_used=now - 3 * 86400)
    S.cache_entry(store, S.key("new"), new[0], last_used=now - 3600)
    plan = plan_prune(store, req("builder", filters=("until=48h",)))
    assert [p.key for p in plan.cache] == [S.key("old")]
    plan = plan_prune(store, req("builder", filters=("until=30m",)))
    assert {p.key for p in plan.cache} == {S.key("old"), S.key("new")}


def test_keep_storage_removes_least_recently_then_least_frequently_used(store: Store) -> None:
    now = time.time()
    chains = {n: S.stack(store, [40_000], n) for n in ("a", "b", "c", "d")}
    S.cache_entry(store, S.key("a"), chains["a"][0], last_used=now - 400, use_count=9)
    S.cache_entry(store, S.key("b"), chains["b"][0], last_used=now - 300, use_count=5)
    S.cache_entry(store, S.key("c"), chains["c"][0], last_used=now - 300, use_count=1)
    S.cache_entry(store, S.key("d"), chains["d"][0], last_used=now - 10, use_count=0)
    sizes = {n: store.layers.get(c[0]).size for n, c in chains.items()}
    # Room for two entries: the oldest goes, then of the two equally old the less used.
    keep = sizes["b"] + sizes["d"]
    plan = plan_prune(store, req("builder", keep_storage=keep))
    assert [p.key for p in plan.cache] == [S.key("a"), S.key("c")]
    assert plan.cache[-1].reason.endswith("beyond --keep-storage")
    assert plan_prune(store, req("builder", keep_storage=sum(sizes.values()))).cache == ()
    assert len(plan_prune(store, req("builder", keep_storage=0)).cache) == 4
    assert applied(store, plan) == plan.disk_bytes


def test_image_filters_until_and_labels(store: Store) -> None:
    now = time.time()
    old = S.image(
        store, S.stack(store, [4_000], "o"), labels={"env": "ci"}, created=now - 10 * 86400
    )
    new = S.image(store, S.stack(store, [4_000], "n"), labels={"env": "dev"}, created=now - 60)
    bare = S.image(store, S.stack(store, [4_000], "b"), created=now - 10 * 86400)

    def ids(*filters: str) -> set[str]:
        return {p.id for p in plan_prune(store, req("image", filters=filters)).images}

    assert ids() == {old, new, bare}
    assert ids("until=24h") == {old, bare}
    assert ids("label=env") == {old, new}
    assert ids("label=env=ci") == {old}
    assert ids("label!=env") == {bare}
    assert ids("label!=env=ci") == {new, bare}
    assert ids("until=24h", "label=env") == {old}
    assert ids(f"until={time.strftime('%Y-%m-%d', time.gmtime(now - 5 * 86400))}") == {old, bare}


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (PruneRequest("image", filters=("dangling=maybe",)), "Invalid filter 'dangling=[maybe]'"),
        (PruneRequest("system", filters=("dangling=false",)), "Invalid filter 'dangling'"),
        (PruneRequest("builder", filters=("label=a",)), "Invalid filter 'label'"),
        (PruneRequest("image", filters=("until=yesterday",)), "invalid until filter"),
        (PruneRequest("image", filters=("until=1h", "until=2h")), "more than one until"),
        (PruneRequest("image", filters=("until",)), "expected key=value"),
        (PruneRequest("image", keep_storage=5), "--keep-storage applies to the build cache"),
        (PruneRequest("everything"), "unknown prune kind"),
    ],
)
def test_bad_requests_fail_in_one_line_and_delete_nothing(
    store: Store, request_: PruneRequest, message: str
) -> None:
    S.image(store, S.stack(store, [4_000], "x"))
    before = S.disk_bytes_of_store(store.home)
    with pytest.raises(UsageError) as info:
        plan_prune(store, request_)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert S.disk_bytes_of_store(store.home) == before


def test_apply_skips_what_became_referenced_since_planning(store: Store) -> None:
    base = S.stack(store, [6_000], "base")
    dangling = S.image(store, base, nonce="d")
    top = S.stack(store, [6_000], "top", parent=base[0])
    S.cache_entry(store, S.key("c"), top[0], last_used=time.time() - 100)
    plan = plan_prune(store, req("system"))
    assert {p.id for p in plan.images} == {dangling}
    # Meanwhile: the image gets a tag, the cache entry is used by a build.
    store.images.tag(dangling, "rescued:1")
    with store.index.transaction() as conn:
        conn.execute("UPDATE cache SET last_used = ?, use_count = 1", (time.time(),))
    result = apply_prune(store, plan)
    assert result.images == () and result.cache == () and result.layers == ()
    assert {s.kind for s in result.skipped} >= {"image", "cache", "layer"}
    assert any("tagged rescued:1" in s.reason for s in result.skipped)
    assert result.reclaimed_bytes == 0
    assert layer_ids(store) == {base[0], top[0]}
    S.assert_tagged_intact(store)


def test_young_orphans_and_what_they_stand_on_are_left_alone(store: Store) -> None:
    old = S.stack(store, [4_000, 4_000], "o")
    plan = plan_prune(store, PruneRequest("image"))  # default grace: 15 minutes
    assert plan.layers == ()
    plan = plan_prune(store, PruneRequest("image", grace=0.0))
    assert [p.chain_id for p in plan.layers] == [old[1], old[0]]


def test_leftovers_of_interrupted_work_are_swept(store: Store) -> None:
    keep = S.image(store, S.stack(store, [4_000], "k"), tag="k:1")
    # A layer directory without a row (crash between rename and commit), a trash
    # directory (crash during rmtree), dead tmp work, and live tmp work.
    (store.home / "layers" / ("ab" * 32) / "diff").mkdir(parents=True)
    (store.home / "layers" / ("ab" * 32) / "diff" / "f").write_bytes(b"x" * 9000)
    (store.home / "tmp" / ".trash-deadbeef-1" / "diff").mkdir(parents=True)
    dead = store.home / "tmp" / "build-dead"
    dead.mkdir()
    (dead / "pid").write_text("999999999\n")
    live = store.home / "tmp" / "build-live"
    live.mkdir()
    import os

    (live / "pid").write_text(f"{os.getpid()}\n")
    plan = plan_prune(store, req("builder"))
    assert {left.path for left in plan.leftovers} == {
        f"layers/{'ab' * 32}",
        "tmp/.trash-deadbeef-1",
        "tmp/build-dead",
    }
    assert applied(store, plan) == plan.disk_bytes > 9000
    assert live.is_dir() and not dead.exists()
    assert store.images.exists(keep)
    S.assert_tagged_intact(store)


def test_gc_collects_only_what_nothing_references(store: Store) -> None:
    from lamina.core.embedded.prune import collect

    base = S.stack(store, [6_000], "base")
    dangling = S.image(store, base + S.stack(store, [6_000], "d", parent=base[0]), nonce="d")
    S.cache_entry(store, S.key("c"), S.stack(store, [6_000], "c")[0])
    gone = S.image(store, S.stack(store, [7_000, 7_000], "gone"), tag="gone:1")
    store.images.untag("gone:1")
    store.images.remove(gone)  # what rmi does: the layers are left to GC
    before = S.disk_bytes_of_store(store.home)
    config_blocks = (store.home / "blobs" / "sha256" / gone[7:]).lstat().st_blocks * 512
    result = collect(store, grace=0.0)
    assert result.images == () and result.cache == ()
    assert len(result.layers) == 2
    # Its config was already unreferenced on disk: a leftover blob.
    assert result.leftovers == (f"blobs/sha256/{gone[7:]}",)
    assert before - S.disk_bytes_of_store(store.home) == result.disk_reclaimed_bytes
    # Docker's measure: the two 7,000-byte layers and the leftover config's blocks.
    assert result.reclaimed_bytes == 14_000 + config_blocks
    assert store.images.exists(dangling)
    with pytest.raises(UsageError, match="Invalid filter"):
        plan_prune(store, PruneRequest("gc", filters=("until=1h",)))


def _running_build(store: Store, steps: list[tuple[str | None, str | None]]) -> None:
    """Records a build of this (live) process with the given (layer, cache_key) steps."""
    import os

    with store.index.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO builds (started, dockerfile, context, tags, build_args, status, pid)"
            " VALUES (?, 'Dockerfile', '.', '[]', '{}', 'running', ?)",
            (time.time() - 5, os.getpid()),
        )
        for seq, (layer_id, key) in enumerate(steps, 1):
            conn.execute(
                "INSERT INTO build_steps (build_id, seq, stage, idx, instruction, layer, cache_key)"
                " VALUES (?, ?, 0, ?, 'X', ?, ?)",
                (cur.lastrowid, seq, seq - 1, layer_id, key),
            )


def test_a_running_build_keeps_its_base_its_cache_and_its_layers(store: Store) -> None:
    base = S.stack(store, [6_000], "base")
    base_image = S.image(store, base, tag="base:1")
    other = S.image(store, S.stack(store, [6_000], "other"), tag="other:1")
    step = S.stack(store, [6_000], "step", parent=base[0])
    S.cache_entry(store, S.key("step"), step[0], parent=base_image)
    # Committed by the build, not yet in any cache row.
    fresh = S.stack(store, [6_000], "fresh", parent=step[0])
    _running_build(store, [(None, None), (step[0], S.key("step")), (fresh[0], None)])
    plan = plan_prune(store, req("system", all=True))
    assert {p.id for p in plan.images} == {other}
    assert plan.cache == ()
    gone = {p.chain_id for p in plan.layers}
    assert gone.isdisjoint(base + step + fresh)
    apply_prune(store, plan)
    assert layer_ids(store) >= set(base + step + fresh)


def test_a_running_build_without_steps_yet_keeps_every_image(store: Store) -> None:
    S.image(store, S.stack(store, [6_000], "a"), tag="a:1")
    S.image(store, S.stack(store, [6_000], "b"), nonce="dangling")
    _running_build(store, [(None, None)])
    plan = plan_prune(store, req("system", all=True))
    assert plan.images == ()


def test_hardlinked_files_are_counted_once(store: Store) -> None:
    import os

    with store.tmpdir("test") as work:
        src = work / "upper"
        (src / "bin").mkdir(parents=True)
        (src / "bin" / "tool").write_bytes(os.urandom(60_000))
        for name in ("alias1", "alias2", "alias3"):
            os.link(src / "bin" / "tool", src / "bin" / name)
        chain_id = store.layers.commit_dir(src, None, "RUN install").chain_id
    # Docker counts the inode once (moby's directory.Size); so do the blocks.
    assert store.layers.get(chain_id).size == 60_000
    assert 60_000 <= store.layers.get(chain_id).disk_size < 2 * 60_000
    dangling = S.image(store, [chain_id], nonce="links")
    plan = plan_prune(store, req("image"))
    assert [p.id for p in plan.images] == [dangling]
    assert plan.reclaimable_bytes == 60_000
    assert plan.disk_bytes < 2 * 60_000
    assert applied(store, plan) == plan.disk_bytes


def test_system_prune_all_leaves_an_empty_store_and_until_limits_both_halves(
    store: Store,
) -> None:
    now = time.time()
    old = S.image(store, S.stack(store, [5_000], "old"), tag="old:1", created=now - 5 * 86400)
    new = S.image(store, S.stack(store, [5_000], "new"), tag="new:1", created=now - 60)
    S.cache_entry(store, S.key("old"), S.stack(store, [5_000], "c1")[0], last_used=now - 5 * 86400)
    S.cache_entry(store, S.key("new"), S.stack(store, [5_000], "c2")[0], last_used=now - 60)
    plan = plan_prune(store, req("system", all=True, filters=("until=48h",)))
    assert [p.id for p in plan.images] == [old]
    assert [p.key for p in plan.cache] == [S.key("old")]
    assert applied(store, plan) == plan.disk_bytes
    assert store.images.exists(new)
    plan = plan_prune(store, req("system", all=True))
    assert applied(store, plan) == plan.disk_bytes
    assert layer_ids(store) == set()
    assert store.images.list() == []
    assert not any((store.home / "blobs" / "sha256").iterdir())
    assert not any((store.home / "layers").iterdir())


def test_a_fresh_unreferenced_layer_keeps_the_layers_below_it(store: Store) -> None:
    base = S.stack(store, [5_000, 5_000], "base")
    dangling = S.image(store, base, nonce="d")
    # A build just committed this on top of the dangling image and has not recorded it.
    fresh = S.stack(store, [5_000], "fresh", parent=base[1])
    plan = plan_prune(store, PruneRequest("image", grace=600.0))
    assert [p.id for p in plan.images] == [dangling]
    assert plan.layers == ()  # base stays: fresh stands on it
    result = apply_prune(store, plan)
    assert result.skipped == () and layer_ids(store) == set(base + fresh)
    # Past the grace period all three go, children first.
    plan = plan_prune(store, req("gc"))
    assert [p.chain_id for p in plan.layers] == [fresh[0], base[1], base[0]]
    assert applied(store, plan) == plan.disk_bytes
