"""Source checksums the way Docker's classic builder computes them.

Each file gets a tarsum-v1-style hash: sha256 over the tar header fields ``name``,
``mode``, ``uid``, ``gid``, ``size``, ``typeflag``, ``linkname``, ``uname``, ``gname``,
``devmajor``, ``devminor`` (each written as the field name followed by its value, mtime
left out), then the ``security.capability`` xattr, then the content. A COPY/ADD source
is then summarised as moby's ``builder/dockerfile/copy.go`` does:

* one file: ``file:<tarsum>``;
* a directory: ``dir:`` + sha256 over the sorted tarsums of everything below it
  (the directory itself included), joined with ``,``;
* several sources: ``multi:`` + sha256 over their checksums joined with ``,``.

Names are relative to the context root, so renaming a file changes its hash. Context
files are hashed with uid/gid 0 (the client sends them that way), so their owner never
counts; files copied from another stage keep their real owner.

A :class:`StatCache` keyed on what ``lstat`` says (size, mtime, inode, mode, ctime)
remembers each regular file's tarsum in :class:`StatRows` (the store implements them
with its index's ``stat_cache`` table), so rehashing an unchanged 20,000-file context
costs stats, not reads.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import stat
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lamina.core.errors import ContextError
from lamina.core.model import SourceChange

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
# A file modified within this many seconds of being hashed may change again within the
# same mtime tick without the stat changing ("racy git"), so it is not cached.
_RACY_SECONDS = 2.0
# What a tree fingerprint hashes per entry (size, mtime_ns, inode, mode, ctime_ns).
_TREE_SIG = struct.Struct("<QqQIq")
_TREE_VERSION = b"lamina tree 1\0"
# Hashing threads for a context's files, and the bytes below which one thread does.
_HASH_THREADS = 4
_PARALLEL_BYTES = 8 << 20


def _typeflag(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "0"
    if stat.S_ISLNK(mode):
        return "2"
    if stat.S_ISCHR(mode):
        return "3"
    if stat.S_ISBLK(mode):
        return "4"
    if stat.S_ISDIR(mode):
        return "5"
    if stat.S_ISFIFO(mode):
        return "6"
    return "0"


def entry_type(mode: int) -> str:
    """The manifest type of a ``st_mode``: ``file``, ``dir``, ``symlink`` or ``other``."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _read_capability(path: str | Path) -> bytes | None:
    try:
        return os.getxattr(path, "security.capability", follow_symlinks=False)
    except OSError:
        return None


def tarsum_header(
    name: str,
    st: os.stat_result,
    link: str = "",
    uid: int = 0,
    gid: int = 0,
    capability: bytes | None = None,
) -> bytes:
    """The tarsum-v1 header bytes of one entry (everything but its content).

    Args:
        name: the entry's name relative to the root, without a leading ``./``; a
            directory gets a trailing ``/`` added here, as Go's tar header does.
        st: the entry's ``lstat`` result.
        link: a symlink's target.
        uid: owner to hash (0 for context files).
        gid: group to hash (0 for context files).
        capability: the raw ``security.capability`` xattr, if any.

    Returns:
        The bytes to feed into sha256 before the content.
    """
    mode = st.st_mode
    if stat.S_ISDIR(mode) and not name.endswith("/"):
        name += "/"
    size = st.st_size if stat.S_ISREG(mode) else 0
    major = minor = 0
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    fields = [
        ("name", name),
        ("mode", str(stat.S_IMODE(mode))),
        ("uid", str(uid)),
        ("gid", str(gid)),
        ("size", str(size)),
        ("typeflag", _typeflag(mode)),
        ("linkname", link),
        ("uname", ""),
        ("gname", ""),
        ("devmajor", str(major)),
        ("devminor", str(minor)),
    ]
    out = b"".join(k.encode() + v.encode("utf-8", "surrogateescape") for k, v in fields)
    if capability is not None:
        out += b"security.capability" + capability
    return out


