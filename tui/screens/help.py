"""The `?` help screen: every view, and every key with what it does."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Static

from lamina.tui.screens.main import MainScreen

VIEW_HELP = (
    (
        "1 Layers",
        (
            "The layer graph: base layers at the root, each layer under its parent, "
            "◆ tags where images end, ×N on layers N images share. The right side shows the selected "
            "layer and its added/modified/deleted files."
        ),
    ),
    (
        "2 Images",
        (
            "Every image with size, shared and unique bytes; its history and dive's "
            "efficiency score and wasted space."
        ),
    ),
    (
        "3 Builds",
        (
            "Recorded builds: HIT or MISS per step and why each miss happened; rebuild "
            "with live progress, or ask what-if first."
        ),
    ),
    (
        "4 Disk",
        (
            "Bytes per category, what is reclaimable, and a one-key prune of dangling "
            "images with a confirmation listing exactly what goes."
        ),
    ),
    (
        "5 Learn",
        (
            "Why the selected step hit or missed and what would make it hit; a short "
            "guided tour of the cache."
        ),
    ),
)


class HelpScreen(ModalScreen[None]):
    """Every view and key; Escape or ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "escape,question_mark,q", "dismiss", "Close", tooltip="Close the help", id="help.close"
        ),
    ]

    def compose(self) -> ComposeResult:
        lines = ["[b]lamina: container image layers and their cache[/b]", ""]
        for title, text in VIEW_HELP:
            lines.append(f"[b $accent]{title}[/]  {escape(text)}")
        lines += ["", "[b]Keys[/b]"]
        # The main screen's keys, then the app's own (help, refresh, quit), each as the
        # user's [keymap] binds it, with the id a keymap names it by.
        key_for = getattr(self.app, "key_for", lambda b: b.key)
        for binding in [*MainScreen.BINDINGS, *self.app.BINDINGS]:
            if isinstance(binding, Binding):
                key = ",".join(
                    self.app.get_key_display(binding.with_key(k.strip()))
                    for k in key_for(binding).split(",")
                )
                lines.append(
                    f"  [b]{escape(key):<8}[/b] {escape(binding.tooltip or binding.description)}"
                    f"  [dim]{escape(binding.id or '')}[/]"
                )
        lines += [
            "  [b]ctrl+p  [/b] command palette: every lamina command by name",
            "",
            '[dim]Remap any key in config.toml: [keymap] "images.sort" = "o" (ids in grey).[/]',
            "[dim]Mouse: click tabs, rows, headers (to sort), tree nodes and any key in the footer.[/]",
        ]
        with Vertical(id="help-dialog"), VerticalScroll():
            yield Static("\n".join(lines), id="help-text")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)
