"""Disk accounting: sizes, shared and unique bytes, reclaimable space, what frees what.

Everything comes from the index in a few queries; the filesystem is asked only for the
store's free space and for the few blocks around layers and configs that a removal
would free on disk.

Sizes are Docker's: a layer's ``size`` is the bytes of its files as Docker counts them
(moby's ``directory.Size`` of the layer's diff, which ``docker images``, ``history`` and
``system df`` show), configs count nothing. What the store occupies on disk (blocks,
hardlinks once, with the directories around layers and the config files) is a second
figure, kept apart and always labelled so: ``disk`` on a layer, ``layers_disk`` and
``reclaimable_disk`` on the whole.

Numbers mean one thing each:

* an image's ``size`` is the sum of its layers; ``shared_size`` the part whose chainIDs
  other images use too; ``unique_size = size - shared_size`` (Docker's definitions).
* ``frees`` is what removing it alone would free *now*: the layers that nothing else
  (no other image, no cache entry) references. It is what ``rmi`` / prune would report.
* a category's ``reclaimable`` is exactly the ``reclaimable_bytes`` of the default
  prune for it (``image prune``, ``builder prune``; orphans and leftovers go with any
  prune), and the total is that of ``system prune``. ``reclaimable_all`` is the same
  with ``-a``. A prune frees only what the category counts, so ``reclaimable`` never
  exceeds ``size``. (A Docker Engine's rows use Docker's own definitions instead, so
  they read as ``docker system df`` does: see ``lamina.core.docker.usage``.)
* ``prunes`` says, per prune command, the bytes and items its plan removes: the one
  list the CLI and the Disk view show.

The ``containers`` and ``volumes`` rows exist for both engines; lamina's own store has
neither, so there they read 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from lamina.core.accounting.graph import (
    Liveness,
    RefGraph,
)
from lamina.core.accounting.plans import (
    PrunePlan,
    PruneRequest,
    Sizer,
    build_plan,
)
from lamina.core.errors import StoreError


@dataclass(frozen=True)
class ImageUsage:
    """One image's bytes.

    Attributes:
        id: image ID.
        tags: its tags (empty when dangling).
        created: config ``created``.
        size: sum of its layers' sizes.
        shared_size: bytes of its layers that other images use too.
        unique_size: ``size - shared_size``.
        frees: bytes removing it alone would free now (cache entries count as users).
        layers: how many layers it has.
    """

    id: str
    tags: tuple[str, ...]
    created: float
    size: int
    shared_size: int
    unique_size: int
    frees: int
    layers: int

    @property
    def dangling(self) -> bool:
        return not self.tags


@dataclass(frozen=True)
class LayerUsage:
    """One layer's bytes and who uses it.

    Attributes:
        chain_id: the layer.
        size: its Docker size (its files' bytes).
        created: when it was committed.
        created_by: the instruction that made it.
        images: IDs of images whose stack contains it.
        cache: keys of cache entries whose stack contains it.
        disk: bytes its files occupy on disk (0 where the engine does not say).
    """

    chain_id: str
    size: int
    created: float
    created_by: str
    images: tuple[str, ...]
    cache: tuple[str, ...]
    disk: int = 0

    @property
    def orphan(self) -> bool:
        return not self.images and not self.cache


@dataclass(frozen=True)
class CacheUsage:
    """One build cache entry.

    Attributes:
        key: the cache key.
        instruction: the step, as written.
        size: bytes of the layer the step produced (0 for a metadata step).
        created: when it was recorded.
        last_used: when it last hit.
        use_count: how many times it hit.
        shared: whether an image uses its top layer.
        frees: bytes removing it alone would free now.
        top_layer: the chainID of its resulting stack.
        record_type: for a BuildKit record (a Docker Engine's build cache), BuildKit's
            type (``regular``, ``source.local``, ``exec.cachemount``, ``frontend``...);
            "" for lamina's own entries. The fields below are BuildKit's too, as
            ``docker buildx du --verbose`` shows them.
        description: what BuildKit says made it ("" when it says nothing).
        parents: the records it stands on.
        in_use: a running build holds it (no prune removes it: not reclaimable).
    """

    key: str
    instruction: str
    size: int
    created: float
    last_used: float
    use_count: int
    shared: bool
    frees: int
    top_layer: str | None
    record_type: str = ""
    description: str = ""
    parents: tuple[str, ...] = ()
    in_use: bool = False


@dataclass(frozen=True)
class ContainerUsage:
    """One container's writable layer.

    Attributes:
        id: container ID.
        name: its name.
        image: the image it was created from, as named.
        image_id: that image's ID.
        state: Docker's state word (``running``, ``exited``...).
        active: running, paused or restarting (``container prune`` keeps it).
        size: bytes of its writable layer.
        created: unix time.
        volumes: the volumes it mounts.
    """

    id: str
    name: str
    image: str
    image_id: str
    state: str
    active: bool
    size: int
    created: float
    volumes: tuple[str, ...]


@dataclass(frozen=True)
class VolumeUsage:
    """One volume.

    Attributes:
        name: volume name.
        anonymous: Docker named it (``VOLUME`` or ``-v /path``), not the user.
        size: bytes of its data (-1 when Docker does not know).
        links: how many containers use it.
        containers: IDs of those containers.
        created: unix time.
    """

    name: str
    anonymous: bool
    size: int
    links: int
    containers: tuple[str, ...]
    created: float


@dataclass(frozen=True)
class PruneEstimate:
    """What one prune command would remove now, from its plan.

    Attributes:
        command: the command as typed (``image prune -a``).
        bytes: ``reclaimable_bytes`` of its plan.
        items: how many objects it removes (containers, volumes, images, cache entries).
    """

    command: str
    bytes: int
    items: int


def estimate(command: str, plan: PrunePlan) -> PruneEstimate:
    """The :class:`PruneEstimate` of a plan."""
    items = len(plan.containers) + len(plan.volumes) + len(plan.images) + len(plan.cache)
    return PruneEstimate(command, plan.reclaimable_bytes, items)


@dataclass(frozen=True)
class CategoryUsage:
    """A ``system df`` row.

    Attributes:
        name: ``images``, ``containers``, ``volumes``, ``build_cache``, ``orphan_layers``
            or ``leftovers``.
        count: how many.
        active: how many are in use (tagged images, cache entries shared with images).
        size: bytes, each layer counted once within the category.
        reclaimable: what the default prune for it frees.
        reclaimable_all: what it frees with ``-a`` / ``--all``.
    """

    name: str
    count: int
    active: int
    size: int
    reclaimable: int
    reclaimable_all: int


@dataclass(frozen=True)
class CacheMountUsage:
    """One ``RUN --mount=type=cache`` directory (``exec.cachemount`` in BuildKit).

    Attributes:
        id: what it is shared by.
        mount_id: the id (or target) RUN asked for.
        sharing: ``shared``, ``private`` or ``locked``.
        size: bytes it holds.
        created: when it was made.
        last_used: when a RUN last used it.
        use_count: how many RUNs used it.
        in_use: a build uses it now.
    """

    id: str
    mount_id: str
    sharing: str
    size: int
    created: float
    last_used: float
    use_count: int
    in_use: bool


@dataclass(frozen=True)
class DiskUsage:
    """The whole store's accounting.

    Attributes:
        images, layers, cache: per object.
        dangling: IDs of images without a tag.
        orphans: chainIDs of layers nothing references.
        categories: the summary rows.
        layers_size: bytes of every layer, each once.
        reclaimable: what ``system prune`` frees.
        reclaimable_all: what ``system prune -a`` frees.
        fs_free, fs_total: the store filesystem's free and total bytes.
        home: the store directory.
        containers, volumes: per object (a Docker Engine's; none in lamina's store).
        prunes: what each prune command would remove now.
        cache_mounts: ``RUN --mount=type=cache`` directories (``builder prune`` and
            ``system prune`` remove them).
        layers_disk: what every layer's files occupy on disk (0 where not known), files
            that layers share counted once.
        reclaimable_disk: what ``system prune`` frees on disk (layer directories,
            configs, leftovers).
        reclaimable_all_disk: the same for ``system prune -a``.
        shared_disk: the part of ``layers_disk`` that several layers share (identical
            files stored once, by hardlink), each file once.
        dedup_saved: what storing identical files once saves: the bytes a copy per
            layer would add to ``layers_disk``.
    """

    images: tuple[ImageUsage, ...]
    layers: tuple[LayerUsage, ...]
    cache: tuple[CacheUsage, ...]
    dangling: tuple[str, ...]
    orphans: tuple[str, ...]
    categories: tuple[CategoryUsage, ...]
    layers_size: int
    reclaimable: int
    reclaimable_all: int
    fs_free: int
    fs_total: int
    home: str
    containers: tuple[ContainerUsage, ...] = ()
    volumes: tuple[VolumeUsage, ...] = ()
    prunes: tuple[PruneEstimate, ...] = ()
    cache_mounts: tuple[CacheMountUsage, ...] = ()
    layers_disk: int = 0
    reclaimable_disk: int = 0
    reclaimable_all_disk: int = 0
    shared_disk: int = 0
    dedup_saved: int = 0

    def category(self, name: str) -> CategoryUsage:
        """The summary row called ``name``."""
        for c in self.categories:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; ``reclaimable_bytes`` is what ``system prune`` frees."""
        return {
            "home": self.home,
            "categories": [asdict(c) for c in self.categories],
            "images": [
                asdict(i) | {"tags": list(i.tags), "dangling": i.dangling} for i in self.images
            ],
            "layers": [
                asdict(layer)
                | {
                    "images": list(layer.images),
                    "cache": list(layer.cache),
                    "orphan": layer.orphan,
                }
                for layer in self.layers
            ],
            "cache": [asdict(c) | {"parents": list(c.parents)} for c in self.cache],
            "containers": [asdict(c) | {"volumes": list(c.volumes)} for c in self.containers],
            "volumes": [asdict(v) | {"containers": list(v.containers)} for v in self.volumes],
            "prunes": [asdict(p) for p in self.prunes],
            "dangling": list(self.dangling),
            "orphans": list(self.orphans),
            "layers_size": self.layers_size,
            "reclaimable_bytes": self.reclaimable,
            "reclaimable_all_bytes": self.reclaimable_all,
            "layers_disk": self.layers_disk,
            "reclaimable_disk_bytes": self.reclaimable_disk,
            "reclaimable_all_disk_bytes": self.reclaimable_all_disk,
            "shared_disk": self.shared_disk,
            "dedup_saved": self.dedup_saved,
            "fs_free": self.fs_free,
            "fs_total": self.fs_total,
        }


def account(
    graph: RefGraph,
    now: float,
    sizer: Sizer,
    leftovers: list[Any],
    home: Path | None = None,
) -> DiskUsage:
    """Accounting over loaded references (pure apart from ``sizer``).

    Args:
        graph: the references.
        now: the clock.
        sizer: where bytes and labels come from.
        leftovers: debris found on disk (the embedded store's; none for Docker).
        home: the store directory whose filesystem's free space to report, if any.
    """
    users = _Users.of(graph)
    live = Liveness(graph)
    images = _image_usages(graph, users, live, sizer)
    cache = _cache_usages(graph, live, sizer)
    layers = _layer_usages(graph, users)
    orphans = tuple(layer.chain_id for layer in layers if layer.orphan)
    plans = _Plans.of(graph, now, sizer, leftovers)
    fs_free, fs_total = _free_space(home)
    return DiskUsage(
        images=images,
        layers=layers,
        cache=cache,
        dangling=tuple(i.id for i in images if i.dangling),
        orphans=orphans,
        categories=_categories(graph, users, cache, orphans, plans, leftovers),
        layers_size=sum(row.size for row in graph.layers.values()),
        reclaimable=plans.system.reclaimable_bytes,
        reclaimable_all=plans.system_all.reclaimable_bytes,
        fs_free=fs_free,
        fs_total=fs_total,
        home=str(home) if home is not None else "",
        prunes=plans.estimates(),
        layers_disk=sum(row.disk for row in graph.layers.values()),
        reclaimable_disk=plans.system.disk_bytes,
        reclaimable_all_disk=plans.system_all.disk_bytes,
    )


@dataclass(frozen=True)
class _Users:
    """Which images and cache entries stand on which layers.

    Attributes:
        image_chains: image ID -> its layers, top first.
        cache_chains: cache key -> its layers, top first.
        images: chainID -> IDs of the images whose stack holds it (sorted).
        cache: chainID -> keys of the cache entries whose stack holds it (sorted).
    """

    image_chains: dict[str, list[str]]
    cache_chains: dict[str, list[str]]
    images: dict[str, list[str]]
    cache: dict[str, list[str]]

    @classmethod
    def of(cls, graph: RefGraph) -> _Users:
        image_chains = {i: graph.chain(img.top_layer) for i, img in graph.images.items()}
        cache_chains = {k: graph.chain(e.top_layer) for k, e in graph.cache.items()}
        return cls(image_chains, cache_chains, _by_layer(image_chains), _by_layer(cache_chains))

    def image_layers(self) -> set[str]:
        """Every layer some image stands on."""
        return {c for chain in self.image_chains.values() for c in chain}

    def cache_only_layers(self) -> set[str]:
        """Layers only cache entries stand on."""
        return {c for chain in self.cache_chains.values() for c in chain} - self.image_layers()


def _by_layer(chains: dict[str, list[str]]) -> dict[str, list[str]]:
    """Inverts owner -> layers into layer -> owners, owners sorted."""
    users: dict[str, list[str]] = {}
    for owner in sorted(chains):
        for c in chains[owner]:
            users.setdefault(c, []).append(owner)
    return users


def _image_usages(
    graph: RefGraph, users: _Users, live: Liveness, sizer: Sizer
) -> tuple[ImageUsage, ...]:
    """Each image's size, shared and unique bytes, and what removing it frees; newest first."""
    images: list[ImageUsage] = []
    for image in graph.images.values():
        chain = users.image_chains[image.id]
        size = sum(graph.layers[c].size for c in chain)
        shared = sum(graph.layers[c].size for c in chain if len(users.images[c]) > 1)
        images.append(
            ImageUsage(
                image.id,
                image.tags,
                image.created,
                size,
                shared,
                size - shared,
                bytes_freed(graph, live, sizer, image.top_layer),
                len(chain),
            )
        )
    images.sort(key=lambda i: (-i.created, i.id))
    return tuple(images)


def _cache_usages(graph: RefGraph, live: Liveness, sizer: Sizer) -> tuple[CacheUsage, ...]:
    """Each cache entry's own layer, whether an image shares it, and what removing it
    frees; most recently used first."""
    image_live = Liveness(graph, cache=(), busy=False)
    state_tops: dict[str, str | None] = {i.id: i.top_layer for i in graph.images.values()}
    for e in graph.cache.values():
        state_tops.setdefault(e.result, e.top_layer)
    cache: list[CacheUsage] = []
    for e in graph.cache.values():
        parent_top = state_tops.get(e.parent, _parent_layer(graph, e.top_layer))
        own = e.top_layer is not None and e.top_layer != parent_top and e.top_layer in graph.layers
        cache.append(
            CacheUsage(
                e.key,
                e.instruction,
                graph.layers[e.top_layer].size if own and e.top_layer else 0,
                e.created,
                e.last_used,
                e.use_count,
                e.top_layer is not None and image_live.live(e.top_layer),
                bytes_freed(graph, live, sizer, e.top_layer),
                e.top_layer,
            )
        )
    cache.sort(key=lambda c: (-c.last_used, c.key))
    return tuple(cache)


def _layer_usages(graph: RefGraph, users: _Users) -> tuple[LayerUsage, ...]:
    """Each layer with the images and cache entries that stand on it; oldest first."""
    return tuple(
        LayerUsage(
            row.chain_id,
            row.size,
            row.created,
            row.created_by,
            tuple(users.images.get(row.chain_id, ())),
            tuple(users.cache.get(row.chain_id, ())),
            row.disk,
        )
        for row in sorted(graph.layers.values(), key=lambda r: (r.created, r.chain_id))
    )


@dataclass(frozen=True)
class _Plans:
    """The default prunes whose plans give the reclaimable figures.

    A system prune removes images first, exactly as an image prune would, so the image
    rows are the system prune's; the cache rows depend on that order, so the build
    cache gets plans of its own.
    """

    system: PrunePlan
    system_all: PrunePlan
    builder: PrunePlan
    builder_all: PrunePlan
    image: PrunePlan
    image_all: PrunePlan

    @classmethod
    def of(cls, graph: RefGraph, now: float, sizer: Sizer, leftovers: list[Any]) -> _Plans:
        def plan(kind: str, all_: bool) -> PrunePlan:
            return build_plan(graph, PruneRequest(kind, all=all_), now, sizer, leftovers)

        return cls(
            plan("system", False),
            plan("system", True),
            plan("builder", False),
            plan("builder", True),
            plan("image", False),
            plan("image", True),
        )

    def estimates(self) -> tuple[PruneEstimate, ...]:
        """The prune commands lamina's own store has, each with what it removes."""
        return (
            estimate("image prune", self.image),
            estimate("image prune -a", self.image_all),
            estimate("builder prune", self.builder),
            estimate("builder prune --all", self.builder_all),
            estimate("system prune", self.system),
            estimate("system prune -a", self.system_all),
        )


def _categories(
    graph: RefGraph,
    users: _Users,
    cache: tuple[CacheUsage, ...],
    orphans: tuple[str, ...],
    plans: _Plans,
    leftovers: list[Any],
) -> tuple[CategoryUsage, ...]:
    """The ``system df`` rows: images, containers and volumes (none here), build cache,
    orphan layers, leftovers."""
    orphan_bytes = sum(p.bytes for p in plans.system.layers if p.reason == "referenced by nothing")
    leftover_bytes = sum(left.bytes for left in leftovers)
    return (
        CategoryUsage(
            "images",
            len(graph.images),
            sum(1 for i in graph.images.values() if i.tags),
            sum(graph.layers[c].size for c in users.image_layers()),
            sum(p.bytes for p in plans.system.images),
            sum(p.bytes for p in plans.system_all.images),
        ),
        CategoryUsage("containers", 0, 0, 0, 0, 0),
        CategoryUsage("volumes", 0, 0, 0, 0, 0),
        CategoryUsage(
            "build_cache",
            len(graph.cache),
            sum(1 for c in cache if c.shared),
            sum(graph.layers[c].size for c in users.cache_only_layers()),
            sum(p.bytes for p in plans.builder.cache),
            sum(p.bytes for p in plans.builder_all.cache),
        ),
        CategoryUsage(
            "orphan_layers",
            len(orphans),
            0,
            sum(graph.layers[c].size for c in orphans),
            orphan_bytes,
            orphan_bytes,
        ),
        CategoryUsage(
            "leftovers", len(leftovers), 0, leftover_bytes, leftover_bytes, leftover_bytes
        ),
    )


def _free_space(home: Path | None) -> tuple[int, int]:
    """(free, total) bytes of the filesystem holding ``home``; zeros without one.

    Raises:
        StoreError: the filesystem cannot be asked.
    """
    if home is None:
        return 0, 0
    try:
        fs = psutil.disk_usage(str(home))
    except OSError as exc:
        raise StoreError(f"{home}: cannot read free space: {exc.strerror}") from exc
    return int(fs.free), int(fs.total)


def _parent_layer(graph: RefGraph, top: str | None) -> str | None:
    if top is None or top not in graph.layers:
        return None
    return graph.layers[top].parent


def bytes_freed(graph: RefGraph, live: Liveness, sizer: Sizer, top: str | None) -> int:
    """Docker's size of the layers only ``top`` keeps (configs count nothing)."""
    return sum(sizer.layer(graph, c) for c in live.would_free([top]))
