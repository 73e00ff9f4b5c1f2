"""The record of each build in the index: started, every step with its cache decision
as it finishes, and how it ended. A dry run (and the preflight) records nothing.

A build that ends also records what its COPY/ADD steps read from the context, path by
path, and the base of each stage (``store.builds.record_sources``): what a replay of the
build through a rewritten Dockerfile needs (``lamina advise``)."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import threading
from pathlib import Path

from lamina.core.context.checksum import Context
from lamina.core.embedded.builder.copy import Source
from lamina.core.embedded.store import Store
from lamina.core.errors import LaminaError
from lamina.core.model import BuildRecord, BuildRequest, StepRecord

log = logging.getLogger(__name__)


class BuildLog:
    """The record of one build (or of none, for a dry run).

    Args:
        store: the store recording it.
        build_id: the build's ID, or 0 for a walk that records nothing.
    """

    def __init__(self, store: Store, build_id: int = 0) -> None:
        self.store = store
        self.build_id = build_id
        self._seq = 0
        # Stages may be built at once: one step number each.
        self._lock = threading.Lock()
        self._dockerfile = ""
        self._paths: dict[str, str] = {}
        self._bases: dict[int, str] = {}

    @classmethod
    def start(
        cls, store: Store, request: BuildRequest, dockerfile: Path, builder: str | None = None
    ) -> BuildLog:
        """Records a new build as running in this process (``builder``: the cache rules
        it decides by)."""
        log_ = cls(store, store.builds.start(request, dockerfile, builder))
        log_._dockerfile = str(dockerfile)
        return log_

    def step(self, record: StepRecord, key: str | None) -> None:
        """Records a finished step and the key it was looked up by."""
        if not self.build_id:
            return
        with self._lock:
            self._seq += 1
            seq = self._seq
        self.store.builds.add_step(self.build_id, seq, record, key)

    def base(self, stage: int, image_id: str | None) -> None:
        """Notes the image a stage starts from."""
        if self.build_id and image_id:
            with self._lock:
                self._bases[stage] = image_id

    def sources(self, sources: list[Source], context: Context) -> None:
        """Notes what a COPY/ADD step reads from the context, path by path.

        Every hash is one the step's checksum computed already (the context memoizes
        them), and an unchanged tree's paths come from the stat cache in one lookup
        (``Source.tree``), so a cached step costs a dictionary, not a read per file.
        """
        if not self.build_id:
            return
        found: dict[str, str] = {}
        for src in sources:
            if src.origin != "context":
                continue
            if src.tree is None:
                found.update(_source_paths(src, context))
                continue
            what = "\0".join(("sources", *src.exclude))
            value = src.tree(what, functools.partial(_paths_json, src, context))
            found.update(json.loads(value))
        with self._lock:
            self._paths.update(found)

    def finish(self, status: str, image: str | None = None, error: str | None = None) -> None:
        """Records how the build ended: ``ok``, ``failed`` or ``cancelled``."""
        if not self.build_id:
            return
        self.store.builds.finish(self.build_id, status, image, error)
        if status != "ok":
            return
        try:
            self.store.builds.record_sources(
                self.build_id, self._dockerfile, self._paths, self._bases
            )
        except LaminaError as exc:
            # Advice loses one build of history; the build itself succeeded.
            log.warning("build %d: its sources were not recorded: %s", self.build_id, exc)


def _source_paths(src: Source, context: Context) -> dict[str, str]:
    """Each context path one source reads, with the short hash of its entry."""
    found: dict[str, str] = {}
    top = "" if src.path in ("", ".") else src.path
    paths = ([top] if top else []) + (context.below(top) if src.is_dir else [])
    for path in paths:
        below = path[len(top) + 1 :] if top and path.startswith(top + "/") else path
        if src.exclude and top != path and src.excluded(below):
            continue
        found[path] = _short(context.entry_hash(path))
    return found


_HEX = re.compile(r"[0-9a-f]{64}")


def _paths_json(src: Source, context: Context) -> str:
    return json.dumps(_source_paths(src, context))


def _short(entry_hash: str) -> str:
    """16 hex characters for one context entry (its tarsum, or its name when it has none)."""
    if len(entry_hash) == 64 and _HEX.fullmatch(entry_hash):
        return entry_hash[:16]
    return hashlib.sha256(entry_hash.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def list_builds(store: Store, limit: int = 50) -> list[BuildRecord]:
    """Recorded builds, newest first, each with its steps.

    Args:
        store: the store.
        limit: at most this many builds.
    """
    return store.builds.recent(limit)
