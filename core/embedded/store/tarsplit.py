"""Tar streams that lamina can regenerate byte for byte: reading, writing, tar-split.

A layer's identity (its diffID) is the sha256 of its *uncompressed tar*, yet the store
keeps the layer extracted in overlay format. Like Docker's ``tar-split.json.gz``, a
``TarSplit`` records every byte of the tar that is not file content (headers, PAX
records, padding, the end-of-archive blocks) plus, for each file payload, the path and
size to read back from the layer directory. ``write`` replays it and produces the very
same bytes, so a loaded layer saves with the diffID it came with.

``TarReader`` parses tar headers itself (rather than through ``tarfile``'s buffered
stream) because it must know exactly which bytes are header and which are payload.

A payload that does not end up in the layer directory (a file a later entry of the
same path replaced, or the content of an entry lamina does not extract, such as a
whiteout with data) is kept in ``shadow/<n>`` next to ``diff/`` and referenced by a
``("s", n, size)`` segment, so no payload is ever held in memory.

Memory and time are bounded whatever the tar says (docs/limits.md): an extended header
(PAX or GNU long name) may hold at most ``MAX_EXTENDED_HEADER`` bytes, as in Go's
``archive/tar`` that Docker uses; entries that carry no data (directories, links,
devices, FIFOs) have no payload whatever their size field says, as in Go and Python;
and at most ``MAX_TRAILER`` bytes may follow the end-of-archive blocks.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from lamina.core.digest import Hasher
from lamina.core.errors import ArchiveError, StoreError

BLOCK = 512
CHUNK = 1 << 20
# Version 2 adds shadow segments; a split without any is still written as version 1.
TARSPLIT_VERSION = 1
TARSPLIT_SHADOW_VERSION = 2
SHADOW_DIR = "shadow"
# Go's archive/tar refuses a PAX or GNU long-name header larger than this.
MAX_EXTENDED_HEADER = 1 << 20
# Bytes kept after the end-of-archive blocks (GNU tar pads to 10 KiB records).
MAX_TRAILER = 1 << 20
# Owners that chown(2) can set (-1, that is 2**32 - 1, means "leave unchanged").
MAX_ID = (1 << 32) - 2
# Device numbers os.makedev accepts.
MAX_DEVICE_NUMBER = (1 << 31) - 1
# Modification times that utime(2) can set, in seconds either side of 1970.
MAX_MTIME = float(1 << 62)
# Entries whose size field is not a payload (Go's isHeaderOnlyType).
HEADER_ONLY_TYPES = (
    tarfile.LNKTYPE,
    tarfile.SYMTYPE,
    tarfile.CHRTYPE,
    tarfile.BLKTYPE,
    tarfile.DIRTYPE,
    tarfile.FIFOTYPE,
)
_PAX_TIME = re.compile(rb"-?[0-9]{1,20}(?:\.[0-9]*)?")
_PAX_INT = re.compile(rb"-?[0-9]{1,20}")


@dataclass
class TarSplit:
    """The non-payload bytes of a tar and where its payloads live.

    ``segments`` alternates raw bytes (``("r", bytearray)``) and payload references:
    ``("f", relative_path, size)`` for a file of the layer directory, ``("s", name,
    size)`` for a payload kept in ``shadow/<name>`` beside it.
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

    def shadow(self, name: str, size: int) -> int:
        """Appends a reference to a payload kept in ``shadow/<name>``; returns its index."""
        self.segments.append(("s", name, size))
        return len(self.segments) - 1

    def to_shadow(self, index: int, name: str) -> None:
        """Points payload segment ``index`` at ``shadow/<name>`` (its file was moved there
        because a later entry replaces it)."""
        seg = self.segments[index]
        self.segments[index] = ("s", name, int(seg[2]))  # type: ignore[misc]

    def dump(self, path: Path) -> None:
        """Writes the split as gzipped JSON and fsyncs it."""
        shadowed = any(s[0] == "s" for s in self.segments)
        doc = {
            "version": TARSPLIT_SHADOW_VERSION if shadowed else TARSPLIT_VERSION,
            "segments": [
                ["r", base64.b64encode(cast(bytes, s[1])).decode()] if s[0] == "r" else list(s)
                for s in self.segments
            ],
        }
        # Level 6, as Go's gzip (and so Docker's tar-split) writes: 9 costs twice the time.
        data = gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), 6, mtime=0)
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
            version = doc.get("version")
            if version not in (TARSPLIT_VERSION, TARSPLIT_SHADOW_VERSION):
                raise ValueError(f"unknown version {version!r}")
            split = cls()
            for seg in doc["segments"]:
                if seg[0] == "r":
                    split.segments.append(("r", bytearray(base64.b64decode(seg[1]))))
                elif seg[0] == "s" and version == TARSPLIT_SHADOW_VERSION:
                    split.segments.append(("s", str(seg[1]), int(seg[2])))
                elif seg[0] == "f":
                    split.segments.append(("f", str(seg[1]), int(seg[2])))
                else:
                    raise ValueError(f"unknown segment kind {seg[0]!r}")
            return split
        except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise StoreError(f"{path}: unreadable tar-split: {exc}") from exc

    def write(self, root: Path, out: BinaryIO) -> None:
        """Regenerates the tar into ``out``, reading payloads below ``root`` (the layer's
        ``diff/``) and from ``shadow/`` beside it.

        Raises:
            StoreError: if a payload file is missing or its size changed.
        """
        for seg in self.segments:
            if seg[0] == "r":
                out.write(cast(bytearray, seg[1]))
                continue
            rel, size = str(seg[1]), int(seg[2])  # type: ignore[misc]
            path = root.parent / SHADOW_DIR / rel if seg[0] == "s" else root / rel
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
    """Reads a stream exactly, counting (and unless told otherwise hashing) what passes."""

    def __init__(self, stream: BinaryIO, hashing: bool = True) -> None:
        self.stream = stream
        self.hasher = Hasher() if hashing else None
        self.offset = 0

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
        if self.hasher is not None:
            self.hasher.update(data)
        self.offset += len(data)
        return data

    def skip(self, n: int) -> None:
        """Moves ``n`` bytes on: a seek when nothing is hashed and the stream can."""
        if self.hasher is None and self.stream.seekable():
            self.stream.seek(n, os.SEEK_CUR)
            self.offset += n
            return
        while n:
            chunk = self.read(min(CHUNK, n))
            if not chunk:
                raise ArchiveError("truncated tar (payload cut short)")
            n -= len(chunk)


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


