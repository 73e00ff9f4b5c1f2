"""The engine interface every front end talks to.

Two implementations: the embedded engine (``lamina.core.embedded.engine.EmbeddedEngine``, the
default, over a store in ``$LAMINA_HOME``) and the Docker Engine backend
(``lamina.core.docker.engine.DockerEngine``). The app and the CLI use only this
Protocol and the records in ``lamina.core.model``; they never reach into a store.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lamina.core.errors import UsageError
from lamina.core.events import BuildEvent
from lamina.core.model import (
    BuildRecord,
    BuildRequest,
    FileChange,
    HistoryEntry,
    ImageSummary,
    LayerInfo,
)

if TYPE_CHECKING:
    from lamina.core.accounting.dive import Analysis
    from lamina.core.accounting.usage import DiskUsage
    from lamina.core.embedded.prune import PrunePlan, PruneRequest, PruneResult


class Engine(Protocol):
    """What lamina can see and do in one image store."""

    name: str  # "embedded" or "docker"

    def images(self) -> list[ImageSummary]:
        """Every image, tagged and dangling, newest first."""
        ...

    def image(self, ref: str) -> ImageSummary:
        """One image by tag, full ID or unique ID prefix; raises NotFound."""
        ...

    def inspect(self, ref: str) -> dict[str, Any]:
        """The image config plus ``Id``, ``RepoTags``, ``DiffIDs`` and ``ChainIDs``."""
        ...

    def history(self, ref: str) -> list[HistoryEntry]:
        """One entry per instruction, newest first (like ``docker history``)."""
        ...

    def layers(self) -> list[LayerInfo]:
        """Every layer in the store."""
        ...

    def layer_changes(self, chain_id: str) -> list[FileChange]:
        """What the layer adds, modifies and deletes relative to its parent."""
        ...

    def analyze(self, ref: str) -> Analysis:
        """dive's efficiency score and wasted space for one image."""
        ...

    def tag(self, ref: str, new_tag: str) -> None: ...

    def rmi(self, refs: list[str], force: bool = False) -> list[str]:
        """Untag or delete images; returns lines like ``Untagged: x`` / ``Deleted: sha256:…``."""
        ...

    def build(
        self, request: BuildRequest, cancel: threading.Event | None = None
    ) -> Iterator[BuildEvent]:
        """Build (or with ``request.dry_run`` predict) and yield progress events."""
        ...

    def builds(self, limit: int = 50) -> list[BuildRecord]:
        """Recorded builds, newest first, each with its steps."""
        ...

    def disk_usage(self) -> DiskUsage: ...

    def plan_prune(self, request: PruneRequest) -> PrunePlan: ...

    def apply_prune(self, plan: PrunePlan) -> PruneResult: ...

    def close(self) -> None: ...


def default_home() -> Path:
    """The store location: ``$LAMINA_HOME``, else ``$XDG_DATA_HOME/lamina``."""
    if os.environ.get("LAMINA_HOME"):
        return Path(os.environ["LAMINA_HOME"]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "lamina"


def open_engine(kind: str | None = None, home: Path | None = None) -> Engine:
    """Open the engine named by ``kind`` (or ``$LAMINA_ENGINE``, default ``embedded``)."""
    kind = kind or os.environ.get("LAMINA_ENGINE") or "embedded"
    if kind == "embedded":
        from lamina.core.embedded.engine import EmbeddedEngine

        return EmbeddedEngine(home or default_home())
    if kind == "docker":
        from lamina.core.docker.engine import DockerEngine

        return DockerEngine()
    raise UsageError(f"unknown engine {kind!r} (expected 'embedded' or 'docker')")
