"""Pilot tests: every view and action of the app over real stores."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from app_workers import workers_done
from textual.widgets import DataTable, Input, Static, TabbedContent, Tree
from textual.worker import WorkerFailed

from lamina.core.engine import Engine
from lamina.tui.app import LaminaApp, make_app
from lamina.tui.format import instruction
from lamina.tui.screens.confirm import ConfirmPruneScreen, WhatIfScreen
from lamina.tui.screens.help import HelpScreen
from lamina.tui.screens.main import MainScreen
from lamina.tui.widgets.builds import BuildsView
from lamina.tui.widgets.disk import DiskView
from lamina.tui.widgets.images import ImagesView
from lamina.tui.widgets.layers import LayersView
from lamina.tui.widgets.learn import LearnView

from .conftest import break_layer, fixed_clock, open_embedded

SIZE = (120, 36)


def new_app(engine: Engine) -> LaminaApp:
    """The app with a fixed clock, reading details at once instead of after a rest."""
    app = make_app(engine, clock=fixed_clock)
    app.settle_delay = 0
    return app


async def settle(app: LaminaApp, pilot: object) -> None:
    """Waits for every worker and for the messages they posted."""
    for _ in range(3):
        try:
            await workers_done(app)
        except WorkerFailed:
            pass  # the app reports it (the error tests assert on that), not the test harness
        await pilot.pause()  # type: ignore[attr-defined]


def main_screen(app: LaminaApp) -> MainScreen:
    screen = next(s for s in app.screen_stack if isinstance(s, MainScreen))
    return screen


def static_text(app: LaminaApp, selector: str) -> str:
    return str(main_screen(app).query_one(selector, Static).render())


# ------------------------------------------------------------------- Layers


@pytest.mark.root
async def test_layers_tree_shows_shared_layers_tags_and_files(demo_engine: Engine) -> None:
    app = new_app(demo_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        view = main_screen(app).query_one(LayersView)
        graph = view.graph
        assert graph is not None and graph.layers
        tree = view.query_one("#layer-tree", Tree)
        labels = [str(tree.get_node_at_line(i).label) for i in range(tree.last_line + 1)]
        # The busybox base is shared by every built image (all but the two imported
        # releases, which have bases of their own), and says so.
        base = max(graph.roots, key=graph.share_count)
        built = [i for i in graph.images if i.layers and i.layers[0] == base]
        assert graph.share_count(base) == len(built) == len(graph.images) - 2
        assert labels[0].startswith(f"×{len(built)} ")
        assert any("◆ demo-app:latest" in label for label in labels)
        assert any("<none>" in label for label in labels)  # the dangling images
        # The first layer is selected and its files are listed.
        assert view.selected == base
        assert "(base layer)" in static_text(app, "#layer-info")
        # Disk accounting says how many cache entries keep the layer (the demo has some).
        assert "build cache entries keep it" in static_text(app, "#layer-info")
        table = view.query_one("#file-changes", DataTable)
        assert table.row_count == len(view.changes) > 10
        assert all(c.change == "added" for c in view.changes)

        # Move down the graph: the next layer's instruction and files follow.
        await pilot.press("down")
        await settle(app, pilot)
        assert view.selected != base
        layer = graph.by_id[view.selected]
        assert layer.parent is not None
        assert view.changes_for == view.selected
        made_by = instruction(graph.created_by(view.selected))
        assert made_by and made_by[:30] in static_text(app, "#layer-info")

        # Full digests on demand.
        assert layer.chain_id not in static_text(app, "#layer-info")
        await pilot.press("f")
        assert layer.chain_id in static_text(app, "#layer-info")


@pytest.mark.root
async def test_layer_file_filter(demo_engine: Engine) -> None:
    app = new_app(demo_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        view = main_screen(app).query_one(LayersView)
        total = len(view.changes)
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"busybox")
        await pilot.pause()
        shown = view.visible_changes()
        assert 0 < len(shown) < total
        assert all("busybox" in c.path for c in shown)
        assert view.query_one("#file-changes", DataTable).row_count == len(shown)
        assert f"showing {len(shown)} of {total}" in static_text(app, "#file-summary")


# ------------------------------------------------------------------- Images


@pytest.mark.root
async def test_images_table_sorts_and_shows_history_and_analysis(demo_engine: Engine) -> None:
    app = new_app(demo_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await settle(app, pilot)
        view = main_screen(app).query_one(ImagesView)
        assert main_screen(app).query_one(TabbedContent).active == "images"
        table = view.query_one("#images-table", DataTable)
        assert table.row_count == len(demo_engine.images())
        sizes = [view.rows[i][1]["size"] for i in view.sorted_ids()]
        assert sizes == sorted(sizes, reverse=True)
        # Shared + unique = size, and demo-tools shares everything demo-app has.
        for _image, row in view.rows.values():
            assert row["shared"] + row["unique"] == row["size"]
        await pilot.press("s")
        assert view.sort_key == "shared"
        shared = [view.rows[i][1]["shared"] for i in view.sorted_ids()]
        assert shared == sorted(shared, reverse=True)
        await pilot.press("S")
        shared = [view.rows[i][1]["shared"] for i in view.sorted_ids()]
        assert shared == sorted(shared)
        # Details of the selected image: history rows and dive's analysis.
        await settle(app, pilot)
        history = view.query_one("#history-table", DataTable)
        assert view.history_for == view.selected
        assert history.row_count == len(demo_engine.history(view.selected))
        assert view.analysis is not None
        assert 0 < view.analysis.efficiency <= 1
        assert "efficiency" in str(view.query_one("#analysis", Static).render())


@pytest.mark.root
async def test_clicking_a_header_sorts_by_it(demo_engine: Engine) -> None:
    app = new_app(demo_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await settle(app, pilot)
        view = main_screen(app).query_one(ImagesView)
        table = view.query_one("#images-table", DataTable)
        x = 0
        for key, column in table.columns.items():
            if key.value == "created":
                break
            x += column.get_render_width(table)
        await pilot.click("#images-table", offset=(x + 2, 0))
        await pilot.pause()
        assert view.sort_key == "created"
        created = [view.rows[i][1]["created"] for i in view.sorted_ids()]
        assert created == sorted(created, reverse=True)
        await pilot.click("#images-table", offset=(x + 2, 0))
        await pilot.pause()
        assert not view.sort_reverse


async def test_images_analysis_matches_dive(dive_engine: Engine, conformance: Path) -> None:
    import json

    expected = json.loads(
        (conformance / "images/dive/expected/test-docker-image.analysis.json").read_text()
    )["analysis"]
    app = new_app(dive_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await settle(app, pilot)
        view = main_screen(app).query_one(ImagesView)
        assert view.analysis is not None
        assert view.analysis.efficiency == expected["efficiency"]
        assert view.analysis.wasted_bytes == expected["wastedBytes"]
        text = str(view.query_one("#analysis", Static).render())
        assert "98.4421 %" in text and "32,025 bytes" in text
        wasted = view.query_one("#wasted-table", DataTable)
        assert wasted.row_count == 3
        # Loaded layers record no instruction; the tree takes it from the image's history.
        tree = main_screen(app).query_one(LayersView).query_one("#layer-tree", Tree)
        labels = [str(tree.get_node_at_line(i).label) for i in range(tree.last_line + 1)]
        assert len(labels) == 14
        assert any("RUN mkdir -p /root/example/really/nested" in label for label in labels)
        assert not any("no instruction recorded" in label for label in labels)


# ------------------------------------------------------------------- Builds


@pytest.mark.root
async def test_builds_show_hits_misses_and_reasons(demo_engine: Engine) -> None:
    app = new_app(demo_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        await settle(app, pilot)
        view = main_screen(app).query_one(BuildsView)
        builds = demo_engine.builds()
        assert [b.id for b in view.builds] == [b.id for b in builds]
        table = view.query_one("#builds-table", DataTable)
        assert table.row_count == len(builds)
        # Select the "edited a line" build: its steps say why they missed.
        edited = next(
            b
            for b in builds
            if any((s.reason or {}).get("kind") == "instruction_changed" for s in b.steps)
            and b.steps[0].instruction.startswith("FROM lamina-demo")
            and any(s.cached for s in b.steps)
        )
        table.move_cursor(row=table.get_row_index(str(edited.id)))
        await pilot.pause()
        assert view.selected_id == edited.id
        steps = view.query_one("#steps-table", DataTable)
        assert steps.row_count == len(edited.steps)
        cells = [" ".join(str(c) for c in steps.get_row_at(i)) for i in range(steps.row_count)]
        assert any("HIT" in c for c in cells)
        assert any("MISS" in c and "instruction changed" in c for c in cells)
        assert any("was not cached" in c for c in cells)


@pytest.mark.root
async def test_rebuild_hits_every_step(fresh_demo: Path) -> None:
    engine = open_embedded(fresh_demo)
    try:
        app = new_app(engine)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await pilot.press("3")
            await settle(app, pilot)
            view = main_screen(app).query_one(BuildsView)
            before = len(view.builds)
            newest = view.builds[0]
            assert view.selected_id == newest.id
            await pilot.press("r")
            await settle(app, pilot)
            assert len(view.builds) == before + 1
            rebuilt = view.builds[0]
            assert rebuilt.status == "ok"
            assert rebuilt.dockerfile == newest.dockerfile
            assert [s.cached for s in rebuilt.steps if s.cached is not None]
            assert all(s.cached for s in rebuilt.steps if s.cached is not None)
            assert view.selected_id == rebuilt.id
            log_lines = view.query_one("#build-log").lines  # type: ignore[attr-defined]
            assert any("HIT" in line for line in log_lines)
            assert not main_screen(app).building
    finally:
        engine.close()


@pytest.mark.root
async def test_what_if_predicts_then_cancel_builds_nothing(fresh_demo: Path) -> None:
    workspace = fresh_demo.parent / "ws"
    engine = open_embedded(fresh_demo)
    try:
        app = new_app(engine)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await pilot.press("3")
            await settle(app, pilot)
            view = main_screen(app).query_one(BuildsView)
            before = [b.id for b in engine.builds()]
            # Select the newest demo-app build and edit its Dockerfile: what-if says MISS.
            app_build = next(b for b in view.builds if "demo-app:latest" in b.tags)
            table = view.query_one("#builds-table", DataTable)
            table.move_cursor(row=table.get_row_index(str(app_build.id)))
            await pilot.pause()
            dockerfile = workspace / "app" / "Dockerfile"
            dockerfile.write_text(dockerfile.read_text().replace("greeting=hi", "greeting=hey"))
            await pilot.press("w")
            await settle(app, pilot)
            assert isinstance(app.screen, WhatIfScreen)
            predicted = app.screen.steps
            misses = [s for s in predicted if s.cached is False]
            assert misses and (misses[0].reason or {}).get("kind") == "instruction_changed"
            assert any(s.cached for s in predicted)
            body = str(app.screen.query_one("#dialog-text", Static).render())
            assert "would have" in body and "MISS" in body
            await pilot.press("n")
            await settle(app, pilot)
            assert isinstance(app.screen, MainScreen)
            assert [b.id for b in engine.builds()] == before

            # Ask again and confirm: the prediction becomes a real build that misses there.
            await pilot.press("w")
            await settle(app, pilot)
            assert isinstance(app.screen, WhatIfScreen)
            await pilot.press("y")
            await settle(app, pilot)
            builds = engine.builds()
            assert len(builds) == len(before) + 1
            built = builds[0]
            assert built.status == "ok"
            assert [s.cached for s in built.steps] == [s.cached for s in predicted]
            assert view.selected_id == built.id
    finally:
        engine.close()


@pytest.mark.root
async def test_cancel_stops_a_running_rebuild(fresh_demo: Path) -> None:
    import time

    workspace = fresh_demo.parent / "ws"
    engine = open_embedded(fresh_demo)
    try:
        image_before = engine.image("demo-app:latest").id
        app = new_app(engine)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await pilot.press("3")
            await settle(app, pilot)
            view = main_screen(app).query_one(BuildsView)
            app_build = next(b for b in view.builds if "demo-app:latest" in b.tags)
            table = view.query_one("#builds-table", DataTable)
            table.move_cursor(row=table.get_row_index(str(app_build.id)))
            await pilot.pause()
            # A step that would run for a minute, so there is something to cancel.
            dockerfile = workspace / "app" / "Dockerfile"
            dockerfile.write_text(
                dockerfile.read_text().replace(
                    'RUN echo "greeting=hi"', 'RUN sleep 60; echo "greeting=hi"'
                )
            )
            started = time.monotonic()
            await pilot.press("r")
            # Wait (bounded) until the RUN step is under way.
            for _ in range(600):
                running = engine.builds(limit=1)[0]
                if running.status == "running" and any(s for s in running.steps):
                    break
                await pilot.pause(0.05)
            assert main_screen(app).building
            await pilot.press("x")
            # A cancelled thread worker counts as done at once; its thread winds the
            # build down (kills the sandbox, records the cancellation) right after.
            while main_screen(app).building and time.monotonic() - started < 45:
                await pilot.pause(0.05)
            await settle(app, pilot)
            assert not main_screen(app).building, "cancel did not stop the sleeping step"
            newest = engine.builds(limit=1)[0]
            assert newest.status == "cancelled"
            assert "cancelled" in " ".join(view.query_one("#build-log").lines)  # type: ignore[attr-defined]
            # No image, no tag moved.
            assert engine.image("demo-app:latest").id == image_before
    finally:
        engine.close()


# --------------------------------------------------------------------- Disk


@pytest.mark.root
async def test_prune_dangling_cancel_then_confirm(fresh_demo: Path) -> None:
    engine = open_embedded(fresh_demo)
    try:
        dangling_before = [i.id for i in engine.images() if i.dangling]
        assert dangling_before
        app = new_app(engine)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await pilot.press("4")
            await settle(app, pilot)
            disk = main_screen(app).query_one(DiskView)
            assert disk.usage is not None
            table = disk.query_one("#disk-table", DataTable)
            names = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
            assert "images" in names and "  dangling images" in names
            assert "free of" in static_text(app, "#disk-summary")
            assert "image prune (dangling)" in static_text(app, "#disk-prune")

            # Cancel: the plan is shown, nothing changes.
            await pilot.press("p")
            await settle(app, pilot)
            assert isinstance(app.screen, ConfirmPruneScreen)
            plan = app.screen.plan
            assert {p.id for p in plan.images} == set(dangling_before)
            body = str(app.screen.query_one("#dialog-text", Static).render())
            assert all(i[:19] in body for i in dangling_before)
            await pilot.press("n")
            await settle(app, pilot)
            assert isinstance(app.screen, MainScreen)
            assert sorted(i.id for i in engine.images() if i.dangling) == sorted(dangling_before)

            # Confirm: exactly that plan is applied and the views refresh.
            await pilot.press("p")
            await settle(app, pilot)
            assert isinstance(app.screen, ConfirmPruneScreen)
            await pilot.press("y")
            await settle(app, pilot)
            assert isinstance(app.screen, MainScreen)
            assert not [i for i in engine.images() if i.dangling]
            assert disk.last_result is not None
            assert set(disk.last_result.images) == set(dangling_before)
            assert disk.usage.dangling == ()
            graph = main_screen(app).query_one(LayersView).graph
            assert graph is not None and not [i for i in graph.images if i.dangling]
    finally:
        engine.close()


# -------------------------------------------------------------------- Learn


@pytest.mark.root
async def test_learn_follows_the_selected_step_and_tours(demo_engine: Engine) -> None:
    app = new_app(demo_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        await settle(app, pilot)
        view = main_screen(app).query_one(BuildsView)
        mode_build = next(
            b
            for b in view.builds
            if any((s.reason or {}).get("kind") == "sources_changed" for s in b.steps)
        )
        table = view.query_one("#builds-table", DataTable)
        table.move_cursor(row=table.get_row_index(str(mode_build.id)))
        await pilot.pause()
        steps = view.query_one("#steps-table", DataTable)
        index = next(
            i
            for i, s in enumerate(mode_build.steps)
            if (s.reason or {}).get("kind") == "sources_changed"
        )
        steps.move_cursor(row=index)
        await pilot.pause()
        await pilot.press("5")
        await pilot.pause()
        learn = main_screen(app).query_one(LearnView)
        assert learn.step == mode_build.steps[index]
        explain = str(learn.query_one("#explain", Static).render())
        assert "data/run.sh" in explain and "Why:" in explain and "To hit:" in explain
        tour = str(learn.query_one("#tour", Static).render())
        assert "Change a line" in tour and "In this store: build #" in tour
        await pilot.press("n")
        tour = str(learn.query_one("#tour", Static).render())
        assert "Touch a file" in tour and "HIT" in tour
        await pilot.press("n")
        tour = str(learn.query_one("#tour", Static).render())
        assert "Change a mode" in tour and "data/run.sh" in tour
        # The last stop: the demo's LABEL edit, a COPY that hit under BuildKit and would
        # have missed under the classic builder; the stop selects it.
        await pilot.press("n")
        await pilot.pause()
        tour = str(learn.query_one("#tour", Static).render())
        assert "Edit a LABEL" in tour and "COPY" in tour and "HIT" in tour
        assert "Under the classic builder: MISS" in tour
        assert learn.step is not None and learn.step.instruction.startswith("COPY")
        assert learn.step.cached is True and learn.step.other is not None
        await pilot.press("n")
        assert learn.tour_index == 0
        await pilot.press("b")
        await pilot.press("b")
        assert learn.tour_index == 2


@pytest.mark.root
async def test_learn_says_what_the_other_builder_would_decide(demo_engine: Engine) -> None:
    app = new_app(demo_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        await settle(app, pilot)
        view = main_screen(app).query_one(BuildsView)
        # The demo's LABEL edit: BuildKit's rules hit every step below it.
        label_build = next(
            b
            for b in view.builds
            if any((s.reason or {}).get("kind") == "settings_not_keyed" for s in b.steps)
        )
        assert label_build.builder == "buildkit"
        table = view.query_one("#builds-table", DataTable)
        table.move_cursor(row=table.get_row_index(str(label_build.id)))
        await pilot.pause()
        steps = view.query_one("#steps-table", DataTable)
        learn = main_screen(app).query_one(LearnView)
        section = learn.query_one("#builders", Static)
        copy = next(i for i, s in enumerate(label_build.steps) if s.instruction.startswith("COPY"))
        steps.move_cursor(row=copy)
        await pilot.pause()
        await pilot.press("5")
        await pilot.pause()
        assert learn.step == label_build.steps[copy]
        text = str(section.render())
        assert section.display
        assert "And under the classic builder?" in text
        assert "decided by BuildKit's rules" in text and "LABEL above changed" in text
        assert "Under the classic builder: MISS" in text and "whole image config" in text
        assert "Why they part here:" in text
        explain = str(learn.query_one("#explain", Static).render())
        assert "HIT" in explain and "Image settings such as LABEL are not part of it" in explain

        # The LABEL itself is no step under BuildKit; the classic builder makes one.
        await pilot.press("3")
        await pilot.pause()
        setting = next(
            i for i, s in enumerate(label_build.steps) if s.instruction.startswith("LABEL")
        )
        steps.move_cursor(row=setting)
        await pilot.pause()
        await pilot.press("5")
        await pilot.pause()
        explain = str(learn.query_one("#explain", Static).render())
        assert "no cached step" in explain and "FROM starts a stage" not in explain
        text = str(section.render())
        assert "Under the classic builder: a step of its own" in text

        # A step both builders decide alike says so, without a reason to part.
        await pilot.press("3")
        await pilot.pause()
        mode_build = next(
            b
            for b in view.builds
            if any((s.reason or {}).get("kind") == "sources_changed" for s in b.steps)
        )
        table.move_cursor(row=table.get_row_index(str(mode_build.id)))
        await pilot.pause()
        index = next(
            i
            for i, s in enumerate(mode_build.steps)
            if (s.reason or {}).get("kind") == "sources_changed"
        )
        steps.move_cursor(row=index)
        await pilot.pause()
        await pilot.press("5")
        await pilot.pause()
        text = str(section.render())
        assert "would decide the same here" in text and "Why they part" not in text


# ------------------------------------------------------ help, keys, errors


async def test_help_opens_and_closes(dive_engine: Engine) -> None:
    app = new_app(dive_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("#help-text", Static).render())
        for words in ("1 Layers", "5 Learn", "prune dangling images", "command palette"):
            assert words in text
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)


async def test_footer_keys_follow_the_view(dive_engine: Engine) -> None:
    app = new_app(dive_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        screen = main_screen(app)
        assert screen.check_action("toggle_digests", ()) is True
        assert screen.check_action("prune", ()) is False
        await pilot.press("3")
        # No build recorded in this store: rebuild and what-if are greyed out.
        assert screen.check_action("rebuild", ()) is None
        assert screen.check_action("what_if", ()) is None
        assert screen.check_action("toggle_digests", ()) is False
        await pilot.press("4")
        assert screen.check_action("prune", ()) is True


async def test_palette_offers_lamina_commands(dive_engine: Engine) -> None:
    app = new_app(dive_engine)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for title in ("Go to Layers", "Go to Disk", "Rebuild", "What if", "Prune dangling"):
            assert title in titles
        go_disk = next(c for c in app.get_system_commands(app.screen) if c.title == "Go to Disk")
        go_disk.callback()
        await pilot.pause()
        assert main_screen(app).active_view == "disk"


async def test_a_broken_layer_shows_an_error_instead_of_crashing(
    conformance: Path, tmp_path: Path
) -> None:
    from lamina.core.embedded.archive import load_archive
    from lamina.core.embedded.store import Store

    home = tmp_path / "store"
    store = Store(home)
    load_archive(store, conformance / "images/dive/test-docker-image.tar")
    store.close()
    engine = open_embedded(home)
    try:
        base = next(layer for layer in engine.layers() if layer.parent is None)
        break_layer(home, base.chain_id)
        app = new_app(engine)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            screen = main_screen(app)
            assert screen.query_one(LayersView).selected == base.chain_id
            bar = screen.query_one("#error-bar")
            assert bar.display
            assert "Failed reading the layer's files" in static_text(app, "#error-text")
            assert app._notifications  # the error was also notified
            # The app keeps working: another view still renders.
            await pilot.press("2")
            await settle(app, pilot)
            assert screen.query_one(ImagesView).query_one("#images-table", DataTable).row_count == 1
    finally:
        engine.close()


async def test_a_corrupt_index_shows_an_error(tmp_path: Path) -> None:
    home = tmp_path / "store"
    engine = open_embedded(home)
    try:
        # Drop a table behind the engine's back: every read of images fails.
        db = sqlite3.connect(home / "index.db")
        db.execute("DROP TABLE tags")
        db.commit()
        db.close()
        app = new_app(engine)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            assert main_screen(app).query_one("#error-bar").display
            assert "Failed" in static_text(app, "#error-text")
    finally:
        engine.close()


@pytest.mark.root
@pytest.mark.parametrize("view", ["1", "2", "3", "4", "5"])
async def test_every_view_fits_80x24(demo_engine: Engine, view: str) -> None:
    app = new_app(demo_engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press(view)
        await settle(app, pilot)
        screen = main_screen(app)
        active = screen.query_one(TabbedContent).active
        pane = screen.query_one(f"#{active}")
        assert pane.region.width == 80
        assert pane.region.height > 10
        assert not screen.query_one("#error-bar").display


@pytest.mark.docker
async def test_the_app_over_a_docker_engine(tmp_path: Path) -> None:
    from lamina.core.docker.engine import DockerEngine

    engine = DockerEngine(home=tmp_path / "docker-records")
    try:
        app = new_app(engine)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await pilot.press("2")
            await settle(app, pilot)
            images = engine.images()
            view = main_screen(app).query_one(ImagesView)
            assert view.query_one("#images-table", DataTable).row_count == len(images)
            graph = main_screen(app).query_one(LayersView).graph
            assert graph is not None and len(graph.layers) == len(engine.layers())
            if images:
                # dive's analysis, read from Docker's saved stream of the selected image.
                assert "efficiency" in str(view.query_one("#analysis", Static).render())
    finally:
        engine.close()
