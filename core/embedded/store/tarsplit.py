"""Tar streams that lamina can regenerate byte for byte: reading, writing, tar-split.

A layer's identity (its diffID) is the sha256 of its *uncompressed tar*, yet the store
keeps the layer extracted in overlay format. Like Docker's ``tar-split.json.gz``, a
``TarSplit`` records every byte of the tar that is not file content (headers, PAX
records, padding, the end-of-archive blocks) plus, for each file payload, the path and
size to read back from the layer directory. ``write`` replays it and produces the very
same bytes, so a loaded layer saves with the diffID it came with.

``TarReader`` parses tar headers itself (rather than through ``tarfile``'s buffered
stream) because it must know exactly which bytes are header and which are payload.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from lamina.core.digest import Hasher
from lamina.core.errors import ArchiveError, StoreError

BLOCK = 512
CHUNK = 1 << 20
TARSPLIT_VERSION = 1


@dataclass
class TarSplit:
    """The non-payload bytes of a tar and where its payloads live.

    ``segments`` alternates raw bytes (``("r", bytearray)``) and payload references
    (``("f", relative_path, size)``).
    """

    segments: list[tuple[str, bytearray] | tuple[str, str, int]] = field(default_factory=list)

    def raw(self, data: bytes) -> None:
        """Appends raw bytes, extending a preceding raw segment in place."""
        if not data:
            return
        if self.segments and self.segments[-1][0] == "r":
            cast(bytearray, self.segments[-1][1]).extend(data)
        else:
            self.segments.append(("r", bytearray(data)))

    def payload(self, path: str, size: int) -> int:
        """Appends a payload reference; returns its segment index."""
        self.segments.append(("f", path, size))
        return len(self.segments) - 1

    def inline(self, index: int, data: bytes) -> None:
        """Turns payload segment ``index`` into raw bytes (its file is being replaced)."""
        self.segments[index] = ("r", bytearray(data))

    def dump(self, path: Path) -> None:
        """Writes the split as gzipped JSON and fsyncs it."""
        doc = {
            "version": TARSPLIT_VERSION,
            "segments": [
                ["r", base64.b64encode(cast(bytes, s[1])).decode()] if s[0] == "r" else list(s)
                for s in self.segments
            ],
        }
        data = gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), mtime=0)
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    @classmethod
    def load(cls, path: Path) -> TarSplit:
        """Reads a split written by ``dump``.

        Raises:
            StoreError: if the file is missing or not a tar-split.
        """
        try:
            doc = json.loads(gzip.decompress(path.read_bytes()))
            if doc.get("version") != TARSPLIT_VERSION:
                raise ValueError(f"unknown version {doc.get('version')!r}")
            split = cls()
            for seg in doc["segments"]:
                if seg[0] == "r":
                    split.segments.append(("r", bytearray(base64.b64decode(seg[1]))))
                else:
                    split.segments.append(("f", str(seg[1]), int(seg[2])))
            return split
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise StoreError(f"{path}: unreadable tar-split: {exc}") from exc

    def write(self, root: Path, out: BinaryIO) -> None:
        """Regenerates the tar into ``out``, reading payloads below ``root``.

        Raises:
            StoreError: if a payload file is missing or its size changed.
        """
        for seg in self.segments:
            if seg[0] == "r":
                out.write(cast(bytearray, seg[1]))
                continue
            rel, size = str(seg[1]), int(seg[2])  # type: ignore[misc]
            path = root / rel
            try:
                with open(path, "rb") as f:
                    left = size
                    while left:
                        chunk = f.read(min(CHUNK, left))
                        if not chunk:
                            raise StoreError(f"{path}: shorter than recorded ({size} bytes)")
                        out.write(chunk)
                        left -= len(chunk)
                    if f.read(1):
                        raise StoreError(f"{path}: longer than recorded ({size} bytes)")
            except OSError as exc:
                raise StoreError(f"{path}: cannot read layer file: {exc.strerror}") from exc


@dataclass
class Member:
    """One tar entry as ``TarReader`` parsed it (PAX and GNU long names applied)."""

    name: str
    type: bytes
    size: int
    mode: int
    uid: int
    gid: int
    mtime: float
    linkname: str
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes]
    header: bytes  # every raw byte from the previous entry's padding to this payload


class _CountingReader:
    """Reads a stream exactly, hashing everything that passes."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.hasher = Hasher()

    def read(self, n: int) -> bytes:
        parts: list[bytes] = []
        left = n
        while left:
            chunk = self.stream.read(left)
            if not chunk:
                break
            parts.append(chunk)
            left -= len(chunk)
        data = b"".join(parts)
        self.hasher.update(data)
        return data


def _pax_records(data: bytes, where: str) -> dict[str, bytes]:
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            break
        space = data.find(b" ", pos)
        if space < 0:
            raise ArchiveError(f"{where}: malformed PAX header")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise ArchiveError(f"{where}: malformed PAX header") from None
        if length <= 0 or pos + length > len(data):
            raise ArchiveError(f"{where}: malformed PAX header")
        record = data[space + 1 : pos + length - 1]
        key, sep, value = record.partition(b"=")
        if not sep:
            raise ArchiveError(f"{where}: malformed PAX record")
        records[key.decode("utf-8", "surrogateescape")] = value
        pos += length
    return records


