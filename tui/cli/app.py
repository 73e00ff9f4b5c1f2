"""CLI verbs that open the Textual app: ``lamina app`` and ``lamina demo``.

``lamina`` with no arguments calls :func:`open_app` on the default store.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lamina.core import EngineUnavailable, default_home
from lamina.tui.cli.context import CliContext


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``lamina app`` and ``lamina demo``."""
    app = sub.add_parser(
        "app",
        help="open the terminal app on the store",
        description="Open the terminal app (also what `lamina` alone does).",
    )
    app.set_defaults(func=open_app)

    demo = sub.add_parser(
        "demo",
        help="create a demo workspace and store offline, then open the app on it",
        description=(
            "Build a demo offline with the real builder: a busybox base, images sharing "
            "layers, an edited rebuild with hits and misses, a dangling image and build "
            "cache. Safe to run twice."
        ),
    )
    demo.add_argument(
        "--workspace",
        type=Path,
        default=None,
        help="where to write the demo's Dockerfiles and context (default: <store>/../lamina-demo)",
    )
    demo.add_argument(
        "--no-open",
        action="store_true",
        help="create the demo and print what was built, without opening the app",
    )
    demo.set_defaults(func=run_demo)


def _run_app(ctx: CliContext) -> int:
    # Textual loads only when the app opens, never for the other verbs.
    from lamina.tui.app import make_app

    try:
        engine = ctx.engine
    except EngineUnavailable as exc:
        # One line in the terminal, and an error view rather than no app at all.
        print(f"lamina: {exc}", file=sys.stderr)
        make_app(None, engine_error=str(exc)).run()
        return 1
    app = make_app(engine)
    app.run()
    return int(app.return_code or 0)


def open_app(args: argparse.Namespace, ctx: CliContext) -> int:
    """Opens the app on the selected engine (``--engine``, ``$LAMINA_ENGINE``)."""
    if not sys.stdout.isatty():
        print(
            "lamina: the app needs a terminal; use `lamina --help` for the commands",
            file=sys.stderr,
        )
        return 2
    return _run_app(ctx)


def run_demo(args: argparse.Namespace, ctx: CliContext) -> int:
    """Creates (or reuses) the demo in the embedded store, then opens the app."""
    from lamina.core import create_demo

    store = ctx.local_store("`lamina demo`", "run it without --engine docker")
    workspace = args.workspace or default_home().parent / "lamina-demo"
    result = create_demo(store, workspace)
    for line in result.summary_lines():
        print(line)
    if args.no_open:
        return 0
    if not sys.stdout.isatty():
        print(
            "lamina: not a terminal, so the app was not opened (use --no-open to silence this)",
            file=sys.stderr,
        )
        return 0
    return _run_app(ctx)
