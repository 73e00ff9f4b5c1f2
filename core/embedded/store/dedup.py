"""Identical files stored once: layers share the inodes of files they hold in common.

A regular file that a new layer holds with the same content and the same metadata as a
file some layer already holds becomes a hard link to that file's inode, so a one-file
edit of a 20,000-file COPY adds about one file to the store instead of a second copy of
everything. Layers stay immutable: nothing ever writes into a layer's files once it is
committed (RUN sees layers as overlay lower directories, whose files are copied up
before any change), so an inode shared by many layers never changes under any of them.

What may share an inode is decided by a **file key**: sha256 over a version tag, the
content's sha256, and the metadata an inode carries (``st_mode``, owner, size,
nanosecond mtime and the xattrs lamina keeps), so two files share storage exactly when
no reader of a layer could tell their inodes apart. The tar a layer regenerates reads
only the content (its headers are in the tar-split), so its diffID and ``save`` bytes
do not change either.

The **pool** ``files/<k[:2]>/<k>`` holds one name for every shared inode, keyed by its
file key (hex), so a new layer links from a name that no layer's removal invalidates.
The index keeps the accounting:

* ``files``: one row per pooled inode: its key, inode number, the bytes it occupies on
  disk, and ``refs``, how many layers hold it;
* ``layer_files``: which layers (by ``layer_numbers.no``) hold which files.

A layer's ``disk_size`` counts all its inodes; what it alone occupies is that minus its
files held by other layers too (``refs > 1``), and those shared files count once, in
``Shared.disk``. Removing a set of layers frees a shared file when all its holders are in
the set (``SharedRelease``). When a layer's row goes (``release``, in the same
transaction), its files' ``refs`` drop; a file no layer holds any more loses its row,
and its pool name is unlinked once that transaction has committed (``unlink``, under
the store lock), so a pool name exists exactly as long as its row. A crash between the
two leaves a pool name without a row, which ``stray_names`` finds and fsck removes.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import sqlite3
import stat
import struct
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lamina.core.embedded.store.index import Index

log = logging.getLogger(__name__)

POOL_DIR = "files"
_KEY_VERSION = b"lamina file key 1\0"
_META = struct.Struct("<QIIIq")
# SQLite's limit on host parameters is 32766 (since 3.32); batches stay below it, so a
# 20,000-file layer is one query.
_BATCH = 30_000
# Labels a security module sets on every new file by policy: not part of the content.
_IGNORED_XATTRS = frozenset({"security.selinux", "security.SMACK64"})


def file_key(
    digest: str,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime_ns: int,
    xattrs: Mapping[str, bytes] | None = None,
) -> bytes:
    """The key of a regular file: what two inodes must agree on to be one.

    Args:
        digest: sha256 of the content, 64 hex digits.
        mode: ``st_mode`` (type and permission bits).
        uid: owner.
        gid: group.
        size: bytes of content.
        mtime_ns: modification time in nanoseconds.
        xattrs: the extended attributes the file carries.

    Returns:
        32 bytes.
    """
    h = hashlib.sha256(_KEY_VERSION)
    h.update(bytes.fromhex(digest))
    h.update(_META.pack(size, mode, uid, gid, mtime_ns))
    for name in sorted(xattrs or ()):
        value = (xattrs or {})[name]
        h.update(name.encode("utf-8", "surrogateescape") + b"\0")
        h.update(struct.pack("<I", len(value)) + value)
    return h.digest()


def kept_xattrs(path: str) -> dict[str, bytes]:
    """The extended attributes of ``path`` that a file key covers (not followed)."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out: dict[str, bytes] = {}
    for name in names:
        if name in _IGNORED_XATTRS:
            continue
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
    return out


def key_of(path: str, digest: str, st: os.stat_result) -> bytes:
    """The file key of the regular file at ``path`` whose content hashes to ``digest``."""
    return file_key(
        digest, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, kept_xattrs(path)
    )


