"""Progress events a build yields, in order.

The core reports progress as an iterator of these small frozen dataclasses; the CLI
prints them and the app turns them into messages. Cancellation comes in as a
``threading.Event`` and ends the iterator with ``BuildFailed`` (``cancelled=True``).
"""

from __future__ import annotations

from dataclasses import dataclass

from lamina.core.model import StepRecord


@dataclass(frozen=True)
class BuildStarted:
    """A build (or with ``dry_run``, a prediction) began.

    ``builder`` is whose cache rules decide it, ``buildkit`` or ``classic`` (a dry run
    predicts that builder's decisions); None where the engine does not say.
    """

    build_id: int
    dockerfile: str
    context: str
    steps_total: int
    builder: str | None = None


@dataclass(frozen=True)
class StepStarted:
    stage: int
    index: int
    instruction: str


@dataclass(frozen=True)
class StepOutput:
    """One line a RUN step printed (stdout and stderr merged)."""

    stage: int
    index: int
    line: str


@dataclass(frozen=True)
class StepFinished:
    step: StepRecord


@dataclass(frozen=True)
class BuildFinished:
    build_id: int
    image: str | None  # None for a dry run
    tags: tuple[str, ...]


@dataclass(frozen=True)
class BuildFailed:
    build_id: int
    message: str  # one line naming the step
    cancelled: bool = False


BuildEvent = BuildStarted | StepStarted | StepOutput | StepFinished | BuildFinished | BuildFailed
