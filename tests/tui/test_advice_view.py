"""Pilot tests: the Learn view shows the advice on the selected build's Dockerfile, and
``a`` opens its rewrite as a diff with its proof."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from advice_builds import Project
from textual.widgets import DataTable, Static

from lamina.core.embedded.engine import EmbeddedEngine
from lamina.tui.screens.advice import AdviceScreen
from lamina.tui.widgets.builds import BuildsView
from lamina.tui.widgets.learn import LearnView

from .test_app import SIZE, main_screen, new_app, settle


@pytest.fixture
def engine(tmp_path: Path, busybox_tar: Path) -> Iterator[EmbeddedEngine]:
    """Two contexts built three times each (COPY only): one sends its .git directory
    into the image, the other does not."""
    engine = EmbeddedEngine(tmp_path / "store")
    engine.import_rootfs(busybox_tar, "busybox:latest")
    leaky = Project(tmp_path / "leaky", engine)
    leaky.write("app.sh", "echo hi\n")
    leaky.dockerfile("FROM busybox\nCOPY . /app\n")
    clean = Project(tmp_path / "clean", engine)
    clean.write("app.sh", "echo hi\n")
    clean.dockerfile("FROM busybox\nCOPY app.sh /app/\n")
    for i in range(3):
        leaky.write(".git/HEAD", f"ref: refs/heads/b{i}\n")
        leaky.build()
        clean.build()
    yield engine
    engine.close()


async def _select_build(app: object, pilot: object, build_id: int) -> None:
    view = main_screen(app).query_one(BuildsView)  # type: ignore[arg-type]
    table = view.query_one("#builds-table", DataTable)
    table.move_cursor(row=table.get_row_index(str(build_id)))
    await pilot.pause()  # type: ignore[attr-defined]
    view.query_one("#steps-table", DataTable).move_cursor(row=1)
    await pilot.pause()  # type: ignore[attr-defined]


async def test_learn_shows_the_advice_and_the_diff_for_the_selected_build(
    engine: EmbeddedEngine,
) -> None:
    builds = engine.builds()
    leaky = next(b for b in builds if b.context.endswith("leaky"))
    clean = next(b for b in builds if b.context.endswith("clean"))
    app = new_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        await settle(app, pilot)
        await _select_build(app, pilot, clean.id)
        await pilot.press("5")
        await settle(app, pilot)
        screen = main_screen(app)
        learn = screen.query_one(LearnView)
        assert learn.build is not None and learn.build.id == clean.id
        text = str(learn.query_one("#advice", Static).render())
        assert "Advice on " in text and "No advice" in text
        # Nothing to rewrite: the key is greyed out, and pressing it opens nothing.
        assert screen.check_action("show_advice", ()) is None
        await pilot.press("a")
        assert not isinstance(app.screen, AdviceScreen)

        await pilot.press("3")
        await _select_build(app, pilot, leaky.id)
        await pilot.press("5")
        await settle(app, pilot)
        assert learn.build is not None and learn.build.id == leaky.id
        text = str(learn.query_one("#advice", Static).render())
        assert "(3 builds, 3 replayable)" in text
        assert "line 2 missing-dockerignore: .git reach the image through COPY on line 2" in text
        assert "saving: reruns 3 → 1 over 3 builds" in text
        assert screen.check_action("show_advice", ()) is True

        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, AdviceScreen)
        body = "\n".join(str(s.render()) for s in app.screen.query(".advice-item"))
        assert "--- /dev/null" in body and "+++ .dockerignore" in body and "+.git" in body
        assert "Proof: the last 3 builds replayed under BuildKit's rules" in body
        assert "The cache model reproduces 3 of the 3 recorded builds" in body
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, AdviceScreen)


async def test_a_dockerfile_gone_from_disk_is_said_in_place_of_the_advice(
    engine: EmbeddedEngine,
) -> None:
    leaky = next(b for b in engine.builds() if b.context.endswith("leaky"))
    Path(leaky.dockerfile).unlink()
    app = new_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        await settle(app, pilot)
        await _select_build(app, pilot, leaky.id)
        await pilot.press("5")
        await settle(app, pilot)
        screen = main_screen(app)
        text = str(screen.query_one(LearnView).query_one("#advice", Static).render())
        assert "no advice: cannot read Dockerfile" in text
        assert not screen.query_one("#error-bar").display
