"""Opening the app on an archive without loading it: docker-archive, OCI archive and
OCI layout folder are read where they lie, the user's store stays byte for byte as it
was, and the app opens on the archive's image. ``--load`` loads it instead."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from app_workers import workers_done

from lamina.core import ArchiveError, LocalStore, NotFound, UsageError, open_archive, open_engine
from lamina.tui.app import make_app
from lamina.tui.cli import make_parser, route
from lamina.tui.cli.app import opening_for
from lamina.tui.cli.context import CliContext
from lamina.tui.screens.main import MainScreen
from lamina.tui.widgets.images import ImagesView

DIVE = "images/dive"


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its type, mode and content digest."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
            out[str(path.relative_to(root))] = f"{st.st_mode:o} {st.st_size} {digest}"
    return out


@pytest.fixture
def user_store(lamina_home: Path, busybox_tar: Path) -> Iterator[Path]:
    """The user's store, holding one image, closed before the test looks at it."""
    engine = open_engine("embedded", lamina_home)
    assert isinstance(engine, LocalStore)
    engine.import_rootfs(busybox_tar, "busybox:latest")
    engine.close()
    return lamina_home


@pytest.fixture
def oci_dir(conformance: Path, tmp_path: Path) -> Path:
    """dive's OCI fixture unpacked into a layout folder."""
    dest = tmp_path / "layout"
    with tarfile.open(conformance / DIVE / "test-oci-gzip-image.tar") as tar:
        tar.extractall(dest, filter="data")
    return dest


async def _open_app_on(spec: str) -> tuple[str, str, int]:
    """Opens the app as ``lamina SPEC`` does; returns the view, selection and layer count."""
    ctx = CliContext()
    opening = opening_for(spec, ctx)
    try:
        assert opening.owned and opening.engine.name == "archive"
        app = make_app(opening.engine, focus_image=opening.focus_image)
        app.settle_delay = 0
        async with app.run_test(size=(120, 36)) as pilot:
            await workers_done(app)
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, MainScreen)
            await workers_done(app)
            await pilot.pause()
            assert not screen.query_one("#error-bar").display  # every view read the archive
            view = screen.active_view
            selected = screen.query_one(ImagesView).selected or ""
            layers = len(opening.engine.layers())
            await pilot.press("1")  # the Layers view reads the archive's layers too
            await workers_done(app)
            await pilot.pause()
            assert screen.active_view == "layers"
        return view, selected, layers
    finally:
        opening.close()
        ctx.close()


@pytest.mark.parametrize(
    ("form", "fixture", "tags", "layers"),
    [
        ("docker-archive", "test-docker-image.tar", ("dive-test:latest",), 14),
        ("oci-archive", "test-oci-gzip-image.tar", (), 1),
        ("oci-archive", "test-oci-zstd-image.tar", (), 1),
    ],
)
async def test_the_app_opens_on_an_archive_and_the_store_is_untouched(
    user_store: Path, conformance: Path, form: str, fixture: str, tags: tuple[str, ...], layers: int
) -> None:
    before = snapshot(user_store)
    archive = conformance / DIVE / fixture
    view, selected, count = await _open_app_on(f"{form}:{archive}")
    assert view == "images" and selected.startswith("sha256:") and count == layers
    engine = open_archive(archive)
    try:
        assert engine.images()[0].tags == tags and engine.images()[0].id == selected
    finally:
        engine.close()
    assert snapshot(user_store) == before


