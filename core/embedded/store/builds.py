"""Build records in the index: one ``builds`` row per build, one ``build_steps`` row per
instruction with its cache decision.

A build is recorded as ``running`` with its process ID when it starts, so a crashed
build is told apart from one still under way (GC keeps what a live build stands on).

A finished build also records what its COPY/ADD steps read from the context, path by
path (``build_sources``), so that advice can replay the history through a rewritten
Dockerfile. That record is bounded: at most :data:`MAX_SOURCE_PATHS` entries per build
(deeper paths are folded into their directory beyond that), and only the newest
:data:`KEEP_SOURCES` builds of each Dockerfile keep theirs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from lamina.core.embedded.store.index import Index
from lamina.core.embedded.store.process import pid_alive
from lamina.core.errors import StoreError
from lamina.core.model import BuildRecord, BuildRequest, BuildSources, StepRecord

log = logging.getLogger(__name__)

# What a build left as "running" whose process is gone says about itself.
INTERRUPTED = "interrupted: the building process is gone"

# At most this many paths per build's source record (about 60 bytes each): beyond, paths
# are folded into their directories, the deepest first.
MAX_SOURCE_PATHS = 5000
# Source records kept per Dockerfile: older builds keep their steps, not their paths.
KEEP_SOURCES = 50
SOURCES_VERSION = 1


def fold_paths(paths: dict[str, str], limit: int = MAX_SOURCE_PATHS) -> dict[str, str] | None:
    """``paths`` within ``limit`` entries: each path deeper than some depth replaced by
    its directory (``dir/sub/``, with a trailing slash) whose hash covers everything
    below it; None when even the top-level names are too many.

    Args:
        paths: path to the short hash of its entry.
        limit: the most entries to keep.
    """
    if len(paths) <= limit:
        return dict(paths)
    deepest = max(p.count("/") for p in paths)
    for depth in range(deepest, 0, -1):
        groups: dict[str, list[str]] = {}
        kept: dict[str, str] = {}
        for path, digest in paths.items():
            parts = path.split("/")
            if len(parts) > depth:
                groups.setdefault("/".join(parts[:depth]) + "/", []).append(f"{path}={digest}")
            else:
                kept[path] = digest
        if len(kept) + len(groups) <= limit:
            for folder, members in groups.items():
                joined = "\n".join(sorted(members)).encode("utf-8", "surrogateescape")
                kept[folder] = hashlib.sha256(joined).hexdigest()[:16]
            return kept
    return None


class BuildRecords:
    """The ``builds`` and ``build_steps`` tables.

    Args:
        index: the store's index.
    """

    def __init__(self, index: Index) -> None:
        self.index = index

    def start(self, request: BuildRequest, dockerfile: Path, builder: str | None = None) -> int:
        """Records a build as running in this process; returns its ID.

        Args:
            request: what is built.
            dockerfile: the Dockerfile read.
            builder: the cache rules the build decides by (``buildkit``, ``classic``).
        """
        with self.index.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO builds (started, dockerfile, context, tags, build_args, target,"
                " status, pid, builder) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    time.time(),
                    str(dockerfile),
                    str(Path(request.context)),
                    json.dumps(list(request.tags)),
                    json.dumps(dict(request.build_args), sort_keys=True),
                    request.target,
                    "running",
                    os.getpid(),
                    builder,
                ),
            )
            return int(cur.lastrowid or 0)

    def add_step(self, build_id: int, seq: int, step: StepRecord, cache_key: str | None) -> None:
        """Records one instruction of a build.

        Args:
            build_id: the build.
            seq: the step's place in the build (1, 2, ...).
            step: the step and its cache decision.
            cache_key: the key it was looked up by (GC keeps what a running build
                used), None for FROM or a step without one.
        """
        with self.index.transaction() as conn:
            conn.execute(
                "INSERT INTO build_steps (build_id, seq, stage, idx, instruction, cached, reason,"
                " duration, layer, size, cache_key, other) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    build_id,
                    seq,
                    step.stage,
                    step.index,
                    step.instruction,
                    None if step.cached is None else int(step.cached),
                    json.dumps(step.reason) if step.reason is not None else None,
                    step.duration,
                    step.layer,
                    step.size,
                    cache_key,
                    json.dumps(step.other) if step.other is not None else None,
                ),
            )

    def finish(self, build_id: int, status: str, image: str | None, error: str | None) -> None:
        """Records how a build ended (``ok``, ``failed`` or ``cancelled``)."""
        with self.index.transaction() as conn:
            conn.execute(
                "UPDATE builds SET finished = ?, status = ?, image = ?, error = ? WHERE id = ?",
                (time.time(), status, image, error, build_id),
            )

    def record_sources(
        self, build_id: int, dockerfile: str, paths: dict[str, str], bases: dict[int, str]
    ) -> None:
        """Records what a build's COPY/ADD steps read from the context.

        Args:
            build_id: the build.
            dockerfile: its Dockerfile, as the build records it.
            paths: context path to a short hash of its entry (name, mode, size, content,
                link target), for every path a COPY/ADD of the build read.
            bases: stage number to the image ID the stage started from.
        """
        folded = fold_paths(paths)
        doc: dict[str, Any] = {
            "v": SOURCES_VERSION,
            "paths": folded or {},
            "bases": {str(k): v for k, v in bases.items()},
        }
        if folded is None:
            doc["complete"] = False
        elif len(folded) != len(paths):
            doc["folded"] = True
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        with self.index.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO build_sources (build_id, dockerfile, doc) VALUES (?,?,?)",
                (build_id, dockerfile, text),
            )
            conn.execute(
                "DELETE FROM build_sources WHERE dockerfile = ? AND build_id NOT IN"
                " (SELECT build_id FROM build_sources WHERE dockerfile = ?"
                " ORDER BY build_id DESC LIMIT ?)",
                (dockerfile, dockerfile, KEEP_SOURCES),
            )

    def sources(self, build_ids: list[int]) -> dict[int, BuildSources]:
        """The source records of these builds (those that have one)."""
        out: dict[int, BuildSources] = {}
        wanted = sorted(set(build_ids))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.index.rows(
                f"SELECT build_id, doc FROM build_sources WHERE build_id IN ({marks})",
                tuple(chunk),
            )
            for row in rows:
                try:
                    doc = json.loads(row["doc"])
                except ValueError:
                    log.debug("build %s: unreadable source record", row["build_id"])
                    continue
                if not isinstance(doc, dict) or doc.get("v") != SOURCES_VERSION:
                    continue
                out[int(row["build_id"])] = BuildSources(
                    build_id=int(row["build_id"]),
                    paths={str(k): str(v) for k, v in (doc.get("paths") or {}).items()},
                    bases={int(k): str(v) for k, v in (doc.get("bases") or {}).items()},
                    complete=bool(doc.get("complete", True)),
                    folded=bool(doc.get("folded", False)),
                )
        return out

    def recent(self, limit: int = 50) -> list[BuildRecord]:
        """Recorded builds, newest first, each with its steps.

        A build recorded as running whose process is gone is reported failed.
        """
        out = []
        with self.index.snapshot() as conn:
            builds = conn.execute(
                "SELECT * FROM builds ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
            for row in builds:
                steps = tuple(
                    StepRecord(
                        stage=s["stage"],
                        index=s["idx"],
                        instruction=s["instruction"],
                        cached=None if s["cached"] is None else bool(s["cached"]),
                        reason=json.loads(s["reason"]) if s["reason"] else None,
                        duration=s["duration"],
                        layer=s["layer"],
                        size=s["size"],
                        other=json.loads(s["other"]) if s["other"] else None,
                    )
                    for s in conn.execute(
                        "SELECT * FROM build_steps WHERE build_id = ? ORDER BY seq", (row["id"],)
                    ).fetchall()
                )
                status, error = row["status"], row["error"]
                if status == "running" and not (row["pid"] and pid_alive(int(row["pid"]))):
                    # The process died mid-build (killed, power loss): say so instead of
                    # showing a build that runs forever.
                    status, error = "failed", error or INTERRUPTED
                out.append(
                    BuildRecord(
                        id=row["id"],
                        started=row["started"],
                        finished=row["finished"],
                        dockerfile=row["dockerfile"],
                        context=row["context"],
                        tags=tuple(json.loads(row["tags"] or "[]")),
                        build_args=json.loads(row["build_args"] or "{}"),
                        target=row["target"],
                        image=row["image"],
                        status=status,
                        error=error,
                        steps=steps,
                        builder=row["builder"],
                    )
                )
        return out

    def interrupted(self) -> list[tuple[int, int | None]]:
        """``(build ID, pid)`` of builds recorded as running whose process is gone."""
        rows = self.index.rows("SELECT id, pid FROM builds WHERE status = 'running'")
        return [
            (int(r["id"]), r["pid"])
            for r in rows
            if r["pid"] is None or not pid_alive(int(r["pid"]))
        ]

    def recover_interrupted(self) -> list[tuple[int, int | None]]:
        """Records every interrupted build as failed; returns ``(build ID, pid)`` of each.

        Never fails: on a read-only or full store the builds stay as they are (readers
        report them failed anyway) and nothing is returned.
        """
        try:
            builds = self.interrupted()
            if builds:
                self.mark_interrupted([b for b, _pid in builds], time.time())
        except StoreError as exc:
            log.debug("interrupted builds not recorded: %s", exc)
            return []
        return builds

    def mark_interrupted(self, build_ids: list[int], now: float) -> None:
        """Records interrupted builds as failed (those still marked running)."""
        with self.index.transaction() as conn:
            for build_id in build_ids:
                conn.execute(
                    "UPDATE builds SET status = 'failed', finished = COALESCE(finished, ?),"
                    " error = COALESCE(error, 'interrupted: its process is gone')"
                    " WHERE id = ? AND status = 'running'",
                    (now, build_id),
                )
