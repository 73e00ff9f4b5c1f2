"""Independent stages built at once (BuildKit's rules), and how such a build stops: a
stage that fails stops the others, a cancel stops them all, a caller that stops reading
the events stops them too; the store stays consistent after each (``lamina fsck`` exits
0, no work directory is left, no cache entry for a step that did not finish), and the
caller's cancel event is only ever read."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lamina.core.embedded.builder.records import list_builds
from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.fsck import fsck
from lamina.core.embedded.store import Store
from lamina.core.events import BuildEvent, BuildFailed, BuildFinished, StepFinished, StepStarted
from lamina.core.model import BuildRequest

pytestmark = pytest.mark.usefixtures("busybox_store", "isolation")

# A stage that would run for a minute, one that fails after a moment, and a final stage
# that needs both, so both start at once.
SLOW = "RUN sleep 60; echo slow > /slow"
FAILING = "RUN sleep 1; echo failing now; exit 3"
DOCKERFILE = f"""\
FROM busybox AS slow
{SLOW}
FROM busybox AS bad
{FAILING}
FROM busybox
COPY --from=slow /slow /slow
COPY --from=bad /etc/passwd /bad
"""
# A stop must come well before the slow stage would end by itself.
PROMPT = 30.0


class Watched(threading.Event):
    """A caller's cancel event that remembers whether anything but the test set it."""

    def __init__(self) -> None:
        super().__init__()
        self.set_by: list[str] = []

    def set(self) -> None:
        self.set_by.append(threading.current_thread().name)
        super().set()


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    d = tmp_path / "ctx"
    d.mkdir()
    (d / "Dockerfile").write_text(DOCKERFILE)
    return d


