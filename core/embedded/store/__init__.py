"""The local store: ``Store(home)`` ties the index, layers, images, build cache, build
records and lock together. It is the only owner of SQLite: everything else reads and
writes the index through the objects it holds.

Layout (see docs/architecture.md)::

    index.db                    the SQLite index (core/embedded/store/index.py; its tables
                                are read and written by layers, images, cache, builds
                                and statcache)
    lock                        flock'd by writers (core/embedded/store/lock.py)
    blobs/sha256/<hex>          configs and other JSON documents (core/embedded/store/images.py)
    layers/<chain-hex>/         diff/ + tar-split.json.gz (core/embedded/store/layers.py)
    files/<k[:2]>/<k>           one name per file inode layers share (core/embedded/store/dedup.py)
    tmp/<prefix>-<random>/      work in progress, with a pid file
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lamina.core.embedded.store.beneath import remove_quietly
from lamina.core.embedded.store.builds import BuildRecords
from lamina.core.embedded.store.cache import CacheEntries
from lamina.core.embedded.store.cachemounts import CacheMounts
from lamina.core.embedded.store.dedup import make_pool
from lamina.core.embedded.store.images import ImageStore, normalize_tag
from lamina.core.embedded.store.index import Index
from lamina.core.embedded.store.layers import LayerStore
from lamina.core.embedded.store.lock import StoreLock
from lamina.core.embedded.store.reserve import RESERVE_NAME, Reserve
from lamina.core.embedded.store.statcache import StatCacheTable
from lamina.core.errors import StoreError

log = logging.getLogger(__name__)

# What may hold device nodes, FIFOs and setuid files exactly as images and RUN steps
# made them: layers, the files they share, work in progress (a RUN's upper dir) and
# cache mounts.
PRIVATE_DIRS = ("layers", "files", "tmp", "cachemounts")

__all__ = [
    "BuildRecords",
    "CacheEntries",
    "ImageStore",
    "Index",
    "LayerStore",
    "StatCacheTable",
    "Store",
    "StoreLock",
    "normalize_tag",
    "raise_if_damaged",
    "stored_data",
]


class Store:
    """A lamina store rooted at ``home`` (``$LAMINA_HOME``).

    Attributes:
        index: the SQLite index.
        layers: layer directories and their rows.
        files: the file inodes layers share (``layers.files``).
        images: configs, images and tags.
        cache: build cache entries and their tombstones.
        builds: build records and their steps.
        stat_cache: remembered tarsums of context files.

    Args:
        home: the store directory; created with its layout if missing, and its index
            migrated to the current schema.
        adopt_unindexed: open even when layers or blobs exist but the index is missing
            or empty (only ``recover.rebuild_index`` does this; anyone else would see
            an empty store and could prune all its data).
        lock: the store lock object to share (one per process and store: a second
            ``flock`` of the same file in one process would wait on the first).

    Raises:
        StoreError: if the directory cannot be created or the index is unusable.
    """

    def __init__(
        self, home: Path, *, adopt_unindexed: bool = False, lock: StoreLock | None = None
    ) -> None:
        self.home = Path(home)
        db = self.home / "index.db"
        if not adopt_unindexed:
            _refuse_lost_index(self.home, db)
        try:
            # A new store is its owner's alone (Docker's root is 0710 and its layer
            # dirs 0700); nothing in the sandbox needs another user to reach it.
            self.home.parent.mkdir(parents=True, exist_ok=True)
            self.home.mkdir(mode=0o700, exist_ok=True)
            for sub in ("blobs/sha256", *PRIVATE_DIRS):
                (self.home / sub).mkdir(parents=True, exist_ok=True)
            make_pool(self.home)
        except OSError as exc:
            raise StoreError(f"{self.home}: cannot create the store: {exc.strerror}") from exc
        for sub in PRIVATE_DIRS:
            _private(self.home / sub)
        self._lock = lock or StoreLock(self.home / "lock")

        def check_fresh(index: Index) -> None:
            # Re-read first: another process may have just created and filled the store.
            if not adopt_unindexed and index.schema_version() == 0:
                _refuse_lost_index(self.home, db, "has no tables")

        reserve = Reserve(self.home / RESERVE_NAME)
        self.index = Index(db, check_fresh, reserve)
        self.layers = LayerStore(self.home, self.index, self._lock, self.tmpdir)
        self.files = self.layers.files
        self.images = ImageStore(self.home, self.index, self._lock, self.layers)
        self.cache = CacheEntries(self.index)
        self.cache_mounts = CacheMounts(self.home, self.index)
        self.builds = BuildRecords(self.index)
        self.stat_cache = StatCacheTable(self.index)
        try:
            # Builds whose process died (kill -9, power loss) are recorded failed by the
            # next process that opens the store; fsck lists them as information.
            self.recovered_builds = self.builds.recover_interrupted()
            # Layers recorded before index version 2 get Docker's size and disk size.
            self.layers.measure_unmeasured()
        except Exception as exc:
            raise_if_damaged(self.index, exc)
            raise
        reserve.keep()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Holds the exclusive store lock (re-entrant within a thread)."""
        with self._lock.hold():
            yield

    @contextmanager
    def tmpdir(self, prefix: str) -> Iterator[Path]:
        """A fresh ``home/tmp/<prefix>-<random>/`` holding a ``pid`` file; removed on exit.

        The pid file tells GC that the directory belongs to a live process.

        Args:
            prefix: a short word naming the work (``build``, ``load``, ``commit``).
        """
        try:
            path = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=self.home / "tmp"))
            (path / "pid").write_text(f"{os.getpid()}\n")
        except OSError as exc:
            raise StoreError(
                f"{self.home / 'tmp'}: cannot create a work directory: {exc.strerror or exc}"
            ) from exc
        try:
            yield path
        finally:
            remove_quietly(path)

    def close(self) -> None:
        """Closes the index connections."""
        self.index.close()


