"""Build cache entries in the index: lookups, records, tombstones, and the history a
miss is explained against.

An entry maps a step's key to the state it produced (``result``, a config digest) and
the top layer of that state. When an entry is pruned a tombstone (``pruned_cache``)
keeps its key, so a later miss can say the step was cached once. The inputs recorded
with an entry (what its key was made of) are what ``accounting.reasons`` compares a
later miss with.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from lamina.core.accounting.graph import CacheRow
from lamina.core.accounting.reasons import History, Prior
from lamina.core.embedded.store.index import Index


@dataclass(frozen=True)
class CacheHit:
    """What a cache entry says a step produced.

    Attributes:
        result: the config digest of the resulting state.
        top_layer: the chainID that state stands on (None for an empty rootfs).
    """

    result: str
    top_layer: str | None


class StepPosition(NamedTuple):
    """Where a step stands: its Dockerfile (as the build records it), its stage and its
    index in the stage.

    A miss is explained only against entries that builds of the same Dockerfile
    recorded at the same stage and index, never against another stage's steps that
    happen to run on the same state.
    """

    dockerfile: str
    stage: int
    step: int


# An entry some build recorded (or hit) at the position asked about.
_AT_POSITION = (
    " AND EXISTS (SELECT 1 FROM build_steps s JOIN builds b ON b.id = s.build_id"
    " WHERE s.cache_key = cache.key AND s.stage = ? AND s.idx = ? AND b.dockerfile = ?)"
)


class CacheEntries:
    """The ``cache`` and ``pruned_cache`` tables.

    Args:
        index: the store's index.
    """

    def __init__(self, index: Index) -> None:
        self.index = index

    def lookup(self, key: str) -> CacheHit | None:
        """The entry of ``key``, or None."""
        row = self.index.row("SELECT result, top_layer FROM cache WHERE key = ?", (key,))
        return None if row is None else CacheHit(str(row[0]), row[1])

    def recorded_config(self, key: str) -> dict[str, Any] | None:
        """The image config recorded with the entry of ``key`` (what the classic builder
        would have compared), or None when there is none."""
        row = self.index.row(
            "SELECT json_extract(inputs, '$.config') FROM cache WHERE key = ?", (key,)
        )
        if row is None or row[0] is None:
            return None
        doc = json.loads(str(row[0]))
        return doc if isinstance(doc, dict) else None

    def touch(self, key: str, now: float | None = None) -> None:
        """Marks the entry used (prune keeps recently and often used entries)."""
        with self.index.transaction() as conn:
            conn.execute(
                "UPDATE cache SET last_used = ?, use_count = use_count + 1 WHERE key = ?",
                (time.time() if now is None else now, key),
            )

    def record(
        self,
        key: str,
        parent: str,
        instruction: str,
        inputs: Mapping[str, Any],
        hit: CacheHit,
        build_id: int,
        now: float | None = None,
    ) -> None:
        """Records (or replaces) the entry of ``key``, and drops its tombstone.

        Args:
            key: the step's cache key.
            parent: the state the step ran on.
            instruction: the instruction as written.
            inputs: what the key was made of (a later miss is explained against it).
            hit: what the step produced.
            build_id: the build that ran it.
            now: the clock (for tests).
        """
        now = time.time() if now is None else now
        with self.index.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO cache (key, parent, instruction, inputs, result, top_layer,"
                " created, last_used, use_count, build_id) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    key,
                    parent,
                    instruction,
                    json.dumps(inputs, sort_keys=True, separators=(",", ":")),
                    hit.result,
                    hit.top_layer,
                    now,
                    now,
                    0,
                    build_id,
                ),
            )
            conn.execute("DELETE FROM pruned_cache WHERE key = ?", (key,))

    def chained_on_keys(self) -> set[str]:
        """Entries whose ``parent`` is the cache key of the step before them, not a
        config: BuildKit's keys chain on keys, except at a stage's first step, whose
        parent is the base image."""
        rows = self.index.rows(
            "SELECT key FROM cache WHERE json_extract(inputs, '$.step.rules') = 'buildkit'"
            " AND parent IS NOT json_extract(inputs, '$.base')"
        )
        return {str(r["key"]) for r in rows}

    def drop(self, entries: Iterable[CacheRow], now: float) -> None:
        """Deletes entries, leaving a tombstone for each (one transaction, or the caller's).

        Args:
            entries: the entries to delete.
            now: when they were pruned.
        """
        with self.index.transaction() as conn:
            for entry in entries:
                conn.execute(
                    "INSERT OR REPLACE INTO pruned_cache (key, parent, instruction, pruned_at)"
                    " VALUES (?, ?, ?, ?)",
                    (entry.key, entry.parent, entry.instruction, now),
                )
                conn.execute("DELETE FROM cache WHERE key = ?", (entry.key,))

    def history(
        self,
        key: str,
        parent: str | None,
        instruction: str | None,
        position: StepPosition | None = None,
    ) -> History:
        """What the cache remembers around a missed ``key``, for ``reasons.explain_miss``.

        Args:
            key: the key that missed.
            parent: the state the step runs on, or None when it is not known yet.
            instruction: the instruction text, to find its entries on other parents
                (only needed for the first step of a stage); None to skip that query.
            position: where the step stands; when given, only entries recorded at the
                same position of the same Dockerfile are remembered.
        """
        where, extra = ("", ()) if position is None else (_AT_POSITION, _position(position))
        with self.index.snapshot() as conn:
            tomb = conn.execute("SELECT 1 FROM pruned_cache WHERE key = ?", (key,)).fetchone()
            on_parent = (
                conn.execute(
                    f"SELECT instruction, inputs FROM cache WHERE parent = ?{where}"
                    " ORDER BY created DESC, rowid DESC",
                    (parent, *extra),
                ).fetchall()
                if parent is not None
                else []
            )
            same = (
                conn.execute(
                    f"SELECT instruction, inputs FROM cache WHERE instruction = ?{where}"
                    " ORDER BY created DESC, rowid DESC",
                    (instruction, *extra),
                ).fetchall()
                if instruction is not None
                else []
            )
        return History(
            pruned=tomb is not None,
            on_parent=tuple(Prior(str(r[0]), str(r[1])) for r in on_parent),
            same_instruction=tuple(Prior(str(r[0]), str(r[1])) for r in same),
        )


def _position(position: StepPosition) -> tuple[int, int, str]:
    return (position.stage, position.step, position.dockerfile)
