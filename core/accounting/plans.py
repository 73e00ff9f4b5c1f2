"""Prune plans, pure: what a request would remove from a reference graph, and why.

``build_plan`` turns a ``RefGraph`` and a ``PruneRequest`` into a ``PrunePlan`` (containers,
volumes, images, cache entries, layers, config blobs, leftovers), each with its reason and
the bytes it frees. Both engines plan with it; applying a plan belongs to each engine
(``embedded/prune.py``, ``docker/prune.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from lamina.core.accounting.graph import ContainerRow, Liveness, RefGraph, VolumeRow
from lamina.core.errors import UsageError
from lamina.core.filters import (
    BUILDER_FILTERS,
    IMAGE_FILTERS,
    SYSTEM_FILTERS,
    Filter,
    has_label_filters,
    labels_match,
    parse_filters,
    prunes_every_unused_image,
    until_cutoff,
)

# Unreferenced data younger than this may belong to work that has not recorded its
# reference yet (a build between committing a layer and inserting its cache row).
DEFAULT_GRACE = 15 * 60.0


@dataclass(frozen=True)
class Leftover:
    """Debris on disk that no index row describes.

    Attributes:
        path: relative to the store home.
        kind: ``trash`` (a deletion interrupted), ``layer-dir`` (a layer directory
            without a row: a commit or prune interrupted), ``tmp`` (work of a process
            that is gone), or ``blob`` (a config nothing references).
        bytes: what removing it frees.
        reason: plain words.
        mtime: its modification time when found (a blob refreshed since is kept).
    """

    path: str
    kind: str
    bytes: int
    reason: str
    mtime: float = 0.0


KINDS = ("image", "builder", "system", "gc", "container", "volume")

# Docker's filters for the verbs that only a Docker Engine has (daemon 20.10: containers
# take until and labels, volumes labels only).
CONTAINER_FILTERS = frozenset({"until", "label", "label!"})
VOLUME_FILTERS = frozenset({"label", "label!"})


# A config written this recently may be between put_config and add_image in a build.
BLOB_GRACE = 60.0


_ALLOWED = {
    "image": IMAGE_FILTERS,
    "builder": BUILDER_FILTERS,
    "system": SYSTEM_FILTERS,
    "gc": frozenset[str](),
    "container": CONTAINER_FILTERS,
    "volume": VOLUME_FILTERS,
}


@dataclass(frozen=True)
class PruneRequest:
    """What to prune.

    Attributes:
        kind: ``image``, ``builder``, ``system``, ``container`` (stopped containers),
            ``volume`` (unused volumes), or ``gc`` (only what nothing references: orphan
            layers, unreferenced configs, leftovers).
        all: ``-a``: every unused image (not only dangling ones) / every cache entry
            (also those shared with images) / named volumes too, on an engine whose
            ``volume prune`` takes only anonymous ones by default.
        filters: ``key=value`` strings or parsed ``Filter``s (``until``, ``label``,
            ``label!``; builder takes only ``until``).
        keep_storage: ``--keep-storage`` in bytes (builder and system), or None.
        grace: seconds during which unreferenced fresh data is left alone.
        volumes: ``system prune --volumes``: unused volumes go too.
    """

    kind: str = "image"
    all: bool = False
    filters: tuple[str | Filter, ...] = ()
    keep_storage: int | None = None
    grace: float = DEFAULT_GRACE
    volumes: bool = False

    def checked(self) -> tuple[Filter, ...]:
        """Validates the request; returns its parsed filters.

        Raises:
            UsageError: an unknown kind or filter, a malformed value, a negative size.
        """
        if self.kind not in KINDS:
            raise UsageError(
                f"unknown prune kind {self.kind!r} (expected image, builder or system)"
            )
        if self.keep_storage is not None:
            if self.kind == "image":
                raise UsageError("--keep-storage applies to the build cache, not to images")
            if self.keep_storage < 0:
                raise UsageError("--keep-storage must not be negative")
            if self.kind in ("container", "volume"):
                raise UsageError(f"--keep-storage does not apply to {self.kind} prune")
        if self.volumes and self.kind != "system":
            raise UsageError("--volumes applies to system prune only")
        filters = parse_filters(self.filters, _ALLOWED[self.kind])
        if self.volumes and any(f.key == "until" for f in filters):
            # docker system prune says the same: volumes have no until filter.
            raise UsageError('The "until" filter is not supported with "--volumes"')
        return filters


@dataclass(frozen=True)
class PlannedContainer:
    """A stopped container the plan removes.

    Attributes:
        id: container ID.
        name: its name.
        image: the image it was created from, as named.
        state: Docker's state word.
        reason: why it goes.
        bytes: its writable layer.
    """

    id: str
    name: str
    image: str
    state: str
    reason: str
    bytes: int


@dataclass(frozen=True)
class PlannedVolume:
    """An unused volume the plan removes.

    Attributes:
        name: volume name.
        anonymous: whether Docker named it (a ``VOLUME`` or ``-v /path``).
        reason: why it goes.
        bytes: its data.
    """

    name: str
    anonymous: bool
    reason: str
    bytes: int


@dataclass(frozen=True)
class PlannedImage:
    """An image the plan removes.

    Attributes:
        id: image ID.
        tags: tags removed with it (only with ``all``).
        reason: why it goes.
        bytes: what removing it frees in Docker's sizes: the layers only it kept.
        disk_bytes: what that frees on disk: those layers' directories and its config.
    """

    id: str
    tags: tuple[str, ...]
    reason: str
    bytes: int
    disk_bytes: int = 0


@dataclass(frozen=True)
class PlannedCacheMount:
    """A ``RUN --mount=type=cache`` directory the plan removes (BuildKit's
    ``exec.cachemount`` records).

    Attributes:
        id: what it is shared by (``sha256:<hex>``).
        mount_id: the id it was asked for by.
        last_used: when a RUN last used it.
        reason: why it goes.
        bytes: its size.
    """

    id: str
    mount_id: str
    last_used: float
    reason: str
    bytes: int


@dataclass(frozen=True)
class PlannedCache:
    """A build cache entry the plan removes.

    Attributes:
        key: its cache key.
        instruction: the step it caches.
        last_used: when it was last hit (apply skips it if that changed).
        use_count: how often it was hit.
        reason: why it goes.
        bytes: what removing it frees in Docker's sizes (the layers only it kept).
        disk_bytes: what that frees on disk, with its configs.
    """

    key: str
    instruction: str
    last_used: float
    use_count: int
    reason: str
    bytes: int
    disk_bytes: int = 0


@dataclass(frozen=True)
class PlannedLayer:
    """A layer directory the plan removes (listed upper layers first).

    Attributes:
        chain_id: the layer.
        reason: which removal frees it, or that nothing referenced it.
        bytes: its Docker size (the ``size`` column).
        disk_bytes: its directory on disk (its files' blocks plus the directory,
            ``diff/`` and the tar-split), with the storage it shared with other layers
            that the plan removes too (identical files stored once), counted once.
        shared_disk_bytes: that shared part of ``disk_bytes``.
    """

    chain_id: str
    reason: str
    bytes: int
    disk_bytes: int = 0
    shared_disk_bytes: int = 0


@dataclass(frozen=True)
class PlannedBlob:
    """A config blob the plan removes.

    Attributes:
        digest: the config.
        reason: whose config it was.
        bytes: 0: Docker's sizes count layers only, never configs.
        disk_bytes: the file on disk.
    """

    digest: str
    reason: str
    bytes: int
    disk_bytes: int = 0


@dataclass(frozen=True)
class PrunePlan:
    """Exactly what ``apply_prune`` will delete, and why.

    Attributes:
        request: what was asked.
        created: when the plan was made.
        containers, volumes, images, cache, layers, blobs, leftovers: what goes.
    """

    request: PruneRequest
    created: float
    images: tuple[PlannedImage, ...] = ()
    cache: tuple[PlannedCache, ...] = ()
    layers: tuple[PlannedLayer, ...] = ()
    blobs: tuple[PlannedBlob, ...] = ()
    leftovers: tuple[Leftover, ...] = ()
    containers: tuple[PlannedContainer, ...] = ()
    volumes: tuple[PlannedVolume, ...] = ()
    cache_mounts: tuple[PlannedCacheMount, ...] = ()

    @property
    def reclaimable_bytes(self) -> int:
        """Bytes applying the plan frees in Docker's sizes (containers' writable layers,
        volumes, layers, blobs, leftovers and cache mounts, each once; a blob counts 0,
        a leftover and a cache mount what they occupy): what ``system df`` counts as
        reclaimable, never more than the sizes it lists."""
        return (
            sum(p.bytes for p in self.containers)
            + sum(p.bytes for p in self.volumes)
            + sum(p.bytes for p in self.layers)
            + sum(p.bytes for p in self.blobs)
            + sum(p.bytes for p in self.leftovers)
            + sum(p.bytes for p in self.cache_mounts)
        )

    @property
    def disk_bytes(self) -> int:
        """Bytes applying the plan frees on disk (blocks of layer directories, configs,
        leftovers and cache mounts, each once): what the store's filesystem gets back."""
        return (
            sum(p.disk_bytes for p in self.layers)
            + sum(p.disk_bytes for p in self.blobs)
            + sum(p.bytes for p in self.leftovers)
            + sum(p.bytes for p in self.cache_mounts)
        )

    @property
    def reclaimable(self) -> int:
        """Same as ``reclaimable_bytes``."""
        return self.reclaimable_bytes

    @property
    def empty(self) -> bool:
        return not (
            self.containers
            or self.volumes
            or self.images
            or self.cache
            or self.layers
            or self.blobs
            or self.leftovers
            or self.cache_mounts
        )

    def describe(self) -> list[str]:
        """One line per item, in deletion order, for a dry run or a confirmation."""
        lines = [
            f"container {p.id} ({p.name}, {p.image}, {p.state}, {p.bytes} bytes): {p.reason}"
            for p in self.containers
        ]
        lines += [f"volume {p.name} ({p.bytes} bytes): {p.reason}" for p in self.volumes]
        lines += [f"image {p.id}{_tags(p.tags)}: {p.reason}" for p in self.images]
        lines += [f"cache {p.key} ({p.instruction}): {p.reason}" for p in self.cache]
        lines += [
            f"layer {p.chain_id} ({p.bytes} bytes{_on_disk(p.disk_bytes)}): {p.reason}"
            for p in self.layers
        ]
        lines += [
            f"config {p.digest} ({p.disk_bytes} bytes on disk): {p.reason}" for p in self.blobs
        ]
        lines += [f"leftover {p.path} ({p.bytes} bytes): {p.reason}" for p in self.leftovers]
        lines += [
            f"cache mount {p.mount_id} ({p.bytes} bytes): {p.reason}" for p in self.cache_mounts
        ]
        return lines

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, with ``reclaimable_bytes``."""
        return {
            "kind": self.request.kind,
            "all": self.request.all,
            "filters": [str(f) for f in self.request.filters],
            "keep_storage": self.request.keep_storage,
            "volumes_requested": self.request.volumes,
            "created": self.created,
            "containers": [asdict(p) for p in self.containers],
            "volumes": [asdict(p) for p in self.volumes],
            "images": [asdict(p) | {"tags": list(p.tags)} for p in self.images],
            "cache": [asdict(p) for p in self.cache],
            "layers": [asdict(p) for p in self.layers],
            "blobs": [asdict(p) for p in self.blobs],
            "leftovers": [asdict(p) for p in self.leftovers],
            "cache_mounts": [asdict(p) for p in self.cache_mounts],
            "reclaimable_bytes": self.reclaimable_bytes,
            "disk_bytes": self.disk_bytes,
        }


@dataclass(frozen=True)
class Skipped:
    """Something planned that apply kept, and why (it became referenced, or is gone)."""

    kind: str  # "image" | "cache" | "layer" | "blob" | "leftover"
    id: str
    reason: str


@dataclass(frozen=True)
class PruneResult:
    """What ``apply_prune`` deleted.

    Attributes:
        untagged: tags removed.
        containers, volumes, images, cache, layers, blobs, leftovers: what was deleted
            (IDs, names, keys, paths).
        skipped: planned items kept because they changed since planning.
        reclaimed_bytes: bytes freed, in Docker's sizes (as ``reclaimable_bytes``).
        disk_reclaimed_bytes: bytes the store's filesystem got back (0 where the
            engine does not know).
    """

    containers: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    untagged: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    cache: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    blobs: tuple[str, ...] = ()
    leftovers: tuple[str, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    reclaimed_bytes: int = 0
    cache_mounts: tuple[str, ...] = ()
    disk_reclaimed_bytes: int = 0

    @property
    def reclaimed(self) -> int:
        """Same as ``reclaimed_bytes``."""
        return self.reclaimed_bytes

    def merged(self, other: PruneResult) -> PruneResult:
        """Both results as one (for several prunes in a row)."""
        return PruneResult(
            containers=self.containers + other.containers,
            volumes=self.volumes + other.volumes,
            untagged=self.untagged + other.untagged,
            images=self.images + other.images,
            cache=self.cache + other.cache,
            layers=self.layers + other.layers,
            blobs=self.blobs + other.blobs,
            leftovers=self.leftovers + other.leftovers,
            skipped=self.skipped + other.skipped,
            reclaimed_bytes=self.reclaimed_bytes + other.reclaimed_bytes,
            cache_mounts=self.cache_mounts + other.cache_mounts,
            disk_reclaimed_bytes=self.disk_reclaimed_bytes + other.disk_reclaimed_bytes,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, with ``reclaimed_bytes``."""
        out: dict[str, Any] = {f: list(getattr(self, f)) for f in _RESULT_FIELDS}
        out["skipped"] = [asdict(s) for s in self.skipped]
        out["reclaimed_bytes"] = self.reclaimed_bytes
        out["disk_reclaimed_bytes"] = self.disk_reclaimed_bytes
        return out


