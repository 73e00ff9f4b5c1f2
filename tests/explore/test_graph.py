"""``lamina graph``: the layer graph as Graphviz source, SVG and PNG, shared layers
marked; and the README shows the SVG it draws."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from lamina.core import BuildFinished, BuildRequest, LocalStore, open_engine
from lamina.tui.cli import main

ROOT = Path(__file__).resolve().parents[2]
README_SVG = "screenshots/layer-graph.svg"


@pytest.fixture
def two_images(lamina_home: Path, busybox_tar: Path, tmp_path: Path) -> list[str]:
    """busybox, and two images COPYing on top of it: the base layer is shared by three."""
    engine = open_engine("embedded", lamina_home)
    assert isinstance(engine, LocalStore)
    try:
        engine.import_rootfs(busybox_tar, "busybox:latest")
        ids = []
        for name in ("one", "two"):
            ctx = tmp_path / name
            ctx.mkdir()
            (ctx / f"{name}.txt").write_text(name)
            (ctx / "Dockerfile").write_text(f"FROM busybox:latest\nCOPY {name}.txt /\n")
            events = list(engine.build(BuildRequest(context=str(ctx), tags=(f"{name}:1",))))
            done = [e for e in events if isinstance(e, BuildFinished)]
            assert done and done[0].image
            ids.append(done[0].image)
        return ids
    finally:
        engine.close()


def _graph(*argv: str) -> bytes:
    out = io.BytesIO()
    wrapper = io.TextIOWrapper(out, encoding="utf-8")
    with redirect_stdout(wrapper):
        assert main(["graph", *argv]) == 0
    wrapper.flush()
    return out.getvalue()


def test_dot_marks_the_shared_base(two_images: list[str]) -> None:
    dot = _graph().decode()
    assert dot.startswith("digraph layers {")
    assert dot.count("shared by 3") == 1  # busybox's layer, under all three images
    assert "one:1" in dot and "two:1" in dot
    only_two = _graph("one:1", "two:1").decode()
    assert only_two.count("shared by 2") == 1 and "busybox:latest" not in only_two
    assert len(re.findall(r"-> \"image:", only_two)) == 2


def test_svg_and_png_through_graphviz(two_images: list[str], graphviz: str, tmp_path: Path) -> None:
    svg = tmp_path / "g.svg"
    assert main(["graph", "--format", "svg", "-o", str(svg)]) == 0
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    texts = [t.text or "" for t in root.iter() if t.tag.endswith("text")]
    assert "shared by 3" in texts and "one:1" in texts
    png = tmp_path / "g.png"
    assert main(["graph", "one:1", "--format", "png", "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_readme_shows_the_graph_svg(graphviz: str) -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"]({README_SVG})" in readme
    root = ET.parse(ROOT / README_SVG).getroot()
    texts = [t.text or "" for t in root.iter() if t.tag.endswith("text")]
    assert any(t.startswith("shared by ") for t in texts)
    assert any(t.endswith(":latest") for t in texts)  # image boxes
