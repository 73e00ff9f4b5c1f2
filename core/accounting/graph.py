"""What references what: the reference graph both engines account and prune over.

Liveness follows docs/architecture.md: an image's ``top_layer`` and a cache entry's
``top_layer`` keep that layer and its whole parent chain; configs are kept by images
(their ID) and cache entries (``result``, and ``parent`` when it is a digest).

``Liveness`` counts, per layer, the direct references to it (roots whose top it is,
plus live layers whose parent it is), so releasing a root cascades down the chain in
O(what it frees). Pure data: the embedded store loads a graph from its index
(``embedded/store/graph.py``), the Docker backend builds one from the Engine's lists.

Containers and volumes (``ContainerRow``, ``VolumeRow``) exist only on a Docker Engine;
the embedded store has none, so its graph leaves them empty.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from lamina.core.digest import is_digest
from lamina.core.errors import StoreError


@dataclass(frozen=True)
class LayerRow:
    """A ``layers`` row, as much as accounting needs.

    Attributes:
        size: Docker's size of the layer (its files' bytes), what sizes and reclaimable
            bytes are counted in.
        disk: bytes its files occupy on disk, where the engine knows (else 0).
    """

    chain_id: str
    parent: str | None
    size: int
    created: float
    created_by: str = ""
    disk: int = 0


@dataclass(frozen=True)
class ImageRow:
    """An ``images`` row with its tags."""

    id: str
    top_layer: str | None
    created: float
    added: float
    parent: str | None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class CacheRow:
    """A ``cache`` row, without its (large) inputs."""

    key: str
    parent: str
    instruction: str
    result: str
    top_layer: str | None
    created: float
    last_used: float
    use_count: int


@dataclass(frozen=True)
class ContainerRow:
    """A container, as much as disk accounting and ``container prune`` need.

    Attributes:
        id: the container ID.
        name: its name, without Docker's leading ``/``.
        image_id: the image it was created from.
        image: the image as the user named it.
        state: Docker's state word (``created``, ``running``, ``paused``, ``exited``...).
        size: bytes of its writable layer (Docker's ``SizeRw``).
        created: unix time.
        labels: its labels.
        volumes: names of the volumes it mounts.
    """

    id: str
    name: str
    image_id: str
    image: str
    state: str
    size: int
    created: float
    labels: dict[str, str] = field(default_factory=dict)
    volumes: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        """Running, paused or restarting: what ``docker system df`` counts as active and
        what ``container prune`` leaves alone."""
        return any(word in self.state for word in ("running", "paused", "restarting"))


@dataclass(frozen=True)
class VolumeRow:
    """A volume, as much as disk accounting and ``volume prune`` need.

    Attributes:
        name: the volume name.
        driver: its driver (only ``local`` volumes are pruned).
        size: bytes of its data, or -1 when Docker does not know.
        links: how many containers (running or not) use it.
        created: unix time.
        labels: its labels.
        anonymous: made by Docker for a ``VOLUME`` or ``-v /path`` (no name given).
        options: it was created with driver options (Docker's prune skips those).
        containers: IDs of the containers that use it.
    """

    name: str
    driver: str
    size: int
    links: int
    created: float
    labels: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False
    options: bool = False
    containers: tuple[str, ...] = ()


@dataclass
class RefGraph:
    """Every reference in the store at one moment.

    Attributes:
        layers: by chainID.
        images: by image ID.
        cache: by cache key.
        live_build_start: start time of the oldest build that is still running in a
            live process, or None.
        busy_layers: layers a running build has produced or stands on (from its
            recorded steps); they count as references.
        busy_cache: cache entries a running build has used or recorded.
        busy_images: images a running build stands on (the parents of its entries).
        busy_unknown_base: a running build has not recorded a step yet, so the image
            it builds FROM is unknown and no image may go.
        loaded_at: when the graph was read.
        containers: by container ID (a Docker Engine's; none in the embedded store).
        volumes: by volume name (likewise).
        volumes_named_need_all: the engine's ``volume prune`` removes only anonymous
            volumes unless asked for all (Docker 23+, API 1.42); Docker 20.10 removes
            every unused local volume.
    """

    layers: dict[str, LayerRow]
    images: dict[str, ImageRow]
    cache: dict[str, CacheRow]
    live_build_start: float | None = None
    busy_layers: frozenset[str] = frozenset()
    busy_cache: frozenset[str] = frozenset()
    busy_images: frozenset[str] = frozenset()
    busy_unknown_base: bool = False
    loaded_at: float = field(default_factory=time.time)
    containers: dict[str, ContainerRow] = field(default_factory=dict)
    volumes: dict[str, VolumeRow] = field(default_factory=dict)
    volumes_named_need_all: bool = False

    def image_busy(self, image_id: str) -> bool:
        """Whether a running build may be standing on this image."""
        return self.busy_unknown_base or image_id in self.busy_images

    def chain(self, top: str | None) -> list[str]:
        """``top`` and the layers below it, top first (stops at a missing layer).

        Raises:
            StoreError: if the parent links loop (a corrupt index).
        """
        out: list[str] = []
        cur = top
        layers = self.layers
        # A chain longer than the whole table can only be a loop.
        limit = len(layers)
        while cur is not None:
            row = layers.get(cur)
            if row is None:
                break
            out.append(cur)
            if len(out) > limit:
                raise StoreError(f"index.db: layer parent links loop at {cur}")
            cur = row.parent
        return out

    def blob_refs(self) -> dict[str, int]:
        """How many images and cache entries reference each config digest."""
        refs: dict[str, int] = {}
        for image in self.images.values():
            refs[image.id] = refs.get(image.id, 0) + 1
        for entry in self.cache.values():
            for digest in {entry.result, entry.parent}:
                if is_digest(digest):
                    refs[digest] = refs.get(digest, 0) + 1
        return refs

    def children(self) -> dict[str, list[str]]:
        """Images by the image they were built FROM (``images.parent``)."""
        out: dict[str, list[str]] = {}
        for image in self.images.values():
            if image.parent:
                out.setdefault(image.parent, []).append(image.id)
        return out


class Liveness:
    """Direct reference counts over the live part of a graph.

    ``count[l]`` is the number of roots whose top layer is ``l`` plus the number of live
    layers whose parent is ``l``; a layer is live while its count is positive. Releasing
    a root decrements its top and cascades to parents that reach zero, so the cost is
    the number of layers it frees.

    Args:
        graph: the references.
        images: image IDs that count as roots (default: every image).
        cache: cache keys that count as roots (default: every entry).
        busy: whether the layers running builds use count as roots too.
        extra: more layers to count as roots (fresh ones inside the grace period).
    """

    def __init__(
        self,
        graph: RefGraph,
        images: Iterable[str] | None = None,
        cache: Iterable[str] | None = None,
        busy: bool = True,
        extra: Iterable[str] = (),
    ) -> None:
        self.graph = graph
        self.count: dict[str, int] = {}
        image_ids = graph.images if images is None else images
        cache_keys = graph.cache if cache is None else cache
        tops = [graph.images[i].top_layer for i in image_ids]
        tops += [graph.cache[k].top_layer for k in cache_keys]
        if busy:
            tops += sorted(graph.busy_layers)
        tops += list(extra)
        for top in tops:
            self._acquire(top)

    def _acquire(self, top: str | None) -> None:
        layers = self.graph.layers
        cur = top
        while cur is not None and cur in layers:
            fresh = cur not in self.count
            self.count[cur] = self.count.get(cur, 0) + 1
            if not fresh:
                break
            cur = layers[cur].parent

    def live(self, chain_id: str) -> bool:
        """Whether anything still references the layer."""
        return self.count.get(chain_id, 0) > 0

    def release(self, top: str | None) -> list[str]:
        """Drops one root reference to ``top``; returns the layers that died, top first."""
        return self._release(top, self.count)

    def would_free(self, tops: Iterable[str | None]) -> list[str]:
        """The layers releasing all of ``tops`` would free, without releasing them."""
        overlay = _Overlay(self.count)
        died: list[str] = []
        for top in tops:
            died += self._release(top, overlay)
        return died

    def _release(self, top: str | None, count: dict[str, int] | _Overlay) -> list[str]:
        layers = self.graph.layers
        died: list[str] = []
        cur = top
        while cur is not None and cur in layers:
            n = count.get(cur, 0) - 1
            if n < 0:
                raise StoreError(f"index.db: layer {cur} released more often than referenced")
            count[cur] = n
            if n > 0:
                break
            died.append(cur)
            cur = layers[cur].parent
        return died


class _Overlay:
    """A copy-on-write view of a count dict, so what-if questions leave it untouched."""

    def __init__(self, base: dict[str, int]) -> None:
        self.base = base
        self.changes: dict[str, int] = {}

    def get(self, key: str, default: int = 0) -> int:
        if key in self.changes:
            return self.changes[key]
        return self.base.get(key, default)

    def __setitem__(self, key: str, value: int) -> None:
        self.changes[key] = value
