"""The engine interfaces every front end talks to.

``Engine`` is what any image store offers. Two implementations: the embedded engine
(``lamina.core.embedded.engine.EmbeddedEngine``, the default, over a store in
``$LAMINA_HOME``) and the Docker Engine backend (``lamina.core.docker.engine.DockerEngine``).

``LocalStore`` adds what only lamina's own store can do (archives in and out, fsck,
what removing one thing frees, the build parents behind ``images -a``, the per-path
record of what each build copied); the embedded
engine implements it, the Docker backend does not, and front ends check with
``isinstance(engine, LocalStore)``.

The app and the CLI use only these Protocols and the records in ``lamina.core.model``,
through ``lamina.core``; they never reach into a store.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from lamina.core.events import BuildEvent
from lamina.core.model import (
    BuildRecord,
    BuildRequest,
    BuildSources,
    FileChange,
    FsckReport,
    HistoryEntry,
    ImageSummary,
    LayerInfo,
)

if TYPE_CHECKING:
    from lamina.core.accounting.diff import ImageFiles
    from lamina.core.accounting.dive import Analysis
    from lamina.core.accounting.plans import (
        PrunePlan,
        PruneRequest,
        PruneResult,
    )
    from lamina.core.accounting.usage import DiskUsage
    from lamina.core.registry.plan import PullPlan
    from lamina.core.registry.progress import TransferEvent


class Engine(Protocol):
    """What lamina can see and do in one image store."""

    name: str  # "embedded" or "docker"

    @property
    def differences(self) -> tuple[str, ...]:
        """Where the engine's own disk and prune numbers differ from lamina's, and why."""
        ...

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

    def image_files(self, ref: str) -> ImageFiles:
        """Every layer of one image with its files and their content digests, base first
        (what ``lamina diff`` compares)."""
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

    def plan_pull(self, ref: str, platform: str | None = None) -> PullPlan:
        """What pulling ``ref`` would download, before anything moves (``--dry-run``)."""
        ...

    def pull(
        self, plan: PullPlan, cancel: threading.Event | None = None
    ) -> Iterator[TransferEvent]:
        """Carries out a pull plan, yielding per-blob progress and ``PullFinished``."""
        ...

    def push(self, ref: str, cancel: threading.Event | None = None) -> Iterator[TransferEvent]:
        """Pushes a local image, uploading only what the registry lacks."""
        ...

    def disk_usage(self) -> DiskUsage: ...

    def plan_prune(self, request: PruneRequest) -> PrunePlan: ...

    def apply_prune(self, plan: PrunePlan) -> PruneResult: ...

    def close(self) -> None: ...


@runtime_checkable
class LocalStore(Engine, Protocol):
    """An engine over lamina's own store on this machine (the embedded engine)."""

    home: Path

    def tmpdir(self, prefix: str) -> AbstractContextManager[Path]:
        """A work directory inside the store, removed on exit (GC leaves it alone)."""
        ...

    def import_rootfs(self, tar: Path, ref: str = "", message: str = "") -> ImageSummary:
        """A one-layer image from a root filesystem tar (``lamina import``)."""
        ...

    def load_archive(self, path: Path) -> list[ImageSummary]:
        """Images from a ``docker save`` archive or an OCI layout (``lamina load``)."""
        ...

    def save_archive(self, refs: list[str], out: Path) -> None:
        """Writes the images to a tar that ``docker load`` accepts (``lamina save``)."""
        ...

    def fsck(self, *, deep: bool = False, repair: bool = False) -> FsckReport:
        """Checks the store's consistency, repairing what is safe with ``repair``."""
        ...

    def frees(self, ref: str) -> int:
        """Bytes removing this image, tag or cache entry alone would free now."""
        ...

    def parent_images(self) -> set[str]:
        """IDs of the images another image was built FROM (intermediate when untagged)."""
        ...

    def build_sources(self, build_ids: list[int]) -> dict[int, BuildSources]:
        """What each of these builds' COPY/ADD steps read from the context, path by path,
        and the base of each stage (builds without such a record are left out): the
        history ``advise`` replays through a rewritten Dockerfile."""
        ...
