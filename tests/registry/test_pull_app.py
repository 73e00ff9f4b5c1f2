"""The app's pull screen against a real registry: reference, plan, confirm, progress."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from app_workers import workers_done
from textual.widgets import Input, ProgressBar, Static

from lamina.core.embedded.engine import EmbeddedEngine
from lamina.tui.app import make_app
from lamina.tui.screens.main import MainScreen
from lamina.tui.screens.pull import PullScreen

pytestmark = pytest.mark.slow


async def test_pull_screen_plans_confirms_and_pulls(
    registry,
    make_engine: Callable[[str], EmbeddedEngine],
    base_image: Callable[[EmbeddedEngine, str], str],
    add_layer: Callable[[EmbeddedEngine, str, str, dict[str, bytes]], str],
    repo: Callable[[str], str],
) -> None:
    name = repo("app")
    base, child = f"{registry.address}/{name}:base", f"{registry.address}/{name}:child"
    a = make_engine("a")
    base_image(a, base)
    child_id = add_layer(a, base, child, {"app.txt": b"app" * 1000})
    list(a.push(base))
    list(a.push(child))
    b = make_engine("b")
    list(b.pull(b.plan_pull(base)))

    app = make_app(b, clock=lambda: 1767225600.0)
    app.settle_delay = 0
    async with app.run_test(size=(120, 36)) as pilot:
        await workers_done(app)
        await pilot.press("P")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, PullScreen)
        assert screen.check_action("confirm", ()) is None  # nothing planned yet
        screen.query_one("#pull-ref", Input).value = child
        await pilot.press("enter")
        await workers_done(app)
        await pilot.pause()
        assert screen.stage == "confirm"
        text = str(screen.query_one("#pull-plan", Static).render())
        assert "in store, shared with" in text and "download" in text
        assert screen.plan is not None and screen.plan.image_id == child_id

        mark = registry.mark()
        await pilot.press("y")
        await workers_done(app)
        await pilot.pause()
        # One bar per blob that moved: only the child's own layer, and it finished.
        bars = [bar for bar, _label in screen.bars.values()]
        assert len(bars) == 1 and isinstance(bars[0], ProgressBar)
        assert bars[0].percentage == 1.0
        assert not isinstance(app.screen, PullScreen)
        await workers_done(app)
        await pilot.pause()
        main = app.screen
        assert isinstance(main, MainScreen) and main.active_view == "layers"
        assert b.image(child).id == child_id
        assert len(registry.blob_fetches(mark, name)) == 1


async def test_a_failed_plan_is_one_line_and_the_screen_stays(
    registry, make_engine: Callable[[str], EmbeddedEngine]
) -> None:
    app = make_app(make_engine("b"))
    app.settle_delay = 0
    async with app.run_test(size=(120, 36)) as pilot:
        await workers_done(app)
        await pilot.press("P")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, PullScreen)
        screen.query_one("#pull-ref", Input).value = f"{registry.address}/lamina-test/none:x"
        await pilot.press("enter")
        await workers_done(app)
        await pilot.pause()
        assert screen.stage == "enter"
        status = str(screen.query_one("#pull-status", Static).render())
        assert "manifest unknown" in status and "\n" not in status
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
