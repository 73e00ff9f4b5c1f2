"""The app's exploring forms: mark an image and compare it with another in the Images
view (keys and mouse), and ``lamina build --open`` (the built image, its build
selected)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from app_workers import workers_done
from textual.widgets import DataTable

from lamina.core import BuildFinished, BuildRequest, Engine, LocalStore, diff_images, open_engine
from lamina.tui.app import make_app
from lamina.tui.cli import main
from lamina.tui.screens.diff import DiffScreen
from lamina.tui.screens.main import MainScreen
from lamina.tui.widgets.builds import BuildsView
from lamina.tui.widgets.images import ImagesView


def _build(engine: Engine, ctx: Path, name: str, files: dict[str, str]) -> BuildFinished:
    for rel, text in files.items():
        (ctx / rel).write_text(text)
    (ctx / f"{name}.Dockerfile").write_text(
        "FROM busybox:latest\n" + "".join(f"COPY {rel} /data/\n" for rel in files)
    )
    request = BuildRequest(
        context=str(ctx), dockerfile=str(ctx / f"{name}.Dockerfile"), tags=(f"{name}:1",)
    )
    done = [e for e in engine.build(request) if isinstance(e, BuildFinished)]
    assert done and done[0].image
    return done[0]


@pytest.fixture
def store(
    lamina_home: Path, busybox_tar: Path, tmp_path: Path
) -> Iterator[tuple[Engine, list[BuildFinished]]]:
    engine = open_engine("embedded", lamina_home)
    assert isinstance(engine, LocalStore)
    engine.import_rootfs(busybox_tar, "busybox:latest")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    built = [
        _build(engine, ctx, "left", {"a.txt": "a\n", "same.txt": "same\n"}),
        _build(engine, ctx, "right", {"b.txt": "bb\n", "same.txt": "same\n"}),
    ]
    yield engine, built
    engine.close()


def _row_of(table: DataTable[str], key: str) -> int:
    return table.get_row_index(key)


async def test_mark_one_image_select_another_and_see_the_diff(
    store: tuple[Engine, list[BuildFinished]],
) -> None:
    engine, (left, right) = store
    assert left.image and right.image
    app = make_app(engine, focus_image=left.image)
    app.settle_delay = 0
    async with app.run_test(size=(120, 36)) as pilot:
        for _ in range(3):
            await workers_done(app)
            await pilot.pause()
        screen = app.screen
        assert isinstance(screen, MainScreen) and screen.active_view == "images"
        images = screen.query_one(ImagesView)
        assert images.selected == left.image
        assert screen.check_action("diff_images", ()) is None  # nothing marked yet: greyed
        await pilot.press("m")
        await pilot.pause()
        assert images.marked == left.image
        table = screen.query_one("#images-table", DataTable)
        table.move_cursor(row=_row_of(table, right.image))
        await pilot.pause()
        assert images.selected == right.image and screen.check_action("diff_images", ()) is True
        await pilot.press("d")
        await pilot.pause()
        diff = app.screen
        assert isinstance(diff, DiffScreen)
        await workers_done(diff)
        await pilot.pause()
        expected = diff_images(engine.image_files("left:1"), engine.image_files("right:1"))
        assert diff.result is not None and diff.result.files == expected.files
        rows = diff.query_one("#diff-table", DataTable)
        assert [str(k.value) for k in rows.rows] == ["/data/a.txt", "/data/b.txt"]
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen


async def test_build_open_selects_the_build(store: tuple[Engine, list[BuildFinished]]) -> None:
    engine, (left, right) = store
    app = make_app(engine, focus_image=left.image, focus_build=left.build_id)
    app.settle_delay = 0
    async with app.run_test(size=(120, 36)) as pilot:
        for _ in range(3):
            await workers_done(app)
            await pilot.pause()
        screen = app.screen
        assert isinstance(screen, MainScreen) and screen.active_view == "builds"
        builds = screen.query_one(BuildsView)
        assert builds.selected_build is not None and builds.selected_build.id == left.build_id
        assert left.build_id != right.build_id
        await pilot.press("2")
        await pilot.pause()
        assert screen.query_one(ImagesView).selected == left.image


def test_build_open_without_a_terminal_builds_then_says_why(
    store: tuple[Engine, list[BuildFinished]], tmp_path: Path
) -> None:
    engine, _ = store
    engine.close()
    ctx = tmp_path / "ctx"
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["build", "-f", str(ctx / "left.Dockerfile"), "--open", str(ctx)])
    assert code == 2 and "the app needs a terminal" in err.getvalue()
    assert "CACHED" in out.getvalue()  # the build ran (from cache) before the refusal
