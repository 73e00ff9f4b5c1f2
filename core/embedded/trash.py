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
import shutil
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lamina.core.digest import hex_of, is_digest
from lamina.core.errors import StoreError
from lamina.core.embedded.store.recover import chains_named_by_configs

if TYPE_CHECKING:
    from lamina.core.embedded.prune import PruneResult
    from lamina.core.embedded.store import Store

log = logging.getLogger(__name__)

# Unreferenced data younger than this may belong to work that has not recorded its
# reference yet (a build between committing a layer and inserting its cache row).
DEFAULT_GRACE = 15 * 60.0
# Trash names start with a dot so they never collide with Store.tmpdir's "<prefix>-...".
TRASH_PREFIX = ".trash-"
TARSPLIT_NAME = "tar-split.json.gz"


@dataclass(frozen=True)
class LayerRow:
    """A ``layers`` row, as much as accounting needs."""

    chain_id: str
    parent: str | None
    size: int
    created: float
    created_by: str = ""


@dataclass(frozen=True)
class ImageRow:
    """An ``images`` row with its tags."""

    id: str
    top_layer: str | None
    created: float
    added: float
    parent: str | None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class CacheRow:
    """A ``cache`` row, without its (large) inputs."""

    key: str
    parent: str
    instruction: str
    result: str
    top_layer: str | None
    created: float
    last_used: float
    use_count: int


@dataclass
class RefGraph:
    """Every reference in the store at one moment.

    Attributes:
        layers: by chainID.
        images: by image ID.
        cache: by cache key.
        live_build_start: start time of the oldest build that is still running in a
            live process, or None.
        busy_layers: layers a running build has produced or stands on (from its
            recorded steps); they count as references.
        busy_cache: cache entries a running build has used or recorded.
        busy_images: images a running build stands on (the parents of its entries).
        busy_unknown_base: a running build has not recorded a step yet, so the image
            it builds FROM is unknown and no image may go.
        loaded_at: when the graph was read.
    """

    layers: dict[str, LayerRow]
    images: dict[str, ImageRow]
    cache: dict[str, CacheRow]
    live_build_start: float | None = None
    busy_layers: frozenset[str] = frozenset()
    busy_cache: frozenset[str] = frozenset()
    busy_images: frozenset[str] = frozenset()
    busy_unknown_base: bool = False
    loaded_at: float = field(default_factory=time.time)

    def image_busy(self, image_id: str) -> bool:
        """Whether a running build may be standing on this image."""
        return self.busy_unknown_base or image_id in self.busy_images

    def chain(self, top: str | None) -> list[str]:
        """``top`` and the layers below it, top first (stops at a missing layer).

        Raises:
            StoreError: if the parent links loop (a corrupt index).
        """
        out: list[str] = []
        cur = top
        layers = self.layers
        # A chain longer than the whole table can only be a loop.
        limit = len(layers)
        while cur is not None:
            row = layers.get(cur)
            if row is None:
                break
            out.append(cur)
            if len(out) > limit:
                raise StoreError(f"index.db: layer parent links loop at {cur}")
            cur = row.parent
        return out

    def blob_refs(self) -> dict[str, int]:
        """How many images and cache entries reference each config digest."""
        refs: dict[str, int] = {}
        for image in self.images.values():
            refs[image.id] = refs.get(image.id, 0) + 1
        for entry in self.cache.values():
            for digest in {entry.result, entry.parent}:
                if is_digest(digest):
                    refs[digest] = refs.get(digest, 0) + 1
        return refs

    def children(self) -> dict[str, list[str]]:
        """Images by the image they were built FROM (``images.parent``)."""
        out: dict[str, list[str]] = {}
        for image in self.images.values():
            if image.parent:
                out.setdefault(image.parent, []).append(image.id)
        return out


def load_graph(store: Store) -> RefGraph:
    """Reads every reference from the index in a few queries (no filesystem access).

    Call inside ``store.index.transaction()`` for a view that cannot change underneath.

    Raises:
        StoreError: if the index cannot be read.
    """
    conn = store.index.connection()
    try:
        if conn.in_transaction:
            return _load_graph(store)
        # One read transaction: every query sees the same snapshot (WAL), so a commit
        # landing between two queries cannot make the graph disagree with itself.
        conn.execute("BEGIN")
        try:
            return _load_graph(store)
        finally:
            conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise StoreError(f"{store.index.path}: cannot read references: {exc}") from exc