def _tags(tags: tuple[str, ...]) -> str:
    return f" ({', '.join(tags)})" if tags else ""


def _on_disk(disk: int) -> str:
    return f", {disk} on disk" if disk else ""


_RESULT_FIELDS = (
    "containers",
    "volumes",
    "untagged",
    "images",
    "cache",
    "layers",
    "blobs",
    "leftovers",
    "skipped",
)


@dataclass
class Sizer:
    """Where bytes and labels come from: the size columns plus a few stats for a store,
    or plain data (everything defaults to 0 / no labels) for a graph built by hand.

    Two measures, never mixed: Docker's (a layer's ``size``; configs count nothing),
    which sizes and reclaimable bytes are in, and the disk's (a layer's ``disk`` plus
    the blocks of its directory around ``diff/``, a config's file), which says what the
    filesystem gets back.

    Attributes:
        layer_extra: on-disk bytes of a layer's directory outside its files.
        blob: on-disk bytes of a config.
        labels: an image's labels.
        blob_mtime: when a config was last written.
        cache: on-disk bytes per layer, as computed.
        shared: makes, for one plan, a function giving the on-disk bytes of storage
            shared by several layers (identical files stored once) that removing a
            layer frees after the layers it was given before: a layer's ``disk``
            counts only what it alone occupies.
    """

    layer_extra: Callable[[str], int] = lambda _c: 0
    blob: Callable[[str], int] = lambda _d: 0
    labels: Callable[[str], dict[str, str]] = lambda _i: {}
    blob_mtime: Callable[[str], float] = lambda _d: 0.0
    cache: dict[str, int] = field(default_factory=dict)
    shared: Callable[[], Callable[[str], int]] = lambda: _nothing_shared

    def layer(self, graph: RefGraph, chain_id: str) -> int:
        """A layer's Docker size."""
        return graph.layers[chain_id].size

    def layer_disk(self, graph: RefGraph, chain_id: str) -> int:
        """What deleting a layer's directory frees on disk."""
        if chain_id not in self.cache:
            self.cache[chain_id] = graph.layers[chain_id].disk + self.layer_extra(chain_id)
        return self.cache[chain_id]


