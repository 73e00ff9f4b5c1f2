"""Bounded parallel transfers that report progress as one ordered stream of events.

``run_parallel`` runs blob tasks on at most ``workers`` threads and yields their events
on the caller's thread, as they happen. The first failure stops the others (they see
the shared cancel event at their next chunk) and is raised once they have stopped, so a
caller never returns while a worker still writes into the store's ``tmp/``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from lamina.core.registry.client import TransferCancelled
from lamina.core.registry.progress import TransferEvent, TransferProgressed

DEFAULT_WORKERS = 3
# Progress for one blob is reported at most this often.
PROGRESS_INTERVAL = 0.1

Report = Callable[[TransferEvent], None]
Task = Callable[[Report, threading.Event], None]


def run_parallel(
    tasks: Sequence[Task], workers: int = DEFAULT_WORKERS, cancel: threading.Event | None = None
) -> Iterator[TransferEvent]:
    """Runs ``tasks`` (each ``task(report, stop)``) and yields what they report.

    Args:
        tasks: the transfers; each checks ``stop`` between chunks.
        workers: how many run at once.
        cancel: the caller's cancellation; setting it stops every task.

    Raises:
        The first task's exception, after every task has ended; ``TransferCancelled``
        when ``cancel`` was set.
    """
    stop = threading.Event()
    events: queue.Queue[TransferEvent | None] = queue.Queue()
    last: dict[str, float] = {}
    last_lock = threading.Lock()

    def report(event: TransferEvent) -> None:
        if isinstance(event, TransferProgressed) and event.done < event.total:
            now = time.monotonic()
            with last_lock:
                if now - last.get(event.digest, 0.0) < PROGRESS_INTERVAL:
                    return
                last[event.digest] = now
        events.put(event)

    def run(task: Task) -> None:
        try:
            if not stop.is_set():
                task(report, stop)
        finally:
            events.put(None)

    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="transfer") as pool:
        futures: list[Future[None]] = [pool.submit(run, t) for t in tasks]

        def failed(future: Future[None]) -> None:
            exc = future.exception()
            if exc is not None:
                errors.append(exc)
                stop.set()

        for future in futures:
            future.add_done_callback(failed)
        running = len(futures)
        try:
            while running:
                if cancel is not None and cancel.is_set():
                    stop.set()
                try:
                    event = events.get(timeout=0.2)
                except queue.Empty:
                    continue
                if event is None:
                    running -= 1
                    continue
                if not stop.is_set():
                    yield event
        finally:
            # A consumer that stops early (or fails) stops the workers too.
            stop.set()
    if cancel is not None and cancel.is_set():
        raise TransferCancelled("cancelled")
    real = [e for e in errors if not isinstance(e, TransferCancelled)]
    if real:
        raise real[0]
    if errors:
        raise errors[0]