def _load_graph(store: Store) -> RefGraph:
    conn = store.index.connection()
    layers = {
        r["chain_id"]: LayerRow(
            r["chain_id"], r["parent"], int(r["size"]), float(r["created"]), r["created_by"]
        )
        for r in conn.execute("SELECT chain_id, parent, size, created, created_by FROM layers")
    }
    tags: dict[str, list[str]] = {}
    for r in conn.execute("SELECT name, image_id FROM tags ORDER BY name"):
        tags.setdefault(r["image_id"], []).append(r["name"])
    images = {
        r["id"]: ImageRow(
            r["id"],
            r["top_layer"],
            float(r["created"]),
            float(r["added"]),
            r["parent"],
            tuple(tags.get(r["id"], ())),
        )
        for r in conn.execute("SELECT id, top_layer, created, added, parent FROM images")
    }
    cache = {
        r["key"]: CacheRow(
            r["key"],
            r["parent"],
            r["instruction"],
            r["result"],
            r["top_layer"],
            float(r["created"]),
            float(r["last_used"]),
            int(r["use_count"]),
        )
        for r in conn.execute(
            "SELECT key, parent, instruction, result, top_layer, created, last_used,"
            " use_count FROM cache"
        )
    }
    live_builds = {
        int(r["id"]): float(r["started"])
        for r in conn.execute("SELECT id, started, pid FROM builds WHERE status = 'running'")
        if r["pid"] is not None and pid_alive(int(r["pid"]))
    }
    busy_layers: set[str] = set()
    busy_cache: set[str] = set()
    unknown_base = False
    for build_id in live_builds:
        steps = conn.execute(
            "SELECT layer, cache_key FROM build_steps WHERE build_id = ?", (build_id,)
        ).fetchall()
        keys = [r["cache_key"] for r in steps if r["cache_key"]]
        if not keys:
            unknown_base = True
        busy_cache.update(keys)
        busy_layers.update(r["layer"] for r in steps if r["layer"])
    busy_images: set[str] = set()
    for key in busy_cache:
        entry = cache.get(key)
        if entry is not None:
            busy_images.add(entry.parent)
            if entry.top_layer:
                busy_layers.add(entry.top_layer)
    return RefGraph(
        layers,
        images,
        cache,
        min(live_builds.values()) if live_builds else None,
        frozenset(busy_layers),
        frozenset(busy_cache),
        frozenset(busy_images & set(images)),
        unknown_base,
    )


class Liveness:
    """Direct reference counts over the live part of a graph.

    ``count[l]`` is the number of roots whose top layer is ``l`` plus the number of live
    layers whose parent is ``l``; a layer is live while its count is positive. Releasing
    a root decrements its top and cascades to parents that reach zero, so the cost is
    the number of layers it frees.

    Args:
        graph: the references.
        images: image IDs that count as roots (default: every image).
        cache: cache keys that count as roots (default: every entry).
        busy: whether the layers running builds use count as roots too.
        extra: more layers to count as roots (fresh ones inside the grace period).
    """

    def __init__(
        self,
        graph: RefGraph,
        images: Iterable[str] | None = None,
        cache: Iterable[str] | None = None,
        busy: bool = True,
        extra: Iterable[str] = (),
    ) -> None:
        self.graph = graph
        self.count: dict[str, int] = {}
        image_ids = graph.images if images is None else images
        cache_keys = graph.cache if cache is None else cache
        tops = [graph.images[i].top_layer for i in image_ids]
        tops += [graph.cache[k].top_layer for k in cache_keys]
        if busy:
            tops += sorted(graph.busy_layers)
        tops += list(extra)
        for top in tops:
            self._acquire(top)

    def _acquire(self, top: str | None) -> None:
        layers = self.graph.layers
        cur = top
        while cur is not None and cur in layers:
            fresh = cur not in self.count
            self.count[cur] = self.count.get(cur, 0) + 1
            if not fresh:
                break
            cur = layers[cur].parent

    def live(self, chain_id: str) -> bool:
        """Whether anything still references the layer."""
        return self.count.get(chain_id, 0) > 0

    def release(self, top: str | None) -> list[str]:
        """Drops one root reference to ``top``; returns the layers that died, top first."""
        return self._release(top, self.count)

    def would_free(self, tops: Iterable[str | None]) -> list[str]:
        """The layers releasing all of ``tops`` would free, without releasing them."""
        overlay = _Overlay(self.count)
        died: list[str] = []
        for top in tops:
            died += self._release(top, overlay)
        return died

    def _release(self, top: str | None, count: dict[str, int] | _Overlay) -> list[str]:
        layers = self.graph.layers
        died: list[str] = []
        cur = top
        while cur is not None and cur in layers:
            n = count.get(cur, 0) - 1
            if n < 0:
                raise StoreError(f"index.db: layer {cur} released more often than referenced")
            count[cur] = n
            if n > 0:
                break
            died.append(cur)
            cur = layers[cur].parent
        return died