def _nothing_shared(_chain_id: str) -> int:
    return 0


def build_plan(
    graph: RefGraph,
    request: PruneRequest,
    now: float,
    sizer: Sizer | None = None,
    leftovers: Iterable[Leftover] = (),
    include_orphans: bool = True,
) -> PrunePlan:
    """The pure planning step over loaded references.

    Args:
        graph: the store's references.
        request: what to prune (validated here).
        now: the clock, for ``until=`` and the grace period.
        sizer: byte and label sources (the size column alone when None).
        leftovers: debris found on disk, passed through.
        include_orphans: also plan layers that nothing references.

    Returns:
        The plan.

    Raises:
        UsageError: for a bad request.
    """
    filters = request.checked()
    sizer = sizer or Sizer()
    cutoff = until_cutoff(filters, now)
    if request.kind in ("container", "volume"):
        return plan_containers_and_volumes(graph, request, now)
    live, orphans = _liveness(graph, now, request.grace)
    shared = sizer.shared()
    releases = _Releases(graph, live, sizer, now, request.grace, shared)
    images: list[PlannedImage] = []
    if request.kind in ("image", "system"):
        images = _plan_images(graph, request, filters, cutoff, sizer, releases)
    cache: list[PlannedCache] = []
    if request.kind in ("builder", "system"):
        # Images planned for removal no longer share their layers with the cache.
        kept = set(graph.images) - {p.id for p in images}
        cache = _plan_cache(graph, request, cutoff, kept, releases)
    # Orphans first (children before parents among them), then the released layers in
    # the order they died: a layer dies only after every live child died before it, so
    # the whole sequence deletes children before parents (the FK on layers.parent).
    planned_orphans: list[PlannedLayer] = []
    if include_orphans:
        for chain_id in orphans:
            frees = shared(chain_id)
            planned_orphans.append(
                PlannedLayer(
                    chain_id,
                    "referenced by nothing",
                    sizer.layer(graph, chain_id),
                    sizer.layer_disk(graph, chain_id) + frees,
                    frees,
                )
            )
    outside = (
        plan_containers_and_volumes(graph, request, now)
        if request.kind == "system"
        else PrunePlan(request, now)
    )
    return PrunePlan(
        request=replace(request, filters=filters),
        created=now,
        images=tuple(images),
        cache=tuple(cache),
        layers=tuple(planned_orphans + releases.layers),
        blobs=tuple(releases.blobs),
        leftovers=tuple(leftovers),
        containers=outside.containers,
        volumes=outside.volumes,
    )


