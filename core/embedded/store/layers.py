"""Layer directories: commit a directory or a tar as a layer, regenerate its tar.

Each layer lives in ``layers/<chain-hex>/``: ``diff/`` holds the layer's changes in
overlayfs format (a deletion is a 0:0 character device, an opaque directory carries
``trusted.overlay.opaque=y``) and ``tar-split.json.gz`` holds what is needed to
regenerate its tar byte for byte (see ``tarsplit.py``).

A layer is assembled under ``tmp/``, fsynced, renamed into ``layers/`` and recorded in
the index inside one transaction. A crash at any point leaves at worst a directory
without an index row, which is not a layer (nothing reads it) and which GC sweeps.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import posixpath
import queue
import stat
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from lamina.core.digest import Hasher, chain_ids, hex_of, is_digest
from lamina.core.embedded.store import beneath
from lamina.core.embedded.store.dedup import Candidate, FilePool, Released, key_of, poolable
from lamina.core.embedded.store.index import Index
from lamina.core.embedded.store.lock import StoreLock
from lamina.core.embedded.store.tarsplit import (
    CHUNK,
    END_OF_ARCHIVE,
    SHADOW_DIR,
    Member,
    TarReader,
    TarSplit,
    padding,
    pax_header,
    shown,
)
from lamina.core.errors import ArchiveError, NotFound, StoreError
from lamina.core.model import FileChange, LayerInfo

if TYPE_CHECKING:
    import ctypes

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
AUFS_META_PREFIX = ".wh..wh."
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
# Like Docker's archive package, only this xattr goes into a layer tar made from a
# directory; overlay's own xattrs are represented by whiteout entries instead.
TAR_XATTRS = ("security.capability",)
TARSPLIT_NAME = "tar-split.json.gz"

TmpDirFactory = Callable[[str], AbstractContextManager[Path]]


def is_whiteout(st: os.stat_result) -> bool:
    """Whether ``st`` is an overlay whiteout (a 0:0 character device)."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: Path | str) -> bool:
    """Whether the directory ``path`` is marked opaque for overlayfs."""
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def set_opaque(path: Path) -> None:
    """Marks a directory opaque (both the trusted and the user xattr namespace).

    Raises:
        StoreError: if neither xattr can be set.
    """
    done = False
    last: OSError | None = None
    for name in OPAQUE_XATTRS:
        try:
            os.setxattr(path, name, b"y", follow_symlinks=False)
            done = True
        except OSError as exc:
            last = exc
    if not done:
        raise StoreError(f"{path}: cannot mark the directory opaque: {last}")


