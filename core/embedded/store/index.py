"""The SQLite index: the only module that speaks SQL of its own design.

The schema lives here as code: ``MIGRATIONS[n]`` takes the database from
``user_version`` n to n+1, run inside one ``BEGIN IMMEDIATE`` transaction so two
processes opening a fresh store at once cannot both migrate. The database runs in WAL
mode with ``foreign_keys=ON``; every thread gets its own connection (sqlite3 refuses
cross-thread use), and writers serialise on ``BEGIN IMMEDIATE`` with a busy timeout
instead of failing with ``database is locked``.

Everything the index does goes through :meth:`Index.transaction`, :meth:`Index.snapshot`,
:meth:`Index.row` or :meth:`Index.rows`, which turn any ``sqlite3.Error`` into a one-line
``StoreError`` naming the database: no SQLite traceback reaches a user.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lamina.core.dockerfile.quote import go_json_text
from lamina.core.embedded.store.reserve import Reserve
from lamina.core.errors import StoreError

log = logging.getLogger(__name__)

# Seconds a writer waits for another process's transaction before giving up.
BUSY_TIMEOUT = 30.0

SCHEMA_V1 = """
CREATE TABLE layers (
  chain_id   TEXT PRIMARY KEY,
  diff_id    TEXT NOT NULL,
  parent     TEXT REFERENCES layers(chain_id),
  size       INTEGER NOT NULL,
  tar_size   INTEGER NOT NULL,
  created    REAL NOT NULL,
  created_by TEXT NOT NULL DEFAULT ''
);
CREATE TABLE images (
  id         TEXT PRIMARY KEY,
  top_layer  TEXT REFERENCES layers(chain_id),
  created    REAL NOT NULL,
  added      REAL NOT NULL,
  parent     TEXT
);
CREATE TABLE tags (
  name       TEXT PRIMARY KEY,
  image_id   TEXT NOT NULL REFERENCES images(id)
);
CREATE TABLE cache (
  key        TEXT PRIMARY KEY,
  parent     TEXT NOT NULL,
  instruction TEXT NOT NULL,
  inputs     TEXT NOT NULL,
  result     TEXT NOT NULL,
  top_layer  TEXT REFERENCES layers(chain_id),
  created    REAL NOT NULL,
  last_used  REAL NOT NULL,
  use_count  INTEGER NOT NULL DEFAULT 0,
  build_id   INTEGER
);
CREATE INDEX cache_parent ON cache(parent);
CREATE TABLE pruned_cache (
  key        TEXT PRIMARY KEY,
  parent     TEXT NOT NULL,
  instruction TEXT NOT NULL,
  pruned_at  REAL NOT NULL
);
CREATE TABLE builds (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  started REAL NOT NULL, finished REAL,
  dockerfile TEXT NOT NULL, context TEXT NOT NULL,
  tags TEXT NOT NULL, build_args TEXT NOT NULL, target TEXT,
  image TEXT, status TEXT NOT NULL, error TEXT, pid INTEGER
);
CREATE TABLE build_steps (
  build_id INTEGER NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
  seq INTEGER NOT NULL, stage INTEGER NOT NULL, idx INTEGER NOT NULL,
  instruction TEXT NOT NULL, cached INTEGER, reason TEXT,
  duration REAL NOT NULL DEFAULT 0, layer TEXT, size INTEGER NOT NULL DEFAULT 0,
  cache_key TEXT,
  PRIMARY KEY (build_id, seq)
);
CREATE TABLE stat_cache (
  path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ino INTEGER, mode INTEGER,
  ctime_ns INTEGER, checksum TEXT NOT NULL
);
"""

# BuildKit's rules: the builder each build decided by, what the other builder would have
# decided per step, and the cache mounts RUN --mount=type=cache keeps between builds.
SCHEMA_V2_BUILDERS = """
ALTER TABLE builds ADD COLUMN builder TEXT;
ALTER TABLE build_steps ADD COLUMN other TEXT;
CREATE TABLE cache_mounts (
  id         TEXT PRIMARY KEY,
  mount_id   TEXT NOT NULL,
  sharing    TEXT NOT NULL,
  dir        TEXT NOT NULL,
  created    REAL NOT NULL,
  last_used  REAL NOT NULL,
  use_count  INTEGER NOT NULL DEFAULT 0,
  size       INTEGER NOT NULL DEFAULT 0,
  in_use     INTEGER NOT NULL DEFAULT 0,
  build_id   INTEGER
);
"""

# Version 3: a layer's ``size`` is Docker's (the bytes of its files, as ``docker images``
# and ``docker history`` count them), and ``disk_size`` the blocks its directory occupies,
# which versions 1 and 2 kept in ``size``. SQL cannot measure a directory, so the new column
# starts NULL, meaning "not measured yet", and the store measures those rows when it
# opens (``LayerStore.measure_unmeasured``): a walk of each old layer, once, resumed
# on the next open if interrupted, and rows written by this version never need it.
#
# Also an index on build_steps.cache_key: a miss is explained against the entries builds
# of the same Dockerfile recorded at the same step, found through the steps that used
# each entry on the parent state (``CacheEntries.history``).
SCHEMA_V3_SIZES = """
ALTER TABLE layers ADD COLUMN disk_size INTEGER;
CREATE INDEX build_steps_key ON build_steps(cache_key);
"""

# Version 4: what each build's COPY/ADD steps read from the context, path by path (a short
# hash of each entry) and the base each stage started from, so `lamina advise` can replay
# a build history through a rewritten Dockerfile. One row per build, bounded in size by
# ``BuildRecords.record_sources``; only the newest builds of each Dockerfile keep theirs.
SCHEMA_V4_SOURCES = """
CREATE TABLE build_sources (
  build_id INTEGER PRIMARY KEY REFERENCES builds(id) ON DELETE CASCADE,
  dockerfile TEXT NOT NULL,
  doc TEXT NOT NULL
);
CREATE INDEX build_sources_dockerfile ON build_sources(dockerfile);
"""

# Version 5: identical files stored once (``dedup``). ``files`` has a row per inode that
# layers share through the pool ``files/``, with how many layers hold it; ``layer_files``
# says which layers hold which, by a small number per layer (``layer_numbers``) so a
# 20,000-file layer adds a few hundred kilobytes, not a chainID per file. Layers recorded
# before hold nothing shared, which is true of them. ``tree_cache`` keeps a COPY source's
# checksums by the fingerprint of every lstat below it, so an unchanged context is
# checksummed without a per-file lookup (``context.checksum.StatCache``).
SCHEMA_V5_FILES = """
CREATE TABLE files (
  id    INTEGER PRIMARY KEY,
  key   BLOB NOT NULL UNIQUE,
  ino   INTEGER NOT NULL,
  disk  INTEGER NOT NULL,
  refs  INTEGER NOT NULL
);
CREATE INDEX files_shared ON files(refs) WHERE refs > 1;
CREATE TABLE layer_numbers (
  no       INTEGER PRIMARY KEY,
  chain_id TEXT NOT NULL UNIQUE REFERENCES layers(chain_id)
);
CREATE TABLE layer_files (
  layer INTEGER NOT NULL REFERENCES layer_numbers(no),
  file  INTEGER NOT NULL REFERENCES files(id),
  PRIMARY KEY (layer, file)
) WITHOUT ROWID;
CREATE INDEX layer_files_file ON layer_files(file);
CREATE TABLE tree_cache (
  key         TEXT PRIMARY KEY,
  fingerprint TEXT NOT NULL,
  value       TEXT NOT NULL
);
"""

# MIGRATIONS[n] upgrades user_version n to n + 1. Append; never edit a released step.
MIGRATIONS: tuple[str, ...] = (
    SCHEMA_V1,
    SCHEMA_V2_BUILDERS,
    SCHEMA_V3_SIZES,
    SCHEMA_V4_SOURCES,
    SCHEMA_V5_FILES,
)
SCHEMA_VERSION = len(MIGRATIONS)


class Index:
    """The store's SQLite index (``index.db``).

    Args:
        path: the database file; created and migrated on first use.
        check_fresh: called with the index before a version-0 database is migrated;
            raises to refuse (the store uses it to tell a lost index from a new store).
        reserve: space to give up when a write finds the disk full (``reserve.py``).
    """

    def __init__(
        self,
        path: Path,
        check_fresh: Callable[[Index], None] | None = None,
        reserve: Reserve | None = None,
    ) -> None:
        self.path = path
        self._check_fresh = check_fresh
        self._reserve = reserve
        self._local = threading.local()
        self._lock = threading.Lock()
        # Every open connection with the thread that owns it, so connections of
        # finished threads (the app runs each job in a fresh worker thread) get closed.
        self._all: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._closed = False
        self.read_only = False
        try:
            self._migrate()
        except BaseException:
            # Refused or failed: no connection is left open on the file.
            self.close()
            raise

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (``row_factory=sqlite3.Row``, autocommit).

        Raises:
            StoreError: if the index is closed or cannot be opened.
        """
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise StoreError(f"{self.path}: index is closed")
        try:
            conn = self._connect()
        except (sqlite3.Error, UnicodeError) as exc:
            # UnicodeError: a damaged header can make a PRAGMA's answer undecodable.
            try:
                # A read-only or full store can still be listed: read it as it is.
                conn = self._connect_read_only(exc)
            except (sqlite3.Error, UnicodeError):
                raise StoreError(f"{self.path}: cannot open the index: {exc}{hint(exc)}") from exc
        self._local.conn = conn
        self._local.depth = 0
        with self._lock:
            alive = []
            for thread, other in self._all:
                if thread.is_alive():
                    alive.append((thread, other))
                else:
                    other.close()
            alive.append((threading.current_thread(), conn))
            self._all = alive
        return conn

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: lamina issues BEGIN itself, so a transaction is exactly
        # what transaction() says and never an implicit deferred one.
        # check_same_thread=False only so that finished threads' connections can be
        # closed from elsewhere; each connection is still used by its own thread alone.
        conn = sqlite3.connect(
            str(self.path),
            timeout=BUSY_TIMEOUT,
            isolation_level=None,
            check_same_thread=False,
            factory=_Connection,
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            _use_wal(conn, self.path)
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_read_only(self, why: Exception) -> sqlite3.Connection:
        """The index opened read-only, when it cannot be opened for writing.

        ``immutable`` makes SQLite take no lock and create no ``-shm`` file, which is
        what a read-only directory or a full disk refuses; it is only used when no
        ``-wal`` file holds changes not yet in the database itself.
        """
        wal = f"{self.path}-wal"
        if not self.path.exists() or (os.path.exists(wal) and os.path.getsize(wal) > 0):
            raise why
        conn = sqlite3.connect(
            f"file:{self.path}?mode=ro&immutable=1",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            factory=_Connection,
        )
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            conn.close()
            raise
        # Reading verbs work; a write says the store is read-only when it is tried.
        log.info("%s: opened read-only (%s)", self.path, why)
        self.read_only = True
        return conn

    @contextmanager
    def transaction(self, purpose: str = "write") -> Iterator[sqlite3.Connection]:
        """One write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error).

        Nested use on the same thread joins the outer transaction, so a helper that
        writes can be called both alone and inside a larger logical write; the outermost
        one commits, rolls back and names the failure.

        Args:
            purpose: a word for the write (``prune``, ``repair``), used in the message
                when it fails.

        Raises:
            StoreError: if the database stays locked past the busy timeout, is corrupt,
                or a statement of the transaction fails (it is rolled back).
        """
        conn = self.connection()
        depth: int = self._local.depth
        if depth > 0:
            self._local.depth = depth + 1
            try:
                yield conn
            finally:
                self._local.depth = depth
            return
        # A full disk: rmi and prune must still be able to record what they free.
        reserve = self._reserve
        released = reserve is not None and (self.read_only or reserve.low()) and reserve.release()
        if released and self.read_only:
            conn = self._reopen()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot start a write: {exc}{hint(exc)}") from exc
        self._local.depth = 1
        try:
            yield conn
        except BaseException as exc:
            self._local.depth = 0
            self._rollback(conn)
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{self.path}: {purpose} rolled back: {exc}{hint(exc)}") from exc
            raise
        self._local.depth = 0
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise StoreError(f"{self.path}: cannot commit: {exc}{hint(exc)}") from exc

    def _reopen(self) -> sqlite3.Connection:
        """This thread's connection opened again (for writing, if the disk now allows)."""
        conn: sqlite3.Connection = self._local.conn
        with self._lock:
            self._all = [(t, c) for t, c in self._all if c is not conn]
        conn.close()
        del self._local.conn
        self.read_only = False
        return self.connection()

    def _rollback(self, conn: sqlite3.Connection) -> None:
        if not conn.in_transaction:
            return
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            # The failure that led here is the one to report; SQLite has usually rolled
            # back by itself when ROLLBACK fails.
            log.debug("%s: rollback: %s", self.path, exc)

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """Several reads that see one state of the index.

        Outside a transaction this opens a read transaction (a WAL snapshot), so a
        commit landing between two queries cannot make them disagree; inside one (a
        write, or an enclosing snapshot) it joins it.

        Raises:
            StoreError: if the index cannot be read.
        """
        conn = self.connection()
        joined = conn.in_transaction
        try:
            if joined:
                yield conn
                return
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read the index: {exc}{hint(exc)}") from exc

    def row(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        """The first row a query returns, or None.

        Raises:
            StoreError: if the index cannot be read.
        """
        try:
            row: sqlite3.Row | None = self.connection().execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read the index: {exc}{hint(exc)}") from exc
        return row

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Every row a query returns.

        Raises:
            StoreError: if the index cannot be read.
        """
        try:
            return self.connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read the index: {exc}{hint(exc)}") from exc

    def schema_version(self) -> int:
        """The database's ``PRAGMA user_version``."""
        try:
            return _user_version(self.connection())
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: not a usable index: {exc}{hint(exc)}") from exc

    def damaged(self) -> StoreError | None:
        """The error to report if the database file is damaged, else None.

        SQLite reads some damaged pages without complaint (a zeroed page gives rows of
        NULLs), so a reader fails later in its own terms; ``PRAGMA quick_check`` tells
        whether the file is the cause. It reads the whole file (milliseconds per
        megabyte): callers ask after something failed, and before a repair or a prune
        acts on what the index says.
        """
        try:
            rows = self.connection().execute("PRAGMA quick_check(1)").fetchall()
            problem = "" if [tuple(r) for r in rows] == [("ok",)] else str(rows[0][0])
        except (sqlite3.Error, StoreError) as exc:
            problem = str(exc)
        if not problem:
            return None
        # quick_check's first line names the database ("*** in database main ***").
        lines = [ln for ln in problem.splitlines() if ln and not ln.startswith("***")]
        return StoreError(
            f"{self.path}: the index is damaged ({(lines or [problem])[0]});"
            " `lamina fsck --rebuild-index` rebuilds it"
        )

    def close(self) -> None:
        """Closes every thread's connection (call from the owning thread at exit)."""
        self._closed = True
        with self._lock:
            conns, self._all = self._all, []
        for _thread, conn in conns:
            try:
                conn.close()
            except sqlite3.Error as exc:
                log.debug("%s: closing a connection: %s", self.path, exc)
        self._local.__dict__.pop("conn", None)

    def _migrate(self) -> None:
        conn = self.connection()
        try:
            version = _user_version(conn)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: index schema version {version} is newer than this "
                    f"lamina understands ({SCHEMA_VERSION}); upgrade lamina"
                )
            if version == SCHEMA_VERSION:
                return
            if version == 0 and self._check_fresh is not None:
                # An unmigrated index is a new store only if nothing is stored yet.
                self._check_fresh(self)
            with self.transaction("migration"):
                # Re-read under the write lock: another process may have migrated.
                version = _user_version(conn)
                for step in range(version, SCHEMA_VERSION):
                    log.info("%s: migrating index to version %d", self.path, step + 1)
                    for statement in _statements(MIGRATIONS[step]):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {step + 1}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable index: {exc}{hint(exc)}") from exc


class _Connection(sqlite3.Connection):
    """A connection that stores text that is not UTF-8 as Docker records it.

    A Dockerfile's bytes that are not UTF-8 (held surrogate-escaped) reach the index
    in instructions, history and messages; SQLite text must be UTF-8, so such text is
    written, and looked up, with U+FFFD for each of those bytes, as Go's JSON writes
    it in Docker's configs. Text that is valid costs nothing: the conversion only runs
    after sqlite3 refused the parameters.
    """

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, parameters)
        except UnicodeEncodeError:
            return super().execute(sql, _valid_text(parameters))

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        rows = list(parameters)
        try:
            return super().executemany(sql, rows)
        except UnicodeEncodeError:
            # The index's executemany statements are idempotent (UPDATE ... SET to a
            # value, INSERT OR REPLACE): rows written before the refusal are rewritten.
            return super().executemany(sql, [_valid_text(row) for row in rows])


