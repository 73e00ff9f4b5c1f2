"""Disk usage and prune plans for a Docker Engine, from lamina's own accounting.

Docker's images, layers and BuildKit cache records (read by
:mod:`lamina.core.docker.inventory`) are loaded into the same reference graph
(``lamina.core.accounting.graph.RefGraph``) the embedded store uses, so ``system df``
numbers and the dry-run plan come from ``lamina.core.accounting.usage.account`` and
``lamina.core.accounting.plans.build_plan``: one code path for both engines. Layer sizes
are the ``DiffSize`` Docker reports per layer, which is also what Docker sums into its
``SpaceReclaimed``. Applying a plan goes through Docker's own prune endpoints
(``images/prune``, ``build/prune``) with Docker's filters.

The graph has two shapes because the classic builder's cache *is* untagged
intermediate images:

* for accounting, intermediates are build cache entries (so an image's shared size
  counts only other listed images, as ``docker system df -v`` does);
* for an image prune, intermediates are untagged images with parent links, so the plan
  removes a dangling image together with the intermediates only it needed, which is
  what Docker's prune does (it deletes untagged parents without other children).

Where Docker's own numbers differ from lamina's, :data:`DIFFERENCES` says why.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from lamina.core.accounting.graph import CacheRow, RefGraph
from lamina.core.accounting.plans import (
    PrunePlan,
    PruneRequest,
    PruneResult,
    Sizer,
    Skipped,
    build_plan,
)
from lamina.core.accounting.usage import CategoryUsage, DiskUsage, account
from lamina.core.docker import convert
from lamina.core.docker.client import call, docker_host
from lamina.core.docker.convert import BUILDKIT_PREFIX
from lamina.core.docker.inventory import DockerRefs, Inventory
from lamina.core.errors import LaminaError
from lamina.core.filters import Filter

log = logging.getLogger(__name__)

__all__ = ["BUILDKIT_PREFIX", "DIFFERENCES", "apply_prune", "disk_usage", "plan_prune"]

DIFFERENCES: tuple[str, ...] = (
    (
        "Sizes are Docker's per-layer DiffSize (what its SpaceReclaimed sums); the disk blocks "
        "around each layer directory and the image configs are not counted, so the real "
        "free space grows slightly more."
    ),
    (
        "docker system df counts intermediate images (the classic builder's cache) in its "
        "images SIZE and leaves them out of the count; lamina lists them as build cache."
    ),
    (
        "docker system df's RECLAIMABLE for images counts every image without a container; "
        "lamina's counts what `image prune` (dangling only) would free."
    ),
    (
        "BuildKit cache records are sized by Docker and may share storage with image layers "
        "(Shared); lamina cannot see that overlap, and plans --keep-storage from these sizes. "
        "BuildKit's SpaceReclaimed re-measures the snapshots when it deletes them and can "
        "differ by a few bytes from the sizes system df reported."
    ),
    (
        "With until=, Docker applies the filter to dangling images and then deletes their "
        "untagged parents whatever their age; lamina plans each intermediate by its own age."
    ),
)


def _buildkit(graph: RefGraph, refs: DockerRefs, keep_shared: bool) -> None:
    """Adds BuildKit records as cache entries, each on a layer row of its own size."""
    for rec in refs.build_cache:
        if rec.in_use or (keep_shared and rec.shared):
            continue  # Docker never prunes these (without --all, not shared ones either)
        graph.layers[rec.key] = rec.layer_row()
        graph.cache[rec.key] = rec.cache_row()


def accounting_graph(refs: DockerRefs) -> RefGraph:
    """Listed images as images; intermediates and BuildKit records as build cache."""
    graph = RefGraph(layers=dict(refs.layers), images={}, cache={})
    for image_id, data in refs.images.items():
        if image_id in refs.top:
            graph.images[image_id] = convert.image_row(data)
        else:
            row = convert.intermediate_row(data, refs.history.get(image_id, []))
            graph.cache[row.key] = row
    _buildkit(graph, refs, keep_shared=False)
    return graph


def image_prune_graph(refs: DockerRefs) -> RefGraph:
    """Every image (intermediates too) with parent links; what containers use is kept.

    An image a container uses, and every image below it, is not a prune candidate in
    Docker; here it becomes a cache entry, which keeps its layers referenced while an
    image prune never removes it.
    """
    graph = RefGraph(layers=dict(refs.layers), images={}, cache={})
    protected: set[str] = set()
    for image_id in refs.containers:
        cur: str | None = image_id
        while cur and cur in refs.images and cur not in protected:
            protected.add(cur)
            cur = refs.images[cur].get("Parent") or None
    for image_id, data in refs.images.items():
        row = convert.image_row(data)
        if image_id in protected:
            key = f"container-image:{image_id}"
            graph.cache[key] = CacheRow(
                key,
                "container",
                "in use by a container",
                image_id,
                row.top_layer,
                row.created,
                time.time(),
                0,
            )
        else:
            graph.images[image_id] = row
    return graph


def builder_prune_graph(refs: DockerRefs, request: PruneRequest) -> RefGraph:
    """Every image as an image; BuildKit records (what ``build/prune`` sees) as cache."""
    graph = RefGraph(layers=dict(refs.layers), images={}, cache={})
    for data in refs.images.values():
        row = convert.image_row(data)
        graph.images[row.id] = row
    _buildkit(graph, refs, keep_shared=not request.all)
    return graph


def _sizer(refs: DockerRefs) -> Sizer:
    def labels(image_id: str) -> dict[str, str]:
        data = refs.images.get(image_id) or {}
        return dict((data.get("Config") or {}).get("Labels") or {})

    return Sizer(labels=labels)


def _plan(refs: DockerRefs, request: PruneRequest, now: float) -> PrunePlan:
    plan = _raw_plan(refs, request, now)
    # Say which of the untagged images are the classic builder's intermediates.
    images = tuple(
        p if p.id in refs.top else replace(p, reason="intermediate image (classic build cache)")
        for p in plan.images
    )
    # Docker deletes an image's config with the image; it is not a separate object there.
    return replace(plan, images=images, blobs=())


def _raw_plan(refs: DockerRefs, request: PruneRequest, now: float) -> PrunePlan:
    sizer = _sizer(refs)
    if request.kind == "image":
        return build_plan(image_prune_graph(refs), request, now, sizer, include_orphans=False)
    if request.kind == "builder":
        return build_plan(
            builder_prune_graph(refs, request), request, now, sizer, include_orphans=False
        )
    image_part = build_plan(
        image_prune_graph(refs),
        replace(request, kind="image", keep_storage=None),
        now,
        sizer,
        include_orphans=False,
    )
    builder_part = build_plan(
        builder_prune_graph(refs, request),
        replace(request, kind="builder", filters=tuple(_until_only(request))),
        now,
        sizer,
        include_orphans=False,
    )
    checked = request.checked()
    return PrunePlan(
        request=replace(request, filters=checked),
        created=now,
        images=image_part.images,
        cache=builder_part.cache,
        layers=image_part.layers + builder_part.layers,
        blobs=(),
    )


def _until_only(request: PruneRequest) -> list[str | Filter]:
    out: list[str | Filter] = []
    for f in request.filters:
        key = f.key if isinstance(f, Filter) else f.partition("=")[0].strip().lower()
        if key == "until":
            out.append(f)
    return out


def plan_prune(inventory: Inventory, request: PruneRequest, now: float | None = None) -> PrunePlan:
    """What Docker's prune for ``request`` will remove and the bytes it frees.

    Args:
        inventory: what the daemon holds.
        request: ``image``, ``builder`` or ``system`` with Docker's filters.
        now: the clock (for tests).

    Raises:
        UsageError: a bad request (unknown filter, malformed value).
    """
    request.checked()
    now = time.time() if now is None else now
    return _plan(inventory.refs(), request, now)


def _docker_filters(request: PruneRequest, images: bool) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    for f in request.checked():
        if f.key == "until":
            filters["until"] = f.value
        elif images:
            filters.setdefault(f.key, []).append(f.value)
    if images:
        filters["dangling"] = "false" if request.all else "true"
    return filters


def apply_prune(inventory: Inventory, plan: PrunePlan) -> PruneResult:
    """Runs Docker's prune for the plan's request and reports what Docker removed.

    Docker's prune endpoints take filters, not lists, so the daemon decides again;
    anything planned that Docker kept is reported in ``skipped``, anything it removed
    beyond the plan is logged.
    """
    request = plan.request
    untagged: list[str] = []
    images: list[str] = []
    layers: list[str] = []
    cache: list[str] = []
    reclaimed = 0
    if request.kind in ("image", "system"):
        out = call(
            "pruning images", inventory.api.prune_images, filters=_docker_filters(request, True)
        )
        planned_images = {p.id for p in plan.images}
        planned_layers = {p.chain_id for p in plan.layers}
        for row in out.get("ImagesDeleted") or []:
            if row.get("Untagged"):
                untagged.append(str(row["Untagged"]))
            if row.get("Deleted"):
                deleted = str(row["Deleted"])
                # Docker lists removed layers (by chainID) among removed images.
                if deleted in planned_images:
                    images.append(deleted)
                elif deleted in planned_layers or not inventory.knows(deleted):
                    layers.append(deleted)
                else:
                    images.append(deleted)
        reclaimed += int(out.get("SpaceReclaimed") or 0)
    if request.kind in ("builder", "system"):
        kwargs: dict[str, Any] = {}
        until = _docker_filters(request, False)
        if until:
            kwargs["filters"] = until
        if request.keep_storage is not None:
            kwargs["keep_storage"] = request.keep_storage
        if request.all:
            kwargs["all"] = True
        out = call("pruning the build cache", inventory.api.prune_builds, **kwargs)
        cache = [BUILDKIT_PREFIX + str(c) for c in out.get("CachesDeleted") or []]
        reclaimed += int(out.get("SpaceReclaimed") or 0)
    skipped = [
        Skipped("image", p.id, "Docker kept it") for p in plan.images if p.id not in images
    ] + [Skipped("cache", p.key, "Docker kept it") for p in plan.cache if p.key not in cache]
    extra = (set(images) - {p.id for p in plan.images}) | (set(cache) - {p.key for p in plan.cache})
    if extra:
        log.warning(
            "Docker removed %d objects beyond lamina's plan (made since planning?)", len(extra)
        )
    inventory.forget()
    return PruneResult(
        untagged=tuple(untagged),
        images=tuple(images),
        cache=tuple(cache),
        layers=tuple(layers),
        skipped=tuple(skipped),
        reclaimed_bytes=reclaimed,
    )


def disk_usage(inventory: Inventory, now: float | None = None) -> DiskUsage:
    """``system df`` for a Docker Engine through lamina's accounting.

    Shared and unique sizes, per-layer users and the build cache come from
    ``lamina.core.accounting.usage.account`` over the accounting graph; the images and
    build-cache ``reclaimable`` figures are replaced by the plans of Docker-shaped
    prunes (so they equal what ``image prune`` / ``builder prune`` would report).
    """
    now = time.time() if now is None else now
    refs = inventory.refs()
    graph = accounting_graph(refs)
    usage = account(graph, now, _sizer(refs), [], None)

    def freed(kind: str, all_: bool) -> int:
        plan = _plan(refs, PruneRequest(kind, all=all_), now)
        return plan.reclaimable_bytes

    categories: list[CategoryUsage] = []
    for cat in usage.categories:
        if cat.name == "images":
            cat = replace(
                cat, reclaimable=freed("image", False), reclaimable_all=freed("image", True)
            )
        elif cat.name == "build_cache":
            cat = replace(
                cat, reclaimable=freed("builder", False), reclaimable_all=freed("builder", True)
            )
        categories.append(cat)
    fs_free = fs_total = 0
    if refs.root_dir and docker_host().startswith("unix://"):
        try:
            import psutil  # type: ignore[import-untyped]

            fs = psutil.disk_usage(refs.root_dir)
            fs_free, fs_total = int(fs.free), int(fs.total)
        except (OSError, LaminaError):
            pass  # a daemon in another mount namespace: its disk is not ours to stat
    # BuildKit records stand on layer rows of their own only for the planning; they are
    # build cache, not image layers, and Docker's LayersSize leaves them out too.
    layers = tuple(u for u in usage.layers if not u.chain_id.startswith(BUILDKIT_PREFIX))
    return replace(
        usage,
        layers=layers,
        layers_size=sum(u.size for u in layers),
        categories=tuple(categories),
        reclaimable=freed("system", False),
        reclaimable_all=freed("system", True),
        fs_free=fs_free,
        fs_total=fs_total,
        home=f"{docker_host()} ({refs.root_dir})" if refs.root_dir else docker_host(),
    )