def _consistent(store: Store) -> None:
    """fsck finds nothing (the CLI exits 0), no work directory is left behind, no cache
    mount is held, and the step that was stopped left no cache entry."""
    assert fsck(store).ok, fsck(store).problems
    proc = subprocess.run(
        [sys.executable, "-m", "lamina.tui", "fsck"],
        env={**os.environ, "LAMINA_HOME": str(store.home)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not [p.name for p in (store.home / "tmp").iterdir()]
    instructions = {
        str(r["instruction"]) for r in store.index.rows("SELECT instruction FROM cache")
    }
    assert SLOW not in instructions


def _timed(events: Iterator[BuildEvent]) -> tuple[list[BuildEvent], float]:
    started = time.monotonic()
    out = list(events)
    return out, time.monotonic() - started


def test_a_failing_stage_stops_the_others(store: Store, ctx: Path) -> None:
    cancel = Watched()
    events, took = _timed(run_build(store, BuildRequest(context=str(ctx), network="none"), cancel))
    end = events[-1]
    assert isinstance(end, BuildFailed) and not end.cancelled, end
    assert "exited with status 3" in end.message and "failing now" in end.message
    assert took < PROMPT, f"the slow stage ran on for {took:.0f} s"
    # Both stages had started; the slow one never finished its RUN.
    started = {e.instruction for e in events if isinstance(e, StepStarted)}
    assert {SLOW, FAILING} <= started
    finished = {e.step.instruction for e in events if isinstance(e, StepFinished)}
    assert SLOW not in finished and FAILING not in finished
    # The failure is the build's, not a cancel: the caller's event was never touched.
    assert cancel.set_by == [] and not cancel.is_set()
    (record,) = list_builds(store, 1)
    assert record.status == "failed" and "exited with status 3" in (record.error or "")
    _consistent(store)


def test_a_cancel_stops_every_stage(store: Store, ctx: Path) -> None:
    (ctx / "Dockerfile").write_text(DOCKERFILE.replace(FAILING, SLOW.replace("slow", "also")))
    cancel = threading.Event()
    builds = run_build(store, BuildRequest(context=str(ctx), network="none"), cancel)
    started = time.monotonic()
    events: list[BuildEvent] = []
    for event in builds:
        events.append(event)
        runs = [e for e in events if isinstance(e, StepStarted) and e.instruction.startswith("RUN")]
        if len(runs) == 2 and not cancel.is_set():
            threading.Timer(0.5, cancel.set).start()
    end = events[-1]
    assert isinstance(end, BuildFailed) and end.cancelled, end
    assert time.monotonic() - started < PROMPT
    (record,) = list_builds(store, 1)
    assert record.status == "cancelled"
    _consistent(store)


def test_a_caller_that_stops_reading_stops_the_stages(store: Store, ctx: Path) -> None:
    (ctx / "Dockerfile").write_text(DOCKERFILE.replace(FAILING, SLOW.replace("slow", "also")))
    builds = run_build(store, BuildRequest(context=str(ctx), network="none"))
    runs = 0
    for event in builds:
        if isinstance(event, StepStarted) and event.instruction.startswith("RUN"):
            runs += 1
            if runs == 2:
                break
    time.sleep(0.5)  # both RUNs under way
    started = time.monotonic()
    builds.close()  # type: ignore[attr-defined]
    assert time.monotonic() - started < PROMPT, "closing waited for the stages to end"
    assert not [t for t in threading.enumerate() if t.name.startswith("lamina-stage")]
    (record,) = list_builds(store, 1)
    assert record.status == "cancelled"
    _consistent(store)


def test_the_stages_then_build_as_before(store: Store, ctx: Path) -> None:
    # After a failed parallel build, the same stages with the failure fixed build, and
    # what the failed build finished is reused.
    quick = DOCKERFILE.replace(SLOW, "RUN echo slow > /slow").replace(FAILING, "RUN true")
    (ctx / "Dockerfile").write_text(quick.replace("RUN true", "RUN exit 3"))
    first = list(run_build(store, BuildRequest(context=str(ctx), network="none")))
    assert isinstance(first[-1], BuildFailed)
    (ctx / "Dockerfile").write_text(quick)
    events: list[Any] = list(run_build(store, BuildRequest(context=str(ctx), network="none")))
    assert isinstance(events[-1], BuildFinished), events[-1]
    steps = {e.step.instruction: e.step for e in events if isinstance(e, StepFinished)}
    assert steps["RUN true"].cached is False
    assert {"RUN echo slow > /slow", "COPY --from=slow /slow /slow"} <= set(steps)
    _consistent(store)


TWINS = """\
FROM busybox AS one
RUN echo same > /same
FROM busybox AS two
RUN echo same > /same
RUN echo two > /two
FROM busybox
COPY --from=one /same /1
COPY --from=two /two /2
"""


def test_the_earlier_stage_runs_a_merged_step_whichever_thread_comes_first(
    store: Store, ctx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BuildKit names a merged vertex after the first stage defining it; lamina's stage
    threads race, so the first stage's thread is held back here to make the later
    stage's thread reach the shared step first."""
    from lamina.core.embedded.builder import walk

    real = walk.Walk._stage

    def late_first_stage(self: Any, number: int, stage: Any, meta: Any) -> Any:
        if number == 0:
            time.sleep(1.5)
        yield from real(self, number, stage, meta)

    monkeypatch.setattr(walk.Walk, "_stage", late_first_stage)
    # Recording the first stage's step is slow too, so a merged step released before
    # the first one's event is out would finish first.
    from lamina.core.embedded.builder import records

    real_step = records.BuildLog.step

    def slow_record(self: Any, record: Any, key: Any) -> Any:
        if record.stage == 0 and record.cached is False:
            time.sleep(1.0)
        return real_step(self, record, key)

    monkeypatch.setattr(records.BuildLog, "step", slow_record)
    (ctx / "Dockerfile").write_text(TWINS)
    events = list(run_build(store, BuildRequest(context=str(ctx), network="none")))
    assert isinstance(events[-1], BuildFinished), events[-1]
    runs = {
        (e.step.stage, e.step.index): e.step
        for e in events
        if isinstance(e, StepFinished) and e.step.instruction == "RUN echo same > /same"
    }
    first, later = runs[(0, 1)], runs[(1, 1)]
    order = [
        (e.step.stage, e.step.index)
        for e in events
        if isinstance(e, StepFinished) and e.step.instruction == "RUN echo same > /same"
    ]
    assert order == [(0, 1), (1, 1)], "the merged step finished before the step it shares"
    assert first.cached is False, first.reason
    assert later.cached is True and (later.reason or {}).get("kind") == "merged", later.reason
    assert (later.reason or {}).get("step") == "0/1"
    _consistent(store)