def poolable(st: os.stat_result) -> bool:
    """Whether a file may share storage: a regular file with content, one name only."""
    return stat.S_ISREG(st.st_mode) and st.st_size > 0 and st.st_nlink == 1


@dataclass(frozen=True)
class Candidate:
    """A regular file of a staged layer that may share storage.

    Attributes:
        rel: its path below the layer's ``diff/``.
        key: its file key.
        ino: its inode number now (the pool's when it was linked while staging).
        blocks: ``st_blocks * 512`` of that inode.
        xattrs_known: whether ``capability`` is known to be the inode's
            ``security.capability`` (the xattr a layer tar keeps), so the commit need
            not read it back.
        capability: that xattr's value, or None for none.
    """

    rel: str
    key: bytes
    ino: int
    blocks: int
    xattrs_known: bool = False
    capability: bytes | None = None


@dataclass(frozen=True)
class Adopted:
    """What sharing did to one staged layer.

    Attributes:
        ids: the pooled files the layer holds (``files.id``).
        disk_delta: how its own ``disk_size`` changed when files were replaced by links
            to the pool's inodes (another inode of the same content may hold a
            different number of blocks).
        new_names: pool names created (to unlink if the layer is not recorded).
    """

    ids: tuple[int, ...]
    disk_delta: int
    new_names: tuple[str, ...]


@dataclass(frozen=True)
class Released:
    """Pooled files no layer holds any more, once some layers' rows are gone.

    Attributes:
        keys: their keys (their pool names are still to be unlinked).
        shared_disk: the bytes of those that were shared (held by more than one of the
            layers removed): what a layer's own ``disk`` did not count.
    """

    keys: tuple[bytes, ...]
    shared_disk: int


@dataclass(frozen=True)
class Shared:
    """Storage that several layers share, counted once.

    Attributes:
        files: inodes held by more than one layer.
        disk: their bytes on disk, each inode once.
        saved: what a copy per layer would add: each file's bytes times its holders
            after the first.
    """

    files: int
    disk: int
    saved: int


def make_pool(home: Path) -> None:
    """The pool's 256 shard directories, made once with the store: a build or load that
    is rolled back then leaves the store's tree exactly as it found it."""
    pool = home / POOL_DIR
    if (pool / "ff").is_dir():
        return
    for i in range(256):
        (pool / f"{i:02x}").mkdir(mode=0o700, parents=True, exist_ok=True)


