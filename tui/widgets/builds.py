"""The Builds view: recorded builds, each step's HIT or MISS and why, rebuild and what-if."""

from __future__ import annotations

import time
from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.markup import escape
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import DataTable, Log, Static

from lamina.core import (
    BuildEvent,
    BuildFailed,
    BuildFinished,
    BuildRecord,
    BuildStarted,
    StepFinished,
    StepOutput,
    StepRecord,
    StepStarted,
)
from lamina.tui import format as fmt
from lamina.tui.messages import RebuildRequested, WhatIfRequested
from lamina.tui.widgets.learn import builder_name

# Seconds between redraws of the relative times ("a minute ago"), so they stay current.
TIME_REFRESH = 30.0


class BuildsView(Widget):
    """Builds, steps, and the log of a running build.

    The screen runs builds; this view asks for them (``RebuildRequested``,
    ``WhatIfRequested``) and shows their progress as the screen hands it down.
    """

    @dataclass
    class StepSelected(Message):
        """The user highlighted a step (the Learn view explains it)."""

        build: BuildRecord | None
        step: StepRecord

    builds: reactive[list[BuildRecord]] = reactive(list, always_update=True)
    # Whether rebuild and what-if apply follows the selection.
    selected_id: reactive[int | None] = reactive(None, bindings=True)

    def __init__(self, *, id: str | None = None, clock: fmt.Clock = time.time) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.live_steps: list[StepRecord] = []
        # Whose rules the live build follows (or predicts), as its engine said.
        self.live_builder: str | None = None
        self.live_title = ""
        self.live_for: BuildRecord | None = None
        self.showing_live = False
        self.last_outcome = ""

    @property
    def selected_build(self) -> BuildRecord | None:
        return next((b for b in self.builds if b.id == self.selected_id), None)

    def compose(self) -> ComposeResult:
        builds: DataTable[str] = DataTable(id="builds-table", cursor_type="row", zebra_stripes=True)
        yield builds
        yield Static("", id="steps-title")
        steps: DataTable[str] = DataTable(id="steps-table", cursor_type="row")
        yield steps
        # The selected step in full, wrapped: the table's "why" column is cut at the edge.
        yield Static("", id="step-detail")
        yield Log(id="build-log", max_lines=2000)

    def on_mount(self) -> None:
        table = self.query_one("#builds-table", DataTable)
        # Fixed widths: auto widths follow whichever rows were there first ("now" vs
        # "23 seconds ago") and would cut later ones.
        for key, title, width in (
            ("id", "#", 4),
            ("started", "started", 16),
            ("tags", "tags", 24),
            ("status", "status", 9),
            ("hits", "hits", 4),
            ("misses", "misses", 6),
            ("context", "context", None),
        ):
            table.add_column(title, key=key, width=width)
        steps = self.query_one("#steps-table", DataTable)
        for key, title, width in (
            ("n", "step", 4),
            ("instruction", "instruction", 34),
            ("cache", "cache", 5),
            ("duration", "time", 6),
            ("size", "size", 8),
            ("why", "why it missed", None),
        ):
            steps.add_column(title, key=key, width=width)
        self.query_one("#build-log", Log).display = False
        self.set_interval(TIME_REFRESH, self.refresh_times)

    def refresh_times(self) -> None:
        """Redraws the "started" column against the clock, so "now" becomes "a minute ago"."""
        table = self.query_one("#builds-table", DataTable)
        for build in self.builds:
            if str(build.id) in table.rows:
                table.update_cell(str(build.id), "started", fmt.ago(build.started, self.clock))

    # ---------------------------------------------------------------- builds

    def watch_builds(self, builds: list[BuildRecord]) -> None:
        table = self.query_one("#builds-table", DataTable)
        table.clear()
        for build in builds:
            hits = sum(1 for s in build.steps if s.cached is True)
            misses = sum(1 for s in build.steps if s.cached is False)
            status = {"ok": "[$success]ok[/]", "failed": "[$error]failed[/]"}.get(
                build.status, escape(build.status)
            )
            table.add_row(
                str(build.id),
                fmt.ago(build.started, self.clock),
                escape(", ".join(build.tags) or "-"),
                fmt.themed(self.app, status),
                str(hits),
                str(misses),
                escape(build.context),
                key=str(build.id),
            )
        if not builds:
            self.query_one("#steps-title", Static).update(
                "No builds recorded yet. Run `lamina build` or `lamina demo`."
            )
            return
        if self.selected_id not in {b.id for b in builds}:
            self.selected_id = builds[0].id
        else:
            self.watch_selected_id(self.selected_id)
        table.move_cursor(row=table.get_row_index(str(self.selected_id)))

    @on(DataTable.RowHighlighted, "#builds-table")
    def _build_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.selected_id = int(event.row_key.value)

    def watch_selected_id(self, build_id: int | None) -> None:
        build = self.selected_build
        if build is None or self.showing_live:
            return
        title = f"Build #{build.id} of {escape(build.dockerfile)}"
        if build.status == "failed" and build.error:
            # The failure's own words stay readable after its notification has gone.
            title += f": [$error]failed:[/] {escape(build.error)}"
        title += " [dim](r: rebuild, w: what-if)[/]"
        self._show_steps(title, list(build.steps))

    def _show_steps(self, title: str, steps: list[StepRecord]) -> None:
        self.query_one("#steps-title", Static).update(title)
        table = self.query_one("#steps-table", DataTable)
        cursor = table.cursor_row
        table.clear()
        for i, step in enumerate(steps):
            table.add_row(
                f"{step.stage}/{step.index}" if step.stage else str(step.index),
                escape(" ".join(step.instruction.split())),
                fmt.themed(self.app, fmt.verdict(step)),
                fmt.seconds(step.duration) if step.duration else "",
                fmt.size(step.size) if step.layer else "",
                escape(fmt.describe_reason(step.reason)),
                key=str(i),
            )
        if steps:
            table.move_cursor(row=min(max(cursor, 0), len(steps) - 1))
        self._show_detail(steps[table.cursor_row] if steps else None)

    def _show_detail(self, step: StepRecord | None) -> None:
        """The highlighted step's whole instruction and why it missed, wrapped."""
        detail = self.query_one("#step-detail", Static)
        if step is None:
            detail.update("")
            return
        where = f"{step.stage}/{step.index}" if step.stage else str(step.index)
        text = f"{fmt.verdict(step)} [b]{where}[/b] {escape(' '.join(step.instruction.split()))}"
        reason = fmt.describe_reason(step.reason)
        if reason:
            text += f"\n[b]why:[/b] {escape(reason)}"
        detail.update(fmt.themed(self.app, text))

    def current_steps(self) -> list[StepRecord]:
        """The steps the table shows: a live build's, or the selected build's."""
        if self.showing_live:
            return list(self.live_steps)
        build = self.selected_build
        return list(build.steps) if build else []

    @on(DataTable.RowHighlighted, "#steps-table")
    def _step_highlighted(self, event: DataTable.RowHighlighted) -> None:
        steps = self.current_steps()
        if event.cursor_row < len(steps):
            build = self.live_for if self.showing_live else self.selected_build
            self._show_detail(steps[event.cursor_row])
            self.post_message(self.StepSelected(build, steps[event.cursor_row]))

    # ------------------------------------------------------------- rebuilding

    def request_build(self, *, dry_run: bool) -> None:
        """Asks for a rerun (or a what-if) of the selected build."""
        build = self.selected_build
        if build is not None:
            self.post_message(WhatIfRequested(build) if dry_run else RebuildRequested(build))

    def begin_live(self, build: BuildRecord, *, dry_run: bool) -> None:
        """Switches to the live view of a rerun (or what-if) of ``build`` that starts now."""
        self.live_steps, self.live_for, self.showing_live = [], build, True
        self.live_builder = None
        self.live_title = ("What if: predicting" if dry_run else "Rebuilding") + (
            f" build #{build.id} ({escape(build.dockerfile)})"
        )
        self._show_steps(self.live_title + " …", [])
        log = self.query_one("#build-log", Log)
        log.clear()
        log.display = True
        log.write_line(("what-if: " if dry_run else "build: ") + build.context)

    def show_event(self, event: BuildEvent) -> None:
        """Adds one event of the running build to the log and the live steps."""
        log = self.query_one("#build-log", Log)
        if isinstance(event, BuildStarted):
            self.live_builder = event.builder
            rules = f", {builder_name(event.builder)}'s rules" if event.builder else ""
            log.write_line(f"{event.steps_total} steps{rules}")
        elif isinstance(event, StepStarted):
            log.write_line(f"→ {event.stage}/{event.index} {' '.join(event.instruction.split())}")
        elif isinstance(event, StepOutput):
            log.write_line("  " + event.line.rstrip("\n"))
        elif isinstance(event, StepFinished):
            self.live_steps.append(event.step)
            word = {True: "HIT", False: "MISS", None: ""}[event.step.cached]
            reason = fmt.describe_reason(event.step.reason)
            log.write_line(f"  {word}" + (f": {reason}" if reason else ""))
            self._show_steps(self.live_title + " …", self.live_steps)
        elif isinstance(event, BuildFinished):
            log.write_line(f"finished: {event.image or 'prediction only'}")
        elif isinstance(event, BuildFailed):
            log.write_line(f"failed: {event.message}")

    def end_live(self, *, dry_run: bool, ok: bool, message: str) -> None:
        """Shows how the live build ended; after a real build, waits for the new record."""
        hits = sum(1 for s in self.live_steps if s.cached is True)
        misses = sum(1 for s in self.live_steps if s.cached is False)
        outcome = f"{hits} HIT, {misses} MISS" if ok else f"failed: {message}"
        self.last_outcome = outcome
        self._show_steps(f"{self.live_title}: {escape(outcome)}", self.live_steps)
        if not ok:
            self.notify(message, title="Build failed", severity="error", timeout=8)
        if not dry_run:
            self.showing_live = False
            self.selected_id = None  # the new build, newest first, is selected once loaded

    def show_recorded(self) -> None:
        """Leaves the live view and shows the selected recorded build again."""
        self.showing_live = False
        self.watch_selected_id(self.selected_id)
