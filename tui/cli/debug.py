"""``lamina debug``: look inside lamina's own machinery.

``lamina debug parse [FILE]`` prints a Dockerfile's AST in BuildKit's ``Node.Dump()``
format, one ``(instruction ...)`` line each, so it can be compared with BuildKit.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from lamina.core import DockerfileError
from lamina.tui.cli.context import CliContext


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``debug`` and its verbs (``parse``)."""
    debug = sub.add_parser("debug", help="inspect lamina's internals (Dockerfile AST)")
    verbs = debug.add_subparsers(dest="debug_command", metavar="COMMAND", parser_class=type(debug))
    debug.set_defaults(func=_usage(debug))

    p = verbs.add_parser("parse", help="print a Dockerfile's AST like BuildKit's parser dump")
    p.add_argument(
        "file",
        nargs="?",
        default="Dockerfile",
        metavar="FILE",
        help="the Dockerfile (default: ./Dockerfile; - reads standard input)",
    )
    p.set_defaults(func=cmd_parse)


def _usage(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace, CliContext], int]:
    def show(args: argparse.Namespace, ctx: CliContext) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show


def _read(name: str) -> str:
    if name == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(name, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise DockerfileError(f"cannot read: {exc.strerror}", name) from exc
    # Undecodable bytes survive and are dumped as \xHH, as BuildKit does.
    return data.decode("utf-8", "surrogateescape")


def cmd_parse(args: argparse.Namespace, ctx: CliContext) -> int:
    """Print the AST dump of ``args.file``; parse errors name the file and line."""
    from lamina.core import parse_dockerfile

    name = args.file
    shown = "<stdin>" if name == "-" else name
    result = parse_dockerfile(_read(name), shown)
    for warning in result.warnings:
        print(f"lamina: warning: {shown}: {warning}", file=sys.stderr)
    out = sys.stdout
    text = result.dump() + "\n"
    if hasattr(out, "buffer"):
        out.flush()
        out.buffer.write(text.encode("utf-8", "surrogateescape"))
        out.buffer.flush()
    else:
        out.write(text)
    return 0
