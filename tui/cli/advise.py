"""``lamina advise [-f Dockerfile] [CONTEXT]``: how to group and order a Dockerfile for
the cache, proved on its own build history.

Each piece of advice names its rule, the line, what it rests on and what it would have
saved; the rules that rest on the history replay the recorded builds of this Dockerfile
through lamina's cache model with the rewrite, as a dry run. ``--diff`` prints every
rewrite as one patch (``lamina advise --diff | patch -p0`` applies it from the current
directory); ``--format json`` prints a list of ``{"rule", "line", "message", "evidence",
"saving", "diff"}`` objects (and the ``proof``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, TextIO

from lamina.tui.cli import printable
from lamina.tui.cli.context import CliContext
from lamina.tui.format import saving as fmt_saving

if TYPE_CHECKING:
    from lamina.core import AdviceReport

BUILDERS = {"buildkit": "BuildKit's", "classic": "the classic builder's"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``lamina advise``."""
    p = sub.add_parser(
        "advise",
        help="how to group and order a Dockerfile for the cache, proved on its builds",
        description=(
            "Advice on a Dockerfile's layers and cache: each piece with its rule, line,"
            " evidence and saving, replayed on the recorded builds of this Dockerfile."
        ),
    )
    p.add_argument("context", nargs="?", default=".", metavar="CONTEXT", help="the build context")
    p.add_argument("-f", "--file", help="the Dockerfile (default: CONTEXT/Dockerfile)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument(
        "--diff",
        action="store_true",
        help="print the rewrites as one unified diff (apply with patch -p0)",
    )
    p.set_defaults(func=cmd_advise)


def cmd_advise(args: argparse.Namespace, ctx: CliContext, out: TextIO | None = None) -> int:
    """``lamina advise``."""
    out = out or sys.stdout
    # The rules and the replay load here: every other verb's start-up goes without them.
    from lamina.core import advise

    report = advise(ctx.engine, args.context, args.file)
    if args.diff:
        if report.diff:
            out.write(report.diff)
        return 0
    if args.format == "json":
        print(json.dumps(report.to_json(), indent=2), file=out)
        return 0
    for line in report_lines(report):
        print(printable(line) if line else line, file=out)
    return 0


def report_lines(report: AdviceReport) -> list[str]:
    """The table form: a heading, each piece of advice with its evidence, the notes."""
    rules = BUILDERS.get(report.builder, report.builder)
    lines = [
        f"{report.dockerfile}: {report.builds} recorded build"
        f"{'s' if report.builds != 1 else ''}, {report.replayable} replayable ({rules} rules)",
    ]
    if not report.advice:
        lines.append("no advice: nothing to group or reorder")
    for a in report.advice:
        lines.append("")
        lines.append(f"line {a.line}  {a.rule}  {a.message}")
        lines.extend(f"    · {e}" for e in a.evidence)
        saving = fmt_saving(a)
        if saving:
            lines.append(f"    saving: {saving}")
        if a.diff:
            lines.append("    rewrite: lamina advise --diff")
    for note in report.notes:
        lines.append("")
        lines.append(f"note: {note}")
    return lines
