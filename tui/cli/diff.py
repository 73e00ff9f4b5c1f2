"""``lamina diff A B``: what separates two images, file by file, and which instruction
explains each difference.

The text output lists the shared layers, the first layer where the stacks part, then
one line per differing path: ``+`` only in B, ``-`` only in A, ``~`` in both but
different (what differs in brackets), with sizes and the history line behind it.
``--format json`` prints the whole comparison as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, TextIO

from lamina.core import short_digest
from lamina.tui.cli.context import CliContext
from lamina.tui.format import instruction, size

if TYPE_CHECKING:
    from lamina.core import FileDiff, ImageDiff


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``lamina diff``."""
    p = sub.add_parser(
        "diff",
        help="compare two images: shared layers, where they part, every file that differs",
        description=(
            "Compare image A with image B: the layers they share, the first layer where "
            "they part, and every file added, removed or changed (content, mode, owner, "
            "link target) with its size and the instruction that explains it."
        ),
    )
    p.add_argument("a", metavar="IMAGE_A", help="a tag or ID, or an archive (docker-archive:PATH…)")
    p.add_argument("b", metavar="IMAGE_B", help="likewise")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument(
        "--exit-code",
        action="store_true",
        help="exit with 1 when the images differ, 0 when they hold the same files (like git)",
    )
    p.set_defaults(func=cmd_diff)


def cmd_diff(args: argparse.Namespace, ctx: CliContext, out: TextIO | None = None) -> int:
    """``lamina diff A B``; with ``--exit-code``, 1 when the images differ."""
    from lamina.core import diff_images

    out = out or sys.stdout
    sides = []
    for ref in (args.a, args.b):
        engine, name = ctx.engine_for(ref)
        sides.append(replace(engine.image_files(name), ref=ref))
    result = diff_images(sides[0], sides[1])
    if args.format == "json":
        print(json.dumps(result.to_json(), indent=2), file=out)
    else:
        for line in diff_lines(result):
            print(line, file=out)
    return 1 if (args.exit_code and result.files) else 0


def _why(f: FileDiff) -> str:
    parts = []
    if f.a is not None and f.change != "added":
        parts.append(f"A#{f.a.layer} {instruction(f.a.created_by) or '(no history)'}")
    if f.b is not None:
        verb = "deleted by " if f.b.deleted else ""
        parts.append(f"B#{f.b.layer} {verb}{instruction(f.b.created_by) or '(no history)'}")
    return "; ".join(parts)


def diff_lines(result: ImageDiff) -> list[str]:
    """The text report, one string per line."""
    lines = [
        f"A: {result.a} ({short_digest(result.a_id)})",
        f"B: {result.b} ({short_digest(result.b_id)})",
        f"Shared layers: {len(result.shared)}",
    ]
    for layer in result.shared:
        lines.append(
            f"  #{layer.index}  {short_digest(layer.chain_id)}  {instruction(layer.created_by)}"
        )
    if result.parted_at is None:
        lines.append("The images have the same layers.")
    else:
        lines.append(f"Parted at layer #{result.parted_at}:")
        for side, layers in (("A", result.only_a), ("B", result.only_b)):
            if not layers:
                lines.append(f"  {side}  (no more layers)")
            for layer in layers:
                lines.append(
                    f"  {side}#{layer.index}  {short_digest(layer.chain_id)}  "
                    f"{instruction(layer.created_by)}"
                )
    lines.append(
        f"Files: {result.count('added')} added ({size(result.bytes_added)}), "
        f"{result.count('removed')} removed ({size(result.bytes_removed)}), "
        f"{result.count('changed')} changed"
    )
    for f in result.files:
        if f.change == "added":
            mark, sizes = "+", size(f.size_b)
        elif f.change == "removed":
            mark, sizes = "-", size(f.size_a)
        else:
            mark = "~"
            sizes = (
                size(f.size_b) if f.size_a == f.size_b else f"{size(f.size_a)} → {size(f.size_b)}"
            )
        what = f" [{', '.join(f.what)}]" if f.what else ""
        lines.append(f"{mark} {f.path}{what}  {sizes}  {_why(f)}")
    return lines
