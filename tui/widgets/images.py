"""The Images view: a sortable table of images, and the selected one's history and analysis."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.message import Message
from textual.reactive import reactive
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable, Static

from lamina.core import Analysis, HistoryEntry, ImageSummary
from lamina.tui import format as fmt
from lamina.tui.graph import LayerGraph
from lamina.tui.messages import ImageDetailsRequested
from lamina.tui.widgets.settling import SETTLE_DELAY, after_settling

# Seconds between redraws of the relative times ("a minute ago"), so they stay current.
TIME_REFRESH = 30.0

# (column key, title) in the order `s` cycles through them.
SORTS = (
    ("size", "size"),
    ("shared", "shared"),
    ("unique", "unique"),
    ("created", "created"),
    ("dangling", "dangling"),
    ("name", "name"),
)


class ImagesView(Widget):
    """Every image with its size split, and per-image history and dive analysis."""

    @dataclass
    class ImageSelected(Message):
        """The user highlighted an image (the Learn view explains its build)."""

        image_id: str

    graph: reactive[LayerGraph | None] = reactive(None, always_update=True)
    sort_key: reactive[str] = reactive("size")
    sort_reverse: reactive[bool] = reactive(True)
    selected: reactive[str | None] = reactive(None)
    # The image marked as A for a diff (``m``); the selected one is B.
    marked: reactive[str | None] = reactive(None)

    class SelectionChanged(Message):
        """The selected or marked image changed (the diff key may now apply)."""

    def __init__(
        self,
        *,
        id: str | None = None,
        clock: fmt.Clock = time.time,
        settle_delay: float = SETTLE_DELAY,
    ) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.settle_delay = settle_delay
        self.rows: dict[str, tuple[ImageSummary, dict[str, Any]]] = {}
        self.analysis: Analysis | None = None
        self.history_for: str | None = None
        self._stale = False
        self._details_timer: Timer | None = None
        # An image to select once the table is drawn (opening the app on one image).
        self.focus_on: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="images-sort")
        images: DataTable[str] = DataTable(id="images-table", cursor_type="row", zebra_stripes=True)
        yield images
        with Horizontal(id="image-detail"):
            history: DataTable[str] = DataTable(id="history-table", cursor_type="row")
            yield history
            with Vertical(id="analysis-pane"):
                yield Static("Select an image.", id="analysis")
                wasted: DataTable[str] = DataTable(id="wasted-table", cursor_type="row")
                yield wasted

    def on_mount(self) -> None:
        self.set_interval(TIME_REFRESH, self.refresh_times)
        table = self.query_one("#images-table", DataTable)
        for key, title in (
            ("name", "image"),
            ("id", "id"),
            ("size", "size"),
            ("shared", "shared"),
            ("unique", "unique"),
            ("created", "created"),
            ("dangling", "dangling"),
        ):
            table.add_column(title, key=key)
        history = self.query_one("#history-table", DataTable)
        history.add_column("instruction", key="created_by", width=38)
        history.add_column("size", key="size", width=9)
        history.add_column("layer", key="layer", width=12)
        wasted = self.query_one("#wasted-table", DataTable)
        wasted.add_column("count", key="count", width=5)
        wasted.add_column("total", key="total", width=9)
        wasted.add_column("path", key="path", width=56)

    def refresh_times(self) -> None:
        """Redraws the "created" column against the clock."""
        table = self.query_one("#images-table", DataTable)
        for image_id, (_image, row) in self.rows.items():
            if image_id in table.rows:
                table.update_cell(image_id, "created", fmt.ago(row["created"], self.clock))

    def render_if_stale(self) -> None:
        """Renders the table if a snapshot arrived while the view was hidden."""
        if self._stale:
            self._stale = False
            self._render_table(force=True)

    def watch_graph(self, graph: LayerGraph | None) -> None:
        if graph is None:
            return
        self.rows = {}
        for image in graph.images:
            sizes = graph.sizes(image)
            self.rows[image.id] = (
                image,
                {
                    "name": ", ".join(image.tags) or "<none>",
                    "size": sizes.size,
                    "shared": sizes.shared,
                    "unique": sizes.unique,
                    "created": image.created,
                    "dangling": image.dangling,
                },
            )
        self._render_table()

    def watch_sort_key(self) -> None:
        self._render_table()

    def watch_sort_reverse(self) -> None:
        self._render_table()

    def next_sort(self) -> None:
        """Sorts by the next column (size → shared → unique → created → dangling → name)."""
        keys = [k for k, _ in SORTS]
        self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)]

    def reverse_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse

    @on(DataTable.HeaderSelected, "#images-table")
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        if key == "id":
            return
        if key == self.sort_key:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_key = key

    def sorted_ids(self) -> list[str]:
        """Image IDs in the table's current order."""

        def value(item: tuple[str, tuple[ImageSummary, dict[str, Any]]]) -> Any:
            image_id, (_image, row) = item
            return (row[self.sort_key], image_id)

        return [i for i, _ in sorted(self.rows.items(), key=value, reverse=self.sort_reverse)]

    def _render_table(self, force: bool = False) -> None:
        if not self.is_mounted:
            return
        if not force and not self.is_on_screen:
            # 2,000 rows cost ~0.5 s to lay out; do it when the view is first shown.
            self._stale = True
            return
        table = self.query_one("#images-table", DataTable)
        previous = self.selected
        table.clear()
        for image_id in self.sorted_ids():
            image, row = self.rows[image_id]
            name = escape(row["name"]) if image.tags else "[$warning]<none>[/]"
            if image_id == self.marked:
                name = f"[b $accent]A▸[/] {name}"
            table.add_row(
                fmt.themed(self.app, name),
                fmt.digest(image_id),
                fmt.size(row["size"]),
                fmt.size(row["shared"]),
                fmt.size(row["unique"]),
                fmt.ago(row["created"], self.clock),
                fmt.themed(self.app, "[$warning]yes[/]") if row["dangling"] else "",
                key=image_id,
            )
        arrow = "↓" if self.sort_reverse else "↑"
        self.query_one("#images-sort", Static).update(
            f"{len(self.rows)} images, sorted by [b]{self.sort_key}[/] {arrow}"
            "   [dim](s: next column, S: reverse, or click a header)[/]"
        )
        if self.focus_on in self.rows:
            previous, self.focus_on = self.focus_on, None
        if previous in self.rows:
            table.move_cursor(row=table.get_row_index(previous))
            self.selected = previous
        elif self.rows:
            table.move_cursor(row=0)
            self.selected = self.sorted_ids()[0]

    @on(DataTable.RowHighlighted, "#images-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value:
            self.selected = str(event.row_key.value)

    def name_of(self, image_id: str) -> str:
        """The image's first tag, else its ID (what the diff screen calls it)."""
        row = self.rows.get(image_id)
        return row[0].tags[0] if row and row[0].tags else image_id

    def toggle_mark(self) -> None:
        """Marks the selected image as A (or unmarks it)."""
        if self.selected is None:
            return
        self.marked = None if self.marked == self.selected else self.selected

    def watch_marked(self, old: str | None, new: str | None) -> None:
        self._render_table()
        self.post_message(self.SelectionChanged())

    def watch_selected(self, image_id: str | None) -> None:
        self.post_message(self.SelectionChanged())
        if image_id is None or not self.is_mounted:
            return
        self.post_message(self.ImageSelected(image_id))
        self.query_one("#analysis", Static).update("Analysing layers…")
        # Reading every layer tar is heavy: wait until the cursor rests on an image.
        if self._details_timer is not None:
            self._details_timer.stop()
        self._details_timer = after_settling(self, self.settle_delay, self._request_details)

    def _request_details(self) -> None:
        self._details_timer = None
        if self.selected is not None:
            self.post_message(ImageDetailsRequested(self.selected))

    @property
    def details_pending(self) -> bool:
        """True while a selection waits for its details to be requested."""
        return self._details_timer is not None

    def show_details(
        self,
        ref: str,
        history: list[HistoryEntry],
        analysis: Analysis | None,
        analysis_error: str | None,
    ) -> None:
        """Shows an image's history and analysis, unless the cursor has moved on."""
        if ref != self.selected:
            return
        self.history_for = ref
        table = self.query_one("#history-table", DataTable)
        table.clear()
        # The engine gives newest first, as `docker history` does; read top-down as built.
        for i, entry in enumerate(reversed(history)):
            text = escape(
                _instruction(entry.created_by)
                if entry.created_by
                else (f"import: {entry.comment}" if entry.comment else "(missing)")
            )
            if entry.empty_layer:
                table.add_row(f"[dim]{text}[/]", "[dim]empty[/]", "", key=str(i))
            else:
                table.add_row(text, fmt.size(entry.size), fmt.digest(entry.chain_id), key=str(i))
        self.analysis = analysis
        pane = self.query_one("#analysis", Static)
        wasted = self.query_one("#wasted-table", DataTable)
        wasted.clear()
        if analysis is None:
            pane.update(f"[dim]No efficiency analysis: {escape(analysis_error or '')}[/]")
            return
        a = analysis
        pane.update(
            f"efficiency [b]{a.efficiency * 100:.4f} %[/]   "
            f"wasted [b]{fmt.size(a.wasted_bytes)}[/] ({a.wasted_bytes:,} bytes)\n"
            f"image size {fmt.size(a.size_bytes)}   user size {fmt.size(a.user_size_bytes)}\n"
            f"wasted/user {a.wasted_user_percent * 100:.2f} %   (dive's numbers)"
        )
        for w in a.inefficiencies:
            wasted.add_row(str(w.count), fmt.size(w.size), escape(w.path), key=w.path)


def _instruction(created_by: str) -> str:
    return fmt.instruction(created_by) or "(missing)"