def plan_containers_and_volumes(graph: RefGraph, request: PruneRequest, now: float) -> PrunePlan:
    """The containers and volumes part of a prune, in Docker's order.

    ``container`` removes every stopped container the filters match; ``volume`` every
    unused local volume without driver options (only the anonymous ones where
    ``graph.volumes_named_need_all`` and no ``all``); ``system`` the containers, then,
    with ``volumes``, the volumes no remaining container uses. Images and the build
    cache are planned by :func:`build_plan`.

    Raises:
        UsageError: for a bad request.
    """
    filters = request.checked()
    containers: list[PlannedContainer] = []
    if request.kind in ("container", "system"):
        containers = [
            PlannedContainer(
                c.id, c.name, c.image, c.state, _container_reason(c, filters), max(c.size, 0)
            )
            for c in _containers_to_prune(graph, filters, now)
        ]
    volumes: list[PlannedVolume] = []
    if request.kind == "volume" or (request.kind == "system" and request.volumes):
        removed = {p.id for p in containers}
        # system prune passes its filters to every part; volumes take labels only.
        label_filters = tuple(f for f in filters if f.key != "until")
        volumes = [
            PlannedVolume(v.name, v.anonymous, _volume_reason(v), max(v.size, 0))
            for v in _volumes_to_prune(
                graph, label_filters, removed, request.all and request.kind == "volume"
            )
        ]
    return PrunePlan(
        request=replace(request, filters=filters),
        created=now,
        containers=tuple(containers),
        volumes=tuple(volumes),
    )