def raise_if_damaged(index: Index, exc: Exception) -> None:
    """Raises the one-line damage error, chained to ``exc``, if a damaged index file
    explains ``exc``; returns otherwise.

    ``exc`` is an error a reader did not expect, or one it did not expect from the
    index ("malformed digest None": a row of NULLs). Errors about the index itself
    already say what is wrong with it (a full disk, a damaged file).

    Raises:
        StoreError: the index is damaged; ``lamina fsck --rebuild-index`` is the way out.
    """
    if isinstance(exc, StoreError) and str(index.path) in str(exc):
        return
    damaged = index.damaged()
    if damaged is not None:
        raise damaged from exc


def _private(path: Path) -> None:
    """Keeps one of ``PRIVATE_DIRS`` to the store's owner (0700), whatever an older
    lamina or the umask made it: no other user may reach what it holds."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            os.chmod(path, mode & 0o700)
    except OSError as exc:
        log.warning("%s: cannot restrict to its owner: %s", path, exc.strerror)


def stored_data(home: Path) -> tuple[int, int]:
    """How many layer directories and blobs a store holds on disk (index or not)."""

    def count(path: Path) -> int:
        try:
            with os.scandir(path) as entries:
                return sum(1 for _ in entries)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StoreError(f"{path}: cannot list: {exc.strerror}") from exc

    return count(home / "layers"), count(home / "blobs" / "sha256")


def _refuse_lost_index(home: Path, db: Path, state: str | None = None) -> None:
    """Refuses a store whose index is missing, empty or unmigrated next to stored data.

    Treating such a store as empty would make every layer look like a leftover, and a
    prune or ``fsck --repair`` would delete them all.
    """
    if state is None:
        try:
            size = db.stat().st_size
        except FileNotFoundError:
            state = "is missing"
        except OSError as exc:
            raise StoreError(f"{db}: cannot read the index: {exc.strerror}") from exc
        else:
            if size > 0:
                return
            state = "is empty"
    layers, blobs = stored_data(home)
    if layers == 0 and blobs == 0:
        return
    raise StoreError(
        f"{db} {state} but {layers} layer(s) and {blobs} blob(s) exist; "
        "`lamina fsck --rebuild-index` recovers what the layers and blobs allow"
    )
