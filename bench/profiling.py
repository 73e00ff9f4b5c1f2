"""cProfile of one lamina path, summarised as the functions that cost the most.

The path to profile is the measurement furthest from its target (or named with
``--profile``). The profile runs in this process, on the same data the measurement
used, so its top entries point at the function to fix. Time spent in child processes
(RUN commands in the sandbox) shows up only as the wait for them.
"""

from __future__ import annotations

import asyncio
import cProfile
import logging
import pstats
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.measure import BenchError
from bench.report import Row

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
TOP = 15


def pick(rows: list[Row]) -> str | None:
    """The profile path of the row furthest from its target, or of the slowest row."""
    scored: list[tuple[float, str]] = []
    for row in rows:
        if not row.profile:
            continue
        if row.target_speedup is not None and row.speedup:
            scored.append((row.speedup / row.target_speedup, row.profile))
        elif row.target_max is not None and row.lamina.values:
            scored.append((row.target_max / max(row.lamina.median, 1e-9), row.profile))
    if not scored:
        return None
    return min(scored)[1]


def _name(func: tuple[str, int, str]) -> str:
    path, line, name = func
    if path == "~":
        return name
    try:
        path = str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        path = Path(path).name
    return f"{path}:{line}({name})"


def profile_call(what: str, fn: Callable[[], Any]) -> dict[str, Any]:
    """Runs ``fn`` under cProfile; returns the top functions by own time.

    Args:
        what: names the path in the report.
        fn: the work.
    """
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    try:
        fn()
    finally:
        profiler.disable()
    seconds = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    entries = []
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for func, (_cc, calls, tottime, cumtime, _callers) in sorted(
        raw.items(), key=lambda kv: kv[1][2], reverse=True
    )[:TOP]:
        entries.append(
            {
                "function": _name(func),
                "calls": calls,
                "tottime": round(tottime, 4),
                "cumtime": round(cumtime, 4),
            }
        )
    own = []
    for func, (_cc, calls, tottime, cumtime, _callers) in sorted(
        raw.items(), key=lambda kv: kv[1][3], reverse=True
    ):
        name = _name(func)
        if name.startswith(("core/", "tui/")):
            own.append(
                {
                    "function": name,
                    "calls": calls,
                    "tottime": round(tottime, 4),
                    "cumtime": round(cumtime, 4),
                }
            )
        if len(own) == TOP:
            break
    return {"what": what, "seconds": seconds, "top": entries, "lamina_top": own}


def _build(home: Path, context: Path, tag: str) -> Callable[[], None]:
    def run() -> None:
        from lamina.core.embedded.builder.walk import run_build
        from lamina.core.embedded.store import Store
        from lamina.core.events import BuildFailed
        from lamina.core.model import BuildRequest

        store = Store(home)
        try:
            for event in run_build(
                store, BuildRequest(str(context), tags=(tag,)), threading.Event()
            ):
                if isinstance(event, BuildFailed):
                    raise BenchError(f"profiled build failed: {event.message}")
        finally:
            store.close()

    return run


def _store_call(home: Path, call: Callable[[Any], Any]) -> Callable[[], None]:
    def run() -> None:
        from lamina.core.embedded.store import Store

        store = Store(home)
        try:
            call(store)
        finally:
            store.close()

    return run


def _df(store: Any) -> Any:
    from lamina.core.embedded.usage import disk_usage

    return disk_usage(store)


def _prune(store: Any) -> Any:
    from lamina.core.accounting.plans import PruneRequest
    from lamina.core.embedded.prune import plan_prune

    return plan_prune(store, PruneRequest("system", all=True))


def _app(home: Path) -> Callable[[], None]:
    import lamina.tui.app  # noqa: F401

    def run() -> None:
        from bench.probe import _app_session

        asyncio.run(_app_session(home, 10))

    return run


def profile_path(
    path: str,
    *,
    build_home: Path | None,
    context: Path | None,
    fresh_build: Callable[[], Path] | None,
    edit: Callable[[], None] | None,
    synthetic: Path | None,
    tag: str,
) -> dict[str, Any]:
    """Profiles one named path.

    Args:
        path: ``cold-build``, ``cached-build``, ``edit-build``, ``df``, ``prune-plan``,
            ``app`` or ``commit``.
        build_home: the store the build measurements left (for cached/edit builds).
        context: the build context.
        fresh_build: makes a fresh store with the base imported; returns its home.
        edit: edits one context file (for ``edit-build``).
        synthetic: the synthetic store (for df, prune-plan, app).
        tag: the tag builds write.

    Raises:
        BenchError: the path's data is not available in this run.
    """
    # Imports happen before profiling: start-up is not the path being measured.
    import lamina.core.accounting.usage
    import lamina.core.embedded.builder.walk
    import lamina.core.embedded.prune
    import lamina.core.embedded.store  # noqa: F401

    if path in ("cold-build", "cached-build", "edit-build"):
        if context is None or build_home is None or fresh_build is None:
            raise BenchError(f"cannot profile {path}: the build measurements did not run")
        if path == "cold-build":
            return profile_call(
                "a cold build (in-process run_build)", _build(fresh_build(), context, tag)
            )
        _build(build_home, context, tag)()  # make sure the cache is warm for this context
        if path == "edit-build" and edit is not None:
            edit()
            return profile_call(
                "a rebuild after a one-file edit (in-process run_build)",
                _build(build_home, context, tag),
            )
        return profile_call(
            "a fully cached rebuild (in-process run_build)", _build(build_home, context, tag)
        )
    if synthetic is None:
        raise BenchError(f"cannot profile {path}: the synthetic store was not made")
    if path == "df":
        return profile_call("disk_usage on the synthetic store", _store_call(synthetic, _df))
    if path == "prune-plan":
        return profile_call("plan_prune on the synthetic store", _store_call(synthetic, _prune))
    if path == "app":
        return profile_call("opening the app on the synthetic store", _app(synthetic))
    raise BenchError(f"no profile for {path!r}")
