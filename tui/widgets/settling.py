"""Waiting for the cursor to rest before reading what it points at."""

from __future__ import annotations

from collections.abc import Callable

from textual.timer import Timer
from textual.widget import Widget

# Seconds the cursor must rest on a row before its files or analysis are read, so
# holding an arrow key does not start a walk per row passed.
SETTLE_DELAY = 0.12


def after_settling(widget: Widget, delay: float, callback: Callable[[], None]) -> Timer | None:
    """Calls ``callback`` once the cursor has rested ``delay`` seconds; at once for 0 (tests).

    Returns:
        The timer to stop when the cursor moves on, or None if the callback already ran.
    """
    if delay <= 0:
        callback()
        return None
    return widget.set_timer(delay, callback)
