"""The record of each build in the index: started, every step with its cache decision
as it finishes, and how it ended. A dry run (and the preflight) records nothing."""

from __future__ import annotations

import threading
from pathlib import Path

from lamina.core.embedded.store import Store
from lamina.core.model import BuildRecord, BuildRequest, StepRecord


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

    @classmethod
    def start(
        cls, store: Store, request: BuildRequest, dockerfile: Path, builder: str | None = None
    ) -> BuildLog:
        """Records a new build as running in this process (``builder``: the cache rules
        it decides by)."""
        return cls(store, store.builds.start(request, dockerfile, builder))

    def step(self, record: StepRecord, key: str | None) -> None:
        """Records a finished step and the key it was looked up by."""
        if not self.build_id:
            return
        with self._lock:
            self._seq += 1
            seq = self._seq
        self.store.builds.add_step(self.build_id, seq, record, key)

    def finish(self, status: str, image: str | None = None, error: str | None = None) -> None:
        """Records how the build ended: ``ok``, ``failed`` or ``cancelled``."""
        if self.build_id:
            self.store.builds.finish(self.build_id, status, image, error)


def list_builds(store: Store, limit: int = 50) -> list[BuildRecord]:
    """Recorded builds, newest first, each with its steps.

    Args:
        store: the store.
        limit: at most this many builds.
    """
    return store.builds.recent(limit)