def tarsum_file(
    path: str | Path, name: str, st: os.stat_result | None = None, *, real_owner: bool = False
) -> tuple[str, str]:
    """The tarsum-v1 digest of one file, directory, symlink or device.

    Args:
        path: where the entry is on disk.
        name: its name relative to the root (what the tar header would say).
        st: its ``lstat`` result, if already known.
        real_owner: hash the entry's real uid/gid (files from another stage) instead
            of 0 (context files).

    Returns:
        ``(tarsum, content)``: 64 hex characters each; ``content`` is the sha256 of the
        bytes alone (of nothing for a non-file), so a reason can tell a content change
        from a mode change.

    Raises:
        ContextError: the entry cannot be read.
    """
    try:
        if st is None:
            st = os.lstat(path)
        link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
        uid, gid = (st.st_uid, st.st_gid) if real_owner else (0, 0)
        h = hashlib.sha256(tarsum_header(name, st, link, uid, gid, _read_capability(path)))
        c = hashlib.sha256()
        if stat.S_ISREG(st.st_mode) and st.st_size > 0:
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                    c.update(chunk)
    except OSError as exc:
        raise ContextError(f"cannot read {name}: {exc.strerror or exc}") from exc
    return h.hexdigest(), c.hexdigest()


def hash_string_slice(prefix: str, items: Iterable[str]) -> str:
    """moby's ``hashStringSlice``: ``<prefix>:`` + sha256 of the items joined by ``,``."""
    return prefix + ":" + hashlib.sha256(",".join(items).encode()).hexdigest()


def multi_checksum(checksums: list[str]) -> str:
    """The checksum of a COPY/ADD with several sources (one source keeps its own)."""
    if len(checksums) == 1:
        return checksums[0]
    return hash_string_slice("multi", checksums)


@dataclass(frozen=True)
class ManifestEntry:
    """One path a COPY/ADD source contributes, for explaining a changed checksum.

    Attributes:
        path: name relative to the source root (the context, or the stage's rootfs).
        type: ``file``, ``dir``, ``symlink`` or ``other``.
        mode: permission bits (``stat.S_IMODE``).
        size: bytes, for regular files.
        digest: sha256 of the content (regular files; of nothing otherwise).
        link: a symlink's target.
        uid: owner as hashed (0 for context files).
        gid: group as hashed.
    """

    path: str
    type: str
    mode: int
    size: int
    digest: str
    link: str = ""
    uid: int = 0
    gid: int = 0

    def to_json(self) -> list[Any]:
        """A compact list form for the cache entry's ``inputs``."""
        return [self.type, self.mode, self.size, self.digest, self.link, self.uid, self.gid]


def manifest_to_json(entries: Iterable[ManifestEntry]) -> dict[str, list[Any]]:
    """``{path: [type, mode, size, digest, link, uid, gid]}`` for a cache entry."""
    return {e.path: e.to_json() for e in entries}


def diff_manifests(
    old: dict[str, list[Any]], new: dict[str, list[Any]]
) -> tuple[list[str], list[str], list[SourceChange]]:
    """What changed between two stored manifests.

    Args:
        old: the manifest stored with the previous cache entry.
        new: the manifest of this build.

    Returns:
        ``(added, removed, changed)``: sorted paths, and ``{"path", "what"}`` records
        where ``what`` lists ``content``, ``mode``, ``type`` or ``link target``.
    """
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    changed: list[SourceChange] = []
    for path in sorted(set(old) & set(new)):
        o, n = old[path], new[path]
        if o == n:
            continue
        what: list[str] = []
        if o[0] != n[0]:
            what.append("type")
        else:
            if o[1] != n[1]:
                what.append("mode")
            if o[4] != n[4]:
                what.append("link target")
            if o[0] == "symlink":
                # A link's digest is what it points at: name it only when the link
                # itself still points at the same place.
                if o[4] == n[4] and o[3] != n[3]:
                    what.append("content")
            elif o[2] != n[2] or o[3] != n[3]:
                what.append("content")
            if o[5:7] != n[5:7]:
                what.append("owner")
        if not what:
            what.append("content")
        changed.append({"path": path, "what": what})
    return added, removed, changed


