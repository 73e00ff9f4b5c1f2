"""Regenerates the README's screenshots from the real app on a freshly built demo store.

    python screenshots/generate.py [--out screenshots] [--size 120x36]

Builds the demo (``lamina.core.demo.workspace``) in a temporary store, opens every view in a
Pilot run, saves each as SVG with ``app.save_screenshot`` and converts it to PNG with
cairosvg. Also saves the Layers and Builds views at 80x24, the smallest supported size,
and draws the demo's layer graph with ``lamina graph --format svg`` (``layer-graph.svg``,
needs Graphviz's dot).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("screenshots")

HERE = Path(__file__).resolve().parent


async def _settle(app: Any, pilot: Any) -> None:
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()


async def _select_build_with(app: Any, pilot: Any, kind: str) -> None:
    """Highlights the first rebuild (a build with hits) and step whose reason is ``kind``."""
    from textual.widgets import DataTable

    from lamina.tui.widgets.builds import BuildsView

    view = app.screen.query_one(BuildsView)
    for build in view.builds:
        if not any(s.cached for s in build.steps):
            continue  # a first build misses everywhere: not the story of a rebuild
        for i, step in enumerate(build.steps):
            if (step.reason or {}).get("kind") == kind:
                table = view.query_one("#builds-table", DataTable)
                table.move_cursor(row=table.get_row_index(str(build.id)))
                await pilot.pause()
                view.query_one("#steps-table", DataTable).move_cursor(row=i)
                await pilot.pause()
                return


Shot = tuple[str, tuple[int, int], Callable[[Any, Any], Awaitable[None]]]


def _press(*keys: str) -> Callable[[Any, Any], Awaitable[None]]:
    async def run(app: Any, pilot: Any) -> None:
        for key in keys:
            await pilot.press(key)
            await _settle(app, pilot)

    return run


async def _builds(app: Any, pilot: Any) -> None:
    await _press("3")(app, pilot)
    await _select_build_with(app, pilot, "instruction_changed")


async def _learn(app: Any, pilot: Any) -> None:
    await _press("3")(app, pilot)
    await _select_build_with(app, pilot, "sources_changed")
    await _press("5")(app, pilot)


async def _learn_builders(app: Any, pilot: Any) -> None:
    # The tour's last stop: the LABEL edit where BuildKit and the classic builder part.
    from lamina.tui.widgets.learn import TOUR

    await _press("5", *["n"] * (len(TOUR) - 1))(app, pilot)


async def _layers(app: Any, pilot: Any) -> None:
    # Two steps down the shared base: a RUN layer with its files.
    await _press("down", "down")(app, pilot)


SHOTS: list[Shot] = [
    ("layers", (120, 36), _layers),
    ("images", (120, 36), _press("2")),
    ("builds", (120, 36), _builds),
    ("disk", (120, 36), _press("4")),
    ("prune-confirm", (120, 36), _press("4", "p")),
    ("learn", (120, 36), _learn),
    ("learn-builders", (120, 36), _learn_builders),
    ("help", (120, 36), _press("question_mark")),
    ("layers-80x24", (80, 24), _press()),
    ("builds-80x24", (80, 24), _builds),
]


async def _shoot(
    home: Path,
    out: Path,
    name: str,
    size: tuple[int, int],
    steps: Callable[[Any, Any], Awaitable[None]],
) -> Path:
    from lamina.core.open import open_engine
    from lamina.tui.app import make_app

    engine = open_engine("embedded", home)
    try:
        app = make_app(engine)
        app.settle_delay = 0  # every detail pane filled before the shot
        async with app.run_test(size=size) as pilot:
            await _settle(app, pilot)
            await steps(app, pilot)
            await _settle(app, pilot)
            svg = Path(app.save_screenshot(f"{name}.svg", path=str(out)))
    finally:
        engine.close()
    return svg


def _to_png(svg: Path) -> Path:
    import cairosvg  # type: ignore[import-untyped]

    png = svg.with_suffix(".png")
    cairosvg.svg2png(url=str(svg), write_to=str(png))
    return png


GRAPH = "layer-graph"


def _graph(home: Path, out: Path) -> Path:
    """The demo's tagged images and the layers they share, drawn by Graphviz."""
    from lamina.core.open import open_engine
    from lamina.tui.cli.graph import dot_source, render

    engine = open_engine("embedded", home)
    try:
        images = [i for i in engine.images() if i.tags]
        source = dot_source(images, engine.layers(), {})
    finally:
        engine.close()
    svg = out / f"{GRAPH}.svg"
    svg.write_bytes(render(source, "svg"))
    return svg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where to write the images")
    parser.add_argument("--only", nargs="*", default=None, help="only these shots (by name)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from lamina.core.demo.workspace import create_demo
    from lamina.core.embedded.store import Store

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lamina-screens-") as tmp:
        home = Path(tmp) / "store"
        store = Store(home)
        try:
            result = create_demo(store, Path(tmp) / "demo")
        finally:
            store.close()
        for note in result.notes:
            log.warning("demo: %s", note)
        for name, size, steps in SHOTS:
            if args.only and name not in args.only:
                continue
            svg = asyncio.run(_shoot(home, args.out, name, size, steps))
            png = _to_png(svg)
            log.info("wrote %s and %s", svg.name, png.name)
        if not args.only or GRAPH in args.only:
            log.info("wrote %s", _graph(home, args.out).name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
