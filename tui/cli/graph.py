"""``lamina graph [IMAGES…]``: the layer graph as a picture, for slides and docs.

Each layer is a node under its parent, labelled with its instruction and size; each
image is a tag box pointing at its top layer. A layer two or more of the drawn images
share is filled and says ``shared by N``. ``--format dot`` prints Graphviz's source;
``svg`` and ``png`` run Graphviz's ``dot`` (Debian's ``graphviz`` package).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lamina.core import LaminaError, short_digest
from lamina.tui.cli.context import CliContext
from lamina.tui.format import instruction, size

if TYPE_CHECKING:
    from lamina.core import ImageSummary, LayerInfo

LABEL_WIDTH = 48
DOT_TIMEOUT = 120


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``lamina graph``."""
    p = sub.add_parser(
        "graph",
        help="draw the layer graph (shared layers marked) as Graphviz dot, SVG or PNG",
        description=(
            "Draw the layers of the given images (default: every image) as a graph: each "
            "layer under its parent, each image at its top layer, the layers the images "
            "share marked. svg and png need Graphviz's dot."
        ),
    )
    p.add_argument("images", metavar="IMAGE", nargs="*", help="images to draw (default: all)")
    p.add_argument("--format", choices=("dot", "svg", "png"), default="dot")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(func=cmd_graph)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _short(text: str, width: int = LABEL_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def dot_source(
    images: list[ImageSummary], layers: list[LayerInfo], instructions: dict[str, str]
) -> str:
    """Graphviz source for ``images`` and the layers they stand on.

    Args:
        images: the images to draw.
        layers: every layer the engine knows (only the images' layers are drawn).
        instructions: chainID -> instruction, for layers whose record has none.
    """
    from lamina.tui.graph import LayerGraph

    graph = LayerGraph(images, layers, instructions)
    wanted = {c for image in images for c in image.layers}
    out = [
        "digraph layers {",
        "  rankdir=TB;",
        '  graph [fontname="Helvetica", bgcolor="white", nodesep=0.3, ranksep=0.35];',
        '  node [shape=box, style="rounded", fontname="Helvetica", fontsize=10];',
        '  edge [color="#888888", arrowsize=0.6];',
    ]
    for chain_id in sorted(
        wanted, key=lambda c: (graph.by_id[c].created, c) if c in graph.by_id else (0, c)
    ):
        users = sum(1 for image in images if chain_id in image.layers)
        text = instruction(graph.created_by(chain_id)) or "(no history)"
        label = f"{_short(text)}\n{short_digest(chain_id)}  {size(graph.layer_size(chain_id))}"
        if users > 1:
            label += f"\nshared by {users}"
            style = 'style="rounded,filled", fillcolor="#ffe9a8", color="#c28f00", penwidth=2'
        else:
            style = 'color="#5b7db1"'
        out.append(f"  {_quote(chain_id)} [label={_quote(label)}, {style}];")
        layer = graph.by_id.get(chain_id)
        if layer is not None and layer.parent in wanted:
            out.append(f"  {_quote(layer.parent or '')} -> {_quote(chain_id)};")
    for image in images:
        name = ", ".join(image.tags) or f"<none> {short_digest(image.id)}"
        node = "image:" + image.id
        out.append(
            f"  {_quote(node)} [label={_quote(name)}, shape=note, style=filled, "
            'fillcolor="#d7e8ff", color="#3566a8"];'
        )
        if image.layers:
            out.append(
                f'  {_quote(image.layers[-1])} -> {_quote(node)} [style=dashed, color="#3566a8"];'
            )
    out.append("}")
    return "\n".join(out) + "\n"


def render(source: str, fmt: str) -> bytes:
    """Runs Graphviz's ``dot`` on ``source``.

    Raises:
        LaminaError: ``dot`` is missing or fails.
    """
    import shutil
    import subprocess

    dot = shutil.which("dot")
    if dot is None:
        raise LaminaError(
            f"--format {fmt} needs Graphviz's dot (apt-get install graphviz); "
            "--format dot prints its source"
        )
    try:
        done = subprocess.run(
            [dot, f"-T{fmt}"], input=source.encode(), capture_output=True, timeout=DOT_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LaminaError(f"dot failed: {exc}") from exc
    if done.returncode != 0:
        first = done.stderr.decode(errors="replace").strip().splitlines()
        raise LaminaError(f"dot failed: {first[0] if first else f'exit {done.returncode}'}")
    return done.stdout


def cmd_graph(args: argparse.Namespace, ctx: CliContext) -> int:
    """``lamina graph``."""
    engine = ctx.engine
    if args.images:
        images = list({i.id: i for i in (engine.image(r) for r in args.images)}.values())
    else:
        images = engine.images()
    layers = engine.layers()
    instructions: dict[str, str] = {}
    if any(not layer.created_by for layer in layers):
        for image in images:
            for entry in engine.history(image.id):
                if entry.chain_id and entry.created_by:
                    instructions.setdefault(entry.chain_id, entry.created_by)
    source = dot_source(images, layers, instructions)
    data = source.encode() if args.format == "dot" else render(source, args.format)
    if args.output:
        try:
            Path(args.output).write_bytes(data)
        except OSError as exc:
            raise LaminaError(f"{args.output}: cannot write: {exc.strerror}") from exc
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0