class FilePool:
    """The shared files of one store: ``files/`` and the ``files``/``layer_files`` tables.

    Args:
        home: the store directory.
        index: its index.
    """

    def __init__(self, home: Path, index: Index) -> None:
        self.root = home / POOL_DIR
        self.index = index
        self._shards: set[str] = set()

    def path(self, key: bytes) -> str:
        """``files/<k[:2]>/<k>`` of a key (as a string: it is on the per-file path)."""
        hexed = key.hex()
        return f"{self.root}/{hexed[:2]}/{hexed}"

    def _shard(self, key: bytes) -> None:
        shard = key.hex()[:2]
        if shard not in self._shards:
            os.makedirs(f"{self.root}/{shard}", mode=0o700, exist_ok=True)
            self._shards.add(shard)

    # -- while staging -------------------------------------------------------------------

    def link_into(
        self, key: bytes, target: str, mode: int, uid: int, gid: int, size: int, mtime_ns: int
    ) -> os.stat_result | None:
        """Makes ``target`` (a new name) a link to the pooled file ``key``, if there is one.

        The inode is checked against the metadata the key was made of, so a damaged
        pool entry is never linked. Nothing is written to the inode.

        Returns:
            The linked inode's ``lstat``, or None (no such file, or it cannot take
            another link): the caller copies instead.
        """
        try:
            os.link(self.path(key), target, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.EMLINK, errno.EXDEV, errno.EPERM):
                return None
            raise
        st = os.lstat(target)
        if (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns) != (
            mode,
            uid,
            gid,
            size,
            mtime_ns,
        ):
            log.warning("%s: pooled file does not match its key; not shared", self.path(key))
            os.unlink(target)
            return None
        return st

    # -- installing ----------------------------------------------------------------------

    def adopt(
        self,
        conn: sqlite3.Connection,
        diff: Path,
        candidates: Iterable[Candidate],
        below: Collection[bytes] = frozenset(),
    ) -> Adopted:
        """Makes a staged layer's candidates share the pool's inodes (store lock held,
        inside the transaction that records the layer).

        A candidate linked from the pool while staging is already shared; another whose
        key the pool holds becomes a link to it (its own copy is dropped, and the
        directory keeps its times); one the pool lacks is linked into the pool. A key
        shared twice within the layer would turn two files into one inode (a hardlink in
        the layer's tree that its tar does not have), so its second file keeps its own;
        so does a file whose key a layer below holds (``below``): in the image's
        tree the two would be two names of one inode, which Docker's never has.
        The caller records ``ids`` with :meth:`hold`.
        """
        wanted = list(candidates)
        rows = self._rows(conn, {c.key for c in wanted})
        used: set[bytes] = set(below)
        existing: list[int] = []
        fresh: list[tuple[bytes, int, int]] = []
        new_names: list[str] = []
        touched: dict[str, os.stat_result] = {}
        delta = 0
        top = str(diff)
        for c in wanted:
            if c.key in used:
                row = rows.get(c.key)
                if row is not None and row[1] == c.ino:
                    # Linked while staging, yet not to be shared: a copy of its own.
                    _unshare(f"{top}/{c.rel}", touched)
                continue
            used.add(c.key)
            row = rows.get(c.key)
            if row is not None and row[1] == c.ino:
                existing.append(row[0])
                continue
            pool_path = self.path(c.key)
            target = f"{top}/{c.rel}"
            if row is not None:
                if self._replace(target, pool_path, touched):
                    existing.append(row[0])
                    delta += row[2] - c.blocks
                else:
                    used.discard(c.key)
                continue
            self._shard(c.key)
            try:
                os.link(target, pool_path, follow_symlinks=False)
            except FileExistsError:
                # A name without a row: what a crash between commit and unlink leaves.
                os.unlink(pool_path)
                os.link(target, pool_path, follow_symlinks=False)
            new_names.append(pool_path)
            fresh.append((c.key, c.ino, c.blocks))
        _restore_times(touched)
        ids = list(existing)
        if fresh:
            conn.executemany("INSERT INTO files (key, ino, disk, refs) VALUES (?, ?, ?, 0)", fresh)
            ids += [row[0] for row in self._rows(conn, {k for k, _i, _b in fresh}).values()]
        return Adopted(tuple(ids), delta, tuple(new_names))

    def held_by(
        self, chain_ids: Collection[str], conn: sqlite3.Connection | None = None
    ) -> set[bytes]:
        """The keys of the pooled files any of ``chain_ids`` holds (a chain's, for the
        layer to be committed on it: see ``adopt``)."""
        c = conn or self.index.connection()
        ordered = list(chain_ids)
        out: set[bytes] = set()
        for batch, marks in _batches(ordered):
            out.update(
                bytes(r[0])
                for r in c.execute(
                    "SELECT f.key FROM files f JOIN layer_files lf ON lf.file = f.id"
                    " JOIN layer_numbers n ON n.no = lf.layer"
                    f" WHERE n.chain_id IN ({marks})",
                    batch,
                )
            )
        return out

    def hold(self, conn: sqlite3.Connection, chain_id: str, ids: Collection[int]) -> None:
        """Records that layer ``chain_id`` holds the pooled files ``ids``."""
        if not ids:
            return
        cur = conn.execute("INSERT INTO layer_numbers (chain_id) VALUES (?)", (chain_id,))
        number = cur.lastrowid
        ordered = list(ids)
        for batch, marks in _batches(ordered):
            conn.execute(f"UPDATE files SET refs = refs + 1 WHERE id IN ({marks})", batch)
        conn.executemany(
            "INSERT INTO layer_files (layer, file) VALUES (?, ?)", [(number, i) for i in ids]
        )

    def discard_names(self, names: Iterable[str]) -> None:
        """Unlinks pool names :meth:`adopt` created for a layer that was not recorded."""
        for name in names:
            try:
                os.unlink(name)
            except OSError:
                pass

    @staticmethod
    def _replace(target: str, pool_path: str, touched: dict[str, os.stat_result]) -> bool:
        parent = target.rpartition("/")[0]
        if parent not in touched:
            touched[parent] = os.lstat(parent)
        temp = f"{parent}/.lamina-share-{os.getpid()}"
        try:
            os.link(pool_path, temp, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EMLINK, errno.EXDEV, errno.EPERM):
                return False
            raise
        os.rename(temp, target)
        return True

    # -- removing ------------------------------------------------------------------------

    def release(self, conn: sqlite3.Connection, chain_ids: Collection[str]) -> Released:
        """Drops what the layers ``chain_ids`` hold (inside the transaction deleting their
        rows); returns the files no layer holds any more, whose rows are gone.

        Their pool names must be unlinked with :meth:`unlink` once that transaction has
        committed, the store lock still held.
        """
        counts: dict[int, int] = {}
        for chain_id in chain_ids:
            row = conn.execute(
                "SELECT no FROM layer_numbers WHERE chain_id = ?", (chain_id,)
            ).fetchone()
            if row is None:
                continue
            number = int(row[0])
            for (i,) in conn.execute("SELECT file FROM layer_files WHERE layer = ?", (number,)):
                counts[int(i)] = counts.get(int(i), 0) + 1
            conn.execute("DELETE FROM layer_files WHERE layer = ?", (number,))
            conn.execute("DELETE FROM layer_numbers WHERE no = ?", (number,))
        if not counts:
            return Released((), 0)
        gone: list[bytes] = []
        shared = 0
        ids = list(counts)
        for batch, marks in _batches(ids):
            for i, key, disk, refs in conn.execute(
                f"SELECT id, key, disk, refs FROM files WHERE id IN ({marks})", batch
            ):
                if counts[int(i)] >= int(refs):
                    gone.append(bytes(key))
                    if int(refs) > 1:
                        shared += int(disk)
        conn.executemany(
            "UPDATE files SET refs = refs - ? WHERE id = ?", [(n, i) for i, n in counts.items()]
        )
        conn.execute("DELETE FROM files WHERE refs <= 0")
        return Released(tuple(gone), shared)

    def unlink(self, released: Released) -> None:
        """Unlinks the pool names of files no layer holds any more (after the commit
        that released them, store lock held); what cannot be removed now is a stray name
        for fsck."""
        for key in released.keys:
            try:
                os.unlink(self.path(key))
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("%s: cannot remove (%s)", self.path(key), exc.strerror)

    # -- accounting ----------------------------------------------------------------------

    def shared(self, conn: sqlite3.Connection | None = None) -> Shared:
        """The storage several layers share, and what sharing it saves."""
        c = conn or self.index.connection()
        files, disk, saved = c.execute(
            "SELECT count(*), coalesce(sum(disk), 0), coalesce(sum(disk * (refs - 1)), 0)"
            " FROM files WHERE refs > 1"
        ).fetchone()
        return Shared(int(files), int(disk), int(saved))

    def groups(self, conn: sqlite3.Connection | None = None) -> list[SharedGroup]:
        """The shared files, grouped by the layers that hold them.

        Files edited rarely are held by the same layers (every version of a COPY holds
        the files nobody touched), so a store of 20,000 shared files has a handful of
        groups: accounting works on those, not on each file.
        """
        c = conn or self.index.connection()
        rows = c.execute(
            "SELECT holders, count(*), sum(disk) FROM ("
            " SELECT f.disk AS disk, group_concat(lf.layer) AS holders FROM files f"
            " JOIN layer_files lf ON lf.file = f.id WHERE f.refs > 1 GROUP BY f.id"
            ") GROUP BY holders"
        ).fetchall()
        if not rows:
            return []
        # The chainIDs of the holders only: a store of 20,000 layers shares few.
        wanted = sorted({int(n) for holders, _f, _d in rows for n in str(holders).split(",")})
        numbers: dict[int, str] = {}
        for batch, marks in _batches(wanted):
            numbers.update(
                (int(n), str(chain))
                for n, chain in c.execute(
                    f"SELECT no, chain_id FROM layer_numbers WHERE no IN ({marks})", batch
                )
            )
        groups: dict[frozenset[str], list[int]] = {}
        for holders, files, disk in rows:
            key = frozenset(numbers[int(n)] for n in str(holders).split(",") if int(n) in numbers)
            totals = groups.setdefault(key, [0, 0])
            totals[0] += int(files)
            totals[1] += int(disk)
        return [SharedGroup(k, v[0], v[1]) for k, v in groups.items()]

    def shared_by_layer(self, conn: sqlite3.Connection | None = None) -> dict[str, int]:
        """Per layer, the bytes of its files that other layers hold too (what its
        ``disk_size`` counts but removing it alone does not free)."""
        out: dict[str, int] = {}
        for group in self.groups(conn):
            for chain_id in group.holders:
                out[chain_id] = out.get(chain_id, 0) + group.disk
        return out

    def rebuild(self, conn: sqlite3.Connection, diffs: Mapping[str, Path]) -> int:
        """Recovers the accounting from disk, for an index rebuilt from the layers
        (inside its transaction, the layers' rows written): a pool name's inode held by
        layers gets its row and holders again; one no layer holds is unlinked.

        Args:
            conn: the new index, in its transaction.
            diffs: each recovered layer's ``diff/`` by chainID.

        Returns:
            How many shared files were recovered.
        """
        pooled: dict[int, tuple[bytes, int]] = {}
        names: dict[int, str] = {}
        for shard in sorted(os.listdir(self.root)) if self.root.is_dir() else ():
            for name in sorted(os.listdir(f"{self.root}/{shard}")):
                path = f"{self.root}/{shard}/{name}"
                try:
                    key = bytes.fromhex(name)
                    st = os.lstat(path)
                except (ValueError, OSError):
                    continue
                if len(key) == 32 and stat.S_ISREG(st.st_mode):
                    pooled[st.st_ino] = (key, st.st_blocks * 512)
                    names[st.st_ino] = path
        holders: dict[int, list[str]] = {}
        for chain_id, diff in diffs.items():
            seen: set[int] = set()
            for dirpath, _dirs, files in os.walk(diff):
                for name in files:
                    try:
                        st = os.lstat(os.path.join(dirpath, name))
                    except OSError:
                        continue
                    if st.st_ino in pooled and st.st_ino not in seen:
                        seen.add(st.st_ino)
                        holders.setdefault(st.st_ino, []).append(chain_id)
        for ino, path in names.items():
            if ino not in holders:
                os.unlink(path)
        numbers: dict[str, int] = {}
        for ino, chains in sorted(holders.items()):
            key, disk = pooled[ino]
            cur = conn.execute(
                "INSERT INTO files (key, ino, disk, refs) VALUES (?, ?, ?, ?)",
                (key, ino, disk, len(chains)),
            )
            for chain_id in chains:
                if chain_id not in numbers:
                    numbers[chain_id] = int(
                        conn.execute(
                            "INSERT INTO layer_numbers (chain_id) VALUES (?)", (chain_id,)
                        ).lastrowid
                        or 0
                    )
                conn.execute(
                    "INSERT INTO layer_files (layer, file) VALUES (?, ?)",
                    (numbers[chain_id], cur.lastrowid),
                )
        return len(holders)

    def stray_names(self) -> Iterator[str]:
        """Pool names without a row: what a crash between creating a name and recording
        it, or between a prune's commit and its unlink, leaves. Nothing accounts for
        them; the next prune sweeps them as leftovers (``trash``).

        A listing of the pool's shard directories, and the rows' keys only when their
        count differs from the names'.
        """
        try:
            shards = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return
        names: list[tuple[str, str]] = []
        for shard in shards:
            try:
                names += [(shard, n) for n in os.listdir(f"{self.root}/{shard}")]
            except OSError:
                continue
        (rows,) = self.index.row("SELECT count(*) FROM files") or (0,)
        if int(rows) == len(names):
            return
        known = {bytes(r[0]).hex() for r in self.index.rows("SELECT key FROM files")}
        for shard, name in names:
            if name not in known:
                yield f"{self.root}/{shard}/{name}"

    def recorded(self, name: str, conn: sqlite3.Connection | None = None) -> bool:
        """Whether the pool name ``name`` (its key in hex) has a row."""
        try:
            key = bytes.fromhex(name)
        except ValueError:
            return False
        c = conn or self.index.connection()
        return c.execute("SELECT 1 FROM files WHERE key = ?", (key,)).fetchone() is not None

    def _rows(
        self, conn: sqlite3.Connection, keys: Collection[bytes]
    ) -> dict[bytes, tuple[int, int, int]]:
        out: dict[bytes, tuple[int, int, int]] = {}
        ordered = list(keys)
        for batch, marks in _batches(ordered):
            for key, i, ino, disk in conn.execute(
                f"SELECT key, id, ino, disk FROM files WHERE key IN ({marks})", batch
            ):
                out[bytes(key)] = (int(i), int(ino), int(disk))
        return out