def walk_sorted(root: Path | str) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry below ``root`` depth first in byte order, as (relative path, lstat).

    A directory comes before its children, like Go's ``filepath.Walk`` that Docker uses.
    Paths are plain strings: on a 20,000-file layer pathlib's joins cost more than the
    ``lstat`` calls themselves.
    """
    top = str(root)
    stack: list[Iterator[tuple[str, os.stat_result]]] = [_list_dir(top, "")]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        yield item
        rel, st = item
        if stat.S_ISDIR(st.st_mode):
            stack.append(_list_dir(top, rel))


def _list_dir(top: str, rel: str) -> Iterator[tuple[str, os.stat_result]]:
    base = f"{top}/{rel}" if rel else top
    try:
        names = sorted(os.listdir(base), key=os.fsencode)
    except OSError as exc:
        raise StoreError(f"{base}: cannot list: {exc.strerror}") from exc
    for name in names:
        child = f"{rel}/{name}" if rel else name
        yield child, os.lstat(f"{top}/{child}")


@dataclass(frozen=True)
class Measure:
    """A layer directory's two sizes.

    Attributes:
        size: Docker's size of a layer: moby's ``directory.Size`` of its diff directory,
            the sum of ``st_size`` of every entry that is not a directory (a symlink
            counts its target's length, a whiteout 0), each inode once. It is what
            ``docker images`` and ``docker history`` show for the same layer, since
            overlay2 keeps a layer in the same format and measures it so.
        disk: bytes the entries occupy on disk (``st_blocks * 512``), each inode once.
    """

    size: int
    disk: int


def measure(root: Path) -> Measure:
    """Both sizes of the entries below ``root`` (see :class:`Measure`), in one walk."""
    seen_size: set[int] = set()
    seen_disk: set[tuple[int, int]] = set()
    size = disk = 0
    for _rel, st in walk_sorted(root):
        key = (st.st_dev, st.st_ino)
        if key not in seen_disk:
            seen_disk.add(key)
            disk += st.st_blocks * 512
        # moby skips directories and empty entries before it looks at the inode, and
        # keys on the inode number alone (a layer is on one filesystem).
        if stat.S_ISDIR(st.st_mode) or st.st_size == 0 or st.st_ino in seen_size:
            continue
        seen_size.add(st.st_ino)
        size += st.st_size
    return Measure(size, disk)


def _fsync_tree(root: Path) -> None:
    """Makes everything below and including ``root`` durable.

    One ``syncfs(2)`` of the store's filesystem costs about as much as a single fsync,
    where an fsync per file of a 20,000-file COPY layer costs most of the build; the
    per-file walk remains as the fallback where syncfs is unavailable.
    """
    if _syncfs(root):
        return
    for rel, st in walk_sorted(root):
        if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
            _fsync_path(root / rel)
    _fsync_path(root)


def _syncfs(path: Path) -> bool:
    """Flushes the filesystem holding ``path``; False when the call is unavailable."""
    libc = _libc()
    if libc is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return bool(libc.syncfs(fd) == 0)
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    # ctypes loads on the first commit only; find_library runs ldconfig, so glibc's
    # soname is tried first.
    import ctypes
    import ctypes.util

    for name in ("libc.so.6", None):
        name = name or ctypes.util.find_library("c")
        if not name:
            continue
        try:
            libc = ctypes.CDLL(name, use_errno=True)
            libc.syncfs.argtypes = [ctypes.c_int]
            return libc
        except (OSError, AttributeError):
            continue
    return None


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tar_kind(st: os.stat_result) -> bytes | None:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return tarfile.REGTYPE
    if stat.S_ISDIR(mode):
        return tarfile.DIRTYPE
    if stat.S_ISLNK(mode):
        return tarfile.SYMTYPE
    if stat.S_ISCHR(mode):
        return tarfile.CHRTYPE
    if stat.S_ISBLK(mode):
        return tarfile.BLKTYPE
    if stat.S_ISFIFO(mode):
        return tarfile.FIFOTYPE
    return None  # sockets do not go into layers (Docker skips them too)


_USTAR_MAGIC = b"ustar\x0000"
_OCTAL7 = 8**7
_OCTAL11 = 8**11


def ustar_header(
    name: str,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    kind: bytes,
    linkname: str = "",
    devmajor: int = 0,
    devminor: int = 0,
) -> bytes | None:
    """The header block ``tarfile`` writes in PAX format for an entry needing no PAX
    records, or None when it would need one (then ``tarfile`` writes it).

    ``tarfile.TarInfo.tobuf`` costs about 30 µs an entry, most of a 20,000-file commit's
    header work; this is the same 512 bytes for the common case (ASCII names and link
    targets of at most 100 bytes, numbers that fit their octal fields, no xattrs).
    """
    try:
        raw_name = name.encode("ascii")
        raw_link = linkname.encode("ascii")
    except UnicodeEncodeError:
        return None
    if len(raw_name) > 100 or len(raw_link) > 100:
        return None
    if not (0 <= uid < _OCTAL7 and 0 <= gid < _OCTAL7):
        return None
    if not (0 <= size < _OCTAL11 and 0 <= mtime < _OCTAL11):
        return None
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        if not (0 <= devmajor < _OCTAL7 and 0 <= devminor < _OCTAL7):
            return None
        devices = b"%07o\0%07o\0" % (devmajor, devminor)
    else:
        devices = bytes(16)
    block = b"".join(
        (
            raw_name.ljust(100, b"\0"),
            b"%07o\0%07o\0%07o\0" % (mode & 0o7777, uid, gid),
            b"%011o\0%011o\0" % (size, mtime),
            b"        ",
            kind,
            raw_link.ljust(100, b"\0"),
            _USTAR_MAGIC,
            bytes(64),  # uname and gname: numeric owners only
            devices,
            bytes(167),  # prefix and the block's padding
        )
    )
    # The checksum counts its own field as eight spaces, which the block holds now.
    return block[:148] + b"%06o\0" % sum(block) + block[155:]


def _header(
    name: str,
    st: os.stat_result,
    kind: bytes,
    mode: int,
    linkname: str = "",
    size: int = 0,
    mtime: int | None = None,
    pax: dict[str, str] | None = None,
) -> bytes:
    """One entry's header blocks, as ``pax_header`` of the equivalent TarInfo gives."""
    uid, gid = st.st_uid, st.st_gid
    # Docker truncates mtimes to whole seconds in layer tars.
    when = int(st.st_mtime) if mtime is None else mtime
    devmajor = devminor = 0
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        devmajor, devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    if not pax:
        fast = ustar_header(name, mode, uid, gid, size, when, kind, linkname, devmajor, devminor)
        if fast is not None:
            return fast
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.mtime = when
    info.uname = info.gname = ""
    info.type = kind
    info.linkname = linkname
    info.size = size
    info.devmajor, info.devminor = devmajor, devminor
    info.pax_headers = pax or {}
    return pax_header(info)


class _HashThread:
    """Hashes a byte stream on a thread of its own, so the sha256 of a layer's tar runs
    on a second core while this one walks the tree and reads the files.

    Small writes (headers, small files) are gathered into blocks of about a megabyte;
    ``hashlib`` releases the GIL for each block. At most a few blocks wait at any time.

    Args:
        hasher: what receives the bytes, in order.
    """

    BLOCK = 1 << 20

    def __init__(self, hasher: Hasher) -> None:
        self.hasher = hasher
        self._pending = bytearray()
        self._queue: queue.Queue[bytes | bytearray | None] = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._run, name="lamina-tar-hash", daemon=True)
        self._thread.start()

    def __call__(self, data: bytes) -> None:
        if len(data) >= self.BLOCK // 16:
            self._flush()
            self._queue.put(data)
            return
        self._pending += data
        if len(self._pending) >= self.BLOCK:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._queue.put(self._pending)
            self._pending = bytearray()

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            # A bytearray hashes as bytes do (hashlib takes any buffer).
            self.hasher.update(cast(bytes, block))

    def close(self) -> None:
        """Hashes what is left and waits for it: the hasher is complete after this."""
        self._flush()
        self._queue.put(None)
        self._thread.join()


@dataclass
class Tally:
    """A layer tree's two sizes (see :class:`Measure`), counted while walking it."""

    size: int = 0
    disk: int = 0
    sized: set[int] = field(default_factory=set)
    blocked: set[tuple[int, int]] = field(default_factory=set)

    def add(self, st: os.stat_result) -> None:
        key = (st.st_dev, st.st_ino)
        if key not in self.blocked:
            self.blocked.add(key)
            self.disk += st.st_blocks * 512
        # As ``measure``: directories and empty entries first, then each inode once.
        if stat.S_ISDIR(st.st_mode) or st.st_size == 0 or st.st_ino in self.sized:
            return
        self.sized.add(st.st_ino)
        self.size += st.st_size

    def measure(self) -> Measure:
        return Measure(self.size, self.disk)


