"""Waiting for an app's workers in Pilot tests. Tests import it as ``app_workers``
(``tests/support`` is on pytest's ``pythonpath``).

The app runs detail loads in exclusive worker groups: a selection that moves while one
loads cancels it and starts the next. ``WorkerManager.wait_for_complete`` raises
``WorkerCancelled`` for the cancelled one, which on a loaded machine is an ordinary
outcome, not a failure; a worker that *failed* still raises.
"""

from __future__ import annotations

import asyncio
from typing import Any

from textual.worker import WorkerCancelled

# Enough rounds for a cancelled load to be followed by the one that replaced it.
ROUNDS = 20


async def workers_done(node: Any) -> None:
    """Waits until ``node`` (an app or a screen) has no worker left running.

    Raises:
        WorkerFailed: a worker raised.
    """
    for _ in range(ROUNDS):
        try:
            await node.workers.wait_for_complete()
            return
        except WorkerCancelled:
            # Let the manager drop the cancelled worker (a done callback) before waiting
            # again for the ones still running.
            await asyncio.sleep(0.01)
    await node.workers.wait_for_complete()
