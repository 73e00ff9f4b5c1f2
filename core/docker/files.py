"""An image's files on a Docker Engine, for comparing images (``lamina diff``).

Like the layer listings of ``save.py``, from one pass over the ``docker save`` stream;
here every regular file's content is hashed too, so a changed file of the same size
is still seen as changed.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from typing import IO, Any

from lamina.core.accounting.diff import ImageFiles, LayerFiles, read_layer_files
from lamina.core.digest import chain_ids
from lamina.core.docker.client import call
from lamina.core.docker.save import ChunkReader
from lamina.core.errors import ArchiveError, NotFound


class _Hashing(io.RawIOBase):
    """Passes a member's bytes through while hashing them (the hash is its diffID)."""

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

    def digest(self) -> str:
        while self._inner.read(1 << 20):
            pass
        return "sha256:" + self.hash.hexdigest()


def read_saved(stream: IO[bytes], wanted: set[str]) -> dict[str, LayerFiles]:
    """diffID -> the layer's files, for the layers of a saved stream in ``wanted``.

    Raises:
        ArchiveError: the stream is not a tar.
    """
    found: dict[str, LayerFiles] = {}
    try:
        with tarfile.open(fileobj=stream, mode="r|") as outer:
            for info in outer:
                name = info.name
                if not info.isreg() or not (
                    name.endswith("/layer.tar") or name.startswith("blobs/sha256/")
                ):
                    continue
                member = outer.extractfile(info)
                if member is None:
                    continue
                reader = _Hashing(member)
                try:
                    files = read_layer_files(io.BufferedReader(reader, 1 << 16), "", "")
                except ArchiveError:
                    files = None  # a config or manifest blob, not a layer
                diff_id = reader.digest()
                if files is not None and diff_id in wanted:
                    found[diff_id] = files
                    if len(found) == len(wanted):
                        break
    except tarfile.TarError as exc:
        raise ArchiveError(f"the image stream from Docker is not a tar: {exc}") from exc
    return found


def image_files(
    api: Any, ref: str, image_id: str, diff_ids: list[str], lines: list[str]
) -> ImageFiles:
    """Every layer of a Docker image with its entries and content digests, base first.

    Args:
        api: the SDK's low-level ``docker.APIClient``.
        ref: the reference as the user gave it.
        image_id: the image's ID.
        diff_ids: its diffIDs, base first.
        lines: each layer's history line, base first.

    Raises:
        NotFound: Docker's saved stream lacks a layer.
        EngineUnavailable: Docker failed while streaming.
    """
    stream = call(f"saving image {image_id}", api.get_image, image_id)
    found = call(f"reading image {image_id}", read_saved, ChunkReader(stream), set(diff_ids))
    layers = []
    for i, (diff_id, chain_id) in enumerate(zip(diff_ids, chain_ids(diff_ids), strict=True)):
        files = found.get(diff_id)
        if files is None:
            raise NotFound(f"{ref}: Docker's saved image lacks layer {diff_id}")
        layers.append(
            LayerFiles(chain_id, diff_id, lines[i] if i < len(lines) else "", files.entries)
        )
    return ImageFiles(ref, image_id, tuple(layers))
