"""A layer's file changes, read from an image's saved tar stream.

Docker's API has no "list this layer's files" call; ``GET /images/{name}/get`` (``docker
save``) is the only way to see layer contents. The stream is read once, front to back,
without touching the disk: each layer tar inside it (``<id>/layer.tar`` in the legacy
format, ``blobs/sha256/<hex>`` in the OCI layout Docker 25+ writes) is hashed while its
headers are listed, and the hash (its diffID) says which layer of the image it was.
"""

from __future__ import annotations

import hashlib
import io
import logging
import posixpath
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from lamina.core.docker.client import call
from lamina.core.errors import ArchiveError
from lamina.core.model import FileChange

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True)
class TarEntry:
    """One header of a layer tar, path normalised to ``/a/b``."""

    path: str
    kind: str
    size: int
    mode: int
    uid: int
    gid: int
    link_target: str


class ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (the SDK's streamed body)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


class _HashingReader(io.RawIOBase):
    """Passes bytes through while hashing them, so one pass lists and identifies a layer."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(b))
        if not data:
            return 0
        self.hash.update(data)
        b[: len(data)] = data
        return len(data)

    def drain(self) -> str:
        while self._inner.read(1 << 20):
            pass
        return "sha256:" + self.hash.hexdigest()


def _kind(info: tarfile.TarInfo) -> str:
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    if info.isreg():
        return "file"
    return "other"


def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    path = posixpath.normpath("/" + name.lstrip("/"))
    # normpath keeps a leading "//" (POSIX allows it a special meaning); a tar never does.
    return "/" + path.lstrip("/")


def _list_layer(member: IO[bytes]) -> tuple[str, list[TarEntry] | None]:
    """The diffID of a layer tar and its entries (None if it is not a tar at all)."""
    reader = _HashingReader(member)
    entries: list[TarEntry] | None = []
    try:
        with tarfile.open(fileobj=io.BufferedReader(reader, 1 << 16), mode="r|") as tar:
            for info in tar:
                assert entries is not None
                link = info.linkname
                if info.islnk():
                    link = _norm(link)
                entries.append(
                    TarEntry(
                        path=_norm(info.name),
                        kind=_kind(info),
                        size=info.size if info.isreg() else 0,
                        mode=stat.S_IMODE(info.mode),
                        uid=info.uid,
                        gid=info.gid,
                        link_target=link,
                    )
                )
    except tarfile.TarError:
        entries = None
    return reader.drain(), entries


def read_layers(stream: IO[bytes], wanted: set[str]) -> dict[str, list[TarEntry]]:
    """List the layer tars of a saved image whose diffIDs are in ``wanted``.

    Args:
        stream: the ``docker save`` tar stream (read sequentially, once).
        wanted: diffIDs of the layers to list.

    Returns:
        diffID -> entries, for every wanted layer found in the stream.

    Raises:
        ArchiveError: the stream is not a tar.
    """
    found: dict[str, list[TarEntry]] = {}
    try:
        with tarfile.open(fileobj=stream, mode="r|") as outer:
            for info in outer:
                if not info.isreg():
                    continue
                name = info.name
                if not (name.endswith("/layer.tar") or name.startswith("blobs/sha256/")):
                    continue
                member = outer.extractfile(info)
                if member is None:
                    continue
                diff_id, entries = _list_layer(member)
                if entries is not None and diff_id in wanted:
                    found[diff_id] = entries
                    if len(found) == len(wanted):
                        break
    except tarfile.TarError as exc:
        raise ArchiveError(f"the image stream from Docker is not a tar: {exc}") from exc
    log.debug("listed %d of %d wanted layers from the saved image", len(found), len(wanted))
    return found


def saved_layers(api: Any, image_id: str, wanted: set[str]) -> dict[str, list[TarEntry]]:
    """Streams ``docker save`` of one image and lists the layers in ``wanted``.

    Nothing is written to disk; the stream is read once, front to back.

    Args:
        api: the SDK's low-level ``docker.APIClient``.
        image_id: the image to save.
        wanted: diffIDs of the layers to list.

    Returns:
        diffID -> entries, for every wanted layer the stream holds.

    Raises:
        EngineUnavailable: Docker failed while streaming.
        ArchiveError: the stream is not a tar.
    """
    stream = call(f"saving image {image_id}", api.get_image, image_id)
    return call(f"reading image {image_id}", read_layers, ChunkReader(stream), wanted)


def changes(lower: list[list[TarEntry]], layer: list[TarEntry]) -> list[FileChange]:
    """What ``layer`` adds, modifies and deletes on top of ``lower`` (base first).

    Args:
        lower: the entries of every layer below, base first.
        layer: the entries of the layer itself (AUFS whiteouts ``.wh.*``).

    Returns:
        One change per path, sorted by path.
    """
    below: dict[str, TarEntry] = {}
    for entries in lower:
        for entry in entries:
            parent, base = posixpath.split(entry.path)
            if base == OPAQUE:
                for path in [p for p in below if p.startswith(parent.rstrip("/") + "/")]:
                    del below[path]
            elif base.startswith(WHITEOUT_PREFIX):
                gone = posixpath.join(parent, base[len(WHITEOUT_PREFIX) :])
                for path in [p for p in below if p == gone or p.startswith(gone + "/")]:
                    del below[path]
            else:
                below[entry.path] = entry
    out: dict[str, FileChange] = {}
    for entry in layer:
        parent, base = posixpath.split(entry.path)
        if base == OPAQUE:
            continue
        if base.startswith(WHITEOUT_PREFIX):
            gone = posixpath.join(parent, base[len(WHITEOUT_PREFIX) :])
            old = below.get(gone)
            out[gone] = FileChange(
                path=gone,
                change="deleted",
                kind=old.kind if old else "file",
                size=old.size if old else 0,
                mode=old.mode if old else 0,
                uid=old.uid if old else 0,
                gid=old.gid if old else 0,
                link_target=old.link_target if old else "",
            )
            continue
        if entry.path == "/":
            continue
        out[entry.path] = FileChange(
            path=entry.path,
            change="modified" if entry.path in below else "added",
            kind=entry.kind,
            size=entry.size,
            mode=entry.mode,
            uid=entry.uid,
            gid=entry.gid,
            link_target=entry.link_target,
        )
    return [out[path] for path in sorted(out)]