class _Overlay:
    """A copy-on-write view of a count dict, so what-if questions leave it untouched."""

    def __init__(self, base: dict[str, int]) -> None:
        self.base = base
        self.changes: dict[str, int] = {}

    def get(self, key: str, default: int = 0) -> int:
        if key in self.changes:
            return self.changes[key]
        return self.base.get(key, default)

    def __setitem__(self, key: str, value: int) -> None:
        self.changes[key] = value


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[-1].split()[0]
        return state != b"Z"
    except (OSError, IndexError):
        return True


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
    """Bytes of a layer directory outside what its ``size`` column counts.

    ``size`` counts the entries below ``diff/``; the directory itself, ``diff/`` and the
    tar-split are a few more blocks that deleting the layer frees too. Three stats, not
    a walk.
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


def blob_path(store: Store, digest: str) -> Path:
    """``blobs/sha256/<hex>`` (the digest validated first)."""
    return store.home / "blobs" / "sha256" / hex_of(digest)


def blob_bytes(store: Store, digest: str) -> int:
    """Bytes the blob occupies, 0 when it is missing."""
    return blob_stat(store, digest)[0]


def blob_stat(store: Store, digest: str) -> tuple[int, float]:
    """(bytes on disk, mtime) of a blob; (0, 0.0) when it is missing."""
    try:
        st = os.lstat(f"{store.home}/blobs/sha256/{hex_of(digest)}")
    except OSError:
        return 0, 0.0
    return st.st_blocks * 512, st.st_mtime


@dataclass(frozen=True)
class Leftover:
    """Debris on disk that no index row describes.

    Attributes:
        path: relative to the store home.
        kind: ``trash`` (a deletion interrupted), ``layer-dir`` (a layer directory
            without a row: a commit or prune interrupted), ``tmp`` (work of a process
            that is gone), or ``blob`` (a config nothing references).
        bytes: what removing it frees.
        reason: plain words.
        mtime: its modification time when found (a blob refreshed since is kept).
    """

    path: str
    kind: str
    bytes: int
    reason: str
    mtime: float = 0.0


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
        rows = store.index.connection().execute("SELECT chain_id FROM layers")
        indexed = {hex_of(r[0]) for r in rows if is_digest(r[0])}
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
    """Deletes a trash directory or file; what cannot go stays for the next sweep."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, onerror=_log_rm_error)
        else:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("%s: cannot remove (%s); the next prune retries", path, exc.strerror)


def _log_rm_error(func: object, path: str, exc_info: object) -> None:
    log.warning("%s: cannot remove; the next prune retries", path)


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


def collect(store: Store, grace: float = DEFAULT_GRACE) -> PruneResult:
    """Removes what nothing references (after ``rmi``, or on a schedule).

    Orphan layers, unreferenced configs and leftovers of interrupted work, each past the
    grace period; no image or cache entry is touched. The same plan-then-apply path as
    prune, so it is as crash-safe and skips anything referenced again meanwhile.

    Args:
        store: the store.
        grace: seconds during which fresh unreferenced data is left alone.

    Returns:
        What was deleted and the bytes freed.
    """
    from lamina.core.embedded.prune import PruneRequest, apply_prune, plan_prune

    return apply_prune(store, plan_prune(store, PruneRequest("gc", grace=grace)))
