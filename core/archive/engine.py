"""``ArchiveEngine``: the ``Engine`` Protocol over an image archive, read where it lies.

``lamina docker-archive:PATH``, ``lamina oci-archive:PATH`` and ``lamina oci:DIR`` open
the app on this engine, so an archive can be explored without loading it into the
user's store (``--load`` loads it instead). The engine reads; it never writes: builds,
tags, removals, pulls, pushes and prunes are refused with one line saying to
``--load`` the archive first.

When opened, every layer is read once (decompressed, its tar hashed and its headers
summed), which checks each diffID against the config and gives each layer the size
dive gives it (the sum of its tar's file sizes). A layer's file listing, with content
digests, is read the first time it is needed and kept.

It sits beside the embedded and Docker engines and imports neither: what it shares
with them is the pure accounting (dive's analysis, the diff, disk accounting).
"""

from __future__ import annotations

import hashlib
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamina.core.accounting.diff import (
    ImageFiles,
    LayerFiles,
    layer_changes,
    layer_instructions,
    read_layer_files,
)
from lamina.core.accounting.dive import Analysis, analyze_entries
from lamina.core.accounting.graph import ImageRow, LayerRow, RefGraph
from lamina.core.accounting.plans import PrunePlan, PruneRequest, PruneResult, Sizer
from lamina.core.accounting.usage import DiskUsage, account
from lamina.core.archive.layout import (
    ArchivedImage,
    Opened,
    decompressed,
    open_archive,
    parse_json,
    read_images,
)
from lamina.core.digest import chain_ids, is_digest, sha256_bytes
from lamina.core.errors import ArchiveError, NotFound, UsageError
from lamina.core.events import BuildEvent
from lamina.core.model import (
    BuildRecord,
    BuildRequest,
    FileChange,
    HistoryEntry,
    ImageSummary,
    LayerInfo,
)
from lamina.core.registry.plan import PullPlan
from lamina.core.registry.progress import TransferEvent
from lamina.core.timestamps import parse_rfc3339

READ_ONLY = (
    "an archive opened in place is read-only: nothing here builds, tags, removes, pulls "
    "or prunes (open it with --load to work on it in the store)"
)


