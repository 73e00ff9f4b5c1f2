"""The main screen: five views in tabs, an error bar and the footer.

Every key lives here, not on the views, so the footer can show exactly the keys that
apply to the visible view (``check_action``) wherever the focus is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Footer, Header, Static, TabbedContent, TabPane

from lamina.tui.messages import BuildsLoaded, DiskUsageLoaded, EngineCallFailed, SnapshotLoaded
from lamina.tui.widgets.builds import BuildsView
from lamina.tui.widgets.disk import DiskView
from lamina.tui.widgets.graph import LayerGraph
from lamina.tui.widgets.images import ImagesView
from lamina.tui.widgets.layers import LayersView
from lamina.tui.widgets.learn import LearnView

if TYPE_CHECKING:
    from lamina.tui.app import LaminaApp

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
    "sort_images": "images",
    "reverse_sort": "images",
    "rebuild": "builds",
    "what_if": "builds",
    "cancel_build": "builds",
    "prune": "disk",
    "tour_next": "learn",
    "tour_back": "learn",
}


class MainScreen(Screen[None]):
    """The tabbed views over one engine."""

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
        Binding("s", "sort_images", "Sort", tooltip="Sort by the next column", id="images.sort"),
        Binding(
            "S", "reverse_sort", "Reverse", tooltip="Reverse the sort order", id="images.reverse"
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
    ]

    @property
    def lamina(self) -> LaminaApp:
        from lamina.tui.app import LaminaApp

        assert isinstance(self.app, LaminaApp)
        return self.app

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="layers", id="views"):
            with TabPane("1 Layers", id="layers"):
                yield LayersView(id="layers-view")
            with TabPane("2 Images", id="images"):
                yield ImagesView(id="images-view")
            with TabPane("3 Builds", id="builds"):
                yield BuildsView(id="builds-view")
            with TabPane("4 Disk", id="disk"):
                yield DiskView(id="disk-view")
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
        """Asks the engine for everything again (each view reloads its own part)."""
        self.query_one("#error-bar").display = False
        app = self.lamina
        self._disk_pending = True  # read once the snapshot is in, so it does not slow it
        app.load_snapshot(self)
        app.load_builds(self.query_one(BuildsView))

    @property
    def active_view(self) -> str:
        return self.query_one(TabbedContent).active or "layers"

    def show_view(self, view_id: str) -> None:
        """Switches to a view by tab id."""
        self.query_one(TabbedContent).active = view_id
        self.refresh_bindings()

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
            return (
                None if (self.lamina.building.is_set() or builds.selected_build is None) else True
            )
        if action == "cancel_build":
            return True if self.lamina.building.is_set() else None
        if action == "prune":
            return None if self.lamina.building.is_set() else True
        if action in ("sort_images", "reverse_sort"):
            return True
        return True

    # ---------------------------------------------------------------- actions

    def action_toggle_digests(self) -> None:
        self.query_one(LayersView).full_digests = not self.query_one(LayersView).full_digests

    def action_filter_files(self) -> None:
        self.query_one(LayersView).focus_filter()

    def action_sort_images(self) -> None:
        self.query_one(ImagesView).next_sort()

    def action_reverse_sort(self) -> None:
        self.query_one(ImagesView).reverse_sort()

    def action_rebuild(self) -> None:
        self.show_view("builds")
        self.query_one(BuildsView).start(dry_run=False)
        self.refresh_bindings()

    def action_what_if(self) -> None:
        self.show_view("builds")
        self.query_one(BuildsView).start(dry_run=True)
        self.refresh_bindings()

    def action_cancel_build(self) -> None:
        for worker in self.lamina.workers:
            if worker.group == "build":
                worker.cancel()

    def action_prune(self) -> None:
        self.show_view("disk")
        self.query_one(DiskView).request_prune()

    def action_tour_next(self) -> None:
        self.query_one(LearnView).move_tour(1)

    def action_tour_back(self) -> None:
        self.query_one(LearnView).move_tour(-1)

    # --------------------------------------------------------------- messages

    def on_engine_call_failed(self, event: EngineCallFailed) -> None:
        bar = self.query_one("#error-bar")
        self.query_one("#error-text", Static).update(
            f"[b]Failed {escape(event.action)}:[/b] {escape(event.message)}"
        )
        bar.display = True

    def on_builds_view_step_selected(self, event: BuildsView.StepSelected) -> None:
        self.query_one(LearnView).step = event.step
        self.query_one(LearnView).build = event.build

    def on_builds_view_state_changed(self, event: BuildsView.StateChanged) -> None:
        self.refresh_bindings()

    def on_disk_view_pruned(self, event: DiskView.Pruned) -> None:
        # Pruning changes images and layers too.
        self.lamina.load_snapshot(self)

    def on_builds_view_built(self, event: BuildsView.Built) -> None:
        self.lamina.load_snapshot(self)
        self.lamina.load_disk(self.query_one(DiskView))

    def on_builds_loaded(self, event: BuildsLoaded) -> None:
        self.query_one(LayersView).builds = event.builds
        self.query_one(LearnView).set_builds(event.builds)

    def on_builds_view_predicted(self, event: BuildsView.Predicted) -> None:
        from lamina.tui.screens.confirm import WhatIfScreen

        builds = self.query_one(BuildsView)

        def answered(build_now: bool | None) -> None:
            builds.show_recorded()
            if build_now:
                builds.start(dry_run=False)
            self.refresh_bindings()

        self.app.push_screen(
            WhatIfScreen(event.build, event.steps, event.ok, event.message), answered
        )

    def on_disk_usage_loaded(self, event: DiskUsageLoaded) -> None:
        # Disk accounting knows which cache entries keep each layer; the Layers view shows it.
        layers = self.query_one(LayersView)
        layers.cache_users = {u.chain_id: len(u.cache) for u in event.usage.layers}
        layers.refresh_info()

    def on_snapshot_loaded(self, event: SnapshotLoaded) -> None:
        graph = LayerGraph(event.images, event.layers, event.instructions)
        self.query_one(LayersView).graph = graph
        if event.partial:
            return
        self.query_one(ImagesView).graph = graph
        self.query_one(LearnView).graph = graph
        if getattr(self, "_disk_pending", False):
            self._disk_pending = False
            self.lamina.load_disk(self.query_one(DiskView))
