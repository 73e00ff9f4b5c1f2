"""Disk accounting of the embedded store: its graph, sizes and leftovers, accounted.

The numbers and their meaning are ``accounting.usage``'s; this module feeds it from the
index and the filesystem, and answers "what would removing this free" for the store.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from lamina.core.accounting.graph import Liveness, RefGraph
from lamina.core.accounting.plans import PlannedCacheMount, PruneRequest
from lamina.core.accounting.usage import (
    CacheMountUsage,
    DiskUsage,
    account,
    bytes_freed,
)
from lamina.core.embedded.prune import plan_cache_mounts, store_sizer
from lamina.core.embedded.store.graph import load_graph
from lamina.core.embedded.trash import find_leftovers
from lamina.core.errors import NotFound, StoreError

if TYPE_CHECKING:
    from lamina.core.embedded.store import Store


def disk_usage(store: Store, now: float | None = None) -> DiskUsage:
    """Accounts for every byte the store's index knows about.

    A handful of queries, one pass over the reference graph per question, and stats
    only of what a prune would delete; no walk of layer directories.

    Args:
        store: the store.
        now: the clock (for tests).
    """
    now = time.time() if now is None else now
    graph = load_graph(store)
    sizer = store_sizer(store)
    leftovers = find_leftovers(store, graph, now=now)
    usage = account(graph, now, sizer, leftovers, store.home)
    # A layer's disk is what it alone occupies; the files layers share count once.
    shared = store.files.shared()
    usage = dataclasses.replace(
        usage,
        layers_disk=usage.layers_disk + shared.disk,
        shared_disk=shared.disk,
        dedup_saved=shared.saved,
    )
    mounts = tuple(
        CacheMountUsage(
            m.id, m.mount_id, m.sharing, m.size, m.created, m.last_used, m.use_count, m.in_use
        )
        for m in store.cache_mounts.entries()
    )
    if not mounts:
        return usage
    return _with_cache_mounts(usage, mounts, plan_cache_mounts(store, PruneRequest("builder"), now))


def _with_cache_mounts(
    usage: DiskUsage, mounts: tuple[CacheMountUsage, ...], freed: tuple[PlannedCacheMount, ...]
) -> DiskUsage:
    """Cache mounts are build cache (BuildKit's ``exec.cachemount`` records): their bytes
    join the build cache row and every prune that takes them (builder and system), so
    ``system df``, the Disk view and the dry runs give one figure."""
    size, free = sum(m.size for m in mounts), sum(p.bytes for p in freed)
    categories = tuple(
        dataclasses.replace(
            c,
            count=c.count + len(mounts),
            active=c.active + sum(1 for m in mounts if m.in_use),
            size=c.size + size,
            reclaimable=c.reclaimable + free,
            reclaimable_all=c.reclaimable_all + free,
        )
        if c.name == "build_cache"
        else c
        for c in usage.categories
    )
    prunes = tuple(
        dataclasses.replace(p, bytes=p.bytes + free, items=p.items + len(freed))
        if p.command.startswith(("builder prune", "system prune"))
        else p
        for p in usage.prunes
    )
    return dataclasses.replace(
        usage,
        categories=categories,
        prunes=prunes,
        cache_mounts=mounts,
        reclaimable=usage.reclaimable + free,
        reclaimable_all=usage.reclaimable_all + free,
        reclaimable_disk=usage.reclaimable_disk + free,
        reclaimable_all_disk=usage.reclaimable_all_disk + free,
    )


def frees(store: Store, target: str) -> int:
    """Exact bytes that removing ``target`` would free now, in Docker's sizes (the
    layers only it keeps; its configs count nothing).

    Args:
        store: the store.
        target: an image ID (or unique prefix), a tag, or a cache key (or unique prefix).
            Removing a tag that other tags share only untags, which frees nothing.

    Raises:
        NotFound: if nothing matches ``target``.
    """
    graph = load_graph(store)
    sizer = store_sizer(store)
    live = Liveness(graph)
    image_id = _resolve_image(store, graph, target)
    if image_id is not None:
        image = graph.images[image_id]
        by_tag = target in image.tags or _looks_like_tag(target, image.tags)
        if by_tag and len(image.tags) > 1:
            return 0
        return bytes_freed(graph, live, sizer, image.top_layer)
    entry = graph.cache.get(target) or _unique_prefix(graph.cache, target, "cache entry")
    if entry is None:
        raise NotFound(f"no such image, tag or cache entry: {target}")
    return bytes_freed(graph, live, sizer, entry.top_layer)


def _looks_like_tag(ref: str, tags: tuple[str, ...]) -> bool:
    # "busybox" names "busybox:latest"; an ID or prefix never contains ":" but "sha256:".
    return not ref.startswith("sha256:") and any(t == ref or t == ref + ":latest" for t in tags)


def _resolve_image(store: Store, graph: RefGraph, ref: str) -> str | None:
    if ref in graph.images:
        return ref
    try:
        image_id = store.images.resolve(ref)
    except NotFound:
        return None
    except StoreError:
        return None
    return image_id if image_id in graph.images else None


def _unique_prefix(table: dict[str, Any], ref: str, what: str) -> Any:
    prefix = ref if ref.startswith("sha256:") else "sha256:" + ref
    if len(prefix) < len("sha256:") + 4:
        return None
    hits = [k for k in table if k.startswith(prefix)]
    if len(hits) > 1:
        raise NotFound(f"{what} prefix {ref} is ambiguous ({len(hits)} matches)")
    return table[hits[0]] if hits else None