def _decode(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


class TarReader:
    """Parses an uncompressed tar stream, keeping every byte accounted for.

    Iterate to get ``Member`` records; after each, read exactly ``member.size`` payload
    bytes with ``read_payload`` (or ``skip_payload``) before advancing. ``trailer``
    holds the bytes after the last entry once iteration ends; ``digest`` is the sha256
    of everything read.

    Args:
        stream: the tar bytes.
        where: a name for error messages (the archive or layer).
    """

    def __init__(self, stream: BinaryIO, where: str) -> None:
        self._r = _CountingReader(stream)
        self.where = where
        self.trailer = b""
        self._pending = 0  # payload bytes of the current member not yet consumed
        self._padding = 0

    @property
    def digest(self) -> str:
        return self._r.hasher.digest()

    @property
    def size(self) -> int:
        return self._r.hasher.size

    def read_payload(self, n: int) -> bytes:
        """Reads up to ``n`` bytes of the current member's payload."""
        n = min(n, self._pending)
        data = self._r.read(n)
        if len(data) < n:
            raise ArchiveError(f"{self.where}: truncated tar (payload cut short)")
        self._pending -= n
        return data

    def skip_payload(self) -> bytes:
        """Reads and returns what is left of the current payload."""
        parts = []
        while self._pending:
            parts.append(self.read_payload(CHUNK))
        return b"".join(parts)

    def __iter__(self) -> Iterator[Member]:
        raw = bytearray()
        pax: dict[str, bytes] = {}
        gnu_name: str | None = None
        gnu_link: str | None = None
        while True:
            if self._pending:
                raise ArchiveError(f"{self.where}: payload of the previous entry not consumed")
            raw += self._r.read(self._padding)
            self._padding = 0
            block = self._r.read(BLOCK)
            if not block:
                self.trailer = bytes(raw)
                return
            if len(block) < BLOCK:
                raise ArchiveError(f"{self.where}: truncated tar (partial header block)")
            if block == bytes(BLOCK):
                # End of archive: keep the zero blocks and anything after them verbatim.
                rest = bytearray(block)
                while chunk := self._r.read(CHUNK):
                    rest += chunk
                self.trailer = bytes(raw + rest)
                return
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError as exc:
                raise ArchiveError(f"{self.where}: not a tar archive ({exc})") from exc
            raw += block
            size = info.size
            padding = (-size) % BLOCK
            type_ = info.type
            if type_ in (
                tarfile.XHDTYPE,
                tarfile.XGLTYPE,
                tarfile.GNUTYPE_LONGNAME,
                tarfile.GNUTYPE_LONGLINK,
                b"X",
            ):
                data = self._r.read(size + padding)
                if len(data) < size + padding:
                    raise ArchiveError(f"{self.where}: truncated tar (extended header)")
                raw += data
                body = data[:size]
                if type_ in (tarfile.XHDTYPE, b"X"):
                    pax.update(_pax_records(body, self.where))
                elif type_ == tarfile.GNUTYPE_LONGNAME:
                    gnu_name = _decode(body.rstrip(b"\0"))
                elif type_ == tarfile.GNUTYPE_LONGLINK:
                    gnu_link = _decode(body.rstrip(b"\0"))
                # Global PAX headers (g) carry nothing lamina applies per file.
                continue
            if type_ == tarfile.GNUTYPE_SPARSE or "GNU.sparse.major" in pax:
                raise ArchiveError(f"{self.where}: {info.name}: sparse files are not supported")
            name = gnu_name if gnu_name is not None else info.name
            if "path" in pax:
                name = _decode(pax["path"])
            linkname = gnu_link if gnu_link is not None else info.linkname
            if "linkpath" in pax:
                linkname = _decode(pax["linkpath"])
            try:
                if "size" in pax:
                    size = int(pax["size"])
                    padding = (-size) % BLOCK
                uid = int(pax["uid"]) if "uid" in pax else info.uid
                gid = int(pax["gid"]) if "gid" in pax else info.gid
                mtime = float(pax["mtime"]) if "mtime" in pax else float(info.mtime)
            except ValueError as exc:
                raise ArchiveError(f"{self.where}: {name}: malformed PAX value") from exc
            xattrs = {
                k[len("SCHILY.xattr.") :]: v
                for k, v in pax.items()
                if k.startswith("SCHILY.xattr.")
            }
            member = Member(
                name=name,
                type=type_,
                size=size,
                mode=info.mode,
                uid=uid,
                gid=gid,
                mtime=mtime,
                linkname=linkname,
                devmajor=info.devmajor,
                devminor=info.devminor,
                xattrs=xattrs,
                header=bytes(raw),
            )
            raw = bytearray()
            pax = {}
            gnu_name = gnu_link = None
            self._pending = size
            self._padding = padding
            yield member


def pax_header(info: tarfile.TarInfo) -> bytes:
    """The header blocks of ``info`` in PAX format (UTF-8, no uname/gname)."""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def padding(size: int) -> bytes:
    """Zero bytes that round a payload of ``size`` up to a 512-byte block."""
    return bytes((-size) % BLOCK)


# Go's archive/tar (and so Docker) ends a tar with two zero blocks and no record padding.
END_OF_ARCHIVE = bytes(2 * BLOCK)
