"""Garbage collection: what references what, and deleting without losing data.

Liveness follows docs/architecture.md: an image's ``top_layer`` and a cache entry's
``top_layer`` keep that layer and its whole parent chain; configs in ``blobs/`` are kept
by images (their ID) and cache entries (``result``, and ``parent`` when it is a digest).

``RefGraph`` loads those references in a handful of queries. ``Liveness`` counts, per
layer, the direct references to it (roots whose top it is, plus live layers whose parent
it is), so releasing a root cascades down the chain in O(what it frees).

Deletion keeps the index consistent under ``kill -9`` at any point: index rows go first
(one transaction, under the store lock), then each directory is renamed to a trash name
under ``tmp/`` and only then removed. A crash leaves either a ``layers/<hex>`` without a
row or a trash directory; both are leftovers that ``find_leftovers`` reports and the
next prune sweeps. In-flight work is never touched: a ``tmp/<x>/`` whose ``pid`` file
names a live process, anything younger than the grace period, and layers committed
after a still-running build started.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lamina.core.accounting.plans import DEFAULT_GRACE, Leftover
from lamina.core.digest import hex_of, is_digest
from lamina.core.embedded.store import beneath
from lamina.core.embedded.store.graph import load_graph
from lamina.core.embedded.store.process import pid_alive
from lamina.core.embedded.store.recover import chains_named_by_configs
from lamina.core.errors import StoreError

if TYPE_CHECKING:
    from lamina.core.accounting.graph import RefGraph
    from lamina.core.embedded.store import Store

log = logging.getLogger(__name__)

# Trash names start with a dot so they never collide with Store.tmpdir's "<prefix>-...".
TRASH_PREFIX = ".trash-"
TARSPLIT_NAME = "tar-split.json.gz"


def disk_bytes(path: Path) -> int:
    """Bytes a file or directory tree occupies (``st_blocks * 512``), inodes once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return 0
    for st in _walk_stats(path, top):
        key = (st.st_dev, st.st_ino)
        if key not in seen:
            seen.add(key)
            total += st.st_blocks * 512
    return total


def _walk_stats(path: Path, top: os.stat_result) -> Iterator[os.stat_result]:
    yield top
    if not stat.S_ISDIR(top.st_mode):
        return
    stack = [str(path)]
    while stack:
        base = stack.pop()
        try:
            entries = list(os.scandir(base))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            yield st
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)


def layer_overhead(store: Store, chain_id: str) -> int:
    """Bytes of a layer directory outside what its ``disk_size`` column counts.

    ``disk_size`` counts the blocks of the entries below ``diff/``; the directory itself,
    ``diff/`` and the tar-split are a few more blocks that deleting the layer frees too.
    Three stats, not a walk.
    """
    # Plain strings: this runs once per reclaimable layer in `system df`.
    root = f"{store.home}/layers/{hex_of(chain_id)}"
    total = 0
    for path in (root, root + "/diff", root + "/" + TARSPLIT_NAME):
        try:
            total += os.lstat(path).st_blocks * 512
        except OSError:
            pass
    return total


def blob_stat(store: Store, digest: str) -> tuple[int, float]:
    """(bytes on disk, mtime) of a blob; (0, 0.0) when it is missing."""
    try:
        st = os.lstat(f"{store.home}/blobs/sha256/{hex_of(digest)}")
    except OSError:
        return 0, 0.0
    return st.st_blocks * 512, st.st_mtime


def find_leftovers(
    store: Store, graph: RefGraph, grace: float = DEFAULT_GRACE, now: float | None = None
) -> list[Leftover]:
    """Lists debris that is safe to delete: three directory listings, no deep walk.

    Directories are sized (walked) only once they are known to be leftovers, which is
    O(what will be deleted).

    Args:
        store: the store.
        graph: its references (blobs referenced there are never leftovers).
        grace: seconds during which fresh unreferenced data is left alone.
        now: the clock (for tests).
    """
    now = time.time() if now is None else now
    cutoff = now - grace
    home = store.home
    out: list[Leftover] = []
    tmp = home / "tmp"
    for entry in _scandir(tmp):
        rel = f"tmp/{entry.name}"
        path = Path(entry.path)
        if entry.name.startswith(TRASH_PREFIX):
            out.append(Leftover(rel, "trash", disk_bytes(path), "interrupted deletion"))
            continue
        owner = _owner_pid(path)
        if owner is not None:
            if pid_alive(owner):
                continue
            why = f"work of process {owner}, which is gone"
        elif _mtime(path) > cutoff:
            continue  # its owner may not have written its pid file yet
        else:
            why = "work without an owner"
        out.append(Leftover(rel, "tmp", disk_bytes(path), why))
    names, named = unindexed_layer_dirs(store)
    for name in named:
        log.warning("layers/%s has no index row but an image config names it; kept", name)
    for name in names:
        path = home / "layers" / name
        out.append(Leftover(f"layers/{name}", "layer-dir", disk_bytes(path), "no index row"))
    for stray in store.files.stray_names():
        # A shared file's name that no row records (see ``store.dedup``): unlinking it
        # frees its storage only where it is the inode's last name.
        try:
            st = os.lstat(stray)
        except OSError:
            continue
        if st.st_ctime > cutoff:
            continue
        rel = stray.removeprefix(f"{home}/")
        size = st.st_blocks * 512 if st.st_nlink == 1 else 0
        out.append(Leftover(rel, "shared-file", size, "a shared file no layer records"))
    refs = graph.blob_refs()
    for entry in _scandir(home / "blobs" / "sha256"):
        digest = "sha256:" + entry.name
        if digest in refs:
            continue
        path = Path(entry.path)
        mtime = _mtime(path)
        # Names that are not digests are temp files of an interrupted put_blob.
        if mtime > cutoff:
            continue
        why = "referenced by nothing" if is_digest(digest) else "interrupted write"
        out.append(Leftover(f"blobs/sha256/{entry.name}", "blob", disk_bytes(path), why, mtime))
    out.sort(key=lambda left: left.path)
    return out