def _containers_to_prune(
    graph: RefGraph, filters: tuple[Filter, ...], now: float
) -> list[ContainerRow]:
    """Stopped containers the filters match, oldest first (moby's ``ContainersPrune``)."""
    cutoff = until_cutoff(filters, now)
    chosen = [
        c
        for c in graph.containers.values()
        if not c.active
        and (cutoff is None or c.created < cutoff)
        and labels_match(filters, c.labels)
    ]
    return sorted(chosen, key=lambda c: (c.created, c.id))


def _container_reason(container: ContainerRow, filters: tuple[Filter, ...]) -> str:
    reason = f"stopped container ({container.state})"
    if any(f.key == "until" for f in filters):
        reason += " created before the until filter"
    return reason


def _volumes_to_prune(
    graph: RefGraph, filters: tuple[Filter, ...], removed_containers: set[str], all_: bool
) -> list[VolumeRow]:
    """Unused local volumes without driver options (moby's ``VolumesService.Prune``).

    A volume used only by containers the same prune removes is unused by then.
    """
    chosen = []
    for v in graph.volumes.values():
        users = set(v.containers) - removed_containers
        links = v.links - (len(v.containers) - len(users))
        if v.driver != "local" or v.options or users or links > 0:
            continue
        if graph.volumes_named_need_all and not all_ and not v.anonymous:
            continue
        if labels_match(filters, v.labels):
            chosen.append(v)
    return sorted(chosen, key=lambda v: (v.created, v.name))