def shown(name: str) -> str:
    """A member name fit for a one-line message: control bytes escaped, length capped."""
    text = name if len(name) <= 200 else name[:200] + "..."
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 32 or ord(c) == 127 else c for c in text)


class _Header:
    """The fields of one tar header block that lamina uses."""

    __slots__ = (
        "devmajor",
        "devminor",
        "gid",
        "linkname",
        "mode",
        "mtime",
        "name",
        "size",
        "type",
        "uid",
    )

    def __init__(self, **fields: Any) -> None:
        for key, value in fields.items():
            setattr(self, key, value)

    name: str
    type: bytes
    size: int
    mode: int
    uid: int
    gid: int
    mtime: int
    linkname: str
    devmajor: int
    devminor: int


_USTAR_MAGICS = (b"ustar\x0000", b"ustar  \x00")


def _parse_header(block: bytes, where: str) -> _Header:
    """One header block, as ``tarfile.TarInfo.frombuf`` reads it.

    The common case (a ustar or GNU header with plain octal numbers) is parsed here
    directly, at a fraction of frombuf's cost per entry; anything else (base-256
    numbers, old v7 headers, a bad checksum) goes through frombuf itself.
    """
    fast = _fast_header(block)
    if fast is not None:
        return fast
    try:
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError as exc:
        raise ArchiveError(f"{where}: not a tar archive ({exc})") from exc
    return _Header(
        name=info.name,
        type=info.type,
        size=info.size,
        mode=info.mode,
        uid=info.uid,
        gid=info.gid,
        mtime=info.mtime,
        linkname=info.linkname,
        devmajor=info.devmajor,
        devminor=info.devminor,
    )


def _octal(field: bytes) -> int:
    # int() refuses a NUL with bytes after it: then frombuf decides.
    return int(field.strip(b" \0") or b"0", 8)


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _fast_header(block: bytes) -> _Header | None:
    magic = block[257:265]
    if magic not in _USTAR_MAGICS:
        return None
    try:
        checksum = _octal(block[148:156])
        fields = [_octal(block[a:b]) for a, b in _NUMBER_FIELDS]
    except ValueError:
        return None
    if checksum != 256 + sum(block[:148]) + sum(block[156:]):
        return None  # frombuf also accepts the signed sum, or refuses in one line
    mode, uid, gid, size, mtime, devmajor, devminor = fields
    type_ = block[156:157] or tarfile.REGTYPE
    name = _text(block[0:100])
    if type_ == tarfile.AREGTYPE and name.endswith("/"):
        type_ = tarfile.DIRTYPE
    if type_ == tarfile.GNUTYPE_SPARSE:
        return None
    if type_ == tarfile.DIRTYPE:
        name = name.rstrip("/")
    if magic == _USTAR_MAGICS[0] and type_ not in tarfile.GNU_TYPES:
        prefix = _text(block[345:500])
        if prefix:
            name = prefix + "/" + name
    return _Header(
        name=name,
        type=type_,
        size=size,
        mode=mode,
        uid=uid,
        gid=gid,
        mtime=mtime,
        linkname=_text(block[157:257]),
        devmajor=devmajor,
        devminor=devminor,
    )


_NUMBER_FIELDS = (
    (100, 108),  # mode
    (108, 116),  # uid
    (116, 124),  # gid
    (124, 136),  # size
    (136, 148),  # mtime
    (329, 337),  # devmajor
    (337, 345),  # devminor
)


