"""The screen shown when the engine cannot be reached (Docker not running, no permission)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

HINT = (
    "Start the engine (for Docker: is dockerd running, and does DOCKER_HOST point at it?), "
    "or run lamina without --engine docker to inspect the embedded store."
)


class EngineUnavailableScreen(Screen[None]):
    """Says, in one line, why there is nothing to show, and how to get going."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "app.quit", "Quit", tooltip="Leave lamina", id="quit"),
    ]

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="engine-unavailable"):
            yield Static(escape(self.message), id="engine-error")
            yield Static(escape(HINT), id="engine-hint")
        yield Footer()
