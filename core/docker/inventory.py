"""What a Docker daemon holds, read through the Engine API into lamina's records.

Images (inspect), their history, every layer (rebuilt from ``RootFS.Layers``), the
containers that use images, BuildKit's cache records and the files of a layer (from a
saved image stream). Image IDs are content addresses, so what was read about one never
changes and is remembered; a prune that removes images calls :meth:`Inventory.forget`.
The conversions themselves live in :mod:`lamina.core.docker.convert`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from lamina.core.accounting.graph import ContainerRow, LayerRow, VolumeRow
from lamina.core.digest import chain_ids, is_digest
from lamina.core.docker import convert
from lamina.core.docker.client import call
from lamina.core.docker.convert import BuildKitRecord, LayerRowView
from lamina.core.docker.save import changes, saved_layers
from lamina.core.errors import NotFound, UsageError
from lamina.core.model import FileChange, LayerInfo


@dataclass
class DockerRefs:
    """Everything a Docker disk report or prune plan needs, read once.

    Attributes:
        top: image IDs ``docker images`` lists (tagged and dangling).
        images: every image (intermediates too) by ID: its inspect output, with
            ``RepoTags`` as the listing gives them.
        history: every image's history rows by ID, oldest first.
        layers: every layer by chainID.
        containers: image ID -> IDs of containers (running or not) using it.
        build_cache: BuildKit cache records from ``system df``.
        layers_size: Docker's own ``LayersSize``.
        root_dir: the daemon's data root.
        image_layers: per image ID, its history rows that made layers, base first, each
            with the chainID it made.
        container_rows: every container by ID, with its writable layer's size.
        volumes: every volume by name, with its size and users.
        api_version: the API version spoken with the daemon.
        server_version: the daemon's version (``20.10.24``).
    """

    top: set[str]
    images: dict[str, dict[str, Any]]
    history: dict[str, list[dict[str, Any]]]
    layers: dict[str, LayerRow]
    containers: dict[str, list[str]]
    build_cache: list[BuildKitRecord]
    layers_size: int
    root_dir: str
    image_layers: dict[str, list[tuple[dict[str, Any], str]]] = field(default_factory=dict)
    container_rows: dict[str, ContainerRow] = field(default_factory=dict)
    volumes: dict[str, VolumeRow] = field(default_factory=dict)
    api_version: str = ""
    server_version: str = ""

    @property
    def volume_prune_takes_all(self) -> bool:
        """Whether ``volume prune`` removes named volumes too without ``all``.

        Checked on the daemons themselves: 20.10 (API 1.41) removes every unused local
        volume and rejects an ``all`` filter; 23.0 (API 1.42) and newer remove only
        anonymous ones unless ``all=true``.
        """
        return version_tuple(self.api_version) < (1, 42)


def version_tuple(version: str) -> tuple[int, ...]:
    """``1.41`` -> ``(1, 41)``; anything unreadable sorts first."""
    out: list[int] = []
    for part in version.split("."):
        digits = "".join(c for c in part if c.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out) or (0,)


class Inventory:
    """Reads images, layers, history and build cache from one daemon, remembering them.

    Args:
        api: the SDK's low-level ``docker.APIClient``.
    """

    def __init__(self, api: Any) -> None:
        self.api = api
        self._lock = threading.Lock()
        self._inspected: dict[str, dict[str, Any]] = {}
        self._history: dict[str, list[dict[str, Any]]] = {}
        self._changes: dict[str, list[FileChange]] = {}

    # -- images ------------------------------------------------------------------------

    def inspect_id(self, image_id: str) -> dict[str, Any]:
        """The inspect output of an image by its full ID (remembered)."""
        with self._lock:
            cached = self._inspected.get(image_id)
        if cached is not None:
            return cached
        data: dict[str, Any] = call(
            f"inspecting image {image_id}", self.api.inspect_image, image_id
        )
        self.remember(data)
        return data

    def resolve(self, ref: str) -> dict[str, Any]:
        """The inspect output of an image by tag, full ID or unique ID prefix.

        Raises:
            UsageError: an empty reference.
            NotFound: no such image.
        """
        if not ref:
            raise UsageError("an image reference is required")
        try:
            data: dict[str, Any] = call(f"image {ref}", self.api.inspect_image, ref)
        except NotFound as exc:
            raise NotFound(f"no such image: {ref}") from exc
        return data

    def remember(self, data: dict[str, Any]) -> None:
        """Keeps an inspect output for later lookups by ID."""
        with self._lock:
            self._inspected[data["Id"]] = data

    def knows(self, image_id: str) -> bool:
        """Whether ``image_id`` was inspected as an image since the last :meth:`forget`."""
        with self._lock:
            return image_id in self._inspected

    def forget(self) -> None:
        """Drops what was read about images (after Docker removed some)."""
        with self._lock:
            self._inspected.clear()
            self._history.clear()

    def listed(self, all_images: bool = False) -> list[dict[str, Any]]:
        """``docker images`` rows; with ``all_images``, the classic builder's intermediates too."""
        rows: list[dict[str, Any]]
        if all_images:
            rows = call("listing images", self.api.images, all=True)
        else:
            rows = call("listing images", self.api.images)
        return rows

    def all_image_ids(self) -> list[str]:
        """Every image including the classic builder's intermediates (its build cache)."""
        return [row["Id"] for row in self.listed(all_images=True)]

    # -- tags and removal --------------------------------------------------------------

    def tag(self, ref: str, new_tag: str) -> None:
        """Points ``new_tag`` (``repo[:tag]``) at the image ``ref``.

        Raises:
            UsageError: a malformed tag.
            NotFound: no such image.
        """
        image_id = self.resolve(ref)["Id"]
        repo, tag = convert.split_tag(new_tag)
        call(f"tagging {ref} as {new_tag}", self.api.tag, image_id, repo, tag)

    def remove(self, refs: list[str], force: bool = False) -> list[str]:
        """Untags or deletes images; returns ``Untagged: x`` / ``Deleted: sha256:…`` lines."""
        lines: list[str] = []
        for ref in refs:
            rows: list[dict[str, str]] = call(
                f"removing image {ref}", self.api.remove_image, ref, force=force
            )
            for row in rows or []:
                for key, value in row.items():
                    lines.append(f"{key}: {value}")
        return lines

    # -- history and layers ------------------------------------------------------------

    def history(self, image_id: str) -> list[dict[str, Any]]:
        """Docker's history rows for an image, oldest first (remembered)."""
        with self._lock:
            cached = self._history.get(image_id)
        if cached is not None:
            return cached
        rows: list[dict[str, Any]] = call(f"history of {image_id}", self.api.history, image_id)
        rows = list(reversed(rows))
        with self._lock:
            self._history[image_id] = rows
        return rows

    def layer_rows(self, data: dict[str, Any]) -> list[LayerRowView]:
        """An image's history rows oldest first, each with empty_layer and its chainID."""
        rows = self.history(data["Id"])
        counts = [self._layer_count(str(row.get("Id") or "")) for row in rows]
        empties = convert.empty_rows(data["Id"], rows, counts, len(convert.diff_ids(data)))
        return convert.layer_rows(data, rows, empties)

    def _layer_count(self, row_id: str) -> int | None:
        """How many layers the local image a history row names has (None: no such image)."""
        if not is_digest(row_id):
            return None
        try:
            return len(convert.diff_ids(self.inspect_id(row_id)))
        except NotFound:
            return None

    def layer_infos(self, data: dict[str, Any]) -> list[LayerInfo]:
        """An image's layers, base first, with sizes from its history."""
        return convert.layer_infos(data, self.layer_rows(data))

    def layers(self) -> list[LayerInfo]:
        """Every layer of every image (intermediates included), each chainID once."""
        seen: dict[str, LayerInfo] = {}
        for image_id in self.all_image_ids():
            try:
                data = self.inspect_id(image_id)
            except NotFound:
                continue  # removed while we listed
            for info in self.layer_infos(data):
                seen.setdefault(info.chain_id, info)
        return sorted(seen.values(), key=lambda layer: (layer.created, layer.chain_id))

    def layer_changes(self, chain_id: str) -> list[FileChange]:
        """What a layer adds, modifies and deletes, from the smallest image holding it.

        Raises:
            NotFound: no image holds the layer, or Docker's stream lacks it.
        """
        with self._lock:
            cached = self._changes.get(chain_id)
        if cached is not None:
            return cached
        holder: dict[str, Any] | None = None
        for image_id in self.all_image_ids():
            try:
                data = self.inspect_id(image_id)
            except NotFound:
                continue
            chains = chain_ids(convert.diff_ids(data))
            if chain_id in chains and (
                holder is None or len(chains) < len(convert.diff_ids(holder))
            ):
                holder = data
        if holder is None:
            raise NotFound(f"no such layer: {chain_id}")
        ids = convert.diff_ids(holder)
        index = chain_ids(ids).index(chain_id)
        wanted = set(ids[: index + 1])
        listings = saved_layers(self.api, holder["Id"], wanted)
        missing = wanted - set(listings)
        if missing:
            raise NotFound(f"layer {chain_id}: Docker's saved image lacks {min(missing)}")
        result = changes([listings[d] for d in ids[:index]], listings[ids[index]])
        with self._lock:
            self._changes[chain_id] = result
        return result

    # -- everything at once ------------------------------------------------------------

    def refs(self) -> DockerRefs:
        """Reads images, layers, containers and build cache from the daemon."""
        top_rows = self.listed()
        images: dict[str, dict[str, Any]] = {}
        history: dict[str, list[dict[str, Any]]] = {}
        layers: dict[str, LayerRow] = {}
        image_layers: dict[str, list[tuple[dict[str, Any], str]]] = {}
        for row in self.listed(all_images=True):
            try:
                data = dict(self.inspect_id(row["Id"]))
            except NotFound:
                continue  # removed while we listed
            data["RepoTags"] = [t for t in row.get("RepoTags") or [] if t != "<none>:<none>"]
            images[data["Id"]] = data
            history[data["Id"]] = self.history(data["Id"])
            view = self.layer_rows(data)
            image_layers[data["Id"]] = [(row, chain) for row, _e, chain in view if chain]
            for info in convert.layer_infos(data, view):
                if info.chain_id not in layers:
                    layers[info.chain_id] = LayerRow(
                        info.chain_id, info.parent, info.size, info.created, info.created_by
                    )
        df: dict[str, Any] = call("reading Docker's disk usage", self.api.df)
        daemon: dict[str, Any] = call("reading Docker's info", self.api.info)
        rows = [convert.container_row(c) for c in df.get("Containers") or []]
        containers: dict[str, list[str]] = {}
        users: dict[str, list[str]] = {}
        for ctr in rows:
            containers.setdefault(ctr.image_id, []).append(ctr.id)
            for name in ctr.volumes:
                users.setdefault(name, []).append(ctr.id)
        volumes = [
            convert.volume_row(v, tuple(users.get(str(v["Name"]), ())))
            for v in df.get("Volumes") or []
        ]
        return DockerRefs(
            top={row["Id"] for row in top_rows if row["Id"] in images},
            images=images,
            history=history,
            layers=layers,
            containers=containers,
            build_cache=[convert.buildkit_record(rec) for rec in df.get("BuildCache") or []],
            layers_size=int(df.get("LayersSize") or 0),
            root_dir=str(daemon.get("DockerRootDir") or ""),
            image_layers=image_layers,
            container_rows={c.id: c for c in rows},
            volumes={v.name: v for v in volumes},
            api_version=str(self.api.api_version),
            server_version=str(daemon.get("ServerVersion") or ""),
        )
