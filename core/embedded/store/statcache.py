"""The stat cache's rows in the index: remembered tarsums of context files.

:class:`lamina.core.context.checksum.StatCache` decides when a remembered sum still
holds; this table is only where the sums live between builds (``store.stat_cache``).
"""

from __future__ import annotations

import sqlite3

from lamina.core.context.checksum import StatRow
from lamina.core.embedded.store.index import Index


class StatCacheTable:
    """The ``stat_cache`` table (implements ``context.checksum.StatRows``).

    Args:
        index: the store's index.
    """

    def __init__(self, index: Index) -> None:
        self.index = index

    def below(self, prefix: str) -> dict[str, StatRow]:
        """Every row whose path starts with ``prefix`` (which ends with ``/``), in one query."""
        # Paths below the root sort between "<root>/" and "<root>0" ("0" follows "/").
        rows = self.index.rows(
            "SELECT path, size, mtime_ns, ino, mode, ctime_ns, checksum FROM stat_cache"
            " WHERE path >= ? AND path < ?",
            (prefix, prefix[:-1] + "0"),
        )
        return {str(r[0]): _stat_row(r, 1) for r in rows}

    def get(self, path: str) -> StatRow | None:
        """The row of one path, or None."""
        row = self.index.row(
            "SELECT size, mtime_ns, ino, mode, ctime_ns, checksum FROM stat_cache WHERE path = ?",
            (path,),
        )
        return None if row is None else _stat_row(row, 0)

    def put(
        self, rows: dict[str, StatRow], trees: dict[str, tuple[str, str]] | None = None
    ) -> None:
        """Writes (or replaces) rows and tree rows, in one transaction."""
        with self.index.transaction("stat cache write") as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO stat_cache"
                " (path, size, mtime_ns, ino, mode, ctime_ns, checksum) VALUES (?,?,?,?,?,?,?)",
                [(path, *row) for path, row in rows.items()],
            )
            if trees:
                conn.executemany(
                    "INSERT OR REPLACE INTO tree_cache (key, fingerprint, value) VALUES (?,?,?)",
                    [(key, fp, value) for key, (fp, value) in trees.items()],
                )

    def tree(self, key: str) -> tuple[str, str] | None:
        """A tree row: (fingerprint, value), or None."""
        row = self.index.row("SELECT fingerprint, value FROM tree_cache WHERE key = ?", (key,))
        return None if row is None else (str(row[0]), str(row[1]))


def _stat_row(row: sqlite3.Row, start: int) -> StatRow:
    size, mtime_ns, ino, mode, ctime_ns, checksum = tuple(row)[start : start + 6]
    return (size, mtime_ns, ino, mode, ctime_ns, str(checksum))