def _pax_number(
    pax: dict[str, bytes],
    key: str,
    pattern: re.Pattern[bytes],
    where: str,
    name: str,
    default: int | float = 0,
) -> int | float:
    """A numeric PAX record, parsed the way Go's archive/tar does (decimal only)."""
    if key not in pax:
        return default
    value = pax[key]
    if not pattern.fullmatch(value):
        raise ArchiveError(f"{where}: {shown(name)}: malformed PAX {key} {value[:40]!r}")
    return float(value) if b"." in value else int(value)


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

    def __init__(
        self, stream: BinaryIO, where: str, *, hashing: bool = True, keep_trailer: bool = True
    ) -> None:
        self._r = _CountingReader(stream, hashing)
        self.where = where
        self.trailer = b""
        self._keep_trailer = keep_trailer
        self._pending = 0  # payload bytes of the current member not yet consumed
        self._padding = 0

    @property
    def digest(self) -> str:
        """sha256 of every byte read (only when hashing)."""
        assert self._r.hasher is not None
        return self._r.hasher.digest()

    @property
    def size(self) -> int:
        """Bytes read so far (after iteration: the whole tar)."""
        return self._r.offset

    @property
    def offset(self) -> int:
        """Where the next byte comes from: after a member, its payload's offset."""
        return self._r.offset

    def skip_payload(self) -> None:
        """Moves past what is left of the current payload without keeping it."""
        n, self._pending = self._pending, 0
        self._r.skip(n)

    def read_payload(self, n: int) -> bytes:
        """Reads up to ``n`` bytes of the current member's payload."""
        n = min(n, self._pending)
        data = self._r.read(n)
        if len(data) < n:
            raise ArchiveError(f"{self.where}: truncated tar (payload cut short)")
        self._pending -= n
        return data

    @property
    def pending(self) -> int:
        """Payload bytes of the current member not read yet."""
        return self._pending

    def copy_payload(self, out: BinaryIO) -> None:
        """Streams what is left of the current payload into ``out``."""
        while self._pending:
            out.write(self.read_payload(CHUNK))

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
            if block == bytes(BLOCK) and not self._keep_trailer:
                # An archive of files, not a layer: what follows the end does not count.
                return
            if block == bytes(BLOCK):
                # End of archive: keep the zero blocks and what follows them verbatim,
                # up to a limit (real tars pad to a record; more is not a layer).
                rest = bytearray(block)
                rest += self._r.read(MAX_TRAILER + 1)
                if len(rest) > MAX_TRAILER + BLOCK:
                    raise ArchiveError(
                        f"{self.where}: more than {MAX_TRAILER >> 20} MiB of data after "
                        "the end-of-archive blocks"
                    )
                self.trailer = bytes(raw + rest)
                return
            info = _parse_header(block, self.where)
            raw += block
            size = info.size
            if size < 0:
                raise ArchiveError(f"{self.where}: {shown(info.name)}: negative size in header")
            padding = (-size) % BLOCK
            type_ = info.type
            if type_ in (
                tarfile.XHDTYPE,
                tarfile.XGLTYPE,
                tarfile.GNUTYPE_LONGNAME,
                tarfile.GNUTYPE_LONGLINK,
                b"X",
            ):
                if size > MAX_EXTENDED_HEADER:
                    raise ArchiveError(
                        f"{self.where}: extended header of {size} bytes (the limit is "
                        f"{MAX_EXTENDED_HEADER >> 20} MiB)"
                    )
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
            if "\0" in name or "\0" in linkname:
                raise ArchiveError(f"{self.where}: {shown(name)}: a name contains a NUL byte")
            if "size" in pax:
                size = int(_pax_number(pax, "size", _PAX_INT, self.where, name))
            uid = int(_pax_number(pax, "uid", _PAX_INT, self.where, name, info.uid))
            gid = int(_pax_number(pax, "gid", _PAX_INT, self.where, name, info.gid))
            mtime = float(_pax_number(pax, "mtime", _PAX_TIME, self.where, name, info.mtime))
            if size < 0:
                raise ArchiveError(f"{self.where}: {shown(name)}: negative size")
            for what, value in (("uid", uid), ("gid", gid)):
                if not 0 <= value <= MAX_ID:
                    raise ArchiveError(
                        f"{self.where}: {shown(name)}: {what} {value} is out of range"
                    )
            if not (math.isfinite(mtime) and abs(mtime) <= MAX_MTIME):
                raise ArchiveError(f"{self.where}: {shown(name)}: mtime {mtime} is out of range")
            for what, value in (("major", info.devmajor), ("minor", info.devminor)):
                if not 0 <= value <= MAX_DEVICE_NUMBER:
                    raise ArchiveError(
                        f"{self.where}: {shown(name)}: device {what} {value} is out of range"
                    )
            if type_ in HEADER_ONLY_TYPES:
                # Like Go's and Python's readers: these carry no data; the next bytes
                # are the next header whatever the size field says.
                size = 0
            padding = (-size) % BLOCK
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
