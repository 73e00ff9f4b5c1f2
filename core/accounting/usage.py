"""Disk accounting: sizes, shared and unique bytes, reclaimable space, what frees what.

Everything comes from the index in a few queries (the ``size`` column is the bytes of a
layer's ``diff/`` on disk, hardlinks once); the filesystem is asked only for the store's
free space and for the few blocks around layers and configs that a removal would free.

Numbers mean one thing each:

* an image's ``size`` is the sum of its layers; ``shared_size`` the part whose chainIDs
  other images use too; ``unique_size = size - shared_size`` (Docker's definitions).
* ``frees`` is what removing it alone would free *now*: the layers that nothing else
  (no other image, no cache entry) references, plus its config, plus the directory
  blocks around those layers. It is what ``rmi`` / prune would report.
* a category's ``reclaimable`` is exactly the ``reclaimable_bytes`` of the default
  prune for it (``image prune``, ``builder prune``; orphans and leftovers go with any
  prune), and the total is that of ``system prune``. ``reclaimable_all`` is the same
  with ``-a``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from lamina.core.accounting.graph import (
    CacheRow,
    Liveness,
    RefGraph,
)
from lamina.core.accounting.plans import (
    PrunePlan,
    PruneRequest,
    Sizer,
    build_plan,
)
from lamina.core.digest import is_digest
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
        size: bytes of its ``diff/`` on disk.
        created: when it was committed.
        created_by: the instruction that made it.
        images: IDs of images whose stack contains it.
        cache: keys of cache entries whose stack contains it.
    """

    chain_id: str
    size: int
    created: float
    created_by: str
    images: tuple[str, ...]
    cache: tuple[str, ...]

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


@dataclass(frozen=True)
class CategoryUsage:
    """A ``system df`` row.

    Attributes:
        name: ``images``, ``build_cache``, ``orphan_layers`` or ``leftovers``.
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
            "cache": [asdict(c) for c in self.cache],
            "dangling": list(self.dangling),
            "orphans": list(self.orphans),
            "layers_size": self.layers_size,
            "reclaimable_bytes": self.reclaimable,
            "reclaimable_all_bytes": self.reclaimable_all,
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
    image_chains = {i: graph.chain(img.top_layer) for i, img in graph.images.items()}
    cache_chains = {k: graph.chain(e.top_layer) for k, e in graph.cache.items()}
    users_images: dict[str, list[str]] = {}
    for image_id in sorted(image_chains):
        for c in image_chains[image_id]:
            users_images.setdefault(c, []).append(image_id)
    users_cache: dict[str, list[str]] = {}
    for key in sorted(cache_chains):
        for c in cache_chains[key]:
            users_cache.setdefault(c, []).append(key)

    live = Liveness(graph)
    blob_refs = graph.blob_refs()

    images: list[ImageUsage] = []
    for image in graph.images.values():
        chain = image_chains[image.id]
        size = sum(graph.layers[c].size for c in chain)
        shared = sum(graph.layers[c].size for c in chain if len(users_images[c]) > 1)
        images.append(
            ImageUsage(
                image.id,
                image.tags,
                image.created,
                size,
                shared,
                size - shared,
                bytes_freed(graph, live, blob_refs, sizer, image.top_layer, {image.id}),
                len(chain),
            )
        )
    images.sort(key=lambda i: (-i.created, i.id))

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
                bytes_freed(graph, live, blob_refs, sizer, e.top_layer, entry_configs(e)),
                e.top_layer,
            )
        )
    cache.sort(key=lambda c: (-c.last_used, c.key))

    layers = tuple(
        LayerUsage(
            row.chain_id,
            row.size,
            row.created,
            row.created_by,
            tuple(users_images.get(row.chain_id, ())),
            tuple(users_cache.get(row.chain_id, ())),
        )
        for row in sorted(graph.layers.values(), key=lambda r: (r.created, r.chain_id))
    )
    orphans = tuple(layer.chain_id for layer in layers if layer.orphan)

    def plan(kind: str, all_: bool) -> PrunePlan:
        return build_plan(graph, PruneRequest(kind, all=all_), now, sizer, leftovers)

    # A system prune removes images first, exactly as an image prune would, so its
    # image rows are the image prune's; the cache rows depend on the order, so the
    # build cache gets plans of its own.
    system_plan, system_plan_all = plan("system", False), plan("system", True)
    image_plan, image_plan_all = system_plan, system_plan_all
    cache_plan, cache_plan_all = plan("builder", False), plan("builder", True)

    def attributed(p: PrunePlan, what: str) -> int:
        rows = p.images if what == "images" else p.cache
        return sum(r.bytes for r in rows)

    orphan_bytes = sum(p.bytes for p in image_plan.layers if p.reason == "referenced by nothing")
    leftover_bytes = sum(left.bytes for left in leftovers)
    image_layers = {c for chain in image_chains.values() for c in chain}
    cache_only = {c for chain in cache_chains.values() for c in chain} - image_layers
    categories = (
        CategoryUsage(
            "images",
            len(graph.images),
            sum(1 for i in graph.images.values() if i.tags),
            sum(graph.layers[c].size for c in image_layers),
            attributed(image_plan, "images"),
            attributed(image_plan_all, "images"),
        ),
        CategoryUsage(
            "build_cache",
            len(graph.cache),
            sum(1 for c in cache if c.shared),
            sum(graph.layers[c].size for c in cache_only),
            attributed(cache_plan, "cache"),
            attributed(cache_plan_all, "cache"),
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
    fs_free = fs_total = 0
    if home is not None:
        try:
            fs = psutil.disk_usage(str(home))
            fs_free, fs_total = int(fs.free), int(fs.total)
        except OSError as exc:
            raise StoreError(f"{home}: cannot read free space: {exc.strerror}") from exc
    return DiskUsage(
        images=tuple(images),
        layers=layers,
        cache=tuple(cache),
        dangling=tuple(i.id for i in images if i.dangling),
        orphans=orphans,
        categories=categories,
        layers_size=sum(row.size for row in graph.layers.values()),
        reclaimable=system_plan.reclaimable_bytes,
        reclaimable_all=system_plan_all.reclaimable_bytes,
        fs_free=fs_free,
        fs_total=fs_total,
        home=str(home) if home is not None else "",
    )


def _parent_layer(graph: RefGraph, top: str | None) -> str | None:
    if top is None or top not in graph.layers:
        return None
    return graph.layers[top].parent


def entry_configs(entry: CacheRow) -> set[str]:
    return {d for d in (entry.result, entry.parent) if is_digest(d)}


def bytes_freed(
    graph: RefGraph,
    live: Liveness,
    blob_refs: dict[str, int],
    sizer: Sizer,
    top: str | None,
    configs: set[str],
) -> int:
    """Bytes of the layers only ``top`` keeps, plus configs only this object references."""
    total = sum(sizer.layer(graph, c) for c in live.would_free([top]))
    return total + sum(sizer.blob(d) for d in configs if blob_refs.get(d, 0) == 1)