def _volume_reason(volume: VolumeRow) -> str:
    return ("anonymous" if volume.anonymous else "named") + " volume no container uses"


class _Releases:
    """What removing the planned objects frees, counted down one removal at a time.

    Each removal releases its layer stack (a layer dies with its last reference) and
    its configs (a config goes with its last image or cache entry); the layers and
    configs that die are collected here, in the order they died.

    Args:
        graph: the references.
        live: their reference counts (released as the plan goes).
        sizer: byte sources.
        now: the clock.
        grace: the request's grace period.
        shared: this plan's count of shared storage (``Sizer.shared``).
    """

    def __init__(
        self,
        graph: RefGraph,
        live: Liveness,
        sizer: Sizer,
        now: float,
        grace: float,
        shared: Callable[[str], int] = _nothing_shared,
    ) -> None:
        self.graph = graph
        self.live = live
        self.sizer = sizer
        self.shared = shared
        self.blob_refs = graph.blob_refs()
        # A config refreshed this recently may be about to be referenced again.
        self.blob_fresh_after = now - min(grace, BLOB_GRACE)
        self.layers: list[PlannedLayer] = []
        self.blobs: list[PlannedBlob] = []

    def blob(self, digest: str, owner: str) -> int:
        """Drops ``owner``'s reference to a config; returns the bytes that frees on disk
        (in Docker's sizes a config frees nothing)."""
        if digest not in self.blob_refs:
            return 0
        self.blob_refs[digest] -= 1
        if self.blob_refs[digest] > 0:
            return 0
        if self.sizer.blob_mtime(digest) > self.blob_fresh_after:
            # Re-added moments ago (put_blob refreshes the mtime): a build may be about
            # to record an image or cache entry for it. The next prune takes it.
            return 0
        disk = self.sizer.blob(digest)
        self.blobs.append(PlannedBlob(digest, f"config of {owner}", 0, disk))
        return disk

    def stack(self, top: str | None, owner: str) -> tuple[int, int]:
        """Drops ``owner``'s reference to a layer stack.

        Returns:
            (bytes freed in Docker's sizes, bytes freed on disk).
        """
        freed = disk = 0
        for chain_id in self.live.release(top):
            size = self.sizer.layer(self.graph, chain_id)
            frees = self.shared(chain_id)
            on_disk = self.sizer.layer_disk(self.graph, chain_id) + frees
            self.layers.append(
                PlannedLayer(chain_id, f"only used by {owner}", size, on_disk, frees)
            )
            freed += size
            disk += on_disk
        return freed, disk


def _plan_images(
    graph: RefGraph,
    request: PruneRequest,
    filters: tuple[Filter, ...],
    cutoff: float | None,
    sizer: Sizer,
    releases: _Releases,
) -> list[PlannedImage]:
    """The images an image (or system) prune removes, releasing what each kept."""
    images: list[PlannedImage] = []
    # dangling=false asks for every unused image, as -a does.
    every = request.all or prunes_every_unused_image(filters)
    for image_id in _images_to_prune(graph, every, cutoff, filters, sizer):
        image = graph.images[image_id]
        reason = "unused image" if every and image.tags else "dangling image"
        if cutoff is not None:
            reason += " created before the until filter"
        owner = f"image {image_id}"
        freed, disk = releases.stack(image.top_layer, owner)
        disk += releases.blob(image.id, owner)
        images.append(PlannedImage(image_id, image.tags if every else (), reason, freed, disk))
    return images