async def test_the_app_opens_on_an_oci_layout_folder_and_changes_nothing(
    user_store: Path, oci_dir: Path
) -> None:
    before, layout_before = snapshot(user_store), snapshot(oci_dir)
    view, selected, count = await _open_app_on(f"oci:{oci_dir}")
    assert view == "images" and count == 1
    index = json.loads((oci_dir / "index.json").read_text())
    manifest = json.loads(
        (oci_dir / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text()
    )
    assert selected == manifest["config"]["digest"]  # the image ID is its config's digest
    assert snapshot(user_store) == before
    assert snapshot(oci_dir) == layout_before


def test_an_archive_reads_as_dive_reads_it(conformance: Path) -> None:
    expected = json.loads(
        (conformance / DIVE / "expected/test-docker-image.analysis.json").read_text()
    )
    engine = open_archive(conformance / DIVE / "test-docker-image.tar")
    try:
        analysis = engine.analyze("dive-test:latest")
        assert analysis.efficiency == expected["analysis"]["efficiency"]
        assert analysis.wasted_bytes == expected["analysis"]["wastedBytes"]
        assert analysis.size_bytes == expected["analysis"]["sizeBytes"]
        history = engine.history("dive-test")
        assert [e.chain_id for e in history if e.chain_id][::-1] == list(
            engine.image("dive-test:latest").layers
        )
        top = engine.image("dive-test:latest").layers[-1]
        changes = engine.layer_changes(top)
        assert changes and all(c.change in ("added", "modified", "deleted") for c in changes)
        with pytest.raises(UsageError, match="--load"):
            engine.tag("dive-test:latest", "other:1")
        with pytest.raises(NotFound):
            engine.image("nothing:here")
    finally:
        engine.close()


def test_a_layer_that_does_not_match_its_diff_id_is_refused(
    conformance: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "layout"
    with tarfile.open(conformance / DIVE / "test-oci-uncompressed-image.tar") as tar:
        tar.extractall(dest, filter="data")
    index = json.loads((dest / "index.json").read_text())
    manifest = json.loads((dest / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    layer = dest / "blobs/sha256" / manifest["layers"][0]["digest"][7:]
    data = bytearray(layer.read_bytes())
    data[600] ^= 0xFF  # one byte of a file's content
    layer.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="does not match"):
        open_archive(dest)


def test_load_loads_the_archive_into_the_store(user_store: Path, conformance: Path) -> None:
    ctx = CliContext()
    try:
        opening = opening_for(
            f"docker-archive:{conformance / DIVE / 'test-docker-image.tar'}", ctx, load=True
        )
        assert not opening.owned and opening.engine.name == "embedded"
        assert "dive-test:latest" in opening.engine.image(opening.focus_image or "").tags
    finally:
        ctx.close()


def test_an_image_of_the_current_engine_is_opened_by_name(user_store: Path) -> None:
    ctx = CliContext()
    try:
        opening = opening_for("busybox", ctx)
        assert (
            not opening.owned and opening.focus_image == opening.engine.image("busybox:latest").id
        )
        with pytest.raises(NotFound):
            opening_for("no-such-image", ctx)
    finally:
        ctx.close()


def test_a_word_that_is_not_a_verb_opens_the_app_on_it() -> None:
    parser = make_parser()
    assert route(parser, ["busybox"]) == ["app", "busybox"]
    assert route(parser, ["--engine", "docker", "oci:/x"]) == [
        "--engine",
        "docker",
        "app",
        "oci:/x",
    ]
    assert route(parser, ["images", "-a"]) == ["images", "-a"]
    assert route(parser, []) == []
    args = parser.parse_args(route(parser, ["docker-archive:/tmp/x.tar", "--load"]))
    assert args.command == "app" and args.image == "docker-archive:/tmp/x.tar" and args.load


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (b'{"rootfs": {"diff_ids": []}, "x": NaN}', "not valid JSON"),
        (b'{"a": ' * 70 + b"1" + b"}" * 70, "nested more than 64"),
    ],
)
def test_an_archive_is_held_to_load_s_bounds(tmp_path: Path, config: bytes, message: str) -> None:
    layout = tmp_path / "layout"
    (layout / "blobs").mkdir(parents=True)
    (layout / "manifest.json").write_text('[{"Config": "blobs/config.json", "Layers": []}]')
    (layout / "blobs/config.json").write_bytes(config)
    with pytest.raises(ArchiveError, match=message):
        open_archive(layout)
