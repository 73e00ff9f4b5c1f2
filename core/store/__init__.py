"""The local store: ``Store(home)`` ties the index, layers, images and lock together.

Layout (see docs/architecture.md)::

    index.db                    the SQLite index (core/store/index.py)
    lock                        flock'd by writers (core/store/lock.py)
    blobs/sha256/<hex>          configs and other JSON documents (core/store/images.py)
    layers/<chain-hex>/         diff/ + tar-split.json.gz (core/store/layers.py)
    tmp/<prefix>-<random>/      work in progress, with a pid file
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lamina.core.errors import StoreError
from lamina.core.store.images import ImageStore, normalize_tag
from lamina.core.store.index import Index
from lamina.core.store.layers import LayerStore
from lamina.core.store.lock import StoreLock

log = logging.getLogger(__name__)

__all__ = ["ImageStore", "Index", "LayerStore", "Store", "StoreLock", "normalize_tag"]


class Store:
    """A lamina store rooted at ``home`` (``$LAMINA_HOME``).

    Args:
        home: the store directory; created with its layout if missing, and its index
            migrated to the current schema.

    Raises:
        StoreError: if the directory cannot be created or the index is unusable.
    """

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        try:
            for sub in ("blobs/sha256", "layers", "tmp"):
                (self.home / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.home}: cannot create the store: {exc.strerror}") from exc
        self._lock = StoreLock(self.home / "lock")
        self.index = Index(self.home / "index.db")
        self.layers = LayerStore(self.home, self.index, self._lock, self.tmpdir)
        self.images = ImageStore(self.home, self.index, self._lock, self.layers)

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
            raise StoreError(f"{self.home / 'tmp'}: cannot create a work directory: {exc}") from exc
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        """Closes the index connections."""
        self.index.close()