# What the stat cache remembers of a file: its lstat signature (size, mtime_ns, inode,
# mode, ctime_ns; None where a row lacks one) and ``"<name> <tarsum> <content sha>"``.
StatRow = tuple[int | None, int | None, int | None, int | None, int | None, str]


class StatRows(Protocol):
    """Where the stat cache keeps its rows between builds (the store's ``stat_cache``)."""

    def below(self, prefix: str) -> dict[str, StatRow]:
        """Every row whose path starts with ``prefix`` (which ends with ``/``)."""
        ...

    def get(self, path: str) -> StatRow | None:
        """The row of one path, or None."""
        ...

    def put(
        self, rows: dict[str, StatRow], trees: dict[str, tuple[str, str]] | None = None
    ) -> None:
        """Writes (or replaces) rows, and tree rows (key -> (fingerprint, value)), in one
        transaction."""
        ...

    def tree(self, key: str) -> tuple[str, str] | None:
        """A tree row: (fingerprint, value), or None."""
        ...


class StatCache:
    """Tarsums of regular files remembered by what ``lstat`` says about them.

    Reads go to ``rows``; new sums are kept in memory until :meth:`flush`, so a build
    that fails its preflight writes nothing.

    Args:
        rows: where sums persist (``store.stat_cache``), or None for no persistent cache.
    """

    def __init__(self, rows: StatRows | None) -> None:
        self._rows = rows
        self._pending: dict[str, StatRow] = {}
        self._trees: dict[str, tuple[str, str]] = {}
        # Rows read in bulk by ``prime``: one query for a whole context instead of one
        # per file (20,000 round trips on a large context).
        self._primed: dict[str, StatRow] = {}
        self._primed_roots: tuple[str, ...] = ()
        self._to_prime: list[str] = []
        self.hits = 0
        self.misses = 0

    def prime(self, root: Path) -> None:
        """Reads every remembered sum below ``root`` at once, on the first lookup below
        it: a context whose trees are all remembered never needs them."""
        if self._rows is None:
            return
        self._to_prime.append(str(root).rstrip("/") + "/")

    def _prime_now(self) -> None:
        assert self._rows is not None
        for prefix in self._to_prime:
            self._primed.update(self._rows.below(prefix))
            self._primed_roots = (*self._primed_roots, prefix)
        self._to_prime.clear()

    @staticmethod
    def _sig(st: os.stat_result) -> tuple[int, int, int, int, int]:
        return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode, st.st_ctime_ns)

    def tarsum(self, path: str | Path, name: str, st: os.stat_result) -> tuple[str, str]:
        """``(tarsum, content sha)`` of a context file, cached while its stat holds."""
        if not stat.S_ISREG(st.st_mode) or self._rows is None:
            return tarsum_file(path, name, st)
        sums = self.lookup(path, name, st)
        if sums is None:
            sums = tarsum_file(path, name, st)
            self.learn(path, name, st, sums)
        return sums

    def lookup(self, path: str | Path, name: str, st: os.stat_result) -> tuple[str, str] | None:
        """The remembered ``(tarsum, content sha)`` of a regular file while its stat
        holds, else None (counted as a miss: the caller computes the sums, then
        passes them to :meth:`learn`)."""
        if self._rows is None:
            self.misses += 1
            return None
        if self._to_prime:
            self._prime_now()
        key = str(path)
        row: StatRow | None
        if self._primed_roots and key.startswith(self._primed_roots):
            row = self._primed.get(key)
        else:
            row = self._rows.get(key)
        if row is not None and tuple(row[:5]) == self._sig(st):
            parts = str(row[5]).rsplit(" ", 2)
            # The name is part of the hash: the same file seen from another context
            # root has another tarsum.
            if len(parts) == 3 and parts[0] == name and len(parts[1]) == 64:
                self.hits += 1
                return parts[1], parts[2]
        self.misses += 1
        return None

    def learn(self, path: str | Path, name: str, st: os.stat_result, sums: tuple[str, str]) -> None:
        """Remembers the sums just computed of a file, unless it is too fresh to trust."""
        if self._rows is not None and time.time() - st.st_mtime_ns / 1e9 > _RACY_SECONDS:
            self._pending[str(path)] = (*self._sig(st), f"{name} {sums[0]} {sums[1]}")

    def tree(self, key: str, fingerprint: str) -> str | None:
        """The value remembered for ``key`` while its tree had ``fingerprint``."""
        if self._rows is None:
            return None
        pending = self._trees.get(key)
        row = pending if pending is not None else self._rows.tree(key)
        if row is None or row[0] != fingerprint:
            return None
        self.hits += 1
        return row[1]

    def remember_tree(self, key: str, fingerprint: str, value: str) -> None:
        """Keeps ``value`` for ``key`` and the tree's fingerprint until :meth:`flush`."""
        if self._rows is not None:
            self._trees[key] = (fingerprint, value)

    def flush(self) -> None:
        """Writes the sums computed since the last flush."""
        if (not self._pending and not self._trees) or self._rows is None:
            return
        self._rows.put(dict(self._pending), dict(self._trees))
        self._pending.clear()
        self._trees.clear()


