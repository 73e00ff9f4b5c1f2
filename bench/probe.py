"""One lamina operation in a fresh process, reporting its time, memory and reads.

``python -m bench.probe OP --home STORE [...]`` runs OP once and prints one JSON line:
``seconds`` (the operation alone, after imports), ``rss_before`` and ``max_rss`` (the
process's resident memory before it and at its peak, in bytes), ``read_bytes`` (bytes
the process read through read(2) during it, from ``/proc/self/io``: page-cache hits
included, so it counts what was hashed even when the disk was not touched) and what
the operation found. A fresh process per sample keeps one measurement's caches and
memory out of the next.

Operations: ``df`` (disk_usage), ``prune-plan`` (plan_prune of ``system -a``),
``app`` (open the app, wait for the first view's data, then press keys),
``dry-run`` (predict a build's cache decisions without executing it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def _df(home: Path, _args: argparse.Namespace) -> dict[str, Any]:
    from lamina.core.embedded.store import Store
    from lamina.core.embedded.usage import disk_usage

    store = Store(home)
    try:
        usage = disk_usage(store)
    finally:
        store.close()
    images = getattr(usage, "images", None)
    return {"images": len(images) if images is not None else None}


def _prune_plan(home: Path, _args: argparse.Namespace) -> dict[str, Any]:
    from lamina.core.accounting.plans import PruneRequest
    from lamina.core.embedded.prune import plan_prune
    from lamina.core.embedded.store import Store

    store = Store(home)
    try:
        plan = plan_prune(store, PruneRequest("system", all=True))
    finally:
        store.close()
    return {
        "images": len(getattr(plan, "images", ())),
        "cache": len(getattr(plan, "cache", ())),
        "layers": len(getattr(plan, "layers", ())),
    }


def _dry_run(home: Path, args: argparse.Namespace) -> dict[str, Any]:
    from lamina.core.embedded.builder.walk import run_build
    from lamina.core.embedded.store import Store
    from lamina.core.events import BuildFailed, StepFinished
    from lamina.core.model import BuildRequest

    root = os.path.realpath(args.context)
    opened: set[str] = set()

    def audit(event: str, event_args: tuple[Any, ...]) -> None:
        # Every open(2) of a context file, whoever makes it: the files a rehash reads.
        if event == "open" and isinstance(event_args[0], str):
            path = os.path.realpath(event_args[0])
            if path.startswith(root + os.sep):
                opened.add(path)

    sys.addaudithook(audit)
    store = Store(home)
    steps: list[bool | None] = []
    failed = None
    try:
        request = BuildRequest(context=str(args.context), dry_run=True)
        for event in run_build(store, request, threading.Event()):
            if isinstance(event, StepFinished):
                steps.append(event.step.cached)
            elif isinstance(event, BuildFailed):
                failed = event.message
    finally:
        store.close()
    # The Dockerfile and .dockerignore are read on every build by design.
    read_always = {os.path.join(root, n) for n in ("Dockerfile", ".dockerignore")}
    files = sorted(p for p in opened - read_always if os.path.isfile(p))
    return {
        "cached": steps,
        "failed": failed,
        "context_files_opened": [os.path.relpath(p, root) for p in files],
        "context_bytes_opened": sum(os.path.getsize(p) for p in files),
    }


def _first_view_ready(app: Any) -> bool:
    """Whether the view on screen shows the store's data.

    A tree with nodes or a table with rows that has a place on the screen (a non-empty
    region: laid out and visible, not in a hidden tab) counts.
    """
    from textual.widgets import DataTable, Tree

    for tree in app.screen.query(Tree):
        if tree.region.area > 0 and len(tree.root.children) > 0:
            return True
    return any(
        table.region.area > 0 and table.row_count > 0 for table in app.screen.query(DataTable)
    )


async def _app_session(home: Path, presses: int) -> dict[str, Any]:
    from lamina.core.open import open_engine
    from lamina.tui.app import make_app

    engine = open_engine("embedded", home)
    try:
        app = make_app(engine, clock=lambda: 1_800_000_000.0)
        start = time.perf_counter()
        async with app.run_test(size=(120, 36)) as pilot:
            deadline = start + 120
            # Poll rather than wait for every worker: the other views (builds, disk)
            # load in the background and are timed separately as "all views loaded".
            while not _first_view_ready(app):
                if time.perf_counter() > deadline:
                    raise RuntimeError("the app showed no data within 120 s")
                await pilot.pause(0.005)
            opened = time.perf_counter() - start
            rss_open = _rss()
            await app.workers.wait_for_complete()
            await pilot.pause()
            loaded = time.perf_counter() - start
            keys: list[float] = []
            for _ in range(presses):
                t = time.perf_counter()
                await pilot.press("down")
                keys.append(time.perf_counter() - t)
        return {
            "open_seconds": opened,
            "loaded_seconds": loaded,
            "key_seconds": keys,
            "rss_open": rss_open,
        }
    finally:
        engine.close()


def _app(home: Path, args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_app_session(home, args.presses))


OPS = {"df": _df, "prune-plan": _prune_plan, "dry-run": _dry_run, "app": _app}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probe")
    parser.add_argument("op", choices=sorted(OPS))
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--context", type=Path)
    parser.add_argument("--presses", type=int, default=50)
    args = parser.parse_args(argv)
    # Import what the operation needs before timing, so the time is the work itself.
    if args.op == "app":
        import lamina.core.embedded.engine
        import lamina.tui.app
    if args.op == "dry-run":
        import lamina.core.embedded.builder.walk
    if args.op in ("df", "prune-plan"):
        import lamina.core.accounting.usage
        import lamina.core.embedded.prune
    import lamina.core.embedded.store  # noqa: F401

    rss_before = _rss()
    rchar_before = _rchar()
    start = time.perf_counter()
    try:
        found = OPS[args.op](args.home, args)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(json.dumps({"error": f"{type(exc).__name__}: {first}"}))
        return 1
    seconds = time.perf_counter() - start
    out = {
        "seconds": seconds,
        "rss_before": rss_before,
        "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "read_bytes": _rchar() - rchar_before,
        **found,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
