"""The image diff: what separates the marked image (A) from the selected one (B).

Opened from the Images view (``m`` marks A, ``d`` compares it with the selected image).
Shows the shared layers, where the stacks part, and a table of every file added,
removed or changed, with sizes and the instruction behind each difference. The
comparison reads both images' layer tars, so it runs in a thread worker.
"""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Static
from textual.worker import Worker, WorkerState

from lamina.core import Engine, FileDiff, ImageDiff, LaminaError, diff_images, short_digest
from lamina.tui import format as fmt
from lamina.tui.messages import DiffLoaded

MARKS = {"added": "[$success]+[/]", "removed": "[$error]-[/]", "changed": "[$warning]~[/]"}


def _why(f: FileDiff) -> str:
    parts = []
    if f.a is not None and f.change != "added":
        parts.append(f"A#{f.a.layer} {fmt.instruction(f.a.created_by)}")
    if f.b is not None:
        deleted = "deleted by " if f.b.deleted else ""
        parts.append(f"B#{f.b.layer} {deleted}{fmt.instruction(f.b.created_by)}")
    return "; ".join(parts)


def summary_markup(result: ImageDiff) -> str:
    """The header: both images, the shared layers and where they part."""
    lines = [
        f"[b]A[/] {escape(result.a)} ({short_digest(result.a_id)})   "
        f"[b]B[/] {escape(result.b)} ({short_digest(result.b_id)})",
        f"{len(result.shared)} shared layers; "
        + (
            "the same layers"
            if result.parted_at is None
            else f"they part at layer #{result.parted_at}"
        ),
    ]
    for side, layers in (("A", result.only_a), ("B", result.only_b)):
        for layer in layers:
            lines.append(
                f"  [b]{side}#{layer.index}[/] {escape(fmt.instruction(layer.created_by))}"
            )
    lines.append(
        f"[$success]{result.count('added')} added[/] ({fmt.size(result.bytes_added)}), "
        f"[$error]{result.count('removed')} removed[/] ({fmt.size(result.bytes_removed)}), "
        f"[$warning]{result.count('changed')} changed[/]"
    )
    return "\n".join(lines)


class DiffScreen(ModalScreen[None]):
    """Image A against image B, file by file."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "dismiss", "Close", tooltip="Close the diff", id="diff.close"),
    ]

    def __init__(self, engine: Engine, a: str, b: str) -> None:
        super().__init__()
        self.engine = engine
        self.a = a
        self.b = b
        self.result: ImageDiff | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="diff-dialog"):
            yield Static(f"Comparing {escape(self.a)} with {escape(self.b)}…", id="diff-summary")
            table: DataTable[str] = DataTable(id="diff-table", cursor_type="row")
            yield table
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#diff-table", DataTable)
        table.add_column("", key="change", width=1)
        table.add_column("path", key="path", width=40)
        table.add_column("what", key="what", width=16)
        table.add_column("size", key="size", width=17)
        table.add_column("why", key="why")
        table.focus()
        self.compare()

    @work(thread=True, exclusive=True, exit_on_error=False, group="diff")
    def compare(self) -> None:
        """Reads both images' files and compares them."""
        result = diff_images(self.engine.image_files(self.a), self.engine.image_files(self.b))
        self.post_message(DiffLoaded(result))

    def on_diff_loaded(self, event: DiffLoaded) -> None:
        self.result = result = event.result
        self.query_one("#diff-summary", Static).update(fmt.themed(self.app, summary_markup(result)))
        table = self.query_one("#diff-table", DataTable)
        table.clear()
        for f in result.files:
            if f.change == "added":
                sizes = fmt.size(f.size_b)
            elif f.change == "removed":
                sizes = fmt.size(f.size_a)
            elif f.size_a == f.size_b:
                sizes = fmt.size(f.size_b)
            else:
                sizes = f"{fmt.size(f.size_a)} → {fmt.size(f.size_b)}"
            table.add_row(
                fmt.themed(self.app, MARKS[f.change]),
                escape(f.path),
                ", ".join(f.what),
                sizes,
                escape(_why(f)),
                key=f.path,
            )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        message = str(error) if isinstance(error, LaminaError) else repr(error)
        self.query_one("#diff-summary", Static).update(f"[b]Cannot compare:[/b] {escape(message)}")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)