def dir_to_tar(
    root: Path,
    out: Callable[[bytes], None],
    known: Mapping[str, Candidate] | None = None,
    found: list[Candidate] | None = None,
    tally: Tally | None = None,
) -> TarSplit:
    """Writes ``root`` (overlay format) as a layer tar and returns its tar-split.

    Entries come in sorted depth-first order with PAX headers, numeric owners only and
    whole-second mtimes; a whiteout becomes ``.wh.<name>``, an opaque directory gets a
    ``<dir>/.wh..wh..opq`` entry; a second name of an inode becomes a hardlink.

    Args:
        root: the layer's directory.
        out: receives the tar bytes in order.
        known: files whose key the caller already knows (a COPY knows its sources'
            digests), by path below ``root``.
        found: when given, receives every regular file that may share storage (see
            ``dedup``): those in ``known``, and the others with the key of the content
            read here for the tar anyway.
        tally: when given, counts the tree's sizes from the same ``lstat`` calls.
    """
    split = TarSplit()
    top = str(root)

    def emit_raw(data: bytes) -> None:
        split.raw(data)
        out(data)

    links: dict[tuple[int, int], str] = {}
    for rel, st in walk_sorted(top):
        if tally is not None:
            tally.add(st)
        kind = _tar_kind(st)
        if kind is None:
            log.debug("%s/%s: skipping socket", top, rel)
            continue
        parent, base = posixpath.split(rel)
        if is_whiteout(st):
            emit_raw(
                _header(posixpath.join(parent, WHITEOUT_PREFIX + base), st, tarfile.REGTYPE, 0o600)
            )
            continue
        path = f"{top}/{rel}"
        mode = stat.S_IMODE(st.st_mode)
        if kind == tarfile.REGTYPE and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key in links:
                kind = tarfile.LNKTYPE
                emit_raw(_header(rel, st, kind, mode, links[key], pax=_tar_xattrs(path)))
                continue
            links[key] = rel
        if kind == tarfile.SYMTYPE:
            emit_raw(_header(rel, st, kind, mode, os.readlink(path)))
        elif kind == tarfile.DIRTYPE:
            emit_raw(_header(rel + "/", st, kind, mode, pax=_tar_xattrs(path)))
            if is_opaque(path):
                marker = posixpath.join(rel, OPAQUE_MARKER)
                emit_raw(_header(marker, st, tarfile.REGTYPE, mode & 0o777, mtime=0))
        elif kind == tarfile.REGTYPE:
            size = st.st_size
            candidate = known.get(rel) if known else None
            if candidate is not None and candidate.ino != st.st_ino:
                candidate = None  # not the file the caller staged: read it as any other
            if candidate is not None and candidate.xattrs_known:
                pax = _pax_capability(candidate.capability)
            else:
                pax = _tar_xattrs(path)
            emit_raw(_header(rel, st, kind, mode, size=size, pax=pax))
            split.payload(rel, size)
            wanted = found is not None and candidate is None and poolable(st)
            digest = _copy_payload(path, size, out, wanted)
            if found is not None:
                if candidate is not None:
                    found.append(candidate)
                elif digest is not None:
                    found.append(
                        Candidate(rel, key_of(path, digest, st), st.st_ino, st.st_blocks * 512)
                    )
            emit_raw(padding(size))
        else:
            emit_raw(_header(rel, st, kind, mode, pax=_tar_xattrs(path)))
    emit_raw(END_OF_ARCHIVE)
    return split


def _pax_capability(value: bytes | None) -> dict[str, str]:
    """The PAX record of a known ``security.capability`` (``_tar_xattrs`` without the
    read)."""
    if value is None:
        return {}
    return {"SCHILY.xattr.security.capability": value.decode("utf-8", "surrogateescape")}


def _tar_xattrs(path: str) -> dict[str, str]:
    """The PAX records of the xattrs a layer tar keeps (Docker's archive package keeps
    only these)."""
    pax: dict[str, str] = {}
    for xname in TAR_XATTRS:
        try:
            value = os.getxattr(path, xname, follow_symlinks=False)
        except OSError:
            continue
        pax["SCHILY.xattr." + xname] = value.decode("utf-8", "surrogateescape")
    return pax


