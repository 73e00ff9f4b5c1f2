"""Messages the app's workers post back to the UI thread.

Workers never touch widgets: they call the engine and post one of these (past tense,
they report what happened) to the widget that asked. Each carries plain core records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from lamina.core.events import BuildEvent
from lamina.core.model import BuildRecord, FileChange, HistoryEntry, ImageSummary, LayerInfo


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

    usage: Any  # lamina.core.accounting.usage.DiskUsage
    dangling_plan: Any | None  # lamina.core.accounting.plans.PrunePlan, or None if planning failed


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
    analysis: Any | None  # lamina.core.accounting.dive.Analysis
    analysis_error: str | None


@dataclass
class PrunePlanned(Message):
    """A dry-run prune plan is ready for confirmation."""

    plan: Any  # lamina.core.accounting.plans.PrunePlan


@dataclass
class PruneApplied(Message):
    """A confirmed prune plan was applied."""

    result: Any  # lamina.core.accounting.plans.PruneResult


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
class EngineCallFailed(Message):
    """An engine call raised; ``message`` is one line for the user."""

    action: str
    message: str