@dataclass(frozen=True)
class SharedGroup:
    """Shared files held by exactly the same layers.

    Attributes:
        holders: the layers (chainIDs).
        files: how many files.
        disk: their bytes on disk, each inode once.
    """

    holders: frozenset[str]
    files: int
    disk: int


class SharedRelease:
    """Counts, for one prune plan, the shared files whose every holder it removes.

    Args:
        groups: the shared files by their holders (``FilePool.groups``).
    """

    def __init__(self, groups: Iterable[SharedGroup]) -> None:
        self._groups = list(groups)
        self._of: dict[str, list[int]] = {}
        for n, group in enumerate(self._groups):
            for chain_id in group.holders:
                self._of.setdefault(chain_id, []).append(n)
        self._left = [len(g.holders) for g in self._groups]

    def __call__(self, chain_id: str) -> int:
        """Bytes freed by removing ``chain_id`` after every layer given before."""
        freed = 0
        for n in self._of.pop(chain_id, ()):
            self._left[n] -= 1
            if self._left[n] == 0:
                freed += self._groups[n].disk
        return freed


def _unshare(path: str, touched: dict[str, os.stat_result]) -> None:
    """Gives ``path`` an inode of its own with the same bytes and metadata (through a
    temporary name in its directory, renamed over it)."""
    parent = path.rpartition("/")[0]
    if parent not in touched:
        touched[parent] = os.lstat(parent)
    st = os.lstat(path)
    temp = f"{parent}/.lamina-own-{os.getpid()}"
    fin = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fout = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            while os.sendfile(fout, fin, None, 1 << 30):
                pass
            for name in os.listxattr(fin):
                os.setxattr(fout, name, os.getxattr(fin, name))
            os.fchown(fout, st.st_uid, st.st_gid)
            os.fchmod(fout, stat.S_IMODE(st.st_mode))
            os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(fout)
    finally:
        os.close(fin)
    os.rename(temp, path)


def _restore_times(touched: Mapping[str, os.stat_result]) -> None:
    """Puts back the times of directories whose entries were replaced by links: the
    layer's tar-split recorded them, and its tree must say the same."""
    for path, st in touched.items():
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _batches(values: list[Any]) -> Iterator[tuple[list[Any], str]]:
    """``values`` in slices SQLite takes as parameters, each with its ``?,?,…`` marks."""
    for start in range(0, len(values), _BATCH):
        batch = values[start : start + _BATCH]
        yield batch, ",".join("?" * len(batch))
