"""``system df`` for a Docker Engine: Docker's rows, lamina's plans.

The four rows (Images, Containers, Local Volumes, Build Cache) are computed as
``docker system df`` computes them (docker/cli's ``formatter/disk_usage.go``, 20.10 and
since), from the same ``/system/df`` records, so both tools print the same bytes:

* images: every listed image; active = used by a container; size = every layer once
  (Docker's ``LayersSize``); reclaimable = size minus the unique bytes of the images
  containers use;
* containers: active = running, paused or restarting; size = the writable layers;
  reclaimable = those of the others;
* volumes: active = used by a container; size = their data; reclaimable = that of the
  unused ones;
* build cache: BuildKit's records; active = in use; size = the records not shared with
  an image; reclaimable = that, minus what is in use.

What each prune would free (``prunes``, ``reclaimable`` = ``system prune``,
``reclaimable_all`` = ``system prune -a``) comes from lamina's plans
(:mod:`lamina.core.docker.prune`), the same ones a dry run prints.
"""

from __future__ import annotations

import time
from dataclasses import replace

from lamina.core.accounting.plans import PruneRequest
from lamina.core.accounting.usage import (
    CacheUsage,
    CategoryUsage,
    ContainerUsage,
    DiskUsage,
    VolumeUsage,
    account,
    estimate,
)
from lamina.core.docker import buildkit
from lamina.core.docker.client import docker_host
from lamina.core.docker.convert import BUILDKIT_PREFIX, BuildKitRecord
from lamina.core.docker.inventory import DockerRefs, Inventory
from lamina.core.docker.prune import HOLD_PREFIX, accounting_graph, plan, sizer
from lamina.core.errors import LaminaError

# (command, request) for every prune a Docker Engine has, in the order the CLI lists them.
_PRUNES: tuple[tuple[str, PruneRequest], ...] = (
    ("container prune", PruneRequest("container")),
    ("volume prune", PruneRequest("volume")),
    ("image prune", PruneRequest("image")),
    ("image prune -a", PruneRequest("image", all=True)),
    ("builder prune", PruneRequest("builder")),
    ("builder prune --all", PruneRequest("builder", all=True)),
    ("system prune", PruneRequest("system")),
    ("system prune -a", PruneRequest("system", all=True)),
    ("system prune --volumes", PruneRequest("system", volumes=True)),
    ("system prune -a --volumes", PruneRequest("system", all=True, volumes=True)),
)


def categories(
    refs: DockerRefs, image_sizes: dict[str, tuple[int, int]]
) -> tuple[CategoryUsage, ...]:
    """The four ``docker system df`` rows, in bytes.

    Args:
        refs: what the daemon holds.
        image_sizes: per listed image, (size, shared size) from lamina's accounting.

    ``reclaimable_all`` of each row is what that row's ``-a`` prune frees by lamina's plan
    (filled in by :func:`disk_usage`); here it equals ``reclaimable``.
    """
    used_by = {i for i, ctrs in refs.containers.items() if ctrs}
    listed = [i for i in refs.top if i in image_sizes]
    layers_size = sum(row.size for row in refs.layers.values())
    in_use = sum(image_sizes[i][0] - image_sizes[i][1] for i in listed if i in used_by)
    containers = list(refs.container_rows.values())
    ctr_size = sum(c.size for c in containers)
    ctr_free = sum(c.size for c in containers if not c.active)
    volumes = list(refs.volumes.values())
    vol_size = sum(v.size for v in volumes if v.size != -1)
    vol_free = sum(v.size for v in volumes if v.size != -1 and v.links == 0)
    records = refs.build_cache
    cache_size = sum(r.size for r in records if not r.shared)
    cache_free = cache_size - sum(r.size for r in records if r.in_use and not r.shared)
    rows = (
        ("images", len(listed), sum(1 for i in listed if i in used_by), layers_size,
         layers_size - in_use),
        ("containers", len(containers), sum(1 for c in containers if c.active), ctr_size,
         ctr_free),
        ("volumes", len(volumes), sum(1 for v in volumes if v.links > 0), vol_size, vol_free),
        ("build_cache", len(records), sum(1 for r in records if r.in_use), cache_size,
         cache_free),
    )  # fmt: skip
    return tuple(CategoryUsage(n, c, a, s, r, r) for n, c, a, s, r in rows)