def _copy_payload(path: str, size: int, out: Callable[[bytes], None], hashing: bool) -> str | None:
    """Sends a file's ``size`` bytes to ``out``; their sha256 hex when ``hashing``.

    Plain descriptor reads: a buffered file object per file costs more than reading a
    small file.
    """
    digest = hashlib.sha256() if hashing else None
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        left = size
        while left:
            chunk = os.read(fd, min(CHUNK, left))
            if not chunk:
                raise StoreError(f"{path}: changed while being committed")
            out(chunk)
            if digest is not None:
                digest.update(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest() if digest is not None else None


@dataclass
class _Extractor:
    """Extracts one layer tar into an overlay-format directory, refusing anything unsafe.

    Linear in the size of the tar: each member costs a constant number of system calls
    (its parent directory is usually known to exist already), and replacing a path
    costs what is below that path, never a scan of everything extracted so far.
    """

    root: Path
    where: str

    def __post_init__(self) -> None:
        self.split = TarSplit()
        # The payload segment of each regular file extracted, by relative path.
        self.file_segments: dict[str, int] = {}
        # The sha256 of each extracted file's content, by relative path.
        self.digests: dict[str, str] = {}
        # Directory metadata to apply at the end, by relative path: the last entry of a
        # path wins, and a path that stops being a directory drops out.
        self.dirs: dict[str, beneath.Meta] = {}
        # Paths known to be real directories now (created or checked by this extraction).
        self.known_dirs: set[str] = {""}
        self.shadow_dir = self.root.parent / SHADOW_DIR
        self.shadows = 0
        self.devices = can_make_devices()
        # Plain strings on the per-member path: pathlib costs more than the syscalls.
        self.top = str(self.root)
        # A new file already has this process's owner, unless directories pass their
        # group down (setgid): then every chown is needed.
        setgid = bool(os.stat(self.root).st_mode & stat.S_ISGID)
        self.owner = None if setgid else (os.geteuid(), os.getegid())

    def fail(self, name: str, why: str) -> ArchiveError:
        return ArchiveError(f"{self.where}: {shown(name)}: {why}")

    def clean_name(self, name: str) -> str:
        """The member's path relative to the root, or "" for the root itself."""
        if name.startswith("/"):
            raise self.fail(name, "absolute path in layer tar")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self.fail(name, "path climbs out of the layer ('..')")
        return "/".join(parts)

    def check_parents(self, name: str, rel: str) -> None:
        """Refuses to write through a symlink, creating missing parent directories."""
        parent = rel.rpartition("/")[0]
        if parent in self.known_dirs:
            return
        cur_rel = ""
        for part in parent.split("/"):
            cur_rel = f"{cur_rel}/{part}" if cur_rel else part
            if cur_rel in self.known_dirs:
                continue
            cur = self.root / cur_rel
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                os.mkdir(cur, 0o755)
                self.known_dirs.add(cur_rel)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise self.fail(name, "would be written through a symlink")
            if not stat.S_ISDIR(st.st_mode):
                # A whiteout or file in the way: the tar redefines it as a directory.
                self.remove(cur_rel)
                os.mkdir(cur, 0o755)
            self.known_dirs.add(cur_rel)

    def remove(self, rel: str) -> None:
        """Removes whatever is at ``rel``, first keeping payloads the split refers to."""
        path = self.root / rel
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            if not self.forget(rel):
                os.unlink(path)
            return
        below = [sub for sub, _st in walk_sorted(path)]
        for sub in below:
            self.forget(f"{rel}/{sub}")
        self.forget(rel)
        beneath.remove_path(path)

    def forget(self, rel: str) -> bool:
        """Drops what is known of ``rel``; a file the split refers to moves to the shadow
        directory (returns True then: nothing is left at ``rel``)."""
        self.dirs.pop(rel, None)
        self.known_dirs.discard(rel)
        index = self.file_segments.pop(rel, None)
        if index is None:
            return False
        name = self.next_shadow()
        os.rename(self.root / rel, self.shadow_dir / name)
        self.split.to_shadow(index, name)
        return True

    def next_shadow(self) -> str:
        if self.shadows == 0:
            os.mkdir(self.shadow_dir, 0o700)
        self.shadows += 1
        return str(self.shadows)

    def keep_payload(self, reader: TarReader) -> None:
        """Streams the payload of an entry that is not extracted to the shadow directory."""
        size = reader.pending
        name = self.next_shadow()
        fd = os.open(
            self.shadow_dir / name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        with os.fdopen(fd, "wb") as f:
            reader.copy_payload(f)
        self.split.shadow(name, size)

    def extract(self, reader: TarReader) -> None:
        for m in reader:
            self.split.raw(m.header)
            self.member(reader, m)
            if reader.pending:
                self.keep_payload(reader)
        self.split.raw(reader.trailer)
        # Directory metadata last (adding children changes a directory's mtime), deepest
        # first (a non-root owner may lose write access), and only through directory
        # fds: by now a later entry may have replaced any of these paths by a symlink.
        root_fd = beneath.open_root(self.root)
        try:
            for rel in sorted(self.dirs, key=lambda r: (-r.count("/"), r)):
                if not beneath.apply_dir(root_fd, rel, self.dirs[rel]):
                    log.debug("%s: %s is no longer a directory", self.where, rel)
        finally:
            os.close(root_fd)

    def member(self, reader: TarReader, m: Member) -> None:
        rel = self.clean_name(m.name)
        if rel == "":
            if m.type == tarfile.DIRTYPE:
                self.dirs[""] = _meta(m)
            return
        if AUFS_META_PREFIX in rel:
            parts = rel.split("/")
            if any(p.startswith(AUFS_META_PREFIX) for p in parts) and parts[-1] != OPAQUE_MARKER:
                # Other AUFS metadata (.wh..wh.plnk/, .wh..wh.aufs): Docker skips it too.
                return
        self.check_parents(m.name, rel)
        parent_rel, _, base = rel.rpartition("/")
        if base == OPAQUE_MARKER:
            set_opaque(self.root / parent_rel if parent_rel else self.root)
            return
        if base.startswith(WHITEOUT_PREFIX):
            name = base[len(WHITEOUT_PREFIX) :]
            if name in ("", ".", ".."):
                raise self.fail(m.name, "malformed whiteout")
            target_rel = posixpath.join(parent_rel, name)
            self.remove(target_rel)
            os.mknod(self.root / target_rel, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            return
        path = f"{self.top}/{rel}"
        if m.type == tarfile.DIRTYPE:
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    self.remove(rel)
                    os.mkdir(path, 0o700)
            self.dirs[rel] = _meta(m)
            self.known_dirs.add(rel)
            return
        if m.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE):
            self.regular(reader, m, rel, path)
            return
        if m.type == tarfile.LNKTYPE:
            if m.linkname.startswith("/"):
                raise self.fail(m.name, f"hardlink to an absolute path {m.linkname!r}")
            target_rel = self.clean_name_link(m)
            target = self.root / target_rel
            self.check_parents(m.name, target_rel)
            try:
                tst = os.lstat(target)
            except FileNotFoundError:
                raise self.fail(m.name, f"hardlink to {m.linkname!r}, not in this layer") from None
            if stat.S_ISDIR(tst.st_mode):
                raise self.fail(m.name, f"hardlink to a directory {m.linkname!r}")
            if target_rel == rel:
                return
            self.remove(rel)
            os.link(target, path, follow_symlinks=False)
            return
        if m.type == tarfile.SYMTYPE:
            if not m.linkname.startswith("/"):
                depth = len(parent_rel.split("/")) if parent_rel else 0
                for part in m.linkname.split("/"):
                    if part == "..":
                        depth -= 1
                        if depth < 0:
                            raise self.fail(
                                m.name, f"symlink target {m.linkname!r} escapes the root"
                            )
                    elif part not in ("", "."):
                        depth += 1
            self.remove(rel)
            os.symlink(m.linkname, path)
            self.apply_node(parent_rel, base, m)
            return
        if m.type in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
            self.node(rel, parent_rel, base, m)
            return
        raise self.fail(m.name, f"unsupported tar entry type {m.type!r}")

    def regular(self, reader: TarReader, m: Member, rel: str, path: str) -> None:
        try:
            fd = os.open(path, _CREATE, 0o600)
        except FileExistsError:
            self.remove(rel)
            fd = os.open(path, _CREATE, 0o600)
        # The content's digest, read here anyway, lets the file share storage (dedup).
        digest = hashlib.sha256() if m.size else None
        try:
            while reader.pending:
                chunk = reader.read_payload(CHUNK)
                if digest is not None:
                    digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            meta = _meta(m)
            if self.owner == (meta.uid, meta.gid) and not meta.xattrs:
                # Already owned so; what is left is the mode and times.
                os.fchmod(fd, meta.mode & 0o7777)
                os.utime(fd, (meta.mtime, meta.mtime))
            else:
                beneath.apply_fd(fd, meta, f"{self.where}: {m.name}")
        finally:
            os.close(fd)
        if m.size:
            self.file_segments[rel] = self.split.payload(rel, m.size)
        if digest is not None:
            self.digests[rel] = digest.hexdigest()

    def candidates(self) -> list[Candidate]:
        """The extracted regular files that may share storage, with their keys."""
        out = []
        for rel, segment in self.file_segments.items():
            digest = self.digests.get(rel)
            if digest is None or self.split.segments[segment][0] != "f":
                continue
            path = f"{self.top}/{rel}"
            st = os.lstat(path)
            if poolable(st):
                out.append(Candidate(rel, key_of(path, digest, st), st.st_ino, st.st_blocks * 512))
        return out

    def node(self, rel: str, parent_rel: str, base: str, m: Member) -> None:
        """A FIFO or device node, where Docker's archive package makes one.

        Docker creates them as the tar says, except device nodes in a user namespace
        (where mknod cannot work), which it skips; so does lamina. The tar-split keeps
        their headers either way, so the layer's tar regenerates byte for byte. They are
        made in the private staging directory and live under ``layers/``, which only the
        store's owner can enter.
        """
        if m.type != tarfile.FIFOTYPE and not self.devices:
            log.info("%s: %s: skipping a device node (no CAP_MKNOD here)", self.where, rel)
            return
        self.remove(rel)
        kind = {tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK}.get(
            m.type, stat.S_IFIFO
        )
        os.mknod(self.root / rel, kind | 0o600, os.makedev(m.devmajor, m.devminor))
        self.apply_node(parent_rel, base, m)

    def apply_node(self, parent_rel: str, base: str, m: Member) -> None:
        """Owner, mode and times of a symlink, FIFO or device node, through its parent
        directory's fd (never following the name, never opening a FIFO)."""
        root_fd = beneath.open_root(self.root)
        try:
            parent_fd = beneath.open_dir(root_fd, parent_rel)
        finally:
            os.close(root_fd)
        try:
            meta = _meta(m)
            if m.type == tarfile.SYMTYPE:
                beneath.apply_link(parent_fd, base, meta)
            else:
                beneath.apply_node(parent_fd, base, meta)
        finally:
            os.close(parent_fd)

    def clean_name_link(self, m: Member) -> str:
        try:
            return self.clean_name(m.linkname)
        except ArchiveError:
            raise self.fail(
                m.name, f"hardlink target {m.linkname!r} is outside the layer"
            ) from None


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def can_make_devices() -> bool:
    """Whether this process may create device nodes: root outside a user namespace
    (Docker's ``userns.RunningInUserNS`` test on ``/proc/self/uid_map``)."""
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/self/uid_map", encoding="ascii") as f:
            fields = f.read().split()
    except OSError:
        return True
    return fields == ["0", "0", "4294967295"]


class _HashSink:
    """A write-only stream that hashes what it is given."""

    def __init__(self) -> None:
        self.hasher = Hasher()

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        return len(data)


def regenerated_digest(layer_dir: Path) -> tuple[str, int]:
    """The sha256 and size of the tar a layer directory regenerates (its diffID).

    Raises:
        StoreError: if its files or tar-split are damaged.
    """
    sink = _HashSink()
    TarSplit.load(layer_dir / TARSPLIT_NAME).write(layer_dir / "diff", sink)  # type: ignore[arg-type]
    return sink.hasher.digest(), sink.hasher.size


@dataclass(frozen=True)
class StagedLayer:
    """A layer extracted under ``tmp/`` and not yet in the store.

    Attributes:
        path: the staging directory (``diff/`` and the tar-split).
        diff_id: sha256 of the tar it came from.
        tar_size: bytes of that tar.
        candidates: its regular files that may share storage with other layers'.
    """

    path: Path
    diff_id: str
    tar_size: int
    candidates: tuple[Candidate, ...] = ()


class LayerStore:
    """The layers of one store (``layers/`` plus the ``layers`` table).

    Args:
        home: the store directory.
        index: its index.
        lock: its store lock.
        tmpdir: ``Store.tmpdir`` (work directories under ``home/tmp``).
    """

    def __init__(self, home: Path, index: Index, lock: StoreLock, tmpdir: TmpDirFactory) -> None:
        self.home = home
        self.root = home / "layers"
        self.index = index
        self._lock = lock
        self._tmpdir = tmpdir
        self.files = FilePool(home, index)

    # -- reading -----------------------------------------------------------------------

    def get(self, chain_id: str) -> LayerInfo:
        """The layer ``chain_id``.

        Raises:
            NotFound: if no such layer is recorded.
        """
        row = self.index.row("SELECT * FROM layers WHERE chain_id = ?", (chain_id,))
        if row is None:
            raise NotFound(f"no such layer: {chain_id}")
        return _info(row)

    def exists(self, chain_id: str) -> bool:
        """Whether the layer is recorded in the index."""
        return self.index.row("SELECT 1 FROM layers WHERE chain_id = ?", (chain_id,)) is not None

    def chain(self, chain_id: str) -> list[LayerInfo]:
        """The layer and every layer below it, base first.

        Raises:
            NotFound: if a layer of the chain is missing.
        """
        out: list[LayerInfo] = []
        cur: str | None = chain_id
        while cur is not None:
            info = self.get(cur)
            out.append(info)
            cur = info.parent
        out.reverse()
        return out

    def dir_path(self, chain_id: str) -> Path:
        """``layers/<hex>`` (validated digest; the layer need not exist)."""
        return self.root / hex_of(chain_id)

    def diff_path(self, chain_id: str) -> Path:
        """``layers/<hex>/diff`` (validated digest; the layer need not exist)."""
        return self.dir_path(chain_id) / "diff"

    def all(self) -> list[LayerInfo]:
        """Every recorded layer, oldest first."""
        rows = self.index.rows("SELECT * FROM layers ORDER BY created, chain_id")
        return [_info(r) for r in rows]

    def chain_ids(self) -> set[str]:
        """The chainIDs of every recorded layer."""
        return {str(r[0]) for r in self.index.rows("SELECT chain_id FROM layers")}

    def tar_size(self, chain_id: str) -> int:
        """Bytes of the layer's uncompressed tar."""
        row = self.index.row("SELECT tar_size FROM layers WHERE chain_id = ?", (chain_id,))
        if row is None:
            raise NotFound(f"no such layer: {chain_id}")
        return int(row[0])

    def write_tar(self, chain_id: str, out: BinaryIO) -> None:
        """Regenerates the layer's tar byte for byte (its sha256 is the diffID).

        Raises:
            NotFound: if the layer does not exist.
            StoreError: if its files or tar-split are damaged.
        """
        self.get(chain_id)
        layer_dir = self.dir_path(chain_id)
        TarSplit.load(layer_dir / TARSPLIT_NAME).write(layer_dir / "diff", out)

    def verify(self, chain_id: str) -> bool:
        """Whether the regenerated tar still hashes to the recorded diffID."""
        info = self.get(chain_id)
        try:
            digest, _size = regenerated_digest(self.dir_path(chain_id))
        except StoreError as exc:
            log.info("%s: %s", chain_id, exc)
            return False
        return digest == info.diff_id

    def changes(self, chain_id: str) -> list[FileChange]:
        """What the layer adds, modifies and deletes relative to the union of its parents.

        Paths are absolute (``/etc/passwd``). A path present below is ``modified``
        (directories included, as dive shows them); a whiteout is ``deleted``, and an
        opaque directory deletes every lower path below it that it does not redefine.
        """
        layers = self.chain(chain_id)
        lower: dict[str, bool] = {}
        for info in layers[:-1]:
            _apply_layer(lower, self.diff_path(info.chain_id))
        root = self.diff_path(chain_id)
        out: list[FileChange] = []
        links: dict[tuple[int, int], str] = {}
        present: set[str] = set()
        opaque: list[str] = []
        for rel, st in walk_sorted(root):
            path = "/" + rel
            if is_whiteout(st):
                out.append(FileChange(path, "deleted", "other", 0, 0, st.st_uid, st.st_gid))
                continue
            present.add(path)
            kind, target, size = _kind(root / rel, st)
            if kind == "file" and st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in links:
                    kind, target = "hardlink", links[key]
                else:
                    links[key] = path
            if kind == "dir" and is_opaque(root / rel):
                opaque.append(path)
            change = "modified" if path in lower else "added"
            out.append(
                FileChange(path, change, kind, size, st.st_mode, st.st_uid, st.st_gid, target)
            )
        for top in opaque:
            for p in sorted(lower):
                if p.startswith(top + "/") and p not in present:
                    out.append(FileChange(p, "deleted", "other", 0, 0))
        out.sort(key=lambda c: c.path)
        return out

    # -- writing -----------------------------------------------------------------------

    def commit_dir(
        self,
        src: Path,
        parent: str | None,
        created_by: str = "",
        known: Mapping[str, Candidate] | None = None,
    ) -> LayerInfo:
        """Commits the directory ``src`` (overlay format, under ``home/tmp``) as a layer.

        ``src`` is consumed: moved into the store, or discarded when the layer exists.
        Its regular files share storage with identical files of other layers (see
        ``dedup``); their keys come from ``known`` or from reading them for the tar.

        Args:
            src: the layer's changes (whiteouts as 0:0 char devices, opaque by xattr).
            parent: the chainID below, or None for a base layer.
            created_by: the instruction that produced it.
            known: files whose key the caller knows (a COPY's, some linked from the
                pool while staging), by path below ``src``.

        Raises:
            NotFound: if ``parent`` is not a layer.
            StoreError: if the directory cannot be read or moved into the store.
        """
        self._check_parent(parent)
        with self._tmpdir("commit") as work:
            stage = work / "layer"
            stage.mkdir()
            diff = stage / "diff"
            try:
                os.rename(src, diff)
            except OSError as exc:
                raise StoreError(
                    f"{src}: cannot move into the store ({exc.strerror}); it must be under "
                    f"{self.home / 'tmp'}"
                ) from exc
            hasher = Hasher()
            found: list[Candidate] = []
            tally = Tally()
            hashing = _HashThread(hasher)
            try:
                try:
                    split = dir_to_tar(diff, hashing, known, found, tally)
                finally:
                    hashing.close()
                split.dump(stage / TARSPLIT_NAME)
                _fsync_tree(stage)
                return self._install(
                    stage,
                    hasher.digest(),
                    hasher.size,
                    parent,
                    created_by,
                    found,
                    tally.measure(),
                )
            except OSError as exc:
                raise StoreError(f"{src}: cannot commit as a layer: {exc}") from exc

    def commit_tar(
        self, stream: BinaryIO, parent: str | None, created_by: str = "", where: str = "layer"
    ) -> LayerInfo:
        """Commits an *uncompressed* layer tar (AUFS ``.wh.`` whiteouts), extracted safely.

        The diffID is the sha256 of exactly the bytes read, and ``write_tar`` gives them
        back. Unsafe members (``..`` or absolute names, links escaping the layer, writes
        through a symlink, device nodes) are refused and leave the store unchanged.

        Args:
            stream: the tar bytes.
            parent: the chainID below, or None for a base layer.
            created_by: the instruction that produced it.
            where: names the archive and layer in error messages.

        Raises:
            ArchiveError: for an unsafe or malformed tar (one line naming the member).
            NotFound: if ``parent`` is not a layer.
        """
        self._check_parent(parent)
        with self._tmpdir("extract") as work:
            staged = self.stage_tar(stream, work / "layer", where)
            return self.install(staged, parent, created_by)

    def stage_tar(self, stream: BinaryIO, dest: Path, where: str = "layer") -> StagedLayer:
        """Extracts a layer tar into ``dest`` (under ``home/tmp``) without recording it.

        The first half of ``commit_tar``: the archive loader stages every layer of an
        image, checks each diffID against the config, and only then installs them, so
        a bad archive leaves the store as it was.

        Args:
            stream: the uncompressed tar bytes.
            dest: a directory to create (it receives ``diff/`` and the tar-split).
            where: names the archive and layer in error messages.

        Raises:
            ArchiveError: for an unsafe or malformed tar.
        """
        diff = dest / "diff"
        diff.mkdir(parents=True)
        os.chmod(diff, 0o755)
        reader = TarReader(stream, where)
        extractor = _Extractor(diff, where)
        try:
            extractor.extract(reader)
            extractor.split.dump(dest / TARSPLIT_NAME)
            candidates = tuple(extractor.candidates())
        except OSError as exc:
            raise ArchiveError(f"{where}: cannot extract: {exc}") from exc
        return StagedLayer(dest, reader.digest, reader.size, candidates)

    def install(self, staged: StagedLayer, parent: str | None, created_by: str = "") -> LayerInfo:
        """Moves a staged layer into the store and records it (all or nothing).

        If the resulting chainID exists already, the staged copy is left for its
        work directory's cleanup and the existing layer is returned.

        Raises:
            NotFound: if ``parent`` is not a layer.
        """
        self._check_parent(parent)
        try:
            _fsync_tree(staged.path)
            return self._install(
                staged.path,
                staged.diff_id,
                staged.tar_size,
                parent,
                created_by,
                staged.candidates,
            )
        except OSError as exc:
            raise StoreError(f"{staged.path}: cannot install the layer: {exc}") from exc

    def forget(self, chain_ids: list[str]) -> Released:
        """Deletes layer rows in one transaction (or the caller's); the directories are
        the caller's to remove (prune and fsck move them to the trash after committing).

        Returns:
            The shared files no remaining layer holds: once the transaction has
            committed, the caller (still holding the store lock) passes them to
            ``files.unlink``, so their storage goes with the last directory.
        """
        with self.index.transaction() as conn:
            freed = self.files.release(conn, chain_ids)
            for chain_id in chain_ids:
                conn.execute("DELETE FROM layers WHERE chain_id = ?", (chain_id,))
        return freed

    def measure_unmeasured(self) -> int:
        """Measures the layers recorded before sizes meant Docker's (index version 2).

        Those rows hold the blocks their directory used in ``size`` and nothing in
        ``disk_size``; each gets both figures from a walk of its directory. A layer
        whose directory is gone keeps its old figure as its disk size (fsck reports it).
        The build steps that made them show the new size too. Cheap once done: the
        query finds nothing.

        Returns:
            How many layers were measured.
        """
        rows = self.index.rows("SELECT chain_id, size FROM layers WHERE disk_size IS NULL")
        if not rows:
            return 0
        measured: list[tuple[int, int, str]] = []
        for row in rows:
            chain_id, old = str(row[0]), int(row[1])
            diff = self.diff_path(chain_id)
            try:
                sizes = measure(diff) if diff.is_dir() else Measure(old, old)
            except (OSError, StoreError) as exc:
                log.warning("%s: cannot measure the layer: %s", chain_id, exc)
                sizes = Measure(old, old)
            measured.append((sizes.size, sizes.disk, chain_id))
        try:
            with self.index.transaction("measuring layers") as conn:
                conn.executemany(
                    "UPDATE layers SET size = ?, disk_size = ? WHERE chain_id = ?"
                    " AND disk_size IS NULL",
                    measured,
                )
                # Recorded build steps show their layer's size: the same figure, measured so.
                conn.executemany(
                    "UPDATE build_steps SET size = ? WHERE layer = ?",
                    [(size, chain_id) for size, _disk, chain_id in measured],
                )
        except StoreError as exc:
            # A read-only or full store keeps its old figures until a writer opens it.
            log.debug("layers not measured: %s", exc)
            return 0
        log.info("measured %d layer(s) the way Docker sizes layers", len(measured))
        return len(measured)

    def _check_parent(self, parent: str | None) -> None:
        if parent is None:
            return
        if not is_digest(parent):
            raise StoreError(f"malformed parent layer id {parent!r}")
        self.get(parent)

    def _install(
        self,
        stage: Path,
        diff_id: str,
        tar_size: int,
        parent: str | None,
        created_by: str,
        candidates: Iterable[Candidate] = (),
        sizes: Measure | None = None,
    ) -> LayerInfo:
        chain_id = chain_ids([parent, diff_id])[-1] if parent else diff_id
        dest = self.dir_path(chain_id)
        sizes = sizes or measure(stage / "diff")
        now = time.time()
        with self._lock.hold(), self.index.transaction() as conn:
            row = conn.execute("SELECT * FROM layers WHERE chain_id = ?", (chain_id,)).fetchone()
            if row is not None:
                log.debug("layer %s exists; discarding the new copy", chain_id)
                return _info(row)
            if os.path.lexists(dest):
                # A leftover of a crash between rename and commit: not a layer, replace it.
                graveyard = stage.parent / "leftover"
                os.rename(dest, graveyard)
                beneath.remove_quietly(graveyard)
            # Under the lock: a prune unlinking a file's last pool name cannot run between
            # the pool's answer and this layer's row.
            below = (
                self.files.held_by([c.chain_id for c in self.chain(parent)], conn) if parent else ()
            )
            shared = self.files.adopt(conn, stage / "diff", candidates, below)
            disk = sizes.disk + shared.disk_delta
            try:
                os.rename(stage, dest)
                _fsync_path(self.root)
            except BaseException:
                self.files.discard_names(shared.new_names)
                raise
            try:
                conn.execute(
                    "INSERT INTO layers (chain_id, diff_id, parent, size, tar_size, created,"
                    " created_by, disk_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        chain_id,
                        diff_id,
                        parent,
                        sizes.size,
                        tar_size,
                        now,
                        created_by,
                        disk,
                    ),
                )
                self.files.hold(conn, chain_id, shared.ids)
            except BaseException:
                _discard(dest, stage)
                self.files.discard_names(shared.new_names)
                raise
        log.info("committed layer %s (diffID %s, %d bytes)", chain_id, diff_id, sizes.size)
        return LayerInfo(chain_id, diff_id, parent, sizes.size, now, created_by, disk)


def _discard(dest: Path, stage: Path) -> None:
    try:
        os.rename(dest, stage)
    except OSError:
        pass


def _meta(m: Member) -> beneath.Meta:
    return beneath.Meta(m.uid, m.gid, m.mode, m.mtime, m.xattrs)


def _info(row: object) -> LayerInfo:
    r = row  # sqlite3.Row
    return LayerInfo(
        chain_id=r["chain_id"],  # type: ignore[index]
        diff_id=r["diff_id"],  # type: ignore[index]
        parent=r["parent"],  # type: ignore[index]
        size=int(r["size"]),  # type: ignore[index]
        created=float(r["created"]),  # type: ignore[index]
        created_by=r["created_by"],  # type: ignore[index]
        disk_size=int(r["disk_size"] or 0),  # type: ignore[index]
    )


def _kind(path: Path, st: os.stat_result) -> tuple[str, str, int]:
    if stat.S_ISREG(st.st_mode):
        return "file", "", st.st_size
    if stat.S_ISDIR(st.st_mode):
        return "dir", "", 0
    if stat.S_ISLNK(st.st_mode):
        return "symlink", os.readlink(path), 0
    return "other", "", 0


def _apply_layer(paths: dict[str, bool], root: Path) -> None:
    """Stacks one overlay-format layer onto ``paths`` (absolute path -> is a directory)."""
    for rel, st in walk_sorted(root):
        path = "/" + rel
        is_dir = stat.S_ISDIR(st.st_mode)
        was_dir = paths.get(path, False)
        if is_whiteout(st):
            paths.pop(path, None)
            if was_dir:
                _drop_below(paths, path)
            continue
        if was_dir and (not is_dir or is_opaque(root / rel)):
            # A file replacing a directory, or an opaque directory, hides what was below.
            _drop_below(paths, path)
        paths[path] = is_dir


def _drop_below(paths: dict[str, bool], path: str) -> None:
    prefix = path + "/"
    for p in [p for p in paths if p.startswith(prefix)]:
        del paths[p]