class _Hashing:
    """Reads through while hashing and counting what went by (the diffID and tar size)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.inner.read(n)
        self.hash.update(data)
        return data

    def drain(self) -> str:
        while self.read(1 << 20):
            pass
        return "sha256:" + self.hash.hexdigest()


def _familiar(tag: str) -> str:
    """``docker.io/library/busybox:latest`` -> ``busybox:latest``; adds ``:latest``."""
    name = tag
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    if "@" not in name and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


class _Image:
    def __init__(self, archived: ArchivedImage) -> None:
        self.archived = archived
        self.id = sha256_bytes(archived.config)
        config = parse_json(archived.config, f"{archived.where}: config")
        if not isinstance(config, dict):
            raise ArchiveError(f"{archived.where}: config is not a JSON object")
        self.config: dict[str, Any] = config
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if not isinstance(diff_ids, list) or not all(
            isinstance(d, str) and is_digest(d) for d in diff_ids
        ):
            raise ArchiveError(f"{archived.where}: config has malformed rootfs.diff_ids")
        if len(diff_ids) != len(archived.layers):
            raise ArchiveError(
                f"{archived.where}: {len(archived.layers)} layers but the config lists "
                f"{len(diff_ids)} diff_ids"
            )
        self.diff_ids: list[str] = list(diff_ids)
        self.chain: list[str] = chain_ids(self.diff_ids)
        self.tags = tuple(dict.fromkeys(_familiar(t) for t in archived.tags))
        self.created = parse_rfc3339(config.get("created"))


class ArchiveEngine:
    """The engine over one image archive, read in place.

    Args:
        path: a docker-archive or OCI archive tar (optionally compressed) or an OCI
            layout folder.
        label: how the app names the archive (``docker-archive:/tmp/x.tar``).
        cleanup: a folder to remove on close (a layout downloaded for ``docker://``).

    Raises:
        ArchiveError: not a readable image archive, or a layer that does not match the
            config's diffID.
    """

    name = "archive"

    def __init__(self, path: Path, label: str = "", cleanup: Path | None = None) -> None:
        self.path = Path(path)
        self.label = label or str(path)
        self._cleanup = cleanup
        self._lock = threading.Lock()
        self._files: dict[str, LayerFiles] = {}
        self._opened: Opened = open_archive(self.path)
        try:
            self._images = [_Image(a) for a in read_images(self._opened.source)]
            self._layers: dict[str, LayerInfo] = {}
            self._blob: dict[str, str] = {}  # chainID -> archive path
            self._load_layers()
        except BaseException:
            self.close()
            raise

    # -- reading ---------------------------------------------------------------------

    def _load_layers(self) -> None:
        src = self._opened.source
        for image in self._images:
            lines = self._layer_lines(image)
            for i, (chain_id, diff_id, blob) in enumerate(
                zip(image.chain, image.diff_ids, image.archived.layers, strict=True)
            ):
                if chain_id in self._layers:
                    continue
                where = f"{image.archived.where}: layer {i + 1} ({blob})"
                size = 0
                with src.open(blob) as raw, decompressed(raw, where) as stream:
                    reader = _Hashing(stream)
                    try:
                        with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                            for member in tar:
                                size += member.size if member.isreg() else 0
                    except tarfile.TarError as exc:
                        raise ArchiveError(f"{where}: not a layer tar ({exc})") from exc
                    got = reader.drain()
                if got != diff_id:
                    raise ArchiveError(
                        f"{where}: diffID {got} does not match the config's {diff_id}"
                    )
                self._blob[chain_id] = blob
                self._layers[chain_id] = LayerInfo(
                    chain_id=chain_id,
                    diff_id=diff_id,
                    parent=image.chain[i - 1] if i else None,
                    size=size,
                    created=image.created,
                    created_by=lines[i],
                )

    def _layer_lines(self, image: _Image) -> list[str]:
        made = [
            str(h.get("created_by", ""))
            for h in image.config.get("history") or []
            if isinstance(h, dict) and not h.get("empty_layer")
        ]
        return [made[i] if i < len(made) else "" for i in range(len(image.chain))]

    def _resolve(self, ref: str) -> _Image:
        if not ref:
            raise NotFound("no such image: (empty reference)")
        for image in self._images:
            if ref == image.id:
                return image
        try:
            familiar = _familiar(ref)
        except ValueError:
            familiar = ref
        tagged = [i for i in self._images if ref in i.tags or familiar in i.tags]
        if tagged:
            return tagged[0]
        prefix = ref.removeprefix("sha256:")
        matches = [i for i in self._images if prefix and i.id[7:].startswith(prefix)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise NotFound(f"{ref!r} matches {len(matches)} images in {self.label}")
        raise NotFound(f"no such image in {self.label}: {ref}")

    def _summary(self, image: _Image) -> ImageSummary:
        labels = (image.config.get("config") or {}).get("Labels") or {}
        return ImageSummary(
            id=image.id,
            tags=image.tags,
            created=image.created,
            size=sum(self._layers[c].size for c in dict.fromkeys(image.chain)),
            layers=tuple(image.chain),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        )

    def _layer_files(self, chain_id: str) -> LayerFiles:
        with self._lock:
            cached = self._files.get(chain_id)
        if cached is not None:
            return cached
        info = self._layers[chain_id]
        where = f"{self.label}: layer {chain_id}"
        with (
            self._opened.source.open(self._blob[chain_id]) as raw,
            decompressed(raw, where) as stream,
        ):
            files = read_layer_files(stream, chain_id, info.diff_id, info.created_by, where)
        with self._lock:
            self._files[chain_id] = files
        return files

    # -- the Engine Protocol ---------------------------------------------------------

    @property
    def differences(self) -> tuple[str, ...]:
        """What differs from a store: it is read in place, and read-only."""
        return (f"{self.label} is read in place: {READ_ONLY}",)

    def images(self) -> list[ImageSummary]:
        """Every image of the archive, newest first."""
        return sorted((self._summary(i) for i in self._images), key=lambda s: (-s.created, s.id))

    def image(self, ref: str) -> ImageSummary:
        """One image by tag, full ID or unique ID prefix; raises NotFound."""
        return self._summary(self._resolve(ref))

    def inspect(self, ref: str) -> dict[str, Any]:
        """The image config plus ``Id``, ``RepoTags``, ``DiffIDs``, ``ChainIDs``, ``Size``."""
        image = self._resolve(ref)
        out: dict[str, Any] = {
            "Id": image.id,
            "RepoTags": list(image.tags),
            "Parent": "",
            "Created": image.config.get("created", ""),
            "Size": self._summary(image).size,
            "DiffIDs": list(image.diff_ids),
            "ChainIDs": list(image.chain),
        }
        for key, value in image.config.items():
            out.setdefault(key, value)
        return out

    def history(self, ref: str) -> list[HistoryEntry]:
        """One entry per instruction, newest first (like ``docker history``)."""
        image = self._resolve(ref)
        layers = [self._layers[c] for c in image.chain]
        entries: list[HistoryEntry] = []
        n = 0
        for item in image.config.get("history") or []:
            if not isinstance(item, dict):
                continue
            empty = bool(item.get("empty_layer", False))
            layer = None
            if not empty and n < len(layers):
                layer = layers[n]
                n += 1
            entries.append(
                HistoryEntry(
                    created=parse_rfc3339(item.get("created")),
                    created_by=str(item.get("created_by", "")),
                    size=layer.size if layer else 0,
                    empty_layer=empty,
                    chain_id=layer.chain_id if layer else None,
                    comment=str(item.get("comment", "")),
                )
            )
        for layer in layers[n:]:
            entries.append(
                HistoryEntry(layer.created, layer.created_by, layer.size, False, layer.chain_id)
            )
        entries.reverse()
        return entries

    def layers(self) -> list[LayerInfo]:
        """Every layer of every image, each chainID once."""
        return list(self._layers.values())

    def _chain_to(self, chain_id: str) -> list[str]:
        for image in self._images:
            if chain_id in image.chain:
                return image.chain[: image.chain.index(chain_id) + 1]
        prefix = chain_id.removeprefix("sha256:")
        matches = [c for c in self._layers if prefix and c[7:].startswith(prefix)]
        if len(matches) == 1:
            return self._chain_to(matches[0])
        raise NotFound(f"no such layer in {self.label}: {chain_id}")

    def layer_changes(self, chain_id: str) -> list[FileChange]:
        """What the layer adds, modifies and deletes relative to the layers below it."""
        chain = self._chain_to(chain_id)
        files = [self._layer_files(c) for c in chain]
        return layer_changes(files[:-1], files[-1])

    def analyze(self, ref: str) -> Analysis:
        """dive's analysis, from the archive's layer tars."""
        image = self._resolve(ref)
        layers = [self._layer_files(c) for c in image.chain]
        # A whiteout stays an entry for dive, named as in the tar.
        listings = [
            [(_dive_path(e.path, e.kind), e.size, e.kind == "dir") for e in layer.entries]
            for layer in layers
        ]
        return analyze_entries(listings, ref)

    def image_files(self, ref: str) -> ImageFiles:
        """Every layer's files with content digests, base first."""
        image = self._resolve(ref)
        lines = layer_instructions(self.history(ref), image.chain)
        layers = []
        for chain_id, line in zip(image.chain, lines, strict=True):
            files = self._layer_files(chain_id)
            layers.append(LayerFiles(chain_id, files.diff_id, line, files.entries))
        return ImageFiles(ref, image.id, tuple(layers))

    def tag(self, ref: str, new_tag: str) -> None:
        raise UsageError(f"cannot tag: {READ_ONLY}")

    def rmi(self, refs: list[str], force: bool = False) -> list[str]:
        raise UsageError(f"cannot remove images: {READ_ONLY}")

    def build(
        self, request: BuildRequest, cancel: threading.Event | None = None
    ) -> Iterator[BuildEvent]:
        raise UsageError(f"cannot build: {READ_ONLY}")

    def builds(self, limit: int = 50) -> list[BuildRecord]:
        """None: an archive records no builds."""
        return []

    def plan_pull(self, ref: str, platform: str | None = None) -> PullPlan:
        raise UsageError(f"cannot pull: {READ_ONLY}")

    def pull(
        self, plan: PullPlan, cancel: threading.Event | None = None
    ) -> Iterator[TransferEvent]:
        raise UsageError(f"cannot pull: {READ_ONLY}")

    def push(self, ref: str, cancel: threading.Event | None = None) -> Iterator[TransferEvent]:
        raise UsageError(f"cannot push: {READ_ONLY}")

    def disk_usage(self) -> DiskUsage:
        """The archive's images and layers, accounted as a store's would be."""
        graph = RefGraph(
            layers={
                c: LayerRow(c, info.parent, info.size, info.created, info.created_by)
                for c, info in self._layers.items()
            },
            images={
                i.id: ImageRow(
                    i.id, i.chain[-1] if i.chain else None, i.created, i.created, None, i.tags
                )
                for i in self._images
            },
            cache={},
        )
        return account(graph, time.time(), Sizer(), [], None)

    def plan_prune(self, request: PruneRequest) -> PrunePlan:
        raise UsageError(f"cannot prune: {READ_ONLY}")

    def apply_prune(self, plan: PrunePlan) -> PruneResult:
        raise UsageError(f"cannot prune: {READ_ONLY}")

    def close(self) -> None:
        """Closes the archive and removes any temporary copy."""
        opened = getattr(self, "_opened", None)
        if opened is not None:
            opened.close()
        if self._cleanup is not None:
            import shutil

            shutil.rmtree(self._cleanup, ignore_errors=True)
            self._cleanup = None


def _dive_path(path: str, kind: str) -> str:
    """The tar name dive sees: whiteouts as ``.wh.NAME``, opaque markers as such."""
    if kind == "whiteout":
        head, base = path.rsplit("/", 1)
        return f"{head}/.wh.{base}"
    if kind == "opaque":
        return f"{path.rstrip('/')}/.wh..wh..opq"
    return path


if TYPE_CHECKING:
    from lamina.core.engine import Engine

    # mypy proves here that the class implements the Protocol.
    _IMPLEMENTS: type[Engine] = ArchiveEngine