def unindexed_layer_dirs(store: Store) -> tuple[list[str], list[str]]:
    """Names under ``layers/`` without an index row: (debris, named by an image config).

    Commits rename into ``layers/`` and insert the row under the store lock, so under
    the lock a directory without a row is never work in progress. It is debris (a crash
    between rename and commit) unless an image config on disk stands on it: then it is
    data the index lost, which only ``fsck --rebuild-index`` may adopt, and nothing
    deletes it.
    """
    with store.lock():
        indexed = {hex_of(c) for c in store.layers.chain_ids() if is_digest(c)}
        names = [e.name for e in _scandir(store.home / "layers") if e.name not in indexed]
    if not names:
        return [], []
    wanted = {hex_of(c) for c in chains_named_by_configs(store.home)}
    return [n for n in names if n not in wanted], [n for n in names if n in wanted]


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        return sorted(os.scandir(path), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(f"{path}: cannot list: {exc.strerror}") from exc


def _owner_pid(path: Path) -> int | None:
    try:
        return int((path / "pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _mtime(path: Path) -> float:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return 0.0


def to_trash(store: Store, path: Path) -> Path | None:
    """Renames ``path`` to a trash name under ``tmp/`` (atomic); None if it is gone.

    After this, the store no longer has the object under its real name, and a crash
    leaves only a trash directory that the next sweep removes.
    """
    trash = store.home / "tmp" / f"{TRASH_PREFIX}{path.name[:16]}-{secrets.token_hex(6)}"
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreError(f"{path}: cannot move to the trash: {exc.strerror}") from exc
    return trash


def remove_tree(path: Path) -> None:
    """Deletes a trash directory or file; what cannot go stays for the next sweep.

    Removal is iterative and walks directory file descriptors (``beneath.remove_at``),
    so a tree of any depth (an archive or a ``RUN mkdir -p`` may make one thousands of
    levels deep) is removed without recursion and without following a symlink.
    """
    try:
        beneath.remove_path(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("%s: cannot remove (%s); the next prune retries", path, exc.strerror or exc)


def sweep(store: Store, leftovers: Iterable[Leftover]) -> list[Leftover]:
    """Removes leftovers found earlier, re-checking each under the store lock.

    A layer directory that gained an index row, a blob that gained a reference or was
    refreshed, and tmp work whose owner came back are kept.

    Returns:
        The leftovers actually removed.
    """
    done: list[Leftover] = []
    doomed: list[tuple[Leftover, Path]] = []
    mounts = mount_points()
    with store.lock(), store.index.transaction():
        graph = load_graph(store)
        indexed = {hex_of(c) for c in graph.layers if is_digest(c)}
        refs = graph.blob_refs()
        for left in leftovers:
            path = store.home / left.path
            name = path.name
            if left.kind == "layer-dir" and name in indexed:
                continue
            if left.kind == "shared-file":
                # A commit may have recorded it since (commits hold this lock too).
                if not store.files.recorded(name):
                    remove_tree(path)
                    done.append(left)
                continue
            if left.kind == "blob":
                # put_blob refreshes the mtime of a blob it re-adds: then it is wanted.
                if "sha256:" + name in refs or _mtime(path) != left.mtime:
                    continue
                remove_tree(path)
                done.append(left)
                continue
            if left.kind == "tmp":
                owner = _owner_pid(path)
                if owner is not None and pid_alive(owner):
                    continue
            if has_mount_below(path, mounts):
                # rmtree would follow a mount into data that is not ours to delete.
                log.warning("%s: something is mounted inside; left alone", path)
                continue
            if left.kind == "trash":
                doomed.append((left, path))
                continue
            trash = to_trash(store, path)
            if trash is not None:
                doomed.append((left, trash))
    for left, path in doomed:
        remove_tree(path)
        done.append(left)
    return done


def mount_points() -> list[str]:
    """Every mount point this process sees (from ``/proc/self/mountinfo``)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.readlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 4:
            # Spaces and other specials are written as octal escapes (\040).
            out.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
    return out


def has_mount_below(path: Path, mounts: list[str]) -> bool:
    """Whether ``path`` is, or contains, a mount point."""
    real = os.path.realpath(path)
    return any(m == real or m.startswith(real + "/") for m in mounts)
