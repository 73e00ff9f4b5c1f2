"""Cache mounts: the directories ``RUN --mount=type=cache`` keeps between builds.

Like BuildKit's ``exec.cachemount`` records, a cache mount is shared by its id (the
target when no id is given), survives builds, is listed and sized by ``system df -v``
and removed by ``builder prune``. Its files never enter a cache key. Each lives at
``cachemounts/<hex>/`` under the store; its row in ``cache_mounts`` says when it was
made and last used, how often, its size, and whether a build holds it now.

``sharing=shared`` lets concurrent RUNs use one directory, ``locked`` makes them take
turns, ``private`` gives a RUN that finds the mount in use a directory of its own.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lamina.core.dockerfile.quote import go_bytes
from lamina.core.embedded.store import beneath
from lamina.core.embedded.store.index import Index
from lamina.core.embedded.store.process import pid_alive
from lamina.core.errors import StoreError

# One lock per mount id in this process, for sharing=locked (and to count users).
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
# Numbers the private directories of this process (a RUN that found its mount in use).
_PRIVATE = itertools.count(1)


@dataclass(frozen=True)
class CacheMount:
    """One cache mount's record.

    Attributes:
        id: ``sha256:<hex>`` of what it is shared by.
        mount_id: the ``id=`` (or target) it was asked for by.
        sharing: ``shared``, ``private`` or ``locked``.
        path: its directory.
        created: when it was made.
        last_used: when a RUN last used it.
        use_count: how many RUNs used it.
        size: bytes it held after its last use.
        in_use: a build uses it now.
    """

    id: str
    mount_id: str
    sharing: str
    path: Path
    created: float
    last_used: float
    use_count: int
    size: int
    in_use: bool


def _dir_size(path: Path) -> int:
    """Bytes the entries below ``path`` occupy, each inode once.

    Iterative: a RUN may leave a tree of any depth in a cache mount.
    """
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


class CacheMounts:
    """The ``cache_mounts`` table and the ``cachemounts/`` directories.

    Args:
        home: the store directory.
        index: the store's index.
    """

    def __init__(self, home: Path, index: Index) -> None:
        self.root = home / "cachemounts"
        self.index = index

    @staticmethod
    def identity(mount_id: str, scope: str = "") -> str:
        """What a mount is shared by: its id, and the ``from=`` it starts from."""
        return "sha256:" + hashlib.sha256(go_bytes(f"{mount_id}\0{scope}")).hexdigest()

    def _path(self, ident: str, private: str = "") -> Path:
        hexpart = ident.split(":", 1)[1]
        return self.root / (hexpart if not private else f"{hexpart}-{private}")

    @contextmanager
    def use(
        self,
        mount_id: str,
        sharing: str,
        *,
        scope: str = "",
        mode: int = 0o755,
        uid: int = 0,
        gid: int = 0,
        empty: bool = False,
        build_id: int = 0,
    ) -> Iterator[Path]:
        """The directory of a cache mount for the length of one RUN.

        Args:
            mount_id: the mount's id.
            sharing: ``shared``, ``private`` or ``locked``.
            scope: what else it is shared by (the ``from=`` it was seeded from).
            mode: permission bits of a new mount's directory.
            uid: owner of a new mount's directory.
            gid: group of the same.
            empty: empty it first (``--no-cache`` reruns the step from scratch).
            build_id: the build using it.

        Raises:
            StoreError: its directory cannot be made.
        """
        ident = self.identity(mount_id, scope)
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(ident, threading.Lock())
        private = ""
        held = False
        if sharing == "locked":
            lock.acquire()
            held = True
        elif sharing == "private":
            held = lock.acquire(blocking=False)
            if not held:
                # Unique in this process and across processes, however many RUNs ask.
                private = f"{os.getpid()}-{next(_PRIVATE)}"
        path = self._path(ident, private)
        try:
            if empty and path.exists():
                beneath.remove_path(path)
            if not path.exists():
                path.mkdir(parents=True, exist_ok=True)
                os.chmod(path, mode)
                os.chown(path, uid, gid) if os.geteuid() == 0 else None
            now = time.time()
            with self.index.transaction() as conn:
                conn.execute(
                    "INSERT INTO cache_mounts (id, mount_id, sharing, dir, created, last_used,"
                    " use_count, size, in_use, build_id) VALUES (?,?,?,?,?,?,0,0,0,?)"
                    " ON CONFLICT(id) DO NOTHING",
                    (ident, mount_id, sharing, path.name, now, now, build_id),
                )
                conn.execute(
                    "UPDATE cache_mounts SET in_use = in_use + 1, last_used = ?,"
                    " use_count = use_count + 1, build_id = ? WHERE id = ?",
                    (now, build_id, ident),
                )
        except OSError as exc:
            if held:
                lock.release()
            raise StoreError(f"{path}: cannot prepare the cache mount: {exc.strerror}") from exc
        try:
            yield path
        finally:
            try:
                # A private directory goes with its RUN: the mount's size stays its own.
                size = None if private else _dir_size(path)
                with self.index.transaction() as conn:
                    conn.execute(
                        "UPDATE cache_mounts SET in_use = MAX(in_use - 1, 0),"
                        " size = COALESCE(?, size), last_used = ? WHERE id = ?",
                        (size, time.time(), ident),
                    )
                if private:
                    beneath.remove_quietly(path)
            finally:
                if held:
                    lock.release()

    def entries(self) -> list[CacheMount]:
        """Every cache mount, most recently used first."""
        rows = self.index.rows("SELECT * FROM cache_mounts ORDER BY last_used DESC, id")
        return [
            CacheMount(
                id=str(r["id"]),
                mount_id=str(r["mount_id"]),
                sharing=str(r["sharing"]),
                path=self.root / str(r["dir"]),
                created=float(r["created"]),
                last_used=float(r["last_used"]),
                use_count=int(r["use_count"]),
                size=int(r["size"]),
                in_use=bool(r["in_use"]),
            )
            for r in rows
        ]

    def remove(self, idents: list[str]) -> int:
        """Removes cache mounts that no build uses; returns the bytes freed."""
        freed = 0
        for mount in self.entries():
            if mount.id not in idents or mount.in_use:
                continue
            with self.index.transaction() as conn:
                conn.execute("DELETE FROM cache_mounts WHERE id = ? AND in_use = 0", (mount.id,))
            freed += mount.size
            beneath.remove_quietly(mount.path)
        return freed

    def stuck(self) -> list[CacheMount]:
        """Mounts marked in use while no build runs: a build whose process died mid-RUN
        left the mark, and a marked mount is never pruned. Only the last build to use a
        mount is recorded, so while any build of the store runs, none is called stuck."""
        # One snapshot: a build that starts meanwhile is seen running, or not yet using.
        with self.index.snapshot() as conn:
            running = conn.execute("SELECT pid FROM builds WHERE status = 'running'").fetchall()
            marked = {
                str(r[0]) for r in conn.execute("SELECT id FROM cache_mounts WHERE in_use > 0")
            }
        if any(r[0] is not None and pid_alive(int(r[0])) for r in running):
            return []
        return [m for m in self.entries() if m.id in marked]

    def reset_in_use(self, idents: list[str] | None = None) -> None:
        """Clears in-use marks a dead build left: those of ``idents``, or every mark
        (call with no build running)."""
        with self.index.transaction() as conn:
            if idents is None:
                conn.execute("UPDATE cache_mounts SET in_use = 0 WHERE in_use != 0")
            for ident in idents or ():
                conn.execute("UPDATE cache_mounts SET in_use = 0 WHERE id = ?", (ident,))


__all__ = ["CacheMount", "CacheMounts"]
