"""The Textual app: one App class over the engine API, and its factory.

Every engine call runs in a thread worker defined here (so that failures are handled
once, in ``on_worker_state_changed``) and posts its result as a message to the widget
that asked for it. Views never call the engine themselves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.message_pump import MessagePump
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.worker import Worker, WorkerState, get_current_worker

from lamina.core.engine import Engine
from lamina.core.errors import LaminaError
from lamina.core.events import BuildFailed, BuildFinished
from lamina.core.model import BuildRequest
from lamina.tui.messages import (
    BuildEnded,
    BuildProgressed,
    BuildsLoaded,
    DiskUsageLoaded,
    EngineCallFailed,
    ImageDetailsLoaded,
    LayerChangesLoaded,
    PruneApplied,
    PrunePlanned,
    SnapshotLoaded,
)
from lamina.tui.widgets.format import Clock

log = logging.getLogger(__name__)

# Above this many images, the layer tree does not read histories for missing instructions.
HISTORY_LOOKUP_LIMIT = 200

# What a failed worker of each group was doing, for the one-line error.
GROUP_ACTIONS = {
    "snapshot": "reading images and layers",
    "builds": "reading builds",
    "disk": "computing disk usage",
    "layer-changes": "reading the layer's files",
    "image-details": "reading the image's history",
    "prune-plan": "planning the prune",
    "prune-apply": "pruning",
    "build": "building",
}


def error_line(error: BaseException | None) -> str:
    """One line for the user: a LaminaError's message, else the exception's type and text."""
    if error is None:
        return "unknown error"
    if isinstance(error, LaminaError):
        return str(error)
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class LaminaApp(App[None]):
    """lamina's terminal inspector: layers, images, builds, disk and a cache tutor."""

    CSS_PATH = "app.tcss"
    TITLE = "lamina"
    SUB_TITLE = "container image layers"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "question_mark", "help", "Help", tooltip="Show every key and what it does", id="help"
        ),
        Binding(
            "ctrl+r",
            "refresh",
            "Refresh",
            tooltip="Reload everything from the engine",
            id="refresh",
        ),
        Binding("q", "quit", "Quit", tooltip="Leave lamina", id="quit"),
    ]

    def __init__(
        self, engine: Engine | None, *, clock: Clock | None = None, engine_error: str = ""
    ) -> None:
        """Creates the app over ``engine``.

        Args:
            engine: the engine every view reads from and acts through; None when it
                could not be opened.
            clock: returns "now" for relative times (fixed in tests and screenshots).
            engine_error: why the engine could not be opened (shown instead of the views).
        """
        super().__init__()
        self._engine = engine
        self.engine_error = engine_error
        self.clock: Clock = clock or time.time
        self.building = threading.Event()
        # Seconds the cursor must rest on a row before its files or analysis are read,
        # so holding an arrow key does not start a walk per row; 0 reads at once (tests).
        self.settle_delay = 0.12

    def after_settling(self, widget: Widget, callback: Callable[[], None]) -> Timer | None:
        """Calls ``callback`` once the cursor has rested ``settle_delay`` seconds."""
        if self.settle_delay <= 0:
            callback()
            return None
        return widget.set_timer(self.settle_delay, callback)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("the app has no engine: " + self.engine_error)
        return self._engine

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Without an engine there is nothing to refresh."""
        if action == "refresh" and self._engine is None:
            return None
        return True

    def on_mount(self) -> None:
        if self._engine is None:
            from lamina.tui.screens.unavailable import EngineUnavailableScreen

            self.push_screen(EngineUnavailableScreen(self.engine_error or "no engine"))
            return
        from lamina.tui.screens.main import MainScreen

        self.push_screen(MainScreen())

    # ----------------------------------------------------------------- actions

    def action_help(self) -> None:
        from lamina.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_refresh(self) -> None:
        from lamina.tui.screens.main import MainScreen

        for screen in self.screen_stack:
            if isinstance(screen, MainScreen):
                screen.reload()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The command palette: lamina's views and actions first, then Textual's own."""
        from lamina.tui.screens.main import VIEWS, MainScreen

        main = next((s for s in self.screen_stack if isinstance(s, MainScreen)), None)
        if main is not None:
            for view_id, title, _key in VIEWS:
                yield SystemCommand(
                    f"Go to {title}",
                    f"Show the {title} view",
                    lambda v=view_id: main.show_view(v),  # type: ignore[misc]
                )
            yield SystemCommand("Rebuild", "Rerun the selected build", main.action_rebuild)
            yield SystemCommand("What if", "Predict the selected build's hits", main.action_what_if)
            yield SystemCommand(
                "Prune dangling", "Preview and prune dangling images", main.action_prune
            )
            yield SystemCommand("Refresh", "Reload everything from the engine", self.action_refresh)
            yield SystemCommand("Help", "Show every key", self.action_help)
        yield from super().get_system_commands(screen)

    # ----------------------------------------------------------------- workers

    @work(thread=True, exclusive=True, exit_on_error=False, group="snapshot")
    def load_snapshot(self, target: MessagePump) -> None:
        """Reads every image and layer."""
        # Layers first: the tree can show them while the (slower) image list is read.
        layers = self.engine.layers()
        target.post_message(SnapshotLoaded([], layers, {}, partial=True))
        images = self.engine.images()
        # Layers loaded from archives may not record their instruction; image histories do.
        # Reading every history is cheap for a small store only, so large ones skip it.
        instructions: dict[str, str] = {}
        missing = sum(1 for layer in layers if not layer.created_by)
        if missing and len(images) <= HISTORY_LOOKUP_LIMIT:
            for image in images:
                try:
                    history = self.engine.history(image.id)
                except LaminaError as exc:
                    log.info("no history for %s: %s", image.id, exc)
                    continue
                for entry in history:
                    if entry.chain_id and entry.created_by:
                        instructions.setdefault(entry.chain_id, entry.created_by)
        target.post_message(SnapshotLoaded(images, layers, instructions))

    @work(thread=True, exclusive=True, exit_on_error=False, group="builds")
    def load_builds(self, target: MessagePump) -> None:
        """Reads the recorded builds."""
        target.post_message(BuildsLoaded(self.engine.builds()))

    @work(thread=True, exclusive=True, exit_on_error=False, group="disk")
    def load_disk(self, target: MessagePump) -> None:
        """Computes disk usage and what pruning dangling images would free."""
        from lamina.core.accounting.plans import PruneRequest

        usage = self.engine.disk_usage()
        try:
            plan = self.engine.plan_prune(PruneRequest())
        except LaminaError as exc:
            log.info("no prune preview: %s", exc)
            plan = None
        target.post_message(DiskUsageLoaded(usage, plan))

    @work(thread=True, exclusive=True, exit_on_error=False, group="layer-changes")
    def load_layer_changes(self, chain_id: str, target: MessagePump) -> None:
        """Reads what one layer adds, modifies and deletes."""
        target.post_message(LayerChangesLoaded(chain_id, self.engine.layer_changes(chain_id)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="image-details")
    def load_image_details(self, ref: str, target: MessagePump) -> None:
        """Reads an image's history and its dive analysis."""
        history = self.engine.history(ref)
        analysis = None
        analysis_error = None
        try:
            analysis = self.engine.analyze(ref)
        except LaminaError as exc:
            analysis_error = str(exc)
        target.post_message(ImageDetailsLoaded(ref, history, analysis, analysis_error))

    @work(thread=True, exclusive=True, exit_on_error=False, group="prune-plan")
    def plan_prune(self, request: Any, target: MessagePump) -> None:
        """Computes a prune plan (a dry run) for confirmation."""
        target.post_message(PrunePlanned(self.engine.plan_prune(request)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="prune-apply")
    def apply_prune(self, plan: Any, target: MessagePump) -> None:
        """Applies a confirmed prune plan."""
        target.post_message(PruneApplied(self.engine.apply_prune(plan)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="build")
    def run_build(self, request: BuildRequest, target: MessagePump) -> None:
        """Runs (or with ``request.dry_run`` predicts) a build, streaming its events."""
        worker = get_current_worker()
        self.building.set()
        ok, message = False, "build ended without a result"
        try:
            for event in self.engine.build(request, cancel=worker.cancelled_event):
                target.post_message(BuildProgressed(event, request.dry_run))
                if isinstance(event, BuildFinished):
                    ok, message = True, "done"
                elif isinstance(event, BuildFailed):
                    ok, message = False, event.message
        except LaminaError as exc:
            ok, message = False, str(exc)
        finally:
            self.building.clear()
            target.post_message(BuildEnded(request.dry_run, ok, message))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place engine failures surface: a notification and the error bar."""
        if event.state != WorkerState.ERROR:
            return
        action = GROUP_ACTIONS.get(event.worker.group, event.worker.group)
        message = error_line(event.worker.error)
        log.warning("%s failed: %s", action, message)
        self.notify(message, title=f"Failed {action}", severity="error", timeout=8)
        self.screen.post_message(EngineCallFailed(action, message))
        from lamina.tui.screens.main import MainScreen

        for screen in self.screen_stack:
            if isinstance(screen, MainScreen) and screen is not self.screen:
                screen.post_message(EngineCallFailed(action, message))


def make_app(
    engine: Engine | None, *, clock: Clock | None = None, engine_error: str = ""
) -> LaminaApp:
    """The app over ``engine``.

    Args:
        engine: any ``lamina.core.engine.Engine`` (embedded store or Docker), or None
            when opening it failed.
        clock: returns "now" for relative times; fixed for reproducible screenshots.
        engine_error: with ``engine=None``, the one-line reason, shown in an error view.

    Returns:
        A ready-to-run ``LaminaApp``.
    """
    return LaminaApp(engine, clock=clock, engine_error=engine_error)
