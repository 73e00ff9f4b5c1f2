"""Space kept back for the index, so that a full disk can still be freed.

With no byte free, SQLite can neither create the ``-shm`` file of a WAL database nor
append to its write-ahead log, so the very verbs that would free space (``rmi``,
``prune``) could not record what they remove. The store keeps a file of
:data:`RESERVE_BYTES` (``$LAMINA_HOME/reserve``) with its blocks allocated, and gives
it up when a write finds the disk full; it is made again by the next process that opens
the store with room to spare.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# A prune's transaction rewrites a few hundred pages at most; the -shm file is 32 KiB.
RESERVE_BYTES = 1 << 20
RESERVE_NAME = "reserve"


class Reserve:
    """The reserve file of one store.

    Args:
        path: ``$LAMINA_HOME/reserve``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def keep(self) -> None:
        """Makes the reserve if it is missing and the disk has room for it and as much
        again; best effort (a read-only or nearly full store goes without)."""
        try:
            if self.path.exists() or _free(self.path.parent) < 2 * RESERVE_BYTES:
                return
            tmp = self.path.with_name(f".{RESERVE_NAME}-{os.getpid()}")
            try:
                with open(tmp, "wb") as f:
                    # Written, not truncated: a sparse file would hold no blocks.
                    f.write(bytes(RESERVE_BYTES))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            log.debug("%s: no reserve kept: %s", self.path, exc)

    def low(self) -> bool:
        """Whether the disk has less room than the reserve (a write may not fit)."""
        try:
            return _free(self.path.parent) < RESERVE_BYTES
        except OSError:
            return False

    def release(self) -> bool:
        """Gives the reserve's space back to the disk; returns whether there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.debug("%s: cannot release the reserve: %s", self.path, exc)
            return False
        log.info("%s: the disk is full; released the reserve to write the index", self.path)
        return True


def _free(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize
