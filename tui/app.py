"""The Textual app: one App class over the engine API, and its factory.

The app opens the main screen over the engine (or, when the engine could not be
opened, a screen saying why), and owns what is global: help, refresh, quit and the
command palette. The main screen (``lamina.tui.screens.main``) runs every engine call.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from lamina.core import Engine
from lamina.tui.format import Clock
from lamina.tui.screens.help import HelpScreen
from lamina.tui.screens.main import VIEWS, MainScreen
from lamina.tui.screens.unavailable import EngineUnavailableScreen
from lamina.tui.widgets.settling import SETTLE_DELAY


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
        self,
        engine: Engine | None,
        *,
        clock: Clock | None = None,
        engine_error: str = "",
        focus_image: str | None = None,
        focus_build: int | None = None,
        keymap: dict[str, str] | None = None,
    ) -> None:
        """Creates the app over ``engine``.

        Args:
            engine: the engine every view reads from and acts through; None when it
                could not be opened.
            clock: returns "now" for relative times (fixed in tests and screenshots).
            engine_error: why the engine could not be opened (shown instead of the views).
            focus_image: an image ID to open on (the Images view, that image selected).
            focus_build: a build ID to open on (the Builds view, that build selected).
            keymap: binding id -> keys, the user's ``[keymap]``.
        """
        super().__init__()
        self._engine = engine
        self.engine_error = engine_error
        self.focus_image = focus_image
        self.focus_build = focus_build
        self.user_keymap = dict(keymap or {})
        self.clock: Clock = clock or time.time
        # Seconds the cursor must rest on a row before its files or analysis are read;
        # 0 reads at once (tests). Set it before the app runs.
        self.settle_delay = SETTLE_DELAY

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
        if self.user_keymap:
            self.apply_user_keymap(self.user_keymap)
        if self._engine is None:
            self.push_screen(EngineUnavailableScreen(self.engine_error or "no engine"))
            return
        self.push_screen(
            MainScreen(
                self._engine,
                clock=self.clock,
                settle_delay=self.settle_delay,
                focus_image=self.focus_image,
                focus_build=self.focus_build,
            )
        )

    def apply_user_keymap(self, keymap: dict[str, str]) -> None:
        """Applies the user's keymap; ids no binding has are reported, not fatal."""
        known = binding_ids()
        unknown = sorted(set(keymap) - known)
        if unknown:
            self.notify(
                f"[keymap] names no binding: {', '.join(unknown)} (see ? for the ids)",
                title="Keymap",
                severity="warning",
                timeout=8,
            )
        self.user_keymap = {k: v for k, v in keymap.items() if k in known}
        self.set_keymap(self.user_keymap)

    def key_for(self, binding: Binding) -> str:
        """The keys a binding answers to, after the user's keymap."""
        if binding.id and binding.id in self.user_keymap:
            return self.user_keymap[binding.id]
        return binding.key

    # ----------------------------------------------------------------- actions

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_refresh(self) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, MainScreen):
                screen.reload()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The command palette: lamina's views and actions first, then Textual's own."""
        main = next((s for s in self.screen_stack if isinstance(s, MainScreen)), None)
        if main is not None:
            for view_id, title, _key in VIEWS:
                yield SystemCommand(
                    f"Go to {title}",
                    f"Show the {title} view",
                    lambda v=view_id: main.show_view(v),
                )
            yield SystemCommand("Rebuild", "Rerun the selected build", main.action_rebuild)
            yield SystemCommand("What if", "Predict the selected build's hits", main.action_what_if)
            yield SystemCommand(
                "Prune dangling", "Preview and prune dangling images", main.action_prune
            )
            yield SystemCommand(
                "Pull an image", "Plan, confirm and watch a pull from a registry", main.action_pull
            )
            yield SystemCommand("Refresh", "Reload everything from the engine", self.action_refresh)
            yield SystemCommand("Help", "Show every key", self.action_help)
        yield from super().get_system_commands(screen)


def binding_ids() -> set[str]:
    """The id of every binding a keymap can remap."""
    from lamina.tui.screens.diff import DiffScreen

    ids = set()
    for bindings in (
        LaminaApp.BINDINGS,
        MainScreen.BINDINGS,
        HelpScreen.BINDINGS,
        DiffScreen.BINDINGS,
    ):
        for binding in bindings:
            if isinstance(binding, Binding) and binding.id:
                ids.add(binding.id)
    return ids


def make_app(
    engine: Engine | None,
    *,
    clock: Clock | None = None,
    engine_error: str = "",
    focus_image: str | None = None,
    focus_build: int | None = None,
    keymap: dict[str, str] | None = None,
) -> LaminaApp:
    """The app over ``engine``.

    Args:
        engine: any ``lamina.core.Engine`` (embedded store, Docker or an archive), or
            None when opening it failed.
        clock: returns "now" for relative times; fixed for reproducible screenshots.
        engine_error: with ``engine=None``, the one-line reason, shown in an error view.
        focus_image: an image ID to open on.
        focus_build: a build ID to open on.
        keymap: binding id -> keys (``[keymap]`` in ``config.toml``).

    Returns:
        A ready-to-run ``LaminaApp``.
    """
    return LaminaApp(
        engine,
        clock=clock,
        engine_error=engine_error,
        focus_image=focus_image,
        focus_build=focus_build,
        keymap=keymap,
    )
