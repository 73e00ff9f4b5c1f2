"""The store lock: an exclusive ``fcntl.flock`` on ``$LAMINA_HOME/lock``.

Writers that change what exists (commit, tag, prune, GC) hold it so a GC in another
process never sweeps a layer that is being committed. ``flock`` belongs to an open file
description, which every thread of a process shares, so a thread lock sits in front of
it and the lock is re-entrant within one thread.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lamina.core.errors import StoreError


class StoreLock:
    """A re-entrant, cross-process exclusive lock on one file.

    Args:
        path: the lock file (created if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextmanager
    def hold(self, timeout: float | None = None) -> Iterator[None]:
        """Holds the lock for the ``with`` block.

        Args:
            timeout: seconds to wait for another process, None to wait forever.

        Raises:
            StoreError: if the lock cannot be taken within ``timeout``.
        """
        with self._thread_lock:
            if self._depth == 0:
                self._acquire(timeout)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release()

    def _acquire(self, timeout: float | None) -> None:
        fd = self._open()
        if fd is None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None else 0))
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    raise StoreError(
                        f"{self.path}: the store is locked by another lamina process"
                    ) from None
                time.sleep(0.05)
        self._fd = fd

    def _open(self) -> int | None:
        """The lock file's descriptor; None on a read-only filesystem that lacks it.

        ``flock`` needs no write access, so a read-only store (a read-only mount, a
        directory the user may not write) is locked through a read-only descriptor,
        and one whose lock file cannot even be created needs no lock: nothing can
        change it. What then tries to write fails, saying the store is read-only.
        """
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            first = exc
        try:
            return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            if first.errno == errno.EROFS:
                return None
            raise StoreError(
                f"{self.path}: cannot open the store lock: {first.strerror}"
            ) from first

    def _release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
