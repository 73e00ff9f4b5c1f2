"""lamina's Docker-shaped command line.

Each verb group lives in its own module with a ``register(subparsers)`` function that
adds its parsers and sets ``func`` to a handler ``(args, ctx) -> int``. Errors from the
core are printed to stderr as one line and turned into the exit code (1, or 2 for
usage errors); no traceback reaches a user.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from lamina.core import LaminaError, UsageError
from lamina.tui.cli.context import CliContext
from lamina.tui.cli.terminal import EscapingStream, printable

# Verb groups, in the order `lamina --help` lists them.
COMMAND_MODULES = (
    "build",
    "images",
    "diff",
    "analyze",
    "advise",
    "graph",
    "registry",
    "archive",
    "disk",
    "debug",
    "app",
    "serve",
    "completion",
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"lamina: {printable(message)}\n")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lamina", description="Inspect and manage container image layers.")
    parser.add_argument(
        "--engine",
        choices=("embedded", "docker"),
        default=None,
        help="image store to use (default: $LAMINA_ENGINE or embedded)",
    )
    parser.add_argument("--debug", action="store_true", help="log what the engine does")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"lamina.tui.cli.{name}")
        module.register(sub)
    return parser


def _verbs(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def route(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``lamina IMAGE …`` as ``lamina app IMAGE …``: the first word that is neither a
    global option nor a verb names what to open the app on (as ``dive IMAGE`` does)."""
    words = list(argv)
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--engine":
            i += 2
            continue
        if word.startswith("-"):
            i += 1
            continue
        if word not in _verbs(parser):
            words.insert(i, "app")
        break
    return words


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command line; returns its exit code.

    Whatever the command prints, names and messages from archives, configs and
    Dockerfiles included, reaches the terminal with its control characters escaped.
    """
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = EscapingStream(out), EscapingStream(err)
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = out, err


def _main(argv: Sequence[str] | None) -> int:
    parser = make_parser()
    args = parser.parse_args(route(parser, sys.argv[1:] if argv is None else argv))
    # Warnings read like the CLI's other messages; --debug shows where each comes from.
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s:%(name)s:%(message)s"
        if args.debug
        else "lamina: %(levelname)s: %(message)s",
    )
    for level in (logging.WARNING, logging.ERROR, logging.CRITICAL):
        logging.addLevelName(level, logging.getLevelName(level).lower())
    ctx = CliContext(engine_kind=args.engine)
    func = getattr(args, "func", None)
    if func is None:
        # `lamina` alone opens the app on the default store.
        from lamina.tui.cli.app import open_app

        func = open_app
    try:
        code = func(args, ctx)
    except KeyboardInterrupt:
        print("lamina: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        # The reader went away (`lamina images | head`): stop quietly, like docker does.
        # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 141
    except LaminaError as exc:
        print(f"lamina: {printable(str(exc))}", file=sys.stderr)
        code = exc.exit_code
    except Exception as exc:
        # A defect, not a user error: one line all the same (--debug shows where).
        if args.debug:
            raise
        text = printable(str(exc).splitlines()[0]) if str(exc) else ""
        print(
            f"lamina: internal error: {type(exc).__name__}"
            + (f": {text}" if text else "")
            + " (run with --debug for details)",
            file=sys.stderr,
        )
        code = 1
    finally:
        try:
            ctx.close()
        except LaminaError as exc:
            print(f"lamina: {printable(str(exc))}", file=sys.stderr)
    return int(code or 0)


__all__ = ["UsageError", "main", "make_parser", "printable"]


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
