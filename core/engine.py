"""The engine interface every front end talks to.

Two implementations: the embedded engine (``lamina.core.embedded.engine.EmbeddedEngine``, the
default, over a store in ``$LAMINA_HOME``) and the Docker Engine backend
(``lamina.core.docker.engine.DockerEngine``). The app and the CLI use only this
Protocol and the records in ``lamina.core.model``; they never reach into a store.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

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
    from lamina.core.accounting.plans import (
        PrunePlan,
        PruneRequest,
        PruneResult,
    )
    from lamina.core.accounting.usage import DiskUsage


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