class IgnoreMatcher(Protocol):
    """What the context walk needs from a ``.dockerignore`` matcher."""

    def matches(self, path: str) -> bool:
        """Whether the path (relative, ``/``-separated) is excluded."""
        ...

    def may_include_below(self, path: str) -> bool:
        """Whether an excluded directory may still hold re-included paths."""
        ...


@dataclass(frozen=True)
class ContextFile:
    """One path that reaches the builder from the context."""

    path: str
    st: os.stat_result


class Context:
    """A build context directory as the classic builder's daemon sees it.

    The walk drops what ``.dockerignore`` excludes (the Dockerfile and ``.dockerignore``
    too when the patterns match them: the client sends them, the daemon removes them).

    Args:
        root: the context directory.
        excluded: a predicate over relative paths saying what ``.dockerignore``
            excludes, and whether an excluded directory must still be descended into.
        stat_cache: where regular files' tarsums are remembered.
    """

    def __init__(
        self,
        root: Path,
        excluded: Callable[[str, bool], tuple[bool, bool]] | None = None,
        stat_cache: StatCache | None = None,
    ) -> None:
        self.root = root.resolve()
        self._excluded = excluded
        self.stat_cache = stat_cache or StatCache(None)
        self._entries: dict[str, os.stat_result] | None = None
        self._walked_at = 0.0
        self._links = True  # until the walk shows the context has no symlinks
        self.implicit: set[str] = set()
        self._sums: dict[str, tuple[str, str]] = {}
        # The context is read once per build, as the classic builder's client sends it
        # once: a source checked in the preflight is not walked and hashed again.
        self._checksums: dict[str, str] = {}
        self._manifests: dict[str, list[ManifestEntry]] = {}
        self._sorted: list[str] | None = None
        self._fingerprints: dict[str, str | None] = {}

    # -- the walk -----------------------------------------------------------------

    @property
    def entries(self) -> dict[str, os.stat_result]:
        """Every included path (relative, ``/``-separated) with its ``lstat``."""
        if self._entries is None:
            self._walked_at = time.time()
            self._entries = dict(self._walk())
            self._links = any(stat.S_ISLNK(st.st_mode) for st in self._entries.values())
            self.stat_cache.prime(self.root)
            # Excluded directories that hold re-included paths still exist in the
            # daemon's copy of the context (untar creates them), without a sum.
            implicit: set[str] = set()
            for path in self._entries:
                parent = path.rpartition("/")[0]
                while parent and parent not in self._entries and parent not in implicit:
                    implicit.add(parent)
                    parent = parent.rpartition("/")[0]
            self.implicit = implicit
        return self._entries

    def _walk(self) -> Iterator[tuple[str, os.stat_result]]:
        # Plain strings and scandir: on a 20,000-file context, pathlib's joins cost more
        # than the lstat calls themselves.
        root = str(self.root)
        if not os.path.isdir(root):
            raise ContextError(f"build context {self.root} is not a directory")
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            abs_dir = f"{root}/{rel_dir}" if rel_dir else root
            try:
                with os.scandir(abs_dir) as it:
                    found = list(it)
            except OSError as exc:
                raise ContextError(
                    f"cannot read context directory {rel_dir or '.'}: {exc.strerror or exc}"
                ) from exc
            for entry in found:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError as exc:
                    raise ContextError(f"cannot stat {rel}: {exc.strerror or exc}") from exc
                is_dir = stat.S_ISDIR(st.st_mode)
                skip, descend = (
                    (False, True) if self._excluded is None else self._excluded(rel, is_dir)
                )
                if not skip:
                    yield rel, st
                if is_dir and (not skip or descend):
                    stack.append(rel)

    # -- lookups ------------------------------------------------------------------

    def _present(self, rel: str) -> bool:
        return rel in ("", ".") or rel in self.entries or rel in self.implicit

    def resolve(self, rel: str) -> str:
        """``rel`` with symlinks followed inside the context, as moby's
        ``FollowSymlinkInScope`` does: ``..`` and absolute targets never leave the root,
        a missing component ends the walk (the rest is joined as written)."""
        if not self._links and rel in self.entries:
            # A walked path in a context without symlinks resolves to itself.
            return rel
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        done: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            candidate = "/".join([*done, part])
            if not self._present(candidate):
                rest = "/".join([*done, part, *parts])
                return "/".join(p for p in rest.split("/") if p)
            st = self.entries.get(candidate)
            if st is not None and stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > 255:
                    raise ContextError(f"{rel}: too many levels of symbolic links")
                target = os.readlink(self.root / candidate)
                if target.startswith("/"):
                    done = []
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            done.append(part)
        return "/".join(done)

    def exists(self, rel: str) -> bool:
        """Whether ``rel`` (normalised, relative; symlinks followed) reaches the builder."""
        return self._present(self.resolve(rel))

    def is_dir(self, rel: str) -> bool:
        """Whether ``rel`` is a directory in the context, symlinks followed (the root is one)."""
        target = self.resolve(rel)
        if target in ("", "."):
            return True
        if target in self.implicit:
            return True
        st = self.entries.get(target)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def below(self, rel: str) -> list[str]:
        """Paths strictly below directory ``rel`` (no symlinks followed), sorted."""
        if self._sorted is None:
            self.entries  # noqa: B018 - the walk fills ``implicit`` too
            self._sorted = sorted([*self.entries, *self.implicit])
        every = self._sorted
        if rel in ("", "."):
            return list(every)
        # Paths below ``rel`` sort between "rel/" and "rel0" ("0" follows "/").
        start = bisect.bisect_left(every, rel + "/")
        return every[start : bisect.bisect_left(every, rel + "0", start)]

    def fingerprint(self, rel: str) -> str | None:
        """sha256 over the path and ``lstat`` signature of ``rel`` and everything below
        it, or None when it cannot stand for their content: a file modified within the
        racy margin of the walk (as for the stat cache), or a context with symlinks
        (whose sums depend on paths outside the tree)."""
        if rel in self._fingerprints:
            return self._fingerprints[rel]
        entries = self.entries
        value: str | None = None
        if not self._links:
            target = self.resolve(rel)
            paths = ([target] if target else []) + self.below(target)
            limit = int((self._walked_at - _RACY_SECONDS) * 1e9)
            pack = _TREE_SIG.pack
            h = hashlib.sha256(_TREE_VERSION + target.encode("utf-8", "surrogateescape"))
            for p in paths:
                st = entries.get(p)
                name = p.encode("utf-8", "surrogateescape")
                if st is None:
                    h.update(name + b"\0-\0")  # a directory only re-included paths need
                    continue
                if st.st_mtime_ns > limit:
                    break
                h.update(
                    name
                    + b"\0"
                    + pack(st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode, st.st_ctime_ns)
                )
            else:
                value = h.hexdigest()
        self._fingerprints[rel] = value
        return value

    def tree_cached(self, rel: str, what: str, compute: Callable[[], str]) -> str:
        """``compute()`` for the tree at ``rel``, remembered by the stat cache while
        nothing in the tree changes: an unchanged context is then checksummed from one
        walk and one lookup per COPY source, without a per-file step.

        Args:
            rel: the source path (symlinks followed, as checksums follow them).
            what: names the value (the checksum kind and its parameters).
            compute: makes the value when it is not remembered.
        """
        fingerprint = self.fingerprint(rel)
        if fingerprint is None:
            return compute()
        key = f"{self.root}\0{rel}\0{what}"
        value = self.stat_cache.tree(key, fingerprint)
        if value is None:
            value = compute()
            self.stat_cache.remember_tree(key, fingerprint, value)
        return value

    def file_sum(self, rel: str) -> str:
        """The tarsum of one included path (its own entry, symlinks not followed)."""
        return self._both(rel)[0]

    def _prefetch(self, paths: list[str]) -> None:
        """Hashes, on as many threads as there are cores (up to ``_HASH_THREADS``), the
        regular files among ``paths`` that neither this build nor the stat cache knows.

        ``hashlib`` and file reads release the GIL, so a cold context of 500 MB hashes
        on two cores at once; each thread takes a contiguous share of the bytes.
        """
        entries = self.entries
        todo: list[tuple[str, str, os.stat_result]] = []
        total = 0
        for p in paths:
            if p in self._sums:
                continue
            st = entries.get(p)
            if st is None or not stat.S_ISREG(st.st_mode):
                continue
            path = f"{self.root}/{p}"
            hit = self.stat_cache.lookup(path, p, st)
            if hit is not None:
                self._sums[p] = hit
                continue
            todo.append((p, path, st))
            total += st.st_size
        threads = min(_HASH_THREADS, os.cpu_count() or 1)
        if threads < 2 or total < _PARALLEL_BYTES or len(todo) < 2:
            for p, path, st in todo:
                self._sums[p] = sums = tarsum_file(path, p, st)
                self.stat_cache.learn(path, p, st, sums)
            return
        shares: list[list[tuple[str, str, os.stat_result]]] = [[] for _ in range(threads)]
        share, so_far = 0, 0
        for item in todo:
            shares[share].append(item)
            so_far += item[2].st_size
            if so_far >= total * (share + 1) / threads and share < threads - 1:
                share += 1
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(threads, "lamina-hash") as pool:
            done = pool.map(lambda part: [tarsum_file(path, p, st) for p, path, st in part], shares)
            for part, sums_list in zip(shares, done, strict=True):
                for (p, path, st), sums in zip(part, sums_list, strict=True):
                    self._sums[p] = sums
                    self.stat_cache.learn(path, p, st, sums)

    def _both(self, rel: str) -> tuple[str, str]:
        if rel not in self._sums:
            st = self.entries[rel]
            self._sums[rel] = self.stat_cache.tarsum(f"{self.root}/{rel}", rel, st)
        return self._sums[rel]

    def content_digest(self, rel: str) -> str | None:
        """The sha256 of a regular file's content (None for anything else), from this
        build's checksum or the stat cache; read only when neither knows it."""
        st = self.entries.get(rel)
        if st is None or not stat.S_ISREG(st.st_mode):
            return None
        return self._both(rel)[1]

    def unchanged(self, rel: str) -> bool:
        """Whether ``rel`` still is what the walk saw, so its digest describes what was
        read from it since (its copy in a layer).

        Its ``lstat`` signature (size, mtime, inode, mode, ctime) must be the walk's, and
        its mtime older than the walk by the racy margin: a write in the very tick of the
        one the walk saw could leave both times unchanged, one any later can not.
        """
        seen = self.entries.get(rel)
        if seen is None:
            return False
        try:
            now = os.lstat(self.root / rel)
        except OSError:
            return False
        if StatCache._sig(now) != StatCache._sig(seen):
            return False
        return seen.st_mtime_ns / 1e9 < self._walked_at - _RACY_SECONDS

    def entry_hash(self, rel: str) -> str:
        """What moby's ``Hash(rel)`` gives for one walked path: the sum of the path the
        symlinks lead to, or ``rel`` itself when that has no sum (a broken link, an
        excluded target, a directory created only to hold re-included paths)."""
        target = self.resolve(rel)
        if target in self.entries:
            return self.file_sum(target)
        return rel

    def checksum(self, rel: str) -> str:
        """``file:<hex>`` or ``dir:<hex>`` of one source path, as moby computes it (a
        symlinked source is followed)."""
        if rel not in self._checksums:
            self._checksums[rel] = self.tree_cached(rel, "classic", lambda: self._checksum(rel))
        return self._checksums[rel]

    def _checksum(self, rel: str) -> str:
        target = self.resolve(rel)
        if self.is_dir(target):
            walked = ([target] if target else []) + self.below(target)
            self._prefetch(walked)
            return hash_string_slice("dir", sorted(self.entry_hash(p) for p in walked))
        return "file:" + self.entry_hash(rel)

    def manifest(self, rel: str) -> list[ManifestEntry]:
        """Every entry a source contributes, with the facts a reason can name.

        A symlink's ``digest`` is the hash it contributes (its target's), so a change
        behind a link shows as a content change of the link.
        """
        if rel not in self._manifests:
            self._manifests[rel] = self._manifest(rel)
        return list(self._manifests[rel])

    def _manifest(self, rel: str) -> list[ManifestEntry]:
        target = self.resolve(rel)
        paths = [target] if target else []
        if self.is_dir(target):
            paths += self.below(target)
        out = []
        for p in paths:
            st = self.entries.get(p)
            if st is None:  # an implicit directory
                out.append(ManifestEntry(path=p, type="dir", mode=0o755, size=0, digest=""))
                continue
            link = ""
            digest = ""
            if stat.S_ISLNK(st.st_mode):
                try:
                    link = os.readlink(self.root / p)
                except OSError as exc:
                    raise ContextError(f"cannot read link {p}: {exc.strerror or exc}") from exc
                digest = self.entry_hash(p)
            else:
                digest = self._both(p)[1]
            out.append(
                ManifestEntry(
                    path=p,
                    type=entry_type(st.st_mode),
                    mode=stat.S_IMODE(st.st_mode),
                    size=st.st_size if stat.S_ISREG(st.st_mode) else 0,
                    digest=digest,
                    link=link,
                )
            )
        return out

    def check_readable(self, rel: str) -> None:
        """Raises ContextError naming the first unreadable file at or below ``rel``."""
        paths = [] if rel in ("", ".") else [rel]
        if self.is_dir(rel):
            paths += self.below(rel)
        for p in paths:
            st = self.entries[p]
            full = self.root / p
            if stat.S_ISREG(st.st_mode):
                try:
                    with open(full, "rb"):
                        pass
                except OSError as exc:
                    raise ContextError(f"cannot read {p}: {exc.strerror or exc}") from exc
            elif stat.S_ISDIR(st.st_mode) and not os.access(full, os.R_OK | os.X_OK):
                raise ContextError(f"cannot read directory {p}: permission denied")
