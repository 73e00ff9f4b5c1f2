"""Prune as plan, then apply.

``plan_prune`` is a read-only step that returns exactly what would go (images, cache
entries, layers, config blobs, leftovers), each with a reason and the bytes it frees;
``--dry-run`` prints it. ``apply_prune`` deletes that set and nothing else: inside one
locked transaction it re-reads every reference and skips (and reports) anything that
became referenced since planning. See ``gc.py`` for the crash-safe deletion order.

The verbs mean what Docker users expect (``../shared/cache-semantics.md``):

* ``image`` removes dangling images (no tag), or with ``all`` every image, filtered by
  ``until=`` (created before) and ``label=``/``label!=``. A dangling image that a kept
  image was built FROM stays (``rmi`` of the child still needs it).
* ``builder`` removes build cache entries; without ``all`` it keeps entries whose top
  layer an image uses. ``until=`` keeps entries used within that time;
  ``keep_storage`` removes least recently, then least frequently used entries until
  the cache's own bytes fit.
* ``system`` does both (images first), so afterwards nothing remains that no tagged
  image needs, except cache the request keeps.

Every kind also removes layers nothing references and leftovers of interrupted work,
after the grace period.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from lamina.core.accounting.graph import (
    Liveness,
    RefGraph,
)
from lamina.core.accounting.plans import (
    DEFAULT_GRACE,
    PlannedBlob,
    PlannedCache,
    PlannedCacheMount,
    PlannedImage,
    PlannedLayer,
    PrunePlan,
    PruneRequest,
    PruneResult,
    Sizer,
    Skipped,
    build_plan,
)
from lamina.core.embedded.store.dedup import SharedGroup, SharedRelease
from lamina.core.embedded.store.graph import load_graph
from lamina.core.embedded.trash import (
    blob_stat,
    find_leftovers,
    layer_overhead,
    remove_tree,
    sweep,
    to_trash,
)
from lamina.core.filters import (
    Filter,
    prunes_every_unused_image,
    until_cutoff,
)
from lamina.core.settings import load_config

if TYPE_CHECKING:
    from lamina.core.embedded.store import Store

log = logging.getLogger(__name__)


# -- planning ---------------------------------------------------------------------------


def store_sizer(store: Store) -> Sizer:
    """A ``Sizer`` reading the store: directory overhead and blob sizes on disk, config
    labels."""

    def labels(image_id: str) -> dict[str, str]:
        try:
            config = store.images.get_config(image_id)
        except Exception:  # noqa: BLE001 - a missing config has no labels; fsck reports it
            return {}
        found = (config.get("config") or {}).get("Labels") or {}
        return {str(k): str(v) for k, v in found.items()}

    stats: dict[str, tuple[int, float]] = {}

    def stat(digest: str) -> tuple[int, float]:
        if digest not in stats:
            stats[digest] = blob_stat(store, digest)
        return stats[digest]

    groups: list[SharedGroup] = []
    loaded: list[bool] = []

    def shared() -> SharedRelease:
        # One read of who holds the shared files serves every plan of this sizer.
        if not loaded:
            groups.extend(store.files.groups())
            loaded.append(True)
        return SharedRelease(groups)

    return Sizer(
        layer_extra=lambda c: layer_overhead(store, c),
        blob=lambda d: stat(d)[0],
        labels=labels,
        blob_mtime=lambda d: stat(d)[1],
        shared=shared,
    )


def plan_prune(store: Store, request: PruneRequest, now: float | None = None) -> PrunePlan:
    """What ``request`` would delete, with reasons and bytes; deletes nothing.

    Args:
        store: the store.
        request: what to prune.
        now: the clock (for tests).

    Raises:
        UsageError: an unknown filter, a malformed duration, a bad size.
    """
    request.checked()  # fail on bad input before touching the store
    now = time.time() if now is None else now
    graph = load_graph(store)
    leftovers = find_leftovers(store, graph, request.grace, now)
    plan = build_plan(graph, request, now, store_sizer(store), leftovers)
    mounts = plan_cache_mounts(store, request, now)
    return dataclasses.replace(plan, cache_mounts=mounts) if mounts else plan


def plan_cache_mounts(
    store: Store, request: PruneRequest, now: float
) -> tuple[PlannedCacheMount, ...]:
    """The cache mounts ``builder prune`` and ``system prune`` remove: those no build
    uses, unused for longer than ``until=`` when given (BuildKit's ``exec.cachemount``
    records are build cache; ``--keep-storage`` keeps them, as it keeps what fits)."""
    if request.kind not in ("builder", "system") or request.keep_storage is not None:
        return ()
    cutoff = until_cutoff(request.checked(), now)
    out = []
    for m in store.cache_mounts.entries():
        if m.in_use or (cutoff is not None and m.last_used >= cutoff):
            continue
        out.append(PlannedCacheMount(m.id, m.mount_id, m.last_used, "cache mount", m.size))
    return tuple(out)


# -- applying ---------------------------------------------------------------------------


def apply_prune(store: Store, plan: PrunePlan) -> PruneResult:
    """Deletes exactly what ``plan`` lists, minus what became referenced since.

    Index rows go in one transaction under the store lock, after re-reading every
    reference; then each layer directory is renamed to the trash (still under the lock,
    so no commit can recreate it meanwhile) and removed after the lock is released.

    Returns:
        What was deleted, what was skipped, and the bytes freed.

    Raises:
        StoreError: the index file is damaged; nothing is deleted (rows a damaged page
            lost would make what they reference look unreferenced).
    """
    damaged = store.index.damaged()
    if damaged is not None:
        raise damaged
    skipped: list[Skipped] = []
    trash: list[Any] = []
    with store.lock():
        with store.index.transaction("prune"):
            graph = load_graph(store)
            images = _recheck_images(graph, plan, skipped)
            cache = _recheck_cache(graph, plan, skipped)
            gone_images = {p.id for p in images}
            gone_cache = {p.key for p in cache}
            live = Liveness(
                graph,
                images=[i for i in graph.images if i not in gone_images],
                cache=[k for k in graph.cache if k not in gone_cache],
            )
            layers = _recheck_layers(graph, plan, live, skipped)
            remaining_refs = _blob_refs_without(graph, gone_images, gone_cache)
            blobs: list[PlannedBlob] = []
            for b in plan.blobs:
                if remaining_refs.get(b.digest, 0) > 0:
                    skipped.append(Skipped("blob", b.digest, "referenced again since planning"))
                elif blob_stat(store, b.digest)[1] > plan.created:
                    skipped.append(Skipped("blob", b.digest, "written again since planning"))
                else:
                    blobs.append(b)
            untagged: list[str] = []
            for i in images:
                untagged += graph.images[i.id].tags
            store.images.forget([i.id for i in images])
            # Tombstones stay, so a later miss can say the entry was pruned.
            store.cache.drop([graph.cache[c.key] for c in cache], time.time())
            # Children first; the files no other layer holds are freed with them.
            freed_files = store.layers.forget([layer.chain_id for layer in layers])
        # Committed. The blobs go first: until an image config that named a layer is
        # gone, a kill would leave that layer's directory looking like data the index
        # lost (``trash.unindexed_layer_dirs``) instead of debris the next prune sweeps.
        for b in blobs:
            try:
                os.unlink(store.images.blob_path(b.digest))
            except FileNotFoundError:
                pass
            except OSError as exc:
                # Its references are gone; an undeletable file is a leftover for later.
                log.warning(
                    "%s: cannot remove (%s)", store.images.blob_path(b.digest), exc.strerror
                )
        # Files no layer holds lose their pool names (under the lock, so no commit can
        # link one meantime); their storage goes with the last directory.
        store.files.unlink(freed_files)
        if untagged:
            store.images.save_tag_file()
        # Committed: the rows are gone. Now the directories, renamed first so that a
        # crash leaves recognisable trash, never a half-deleted layer under its name.
        for layer in layers:
            moved = to_trash(store, store.layers.dir_path(layer.chain_id))
            if moved is not None:
                trash.append(moved)
    for path in trash:
        remove_tree(path)
    swept = sweep(store, plan.leftovers) if plan.leftovers else []
    swept_paths = {left.path for left in swept}
    for left in plan.leftovers:
        if left.path not in swept_paths:
            skipped.append(Skipped("leftover", left.path, "in use again or already gone"))
    mounts_freed = store.cache_mounts.remove([m.id for m in plan.cache_mounts])
    reclaimed = (
        sum(p.bytes for p in layers)
        + sum(b.bytes for b in blobs)
        + sum(left.bytes for left in swept)
        + mounts_freed
    )
    disk_reclaimed = (
        sum(p.disk_bytes - p.shared_disk_bytes for p in layers)
        + freed_files.shared_disk
        + sum(b.disk_bytes for b in blobs)
        + sum(left.bytes for left in swept)
        + mounts_freed
    )
    result = PruneResult(
        untagged=tuple(untagged),
        images=tuple(p.id for p in images),
        cache=tuple(p.key for p in cache),
        layers=tuple(p.chain_id for p in layers),
        blobs=tuple(b.digest for b in blobs),
        leftovers=tuple(left.path for left in swept),
        skipped=tuple(skipped),
        reclaimed_bytes=reclaimed,
        cache_mounts=tuple(m.mount_id for m in plan.cache_mounts),
        disk_reclaimed_bytes=disk_reclaimed,
    )
    log.info(
        "pruned %d images, %d cache entries, %d layers, %d blobs, %d leftovers: %d bytes"
        " (%d on disk)",
        len(result.images),
        len(result.cache),
        len(result.layers),
        len(result.blobs),
        len(result.leftovers),
        reclaimed,
        disk_reclaimed,
    )
    return result


def _recheck_images(graph: RefGraph, plan: PrunePlan, skipped: list[Skipped]) -> list[PlannedImage]:
    planned = {p.id for p in plan.images}
    children = graph.children()
    every = plan.request.all or prunes_every_unused_image(plan.request.checked())
    out: list[PlannedImage] = []
    for p in plan.images:
        image = graph.images.get(p.id)
        if image is None:
            skipped.append(Skipped("image", p.id, "already gone"))
            continue
        if graph.image_busy(p.id):
            skipped.append(Skipped("image", p.id, "a running build may stand on it"))
            continue
        new_tags = set(image.tags) - set(p.tags)
        if new_tags:
            skipped.append(Skipped("image", p.id, f"tagged {min(new_tags)} since planning"))
            continue
        if not p.tags and not every:
            kept_child = [c for c in children.get(p.id, ()) if c not in planned]
            if kept_child:
                skipped.append(Skipped("image", p.id, f"parent of image {kept_child[0]}"))
                continue
        out.append(p)
    return out


def _recheck_cache(graph: RefGraph, plan: PrunePlan, skipped: list[Skipped]) -> list[PlannedCache]:
    out: list[PlannedCache] = []
    for p in plan.cache:
        entry = graph.cache.get(p.key)
        if entry is None:
            skipped.append(Skipped("cache", p.key, "already gone"))
        elif entry.last_used != p.last_used:
            skipped.append(Skipped("cache", p.key, "used since planning"))
        elif p.key in graph.busy_cache:
            skipped.append(Skipped("cache", p.key, "in use by a running build"))
        else:
            out.append(p)
    return out


def _recheck_layers(
    graph: RefGraph, plan: PrunePlan, live: Liveness, skipped: list[Skipped]
) -> list[PlannedLayer]:
    children: dict[str, list[str]] = {}
    for row in graph.layers.values():
        if row.parent is not None:
            children.setdefault(row.parent, []).append(row.chain_id)
    deleting: set[str] = set()
    out: list[PlannedLayer] = []
    for p in plan.layers:  # children first
        if p.chain_id not in graph.layers:
            skipped.append(Skipped("layer", p.chain_id, "already gone"))
            continue
        if live.live(p.chain_id):
            skipped.append(Skipped("layer", p.chain_id, "referenced again since planning"))
            continue
        kept = [c for c in children.get(p.chain_id, ()) if c not in deleting]
        if kept:
            skipped.append(Skipped("layer", p.chain_id, f"parent of layer {kept[0]}"))
            continue
        deleting.add(p.chain_id)
        out.append(p)
    return out


def _blob_refs_without(graph: RefGraph, images: set[str], cache: set[str]) -> dict[str, int]:
    reduced = RefGraph(
        layers={},
        images={k: v for k, v in graph.images.items() if k not in images},
        cache={k: v for k, v in graph.cache.items() if k not in cache},
    )
    return reduced.blob_refs()


# -- retention --------------------------------------------------------------------------


def apply_retention(store: Store) -> PruneResult | None:
    """Applies the ``[cache]`` policy of ``config.toml``; None when it is off.

    ``max_unused_age`` removes every entry unused for longer (shared or not: an old
    record is stale either way); then ``keep_storage`` removes the least recently used
    entries that hold data of their own until the cache fits. The builder calls this
    after each build.

    Raises:
        UsageError: a malformed config file.
    """
    policy = load_config().cache
    if not policy.enabled:
        return None
    result = PruneResult()
    if policy.max_unused_age is not None:
        request = PruneRequest(
            "builder", all=True, filters=(Filter("until", f"{policy.max_unused_age}s"),)
        )
        result = result.merged(apply_prune(store, plan_prune(store, request)))
    if policy.keep_storage is not None:
        request = PruneRequest("builder", keep_storage=policy.keep_storage)
        result = result.merged(apply_prune(store, plan_prune(store, request)))
    return result


def collect(store: Store, grace: float = DEFAULT_GRACE) -> PruneResult:
    """Removes what nothing references (after ``rmi``, or on a schedule).

    Orphan layers, unreferenced configs and leftovers of interrupted work, each past the
    grace period; no image or cache entry is touched. The same plan-then-apply path as
    prune, so it is as crash-safe and skips anything referenced again meanwhile.

    Args:
        store: the store.
        grace: seconds during which fresh unreferenced data is left alone.

    Returns:
        What was deleted and the bytes freed.
    """
    return apply_prune(store, plan_prune(store, PruneRequest("gc", grace=grace)))
