"""SVG snapshots of the main views over dive's test image (pinned times, fixed clock).

Update after an intended visual change with ``pytest tests/tui --snapshot-update`` and
review the diff of ``__snapshots__/``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from app_workers import workers_done
from textual.pilot import Pilot
from textual.widgets import Input

from lamina.core.engine import Engine
from lamina.tui.app import make_app

from .conftest import fixed_clock


async def _settled(pilot: Pilot[Any]) -> None:
    for widget in pilot.app.query(Input):
        widget.cursor_blink = False
    for _ in range(3):
        await workers_done(pilot.app)
        await pilot.pause()


@pytest.mark.parametrize(
    ("name", "keys", "size"),
    [
        ("layers", (), (120, 36)),
        ("images", ("2",), (120, 36)),
        ("learn", ("5",), (120, 36)),
        ("help", ("question_mark",), (120, 36)),
        ("layers_80x24", (), (80, 24)),
        ("images_80x24", ("2",), (80, 24)),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_view_snapshot(
    snap_compare: Callable[..., bool],
    dive_engine: Engine,
    name: str,
    keys: tuple[str, ...],
    size: tuple[int, int],
) -> None:
    app = make_app(dive_engine, clock=fixed_clock)
    app.settle_delay = 0

    async def run_before(pilot: Pilot[Any]) -> None:
        await _settled(pilot)
        for key in keys:
            await pilot.press(key)
            await _settled(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before), name


@pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])
def test_builds_snapshot_shows_a_whole_reason(
    snap_compare: Callable[..., bool], builds_engine: Engine, size: tuple[int, int]
) -> None:
    """The Builds view with the edited step selected: its reason is readable whole, where
    the table's "why it missed" column is cut at the screen's edge."""
    app = make_app(builds_engine, clock=fixed_clock)
    app.settle_delay = 0

    async def run_before(pilot: Pilot[Any]) -> None:
        await _settled(pilot)
        await pilot.press("3")
        await _settled(pilot)
        await pilot.press("tab", "down")
        await _settled(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
