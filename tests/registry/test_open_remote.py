"""``lamina docker://REF``: a registry image opened without entering the store (fetched
into a temporary layout that goes when the app closes), or pulled with ``--load``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from lamina.core import diff_images
from lamina.core.embedded.engine import EmbeddedEngine
from lamina.tui.cli.app import opening_for
from lamina.tui.cli.context import CliContext


def _files(root: Path) -> set[str]:
    return {str(Path(d) / f) for d, _, fs in os.walk(root) for f in fs}


def test_docker_ref_opens_in_place_and_load_pulls(
    registry: object,
    make_engine: Callable[[str], EmbeddedEngine],
    base_image: Callable[[EmbeddedEngine, str], str],
    add_layer: Callable[[EmbeddedEngine, str, str, dict[str, bytes]], str],
    repo: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    address = registry.address  # type: ignore[attr-defined]
    ref = f"{address}/{repo('remote')}:1"
    origin = make_engine("origin")
    base_image(origin, "base:1")
    image_id = add_layer(origin, "base:1", ref, {"hello.txt": b"hello\n"})
    list(origin.push(ref))

    home = tmp_path / "user-store"
    monkeypatch.setenv("LAMINA_HOME", str(home))
    ctx = CliContext()
    try:
        opening = opening_for(f"docker://{ref}", ctx)
        engine = opening.engine
        assert opening.owned and engine.name == "archive" and opening.focus_image == image_id
        layout = Path(str(engine.path))
        assert layout.is_dir() and _files(layout)
        # The fetched image holds the same files as the pushed one.
        result = diff_images(origin.image_files(ref), engine.image_files(image_id))
        assert result.files == () and result.parted_at is None
        opening.close()
        assert not layout.exists()  # the temporary layout went with it
        assert not home.exists()  # and the user's store was never opened

        # `lamina diff` and `analyze` take the same form, fetched once per command.
        engine, name = ctx.engine_for(f"docker://{ref}")
        assert name == image_id and engine.analyze(name).size_bytes > 0
        assert not home.exists()

        loaded = opening_for(f"docker://{ref}", ctx, load=True)
        assert not loaded.owned and loaded.focus_image == image_id
        assert loaded.engine.image(ref).id == image_id
    finally:
        ctx.close()