def _plan_cache(
    graph: RefGraph,
    request: PruneRequest,
    cutoff: float | None,
    kept_images: set[str],
    releases: _Releases,
) -> list[PlannedCache]:
    """The cache entries a builder (or system) prune removes, least recently used first.

    With ``--keep-storage`` the removals stop once the cache's storage (the layers
    only cache entries keep) fits.
    """
    image_live = Liveness(graph, images=kept_images, cache=(), busy=False)
    candidates = [
        entry
        for entry in graph.cache.values()
        if entry.key not in graph.busy_cache
        and (request.all or not _shared(entry.top_layer, image_live))
        and (cutoff is None or entry.last_used < cutoff)
    ]
    # Least recently used first, then least frequently used (keep-storage order).
    candidates.sort(key=lambda e: (e.last_used, e.use_count, e.key))
    storage: int | None = None
    if request.keep_storage is not None:
        # The cache's storage, as ``system df`` reports it.
        live = releases.live
        storage = sum(
            graph.layers[c].size for c in live.count if live.live(c) and not image_live.live(c)
        )
    cache: list[PlannedCache] = []
    for entry in candidates:
        if storage is not None and storage <= (request.keep_storage or 0):
            break
        owner = f"cache entry {entry.key}"
        freed, disk = releases.stack(entry.top_layer, owner)
        disk += releases.blob(entry.result, owner)
        if entry.parent != entry.result:
            disk += releases.blob(entry.parent, owner)
        if storage is not None:
            storage -= freed
        reason = _cache_reason(request, cutoff, storage is not None)
        cache.append(
            PlannedCache(
                entry.key, entry.instruction, entry.last_used, entry.use_count, reason, freed, disk
            )
        )
    return cache


def _cache_reason(request: PruneRequest, cutoff: float | None, keep: bool) -> str:
    parts = ["build cache"]
    if cutoff is not None:
        parts.append("unused since the until filter")
    if keep:
        parts.append("least recently used beyond --keep-storage")
    return ", ".join(parts)


def _shared(top: str | None, image_live: Liveness) -> bool:
    return top is not None and image_live.live(top)


def _images_to_prune(
    graph: RefGraph,
    all_images: bool,
    cutoff: float | None,
    filters: tuple[Filter, ...],
    sizer: Sizer,
) -> list[str]:
    need_labels = has_label_filters(filters)
    chosen = {
        image.id
        for image in graph.images.values()
        if not graph.image_busy(image.id)
        and (all_images or not image.tags)
        and (cutoff is None or image.created < cutoff)
        and (not need_labels or labels_match(filters, sizer.labels(image.id)))
    }
    if not all_images:
        # A dangling image that a kept image was built FROM is still needed by it.
        for image in graph.images.values():
            if image.id in chosen:
                continue
            cur = image.parent
            seen: set[str] = set()
            while cur is not None and cur in graph.images and cur not in seen:
                seen.add(cur)
                chosen.discard(cur)
                cur = graph.images[cur].parent
    return sorted(chosen, key=lambda i: (graph.images[i].added, i))


def _liveness(graph: RefGraph, now: float, grace: float) -> tuple[Liveness, list[str]]:
    """References, with fresh unreferenced layers counted as roots; and the orphans.

    A layer younger than the grace period (or committed since a still-running build
    started) may be waiting for its cache row or image: it stays, and so does what it
    stands on. The orphans come children first.
    """
    live = Liveness(graph)
    protect_after = now - grace
    if graph.live_build_start is not None:
        protect_after = min(protect_after, graph.live_build_start - 1.0)
    fresh = [
        c for c, row in graph.layers.items() if row.created > protect_after and not live.live(c)
    ]
    if fresh:
        live = Liveness(graph, extra=fresh)
    orphans = [c for c in graph.layers if not live.live(c)]
    return live, _children_first(graph, orphans)


def _children_first(graph: RefGraph, chain_ids: list[str]) -> list[str]:
    """Orders layers so a child comes before its parent."""
    depth: dict[str, int] = {}

    def depth_of(chain_id: str) -> int:
        path: list[str] = []
        cur: str | None = chain_id
        while cur is not None and cur in graph.layers and cur not in depth:
            path.append(cur)
            cur = graph.layers[cur].parent
        base = depth.get(cur, 0) if cur is not None else 0
        for c in reversed(path):
            base += 1
            depth[c] = base
        return depth[chain_id]

    return sorted(chain_ids, key=lambda c: (-depth_of(c), c))


def plan_summary(plan: PrunePlan) -> str:
    """One line: counts and bytes (for logs and confirmations)."""
    return (
        f"{len(plan.images)} images, {len(plan.cache)} cache entries, {len(plan.layers)} layers,"
        f" {len(plan.blobs)} configs, {len(plan.leftovers)} leftovers:"
        f" {plan.reclaimable_bytes} bytes ({plan.disk_bytes} on disk)"
    )


def dumps(data: dict[str, Any]) -> str:
    """JSON text for ``--format json`` (stable key order)."""
    return json.dumps(data, indent=2, sort_keys=True)