def disk_usage(inventory: Inventory, now: float | None = None) -> DiskUsage:
    """``system df`` for a Docker Engine (see the module docstring).

    Per image, layer and cache entry, shared and unique sizes and what removing each
    frees come from ``lamina.core.accounting.usage.account`` over the accounting graph;
    BuildKit records keep Docker's own ``Shared``.
    """
    now = time.time() if now is None else now
    refs = inventory.refs()
    holds = buildkit.holds(refs.build_cache, refs.image_layers)
    usage = account(accounting_graph(refs, holds), now, sizer(refs), [], None)
    records = {BUILDKIT_PREFIX + r.id: r for r in refs.build_cache}
    cache = tuple(
        _with_record(c, records[c.key]) if c.key in records else c
        for c in usage.cache
        if not c.key.startswith(HOLD_PREFIX)
    )
    prunes = tuple(estimate(command, plan(refs, request, now)) for command, request in _PRUNES)
    by_command = {p.command: p for p in prunes}
    rows = categories(refs, {i.id: (i.size, i.shared_size) for i in usage.images})
    all_prune = {
        "images": "image prune -a",
        "containers": "container prune",
        "volumes": "volume prune",
        "build_cache": "builder prune --all",
    }
    rows = tuple(replace(r, reclaimable_all=by_command[all_prune[r.name]].bytes) for r in rows)
    # BuildKit records stand on layer rows of their own only for the planning; they are
    # build cache, not image layers, and Docker's LayersSize leaves them out too.
    layers = tuple(
        replace(u, cache=tuple(k for k in u.cache if not k.startswith(HOLD_PREFIX)))
        for u in usage.layers
        if not u.chain_id.startswith(BUILDKIT_PREFIX)
    )
    fs_free, fs_total = _free_space(refs)
    return replace(
        usage,
        layers=layers,
        cache=cache,
        layers_size=sum(u.size for u in layers),
        categories=rows,
        reclaimable=by_command["system prune"].bytes,
        reclaimable_all=by_command["system prune -a"].bytes,
        fs_free=fs_free,
        fs_total=fs_total,
        home=f"{docker_host()} ({refs.root_dir})" if refs.root_dir else docker_host(),
        containers=_containers(refs),
        volumes=_volumes(refs),
        prunes=prunes,
    )


def _with_record(entry: CacheUsage, record: BuildKitRecord) -> CacheUsage:
    """A BuildKit record's entry with BuildKit's own fields, as ``docker buildx du
    --verbose`` shows them (``Shared`` as Docker says, not as lamina would place it).

    The Engine API has no ``Mutable`` (moby leaves BuildKit's out of ``/system/df``).
    """
    return replace(
        entry,
        shared=record.shared,
        record_type=record.type,
        description=record.description,
        parents=record.parents,
        in_use=record.in_use,
    )


def _containers(refs: DockerRefs) -> tuple[ContainerUsage, ...]:
    rows = sorted(refs.container_rows.values(), key=lambda c: (-c.created, c.id))
    return tuple(
        ContainerUsage(
            c.id, c.name, c.image, c.image_id, c.state, c.active, c.size, c.created, c.volumes
        )
        for c in rows
    )


def _volumes(refs: DockerRefs) -> tuple[VolumeUsage, ...]:
    rows = sorted(refs.volumes.values(), key=lambda v: (-v.created, v.name))
    return tuple(
        VolumeUsage(v.name, v.anonymous, v.size, v.links, v.containers, v.created) for v in rows
    )


def _free_space(refs: DockerRefs) -> tuple[int, int]:
    """The daemon's data root filesystem, when the daemon runs on this machine."""
    if not refs.root_dir or not docker_host().startswith("unix://"):
        return 0, 0
    try:
        import psutil  # type: ignore[import-untyped]

        fs = psutil.disk_usage(refs.root_dir)
    except (OSError, LaminaError):
        return 0, 0  # a daemon in another mount namespace: its disk is not ours to stat
    return int(fs.free), int(fs.total)


__all__ = ["categories", "disk_usage"]