def _valid_text(parameters: Any) -> Any:
    if isinstance(parameters, dict):
        return {k: go_json_text(v) if isinstance(v, str) else v for k, v in parameters.items()}
    return tuple(go_json_text(v) if isinstance(v, str) else v for v in parameters)


def hint(exc: Exception) -> str:
    """The way out to add to a message about ``exc``: a damaged database file is
    rebuilt by fsck; a full disk or a lock needs no such advice."""
    text = str(exc).lower()
    damage_words = ("malformed", "not a database", "corrupt", "could not decode")
    if isinstance(exc, UnicodeError) or (
        isinstance(exc, sqlite3.DatabaseError) and any(w in text for w in damage_words)
    ):
        return "; the index is damaged: `lamina fsck --rebuild-index` rebuilds it"
    if "disk is full" in text or "disk i/o" in text:
        return "; the disk may be full (free space, then retry)"
    if "readonly" in text or "read-only" in text:
        return "; the store is read-only"
    return ""


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _use_wal(conn: sqlite3.Connection, path: Path) -> None:
    """Puts the database in WAL mode (persistent, so usually already done).

    Switching needs an exclusive lock, and SQLite answers ``database is locked`` at once,
    without its busy handler, while another process holds the database open during the
    switch; so the switch is retried within the busy timeout.
    """
    mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    deadline = time.monotonic() + BUSY_TIMEOUT
    while mode != "wal":
        try:
            mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
            continue
        if mode != "wal":
            log.warning("%s: journal_mode is %s, not wal", path, mode)
            return


def _statements(script: str) -> list[str]:
    """Splits a migration script into statements (executescript would COMMIT early)."""
    return [s.strip() for s in script.split(";") if s.strip()]
