"""The app's messages: what views ask of the main screen, and what its workers report.

Views never call the engine or start workers. They post a ``...Requested`` message;
the main screen runs the engine call in a thread worker, which posts one of the
``...Loaded``/``...Planned``/``...Applied`` reports back to the screen (past tense:
they say what happened), and the screen hands the result down to the view. Each
carries plain core records.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from lamina.core import (
    AdviceReport,
    Analysis,
    BuildEvent,
    BuildRecord,
    DiskUsage,
    FileChange,
    HistoryEntry,
    ImageDiff,
    ImageSummary,
    LayerInfo,
    PrunePlan,
    PruneRequest,
    PruneResult,
)

# ------------------------------------------------------------- views ask


@dataclass
class LayerChangesRequested(Message):
    """The cursor rested on a layer: its file changes are wanted."""

    chain_id: str


@dataclass
class ImageDetailsRequested(Message):
    """The cursor rested on an image: its history and analysis are wanted."""

    ref: str


@dataclass
class RebuildRequested(Message):
    """The user asked to rerun a recorded build."""

    build: BuildRecord


@dataclass
class WhatIfRequested(Message):
    """The user asked what a rerun of a recorded build would hit and miss."""

    build: BuildRecord


@dataclass
class AdviceRequested(Message):
    """The Learn view follows a build whose Dockerfile's advice it has not read."""

    build: BuildRecord


@dataclass
class PruneRequested(Message):
    """The user asked to prune; the plan is shown for confirmation first."""

    request: PruneRequest


# ------------------------------------------------------- workers report


@dataclass
class SnapshotLoaded(Message):
    """Images and layers were read from the engine."""

    images: list[ImageSummary]
    layers: list[LayerInfo]
    instructions: dict[str, str]  # chainID -> instruction from image histories
    partial: bool = False  # layers only; the images follow in a second message


@dataclass
class BuildsLoaded(Message):
    """The recorded builds were read."""

    builds: list[BuildRecord]


@dataclass
class DiskUsageLoaded(Message):
    """Disk accounting and the dangling-prune preview were computed."""

    usage: DiskUsage
    dangling_plan: PrunePlan | None  # None if planning failed


@dataclass
class LayerChangesLoaded(Message):
    """A layer's file changes were read."""

    chain_id: str
    changes: list[FileChange]


@dataclass
class ImageDetailsLoaded(Message):
    """An image's history and (when the engine allows it) its dive analysis were read."""

    ref: str
    history: list[HistoryEntry]
    analysis: Analysis | None
    analysis_error: str | None


@dataclass
class AdviceLoaded(Message):
    """The advice on a build's Dockerfile was read (``report``), or could not be (``error``:
    the one line why, such as a Dockerfile no longer on disk)."""

    build_id: int
    report: AdviceReport | None
    error: str | None = None


@dataclass
class PrunePlanned(Message):
    """A dry-run prune plan is ready for confirmation."""

    plan: PrunePlan


@dataclass
class PruneApplied(Message):
    """A confirmed prune plan was applied."""

    result: PruneResult


@dataclass
class BuildProgressed(Message):
    """A running build (or what-if) yielded an event."""

    event: BuildEvent
    dry_run: bool


@dataclass
class BuildEnded(Message):
    """A build (or what-if) iterator finished, successfully or not."""

    dry_run: bool
    ok: bool
    message: str


@dataclass
class DiffLoaded(Message):
    """Two images were compared file by file."""

    result: ImageDiff
