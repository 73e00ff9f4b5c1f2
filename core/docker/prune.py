"""Prune plans for a Docker Engine, from lamina's own accounting, applied by Docker.

Docker's containers, volumes, images, layers and BuildKit cache records (read by
:mod:`lamina.core.docker.inventory`) are loaded into the reference graph
(``lamina.core.accounting.graph.RefGraph``) the embedded store uses, so the dry-run plan
comes from ``lamina.core.accounting.plans.build_plan``: one code path for both engines.
Applying a plan runs Docker's own prune endpoints (``containers/prune``,
``volumes/prune``, ``images/prune``, ``build/prune``) with Docker's filters, in the order
``docker system prune`` runs them; the plan predicts each step from the state the steps
before it leave:

* ``container prune``: every container not running, paused or restarting that the
  filters (``until``, ``label``) match; its writable layer is what it frees;
* ``volume prune``: every unused local volume without driver options that the
  ``label`` filters match. Daemon 20.10 (API 1.41) removes named and anonymous ones
  alike (and refuses an ``all`` filter); 23.0+ (API 1.42) only anonymous ones unless
  ``-a``. lamina follows the daemon it talks to;
* ``image prune``: dangling (or with ``-a`` unused) images no container uses, with the
  intermediates only they needed; a layer a BuildKit record holds stays
  (:mod:`lamina.core.docker.buildkit`), which is why ``image prune -a`` right after a
  BuildKit build frees nothing;
* ``builder prune``: BuildKit records not in use and, without ``--all``, not shared with
  an image *as they are when the step runs* (after ``system prune``'s image step);
  each frees its own size, as Docker reports it.

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
    plan_containers_and_volumes,
)
from lamina.core.docker import buildkit, convert
from lamina.core.docker.client import call
from lamina.core.docker.convert import BUILDKIT_PREFIX
from lamina.core.docker.inventory import DockerRefs, Inventory, version_tuple
from lamina.core.filters import Filter

log = logging.getLogger(__name__)

__all__ = [
    "BUILDKIT_PREFIX",
    "DIFFERENCES",
    "HOLD_PREFIX",
    "accounting_graph",
    "apply_prune",
    "plan",
    "plan_prune",
    "sizer",
]

# Cache entries standing for "a BuildKit record holds this image layer".
HOLD_PREFIX = "buildkit-hold:"

DIFFERENCES: tuple[str, ...] = (
    (
        "Sizes are Docker's per-layer DiffSize (what its SpaceReclaimed sums); the disk blocks "
        "around each layer directory and the image configs are not counted, so the real "
        "free space grows slightly more."
    ),
    (
        "lamina lists the classic builder's intermediate images as build cache (docker "
        "system df counts their layers in the Images size and leaves them out of both counts)."
    ),
    (
        "BuildKit does not say which image layer each of its cache records holds; lamina "
        "matches records to layers by their sizes and steps. BuildKit's SpaceReclaimed "
        "re-measures the snapshots when it deletes them and can differ by a few bytes from "
        "the sizes system df reported."
    ),
    (
        "With until=, Docker applies the filter to dangling images and then deletes their "
        "untagged parents whatever their age; lamina plans each intermediate by its own age."
    ),
    (
        "system prune also removes unused networks in Docker; they hold no disk space, so "
        "lamina leaves them to `docker network prune`."
    ),
)


def people_graph(refs: DockerRefs) -> RefGraph:
    """Containers and volumes only: what ``container``/``volume`` prunes plan over."""
    return RefGraph(
        layers={},
        images={},
        cache={},
        containers=dict(refs.container_rows),
        volumes=dict(refs.volumes),
        volumes_named_need_all=not refs.volume_prune_takes_all,
    )


def _hold_rows(holds: buildkit.Holds, refs: DockerRefs) -> dict[str, CacheRow]:
    """One cache entry per image layer a BuildKit record holds (keeps its stack alive)."""
    now = time.time()
    return {
        HOLD_PREFIX + chain: CacheRow(
            HOLD_PREFIX + chain,
            "buildkit",
            "held by a BuildKit cache record",
            HOLD_PREFIX + chain,
            chain,
            now,
            now,
            0,
        )
        for chain in sorted(holds.held_tops())
        if chain in refs.layers
    }


def _buildkit(graph: RefGraph, refs: DockerRefs, shared: dict[str, bool] | None) -> None:
    """Adds BuildKit records as cache entries, each on a layer row of its own size.

    Args:
        graph: where to add them.
        refs: what the daemon holds.
        shared: record ID -> shared, for a prune that keeps shared records; None adds
            every record not in use (``--all``, and accounting).
    """
    for rec in refs.build_cache:
        if rec.in_use or (shared is not None and shared.get(rec.id, rec.shared)):
            continue  # Docker never prunes these (without --all, not shared ones either)
        graph.layers[rec.key] = rec.layer_row()
        graph.cache[rec.key] = rec.cache_row()


def accounting_graph(refs: DockerRefs, holds: buildkit.Holds) -> RefGraph:
    """Listed images as images; intermediates and BuildKit records as build cache."""
    graph = RefGraph(layers=dict(refs.layers), images={}, cache={})
    for image_id, data in refs.images.items():
        if image_id in refs.top:
            graph.images[image_id] = convert.image_row(data)
        else:
            row = convert.intermediate_row(data, refs.history.get(image_id, []))
            graph.cache[row.key] = row
    _buildkit(graph, refs, None)
    graph.cache.update(_hold_rows(holds, refs))
    return graph


def image_prune_graph(
    refs: DockerRefs, holds: buildkit.Holds, removed_containers: frozenset[str] = frozenset()
) -> RefGraph:
    """Every image (intermediates too) with parent links; what containers use is kept.

    An image a container uses, and every image below it, is not a prune candidate in
    Docker; here it becomes a cache entry, which keeps its layers referenced while an
    image prune never removes it. So does every layer a BuildKit record holds.

    Args:
        refs: what the daemon holds.
        holds: the image layers BuildKit's records hold.
        removed_containers: containers an earlier step of the same prune removes.
    """
    graph = RefGraph(layers=dict(refs.layers), images={}, cache={})
    protected: set[str] = set()
    for image_id, ctrs in refs.containers.items():
        if not set(ctrs) - removed_containers:
            continue
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
                key,
                row.top_layer,
                row.created,
                time.time(),
                0,
            )
        else:
            graph.images[image_id] = row
    graph.cache.update(_hold_rows(holds, refs))
    return graph


def builder_prune_graph(
    refs: DockerRefs, request: PruneRequest, shared: dict[str, bool] | None = None
) -> RefGraph:
    """Every image as an image; BuildKit records (what ``build/prune`` sees) as cache.

    Args:
        refs: what the daemon holds.
        request: the prune (``all`` takes shared records too).
        shared: which records are shared when the prune runs (default: Docker's flags now).
    """
    graph = RefGraph(layers=dict(refs.layers), images={}, cache={})
    for data in refs.images.values():
        row = convert.image_row(data)
        graph.images[row.id] = row
    if request.all:
        _buildkit(graph, refs, None)
    else:
        _buildkit(graph, refs, shared if shared is not None else {})
    return graph


def sizer(refs: DockerRefs) -> Sizer:
    """Labels from the images' configs (Docker's sizes are in the graph already)."""

    def labels(image_id: str) -> dict[str, str]:
        data = refs.images.get(image_id) or {}
        return dict((data.get("Config") or {}).get("Labels") or {})

    return Sizer(labels=labels)


def plan(refs: DockerRefs, request: PruneRequest, now: float) -> PrunePlan:
    """What Docker's prune for ``request`` removes from the state ``refs`` describes.

    Raises:
        UsageError: a bad request.
    """
    checked = request.checked()
    if request.kind in ("container", "volume"):
        return plan_containers_and_volumes(people_graph(refs), request, now)
    raw = _raw_plan(refs, request, now)
    # Say which of the untagged images are the classic builder's intermediates.
    images = tuple(
        p if p.id in refs.top else replace(p, reason="intermediate image (classic build cache)")
        for p in raw.images
    )
    # Docker deletes an image's config with the image; it is not a separate object there.
    return replace(raw, request=replace(request, filters=checked), images=images, blobs=())


def _raw_plan(refs: DockerRefs, request: PruneRequest, now: float) -> PrunePlan:
    sizes = sizer(refs)
    holds = buildkit.holds(refs.build_cache, refs.image_layers)
    if request.kind == "image":
        return build_plan(
            image_prune_graph(refs, holds), request, now, sizes, include_orphans=False
        )
    if request.kind == "builder":
        return build_plan(
            builder_prune_graph(refs, request), request, now, sizes, include_orphans=False
        )
    # system: containers (and volumes), then images, then the build cache, each on what
    # the step before it left.
    people = plan_containers_and_volumes(people_graph(refs), request, now)
    removed = frozenset(p.id for p in people.containers)
    image_part = build_plan(
        image_prune_graph(refs, holds, removed),
        replace(request, kind="image", keep_storage=None, volumes=False),
        now,
        sizes,
        include_orphans=False,
    )
    gone = {p.id for p in image_part.images}
    tops = {
        top
        for image_id, data in refs.images.items()
        if image_id not in gone
        if (top := convert.top_layer(data)) is not None
    }
    builder_part = build_plan(
        builder_prune_graph(refs, request, holds.shared_after(refs.build_cache, tops)),
        replace(request, kind="builder", filters=tuple(_until_only(request)), volumes=False),
        now,
        sizes,
        include_orphans=False,
    )
    return PrunePlan(
        request=request,
        created=now,
        containers=people.containers,
        volumes=people.volumes,
        images=image_part.images,
        cache=builder_part.cache,
        layers=image_part.layers + builder_part.layers,
        blobs=(),
    )


def _until_only(request: PruneRequest) -> list[str | Filter]:
    """The filters Docker's build-cache prune honours (it ignores ``label``)."""
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
        request: ``container``, ``volume``, ``image``, ``builder`` or ``system`` with
            Docker's filters.
        now: the clock (for tests).

    Raises:
        UsageError: a bad request (unknown filter, malformed value).
    """
    request.checked()
    now = time.time() if now is None else now
    return plan(inventory.refs(), request, now)


def _filters(request: PruneRequest, keys: frozenset[str]) -> dict[str, Any]:
    """The request's filters that one of Docker's prune endpoints takes."""
    filters: dict[str, Any] = {}
    for f in request.checked():
        if f.key not in keys:
            continue
        if f.key == "until":
            filters["until"] = f.value
        else:
            filters.setdefault(f.key, []).append(f.value)
    return filters


_LABELS = frozenset({"label", "label!"})


def apply_prune(inventory: Inventory, plan: PrunePlan) -> PruneResult:
    """Runs Docker's prunes for the plan's request and reports what Docker removed.

    Docker's prune endpoints take filters, not lists, so the daemon decides again;
    anything planned that Docker kept is reported in ``skipped``, anything it removed
    beyond the plan is logged.
    """
    request = plan.request
    api = inventory.api
    result = PruneResult()
    if request.kind in ("container", "system"):
        out = call(
            "pruning containers",
            api.prune_containers,
            filters=_filters(request, _LABELS | {"until"}),
        )
        result = result.merged(
            PruneResult(
                containers=tuple(str(c) for c in out.get("ContainersDeleted") or []),
                reclaimed_bytes=int(out.get("SpaceReclaimed") or 0),
            )
        )
    if request.kind == "volume" or (request.kind == "system" and request.volumes):
        filters = _filters(request, _LABELS)
        if (
            request.all
            and request.kind == "volume"
            and version_tuple(str(api.api_version)) >= (1, 42)
        ):
            filters["all"] = ["true"]  # 20.10 refuses the filter; it prunes named ones anyway
        out = call("pruning volumes", api.prune_volumes, filters=filters)
        result = result.merged(
            PruneResult(
                volumes=tuple(str(v) for v in out.get("VolumesDeleted") or []),
                reclaimed_bytes=int(out.get("SpaceReclaimed") or 0),
            )
        )
    if request.kind in ("image", "system"):
        result = result.merged(_apply_images(inventory, plan))
    if request.kind in ("builder", "system"):
        kwargs: dict[str, Any] = {}
        until = _filters(request, frozenset({"until"}))
        if until:
            kwargs["filters"] = until
        if request.keep_storage is not None:
            kwargs["keep_storage"] = request.keep_storage
        if request.all:
            kwargs["all"] = True
        out = call("pruning the build cache", api.prune_builds, **kwargs)
        result = result.merged(
            PruneResult(
                cache=tuple(BUILDKIT_PREFIX + str(c) for c in out.get("CachesDeleted") or []),
                reclaimed_bytes=int(out.get("SpaceReclaimed") or 0),
            )
        )
    skipped = (
        [Skipped("container", p.id, "Docker kept it") for p in plan.containers
         if p.id not in result.containers]
        + [Skipped("volume", p.name, "Docker kept it") for p in plan.volumes
           if p.name not in result.volumes]
        + [Skipped("image", p.id, "Docker kept it") for p in plan.images
           if p.id not in result.images]
        + [Skipped("cache", p.key, "Docker kept it") for p in plan.cache
           if p.key not in result.cache]
    )  # fmt: skip
    extra = (
        (set(result.containers) - {p.id for p in plan.containers})
        | (set(result.volumes) - {p.name for p in plan.volumes})
        | (set(result.images) - {p.id for p in plan.images})
        | (set(result.cache) - {p.key for p in plan.cache})
    )
    if extra:
        log.warning(
            "Docker removed %d objects beyond lamina's plan (made since planning?)", len(extra)
        )
    inventory.forget()
    return replace(result, skipped=tuple(skipped))


def _apply_images(inventory: Inventory, plan: PrunePlan) -> PruneResult:
    request = plan.request
    filters = _filters(request, _LABELS | {"until"})
    filters["dangling"] = "false" if request.all else "true"
    out = call("pruning images", inventory.api.prune_images, filters=filters)
    planned_images = {p.id for p in plan.images}
    planned_layers = {p.chain_id for p in plan.layers}
    untagged: list[str] = []
    images: list[str] = []
    layers: list[str] = []
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
    return PruneResult(
        untagged=tuple(untagged),
        images=tuple(images),
        layers=tuple(layers),
        reclaimed_bytes=int(out.get("SpaceReclaimed") or 0),
    )
