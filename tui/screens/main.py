"""The main screen: five views in tabs, an error bar and the footer.

Every key lives here, not on the views, so the footer can show exactly the keys that
apply to the visible view (``check_action``) wherever the focus is.

Every engine call runs here too, in a thread worker per kind of call. Views post a
request (``lamina.tui.messages``); the worker calls the engine and posts its result
back to this screen, which hands it down to the views. Workers never touch widgets,
and their failures are reported in one place, ``on_worker_state_changed``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.markup import escape
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane
from textual.widgets.data_table import RowDoesNotExist
from textual.worker import Worker, WorkerState, get_current_worker

from lamina.core import (
    BuildFailed,
    BuildFinished,
    BuildRecord,
    BuildRequest,
    Engine,
    LaminaError,
    PrunePlan,
    PruneRequest,
    advise,
)
from lamina.tui import format as fmt
from lamina.tui.graph import LayerGraph
from lamina.tui.messages import (
    AdviceLoaded,
    AdviceRequested,
    BuildEnded,
    BuildProgressed,
    BuildsLoaded,
    DiskUsageLoaded,
    ImageDetailsLoaded,
    ImageDetailsRequested,
    LayerChangesLoaded,
    LayerChangesRequested,
    PruneApplied,
    PrunePlanned,
    PruneRequested,
    RebuildRequested,
    SnapshotLoaded,
    WhatIfRequested,
)
from lamina.tui.screens.confirm import ConfirmPruneScreen, WhatIfScreen
from lamina.tui.screens.pull import PullScreen
from lamina.tui.widgets.builds import BuildsView
from lamina.tui.widgets.disk import DiskView
from lamina.tui.widgets.images import ImagesView
from lamina.tui.widgets.layers import LayersView
from lamina.tui.widgets.learn import LearnView
from lamina.tui.widgets.settling import SETTLE_DELAY

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
    "advice": "reading the advice",
}

# (tab id, title, key)
VIEWS = (
    ("layers", "Layers", "1"),
    ("images", "Images", "2"),
    ("builds", "Builds", "3"),
    ("disk", "Disk", "4"),
    ("learn", "Learn", "5"),
)

# action -> the view it belongs to
VIEW_ACTIONS = {
    "toggle_digests": "layers",
    "filter_files": "layers",
    "leave_filter": "layers",
    "sort_images": "images",
    "reverse_sort": "images",
    "mark_image": "images",
    "diff_images": "images",
    "rebuild": "builds",
    "what_if": "builds",
    "cancel_build": "builds",
    "prune": "disk",
    "tour_next": "learn",
    "tour_back": "learn",
    "show_advice": "learn",
}


def error_line(error: BaseException | None) -> str:
    """One line for the user: a LaminaError's message, else the exception's type and text."""
    if error is None:
        return "unknown error"
    if isinstance(error, LaminaError):
        return str(error)
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def request_for(build: BuildRecord, *, dry_run: bool) -> BuildRequest:
    """The request that reruns ``build`` from the same Dockerfile and context, by the
    builder it ran with (the configured one when the record does not say): the two
    builders decide differently, so a what-if predicts what that build would do now."""
    return BuildRequest(
        context=build.context,
        dockerfile=build.dockerfile,
        tags=tuple(build.tags),
        build_args=dict(build.build_args),
        target=build.target,
        dry_run=dry_run,
        builder=build.builder,
    )


class MainScreen(Screen[None]):
    """The tabbed views over one engine.

    Args:
        engine: the engine every view reads from and acts through.
        clock: returns "now" for relative times (fixed in tests and screenshots).
        settle_delay: seconds the cursor rests on a row before its details are read.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        *[
            Binding(
                key,
                f"show_view('{vid}')",
                title,
                show=False,
                id=f"view.{vid}",
                tooltip=f"Show the {title} view",
            )
            for vid, title, key in VIEWS
        ],
        Binding(
            "f",
            "toggle_digests",
            "Full digests",
            tooltip="Show full or short digests",
            id="layers.digests",
        ),
        Binding(
            "slash",
            "filter_files",
            "Filter files",
            tooltip="Filter the layer's file changes",
            id="layers.filter",
        ),
        Binding(
            "escape",
            "leave_filter",
            "Leave filter",
            tooltip="Back to the layer tree (the filter stays)",
            id="layers.leave_filter",
            show=False,
        ),
        Binding("s", "sort_images", "Sort", tooltip="Sort by the next column", id="images.sort"),
        Binding(
            "S", "reverse_sort", "Reverse", tooltip="Reverse the sort order", id="images.reverse"
        ),
        Binding(
            "m",
            "mark_image",
            "Mark",
            tooltip="Mark the selected image as A, to compare another image with it",
            id="images.mark",
        ),
        Binding(
            "d",
            "diff_images",
            "Diff",
            tooltip="Compare the marked image (A) with the selected one (B), file by file",
            id="images.diff",
        ),
        Binding(
            "r",
            "rebuild",
            "Rebuild",
            tooltip="Rerun the selected build from its Dockerfile",
            id="builds.rebuild",
        ),
        Binding(
            "w",
            "what_if",
            "What if",
            tooltip="Predict each step's hit or miss without building",
            id="builds.what_if",
        ),
        Binding(
            "x",
            "cancel_build",
            "Cancel build",
            tooltip="Stop the running build",
            id="builds.cancel",
        ),
        Binding(
            "p",
            "prune",
            "Prune dangling",
            tooltip="Preview, confirm and prune dangling images and their layers",
            id="disk.prune",
        ),
        Binding("n", "tour_next", "Next", tooltip="Next step of the guided tour", id="learn.next"),
        Binding(
            "b", "tour_back", "Back", tooltip="Previous step of the guided tour", id="learn.back"
        ),
        Binding(
            "a",
            "show_advice",
            "Advice",
            tooltip="The rewrites advised for the selected build's Dockerfile, and their proof",
            id="learn.advice",
        ),
        Binding(
            "P",
            "pull",
            "Pull",
            tooltip="Pull an image: see what it would download, confirm, watch each layer",
            id="pull",
            show=False,
        ),
    ]

    # A build (or what-if) is running: rebuild, what-if and prune grey out, cancel shows.
    building: reactive[bool] = reactive(False, bindings=True)

    def __init__(
        self,
        engine: Engine,
        *,
        clock: fmt.Clock = time.time,
        settle_delay: float = SETTLE_DELAY,
        focus_image: str | None = None,
        focus_build: int | None = None,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.clock = clock
        self.settle_delay = settle_delay
        self._disk_pending = False
        # What to open on, once the snapshot and the builds are in.
        self._focus_image = focus_image
        self._focus_build = focus_build

    def compose(self) -> ComposeResult:
        clock, delay = self.clock, self.settle_delay
        yield Header()
        # Opened on an image or a build: that view first, so nothing has to switch later.
        initial = "builds" if self._focus_build is not None else "layers"
        if self._focus_image is not None and self._focus_build is None:
            initial = "images"
        with TabbedContent(initial=initial, id="views"):
            with TabPane("1 Layers", id="layers"):
                yield LayersView(id="layers-view", clock=clock, settle_delay=delay)
            with TabPane("2 Images", id="images"):
                yield ImagesView(id="images-view", clock=clock, settle_delay=delay)
            with TabPane("3 Builds", id="builds"):
                yield BuildsView(id="builds-view", clock=clock)
            with TabPane("4 Disk", id="disk"):
                yield DiskView(id="disk-view", clock=clock)
            with TabPane("5 Learn", id="learn"):
                yield LearnView(id="learn-view")
        with Horizontal(id="error-bar"):
            yield Static("", id="error-text")
        yield Footer()

    def on_mount(self) -> None:
        self.reload()
        self.focus_view()

    def focus_view(self) -> None:
        """Puts the focus on the visible view's main widget, so arrows work at once."""
        target = {
            "layers": "#layer-tree",
            "images": "#images-table",
            "builds": "#builds-table",
            "disk": "#disk-table",
            "learn": "LearnView VerticalScroll",
        }.get(self.active_view)
        if target:
            self.query_one(target).focus()

    def reload(self) -> None:
        """Asks the engine for everything again."""
        self.query_one("#error-bar").display = False
        self._disk_pending = True  # read once the snapshot is in, so it does not slow it
        self.load_snapshot()
        self.load_builds()

    @property
    def active_view(self) -> str:
        return self.query_one(TabbedContent).active or "layers"

    def show_view(self, view_id: str) -> None:
        """Switches to a view by tab id."""
        self.query_one(TabbedContent).active = view_id
        self.refresh_bindings()

    def select_build(self, build_id: int) -> None:
        """Selects this build in the Builds view (``lamina build --open``)."""
        table = self.query_one("#builds-table", DataTable)
        try:
            table.move_cursor(row=table.get_row_index(str(build_id)))
        except RowDoesNotExist as exc:  # the build is not among those listed
            log.info("build %s not listed: %s", build_id, exc)

    def action_show_view(self, view_id: str) -> None:
        self.show_view(view_id)

    @on(TabbedContent.TabActivated)
    def _tab_changed(self, event: TabbedContent.TabActivated) -> None:
        self.refresh_bindings()
        self.focus_view()
        if self.active_view == "images":
            self.query_one(ImagesView).render_if_stale()
        if self.active_view == "learn":
            self.query_one(LearnView).refresh_explanation()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        view = VIEW_ACTIONS.get(action)
        if view is None:
            return True
        if view != self.active_view:
            return False  # keys of other views are hidden, not greyed out
        builds = self.query_one(BuildsView)
        if action in ("rebuild", "what_if"):
            return None if (self.building or builds.selected_build is None) else True
        if action == "cancel_build":
            return True if self.building else None
        if action == "prune":
            return None if self.building else True
        if action in ("sort_images", "reverse_sort"):
            return True
        if action == "leave_filter":
            # Only while typing a filter; elsewhere Escape keeps its other meanings.
            return self.query_one(LayersView).filtering
        if action == "show_advice":
            advice = self.query_one(LearnView).current_advice
            return True if advice is not None and advice.advice else None
        if action == "diff_images":
            images = self.query_one(ImagesView)
            ready = images.marked is not None and images.selected not in (None, images.marked)
            return True if ready else None
        return True

    # ---------------------------------------------------------------- actions

    def action_toggle_digests(self) -> None:
        self.query_one(LayersView).full_digests = not self.query_one(LayersView).full_digests

    def action_filter_files(self) -> None:
        self.query_one(LayersView).focus_filter()

    def action_leave_filter(self) -> None:
        self.query_one(LayersView).leave_filter()

    def action_sort_images(self) -> None:
        self.query_one(ImagesView).next_sort()

    def action_reverse_sort(self) -> None:
        self.query_one(ImagesView).reverse_sort()

    def action_mark_image(self) -> None:
        images = self.query_one(ImagesView)
        images.toggle_mark()
        self.refresh_bindings()

    def action_diff_images(self) -> None:
        """Opens the diff of the marked image (A) against the selected one (B)."""
        images = self.query_one(ImagesView)
        if images.marked is None or images.selected in (None, images.marked):
            return
        from lamina.tui.screens.diff import DiffScreen

        assert images.selected is not None
        self.app.push_screen(
            DiffScreen(self.engine, images.name_of(images.marked), images.name_of(images.selected))
        )

    def on_images_view_selection_changed(self, event: ImagesView.SelectionChanged) -> None:
        self.refresh_bindings()

    def action_rebuild(self) -> None:
        self.query_one(BuildsView).request_build(dry_run=False)

    def action_what_if(self) -> None:
        self.query_one(BuildsView).request_build(dry_run=True)

    def action_cancel_build(self) -> None:
        self.workers.cancel_group(self, "build")

    def action_prune(self) -> None:
        self.show_view("disk")
        self.query_one(DiskView).request_prune()

    def action_pull(self) -> None:
        """Opens the pull screen; a finished pull reloads the views onto its image."""

        def pulled(image_id: str | None) -> None:
            if image_id:
                self.notify(f"Pulled {image_id}", title="Pull")
                self.reload()
                self.show_view("layers")

        self.app.push_screen(PullScreen(self.engine), pulled)

    def action_tour_next(self) -> None:
        self.query_one(LearnView).move_tour(1)

    def action_tour_back(self) -> None:
        self.query_one(LearnView).move_tour(-1)

    def action_show_advice(self) -> None:
        """Opens the advice on the followed build's Dockerfile: rewrites and proof."""
        learn = self.query_one(LearnView)
        report = learn.current_advice
        if report is None or not report.advice:
            return
        from lamina.tui.screens.advice import AdviceScreen

        self.app.push_screen(AdviceScreen(report, learn.build.id if learn.build else None))

    # ---------------------------------------------------- what the views ask

    def on_layer_changes_requested(self, event: LayerChangesRequested) -> None:
        self.load_layer_changes(event.chain_id)

    def on_image_details_requested(self, event: ImageDetailsRequested) -> None:
        self.load_image_details(event.ref)

    def on_rebuild_requested(self, event: RebuildRequested) -> None:
        self.start_build(event.build, dry_run=False)

    def on_what_if_requested(self, event: WhatIfRequested) -> None:
        self.start_build(event.build, dry_run=True)

    def start_build(self, build: BuildRecord, *, dry_run: bool) -> None:
        """Reruns (or predicts) ``build``, its progress live in the Builds view."""
        if self.building:
            return
        self.show_view("builds")
        self.query_one(BuildsView).begin_live(build, dry_run=dry_run)
        self.building = True  # before the worker starts, so the keys grey out at once
        self.run_build(request_for(build, dry_run=dry_run))

    def on_prune_requested(self, event: PruneRequested) -> None:
        self.plan_prune(event.request)

    def on_advice_requested(self, event: AdviceRequested) -> None:
        self.load_advice(event.build)

    # The Learn view follows what the user selects in the view they are looking at; a
    # hidden view's cursor moving on new data (a build listed, a prune) is not a choice.

    def on_builds_view_step_selected(self, event: BuildsView.StepSelected) -> None:
        if self.active_view == "builds":
            self.query_one(LearnView).follow_step(event.build, event.step)

    def on_layers_view_layer_selected(self, event: LayersView.LayerSelected) -> None:
        if self.active_view == "layers":
            self.query_one(LearnView).follow_layer(event.chain_id)

    def on_images_view_image_selected(self, event: ImagesView.ImageSelected) -> None:
        if self.active_view == "images":
            self.query_one(LearnView).follow_image(event.image_id)

    # ------------------------------------------------ what the workers report

    def on_snapshot_loaded(self, event: SnapshotLoaded) -> None:
        graph = LayerGraph(event.images, event.layers, event.instructions)
        self.query_one(LayersView).graph = graph
        if event.partial:
            return
        images = self.query_one(ImagesView)
        if self._focus_image is not None:
            images.focus_on = self._focus_image
            self._focus_image = None
        images.graph = graph
        self.query_one(LearnView).graph = graph
        if self._disk_pending:
            self._disk_pending = False
            self.load_disk()

    def on_builds_loaded(self, event: BuildsLoaded) -> None:
        self.query_one(BuildsView).builds = event.builds
        if self._focus_build is not None:
            self.select_build(self._focus_build)
            self._focus_build = None
        # The Layers view shows which build made a layer.
        self.query_one(LayersView).builds = event.builds
        self.query_one(LearnView).set_builds(event.builds)

    def on_disk_usage_loaded(self, event: DiskUsageLoaded) -> None:
        self.query_one(DiskView).show_usage(event.usage, event.dangling_plan)
        # Disk accounting knows which cache entries keep each layer; the Layers view shows it.
        layers = self.query_one(LayersView)
        layers.cache_users = {u.chain_id: len(u.cache) for u in event.usage.layers}
        layers.refresh_info()

    def on_layer_changes_loaded(self, event: LayerChangesLoaded) -> None:
        self.query_one(LayersView).show_changes(event.chain_id, event.changes)

    def on_image_details_loaded(self, event: ImageDetailsLoaded) -> None:
        self.query_one(ImagesView).show_details(
            event.ref, event.history, event.analysis, event.analysis_error
        )

    def on_build_progressed(self, event: BuildProgressed) -> None:
        self.query_one(BuildsView).show_event(event.event)

    def on_build_ended(self, event: BuildEnded) -> None:
        self.building = False
        builds = self.query_one(BuildsView)
        build = builds.live_for
        builds.end_live(dry_run=event.dry_run, ok=event.ok, message=event.message)
        if not event.dry_run:
            # Images, layers and disk usage may have changed too.
            self.load_builds()
            self.load_snapshot()
            self.load_disk()
            return
        if build is None:
            return

        def answered(build_now: bool | None) -> None:
            builds.show_recorded()
            if build_now:
                self.start_build(build, dry_run=False)

        self.app.push_screen(
            WhatIfScreen(
                build, list(builds.live_steps), event.ok, event.message, builds.live_builder
            ),
            answered,
        )

    def on_advice_loaded(self, event: AdviceLoaded) -> None:
        self.query_one(LearnView).show_advice(event.build_id, event.report, event.error)
        self.refresh_bindings()

    def on_prune_planned(self, event: PrunePlanned) -> None:
        plan = event.plan

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.apply_prune(plan)

        self.app.push_screen(ConfirmPruneScreen(plan), confirmed)

    def on_prune_applied(self, event: PruneApplied) -> None:
        self.query_one(DiskView).last_result = event.result
        self.notify(fmt.prune_result(event.result), title="Pruned")
        # Pruning changes images and layers too.
        self.load_snapshot()
        self.load_disk()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place engine failures surface: a notification and the error bar."""
        if event.state != WorkerState.ERROR:
            return
        action = GROUP_ACTIONS.get(event.worker.group, event.worker.group)
        message = error_line(event.worker.error)
        log.warning("%s failed: %s", action, message)
        self.notify(message, title=f"Failed {action}", severity="error", timeout=8)
        self.query_one("#error-text", Static).update(
            f"[b]Failed {escape(action)}:[/b] {escape(message)}"
        )
        self.query_one("#error-bar").display = True

    # ---------------------------------------------------------------- workers

    @work(thread=True, exclusive=True, exit_on_error=False, group="snapshot")
    def load_snapshot(self) -> None:
        """Reads every image and layer."""
        # Layers first: the tree can show them while the (slower) image list is read.
        layers = self.engine.layers()
        self.post_message(SnapshotLoaded([], layers, {}, partial=True))
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
        self.post_message(SnapshotLoaded(images, layers, instructions))

    @work(thread=True, exclusive=True, exit_on_error=False, group="builds")
    def load_builds(self) -> None:
        """Reads the recorded builds."""
        self.post_message(BuildsLoaded(self.engine.builds()))

    @work(thread=True, exclusive=True, exit_on_error=False, group="disk")
    def load_disk(self) -> None:
        """Computes disk usage and what pruning dangling images would free."""
        usage = self.engine.disk_usage()
        plan: PrunePlan | None
        try:
            plan = self.engine.plan_prune(PruneRequest())
        except LaminaError as exc:
            log.info("no prune preview: %s", exc)
            plan = None
        self.post_message(DiskUsageLoaded(usage, plan))

    @work(thread=True, exclusive=True, exit_on_error=False, group="layer-changes")
    def load_layer_changes(self, chain_id: str) -> None:
        """Reads what one layer adds, modifies and deletes."""
        self.post_message(LayerChangesLoaded(chain_id, self.engine.layer_changes(chain_id)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="image-details")
    def load_image_details(self, ref: str) -> None:
        """Reads an image's history and its dive analysis."""
        history = self.engine.history(ref)
        analysis = None
        analysis_error = None
        try:
            analysis = self.engine.analyze(ref)
        except LaminaError as exc:
            analysis_error = str(exc)
        self.post_message(ImageDetailsLoaded(ref, history, analysis, analysis_error))

    @work(thread=True, exclusive=True, exit_on_error=False, group="advice")
    def load_advice(self, build: BuildRecord) -> None:
        """Reads the advice on a build's Dockerfile, replayed on its recorded builds.

        A Dockerfile or context no longer on disk is no failure of the app: the Learn
        view says so where the advice would be.
        """
        try:
            report = advise(
                self.engine,
                build.context,
                build.dockerfile,
                build_id=build.id,
                relative_to=Path(build.context),
            )
        except LaminaError as exc:
            self.post_message(AdviceLoaded(build.id, None, f"no advice: {exc}"))
            return
        self.post_message(AdviceLoaded(build.id, report))

    @work(thread=True, exclusive=True, exit_on_error=False, group="prune-plan")
    def plan_prune(self, request: PruneRequest) -> None:
        """Computes a prune plan (a dry run) for confirmation.

        The dangling prune the Disk view previews is planned together with fresh
        accounting, which the view shows first: the view and the dialog then give the
        numbers of one plan.
        """
        if request == PruneRequest():
            usage = self.engine.disk_usage()
            plan = self.engine.plan_prune(request)
            self.post_message(DiskUsageLoaded(usage, plan))
            self.post_message(PrunePlanned(plan))
            return
        self.post_message(PrunePlanned(self.engine.plan_prune(request)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="prune-apply")
    def apply_prune(self, plan: PrunePlan) -> None:
        """Applies a confirmed prune plan."""
        self.post_message(PruneApplied(self.engine.apply_prune(plan)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="build")
    def run_build(self, request: BuildRequest) -> None:
        """Runs (or with ``request.dry_run`` predicts) a build, streaming its events."""
        worker = get_current_worker()
        ok, message = False, "build ended without a result"
        try:
            for event in self.engine.build(request, cancel=worker.cancelled_event):
                self.post_message(BuildProgressed(event, request.dry_run))
                if isinstance(event, BuildFinished):
                    ok, message = True, "done"
                elif isinstance(event, BuildFailed):
                    ok, message = False, event.message
        except LaminaError as exc:
            ok, message = False, str(exc)
        finally:
            # Also after a cancel: the screen learns here that the build is over.
            self.post_message(BuildEnded(request.dry_run, ok, message))
