"""The app where people read it: whole reasons, current times, keys that let go, panes
that follow the store and the selection."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.geometry import Region
from textual.widgets import DataTable, Input, Static, Tree

from lamina.core.engine import Engine
from lamina.tui import format as fmt
from lamina.tui.app import LaminaApp, make_app
from lamina.tui.widgets import builds as builds_module
from lamina.tui.widgets import images as images_module
from lamina.tui.widgets import layers as layers_module
from lamina.tui.widgets.builds import BuildsView
from lamina.tui.widgets.images import ImagesView
from lamina.tui.widgets.layers import LayersView
from lamina.tui.widgets.learn import LearnView

from .conftest import FIXED_NOW, open_embedded
from .test_app import main_screen, settle


def visible_text(widget: Static) -> list[str]:
    """The lines a widget shows on screen (what fits its region, wrapped), as text."""
    region = Region(0, 0, widget.outer_size.width, widget.outer_size.height)
    return ["".join(seg.text for seg in strip).rstrip() for strip in widget.render_lines(region)]


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
async def test_the_whole_reason_of_the_selected_step_is_readable(
    builds_engine: Engine, size: tuple[int, int]
) -> None:
    app = make_app(builds_engine, clock=lambda: FIXED_NOW)
    app.settle_delay = 0
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        await settle(app, pilot)
        view = main_screen(app).query_one(BuildsView)
        steps = view.query_one("#steps-table", DataTable)
        steps.move_cursor(row=1)
        await settle(app, pilot)
        step = view.current_steps()[1]
        reason = fmt.describe_reason(step.reason)
        assert step.reason is not None and step.reason["kind"] == "instruction_changed"
        assert "version-one" in reason and "version-two" in reason
        # Every word of the reason is on screen in the detail pane, wrapped, not cut.
        shown = " ".join(visible_text(view.query_one("#step-detail", Static)))
        assert " ".join(reason.split()) in " ".join(shown.split())
        detail = view.query_one("#step-detail", Static)
        assert detail.region.right <= size[0] and detail.region.bottom <= size[1]
        # Moving the cursor moves the detail with it.
        steps.move_cursor(row=2)
        await settle(app, pilot)
        shown = " ".join(visible_text(view.query_one("#step-detail", Static)))
        assert "COPY app.txt /app/app.txt" in shown and "earlier step" in shown


async def test_relative_times_stay_current(
    builds_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in (builds_module, images_module, layers_module):
        monkeypatch.setattr(module, "TIME_REFRESH", 0.05)
    now = [FIXED_NOW - 3600 + 120 + 75]  # 75 seconds after the newest build started
    engine = open_embedded(builds_home)
    try:
        app = make_app(engine, clock=lambda: now[0])
        app.settle_delay = 0
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(app, pilot)
            await pilot.press("3")
            await settle(app, pilot)
            table = main_screen(app).query_one(BuildsView).query_one("#builds-table", DataTable)
            before = str(table.get_cell("2", "started"))
            now[0] += 3 * 3600
            for _ in range(40):  # the view's own timer redraws it; wait for its tick
                await pilot.pause(0.05)
                if str(table.get_cell("2", "started")) != before:
                    break
            assert before == "a minute ago"
            assert str(table.get_cell("2", "started")) == "3 hours ago"
            await pilot.press("2")
            await settle(app, pilot)
            images = main_screen(app).query_one(ImagesView).query_one("#images-table", DataTable)
            # Images are as old as their config says (this very run), not pinned.
            now[0] = max(i.created for i in engine.images()) + 75
            images_view = main_screen(app).query_one(ImagesView)
            images_view.refresh_times()
            shown = {str(images.get_cell(k, "created")) for k in images.rows}
            assert "a minute ago" in shown
            now[0] += 2 * 86400
            for _ in range(40):
                await pilot.pause(0.05)
                if {str(images.get_cell(k, "created")) for k in images.rows} != shown:
                    break
            assert "2 days ago" in {str(images.get_cell(k, "created")) for k in images.rows}
    finally:
        engine.close()


async def test_escape_leaves_the_file_filter(builds_engine: Engine) -> None:
    app = make_app(builds_engine, clock=lambda: FIXED_NOW)
    app.settle_delay = 0
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(app, pilot)
        view = main_screen(app).query_one(LayersView)
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"bin")
        await pilot.press("escape")
        assert isinstance(app.focused, Tree)
        # The filter stays applied, and keys are the tree's again.
        assert view.query_one("#file-filter", Input).value == "bin"
        selected = view.selected
        await pilot.press("down")
        await settle(app, pilot)
        assert view.selected != selected
        # Enter leaves it too.
        await pilot.press("slash", "x", "enter")
        assert isinstance(app.focused, Tree)


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
async def test_full_digests_keep_the_other_fields_in_view(
    builds_engine: Engine, size: tuple[int, int]
) -> None:
    app = make_app(builds_engine, clock=lambda: FIXED_NOW)
    app.settle_delay = 0
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        view = main_screen(app).query_one(LayersView)
        await pilot.press("down")
        await settle(app, pilot)
        info = view.query_one("#layer-info", Static)
        await pilot.press("f")
        await pilot.pause()
        assert view.full_digests
        shown = "\n".join(visible_text(info))
        for field in ("size", "used by", "created"):
            assert field in shown, shown
        # The full digests follow below them, wrapped: whole where the pane has room (at
        # 80x24 this layer's long instruction leaves room for the chainID's start).
        assert view.selected is not None
        layer = next(la for la in builds_engine.layers() if la.chain_id == view.selected)
        joined = "".join(line.strip() for line in shown.splitlines())
        assert shown.index("used by") < shown.index("chainID")
        if size == (80, 24):
            assert layer.chain_id[:24] in joined
        else:
            assert layer.chain_id in joined and layer.diff_id in joined


async def test_the_learn_view_follows_layers_and_images(builds_engine: Engine) -> None:
    app = make_app(builds_engine, clock=lambda: FIXED_NOW)
    app.settle_delay = 0
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(app, pilot)
        screen = main_screen(app)
        learn = screen.query_one(LearnView)
        layers = screen.query_one(LayersView)
        builds = screen.query_one(BuildsView).builds
        # The base layer was imported: nothing to explain, and it says so.
        assert "was not made by a build lamina recorded" in explain_text(learn)
        await pilot.press("down")
        await settle(app, pilot)
        made = next(s for b in builds for s in b.steps if s.layer == layers.selected)
        assert learn.step == made
        text = explain_text(learn)
        assert "selected in Layers" in text and made.instruction[:40] in text

        await pilot.press("2")
        await settle(app, pilot)
        images = screen.query_one(ImagesView)
        table = images.query_one("#images-table", DataTable)
        greeter = next(b.image for b in builds if b.id == 2)
        table.move_cursor(row=table.get_row_index(greeter))
        await settle(app, pilot)
        assert learn.build is not None and learn.build.id == 2
        assert learn.step is not None and learn.step.cached is False  # its first miss
        text = explain_text(learn)
        assert "selected in Images, was built by build #2" in text and "version-two" in text

        # A step chosen in Builds takes over again.
        await pilot.press("3")
        await settle(app, pilot)
        screen.query_one(BuildsView).query_one("#steps-table", DataTable).move_cursor(row=3)
        await settle(app, pilot)
        assert learn.origin == "" and learn.step is not None
        assert learn.step.instruction.startswith("LABEL")


def explain_text(learn: LearnView) -> str:
    return str(learn.query_one("#explain", Static).render())


@pytest.mark.root
async def test_panes_show_the_store_as_it_is_after_a_prune(fresh_demo: Path) -> None:
    engine = open_embedded(fresh_demo)
    try:
        app: LaminaApp = make_app(engine, clock=lambda: FIXED_NOW)
        app.settle_delay = 0
        async with app.run_test(size=(120, 36)) as pilot:
            await settle(app, pilot)
            screen = main_screen(app)
            dangling = [i.id for i in engine.images() if i.dangling]
            # Look at a dangling image in Images and at its own layer in Layers.
            await pilot.press("2")
            await settle(app, pilot)
            images = screen.query_one(ImagesView)
            table = images.query_one("#images-table", DataTable)
            table.move_cursor(row=table.get_row_index(dangling[0]))
            await settle(app, pilot)
            assert images.history_for == dangling[0]
            layers = screen.query_one(LayersView)
            own = engine.image(dangling[0]).layers[-1]
            layers.selected = own
            await settle(app, pilot)
            assert layers.changes_for == own

            learn = screen.query_one(LearnView)
            assert dangling[0][7:19] in explain_text(learn)  # it follows the image

            await pilot.press("4", "p")
            await settle(app, pilot)
            await pilot.press("y")
            await settle(app, pilot)
            # The Learn view lets go of the pruned image at once.
            assert not any(i[7:19] in explain_text(learn) for i in dangling)

            gone = set(dangling)
            assert not gone & {i.id for i in engine.images()}
            layer_ids = {layer.chain_id for layer in engine.layers()}
            assert own not in layer_ids
            # Every pane shows the store as it is now, once its view is shown again.
            await pilot.press("2")
            await settle(app, pilot)
            assert images.selected not in gone and images.history_for not in gone
            history = images.query_one("#history-table", DataTable)
            assert history.row_count == len(engine.history(images.selected or ""))
            await pilot.press("1")
            await settle(app, pilot)
            assert layers.selected in layer_ids and layers.changes_for in layer_ids
            assert own[7:19] not in str(layers.query_one("#layer-info", Static).render())
            assert layers.changes_for == layers.selected
            await pilot.press("5")
            await settle(app, pilot)
            assert own[7:19] not in explain_text(learn)
            assert not any(i[7:19] in explain_text(learn) for i in gone)
    finally:
        engine.close()
