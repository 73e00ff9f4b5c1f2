"""The app opens on a real Docker Engine and draws the layer graph of images sharing a base."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from app_workers import workers_done
from textual.widgets import DataTable, Tree

from lamina.core.docker.engine import DockerEngine
from lamina.core.events import BuildFinished
from lamina.core.model import BuildRequest
from lamina.tui.app import LaminaApp, make_app
from lamina.tui.screens.main import MainScreen
from lamina.tui.widgets.disk import DiskView
from lamina.tui.widgets.layers import LayersView

pytestmark = pytest.mark.docker


def _build(engine: DockerEngine, ctx: Path, tag: str) -> str:
    events = list(engine.build(BuildRequest(context=str(ctx), tags=(tag,))))
    assert isinstance(events[-1], BuildFinished), events[-1]
    assert events[-1].image is not None
    return events[-1].image


async def test_app_shows_shared_base_layers_from_docker(
    docker_engine: DockerEngine,
    docker_base: str,
    docker_tag: Callable[[str], str],
    tmp_path: Path,
    tree: Any,
) -> None:
    token = os.urandom(6).hex()
    a = tree(tmp_path / "a", {"Dockerfile": f"FROM {docker_base}\nRUN echo {token} a > /a\n"})
    b = tree(tmp_path / "b", {"Dockerfile": f"FROM {docker_base}\nRUN echo {token} b > /b\n"})
    tag_a, tag_b = docker_tag("app-a"), docker_tag("app-b")
    id_a, id_b = _build(docker_engine, a, tag_a), _build(docker_engine, b, tag_b)
    base_layer = docker_engine.image(docker_base).layers[0]
    top_a = docker_engine.image(id_a).layers[-1]

    app: LaminaApp = make_app(docker_engine, clock=lambda: 1_800_000_000.0)
    app.settle_delay = 0  # read a selected layer's files at once, not after the cursor rests
    async with app.run_test(size=(120, 36)) as pilot:
        for _ in range(3):
            await workers_done(app)
            await pilot.pause()
        screen = next(s for s in app.screen_stack if isinstance(s, MainScreen))
        view = screen.query_one(LayersView)
        graph = view.graph
        assert graph is not None
        # One node for the base layer, used by the base image and both builds.
        assert graph.share_count(base_layer) >= 3
        assert {i.id for i in graph.images_using[base_layer]} >= {id_a, id_b}
        tree_widget = view.query_one("#layer-tree", Tree)
        labels = [
            str(tree_widget.get_node_at_line(i).label) for i in range(tree_widget.last_line + 1)
        ]
        assert any(tag_a in label for label in labels)
        assert any(tag_b in label for label in labels)
        # Opening a layer reads its files lazily from Docker's saved image.
        view.selected = top_a
        for _ in range(3):
            await workers_done(app)
            await pilot.pause()
        assert view.changes_for == top_a
        # BuildKit's RUN layer also holds the mount points it made for the command.
        assert [c.path for c in view.changes] == ["/a", "/dev", "/etc", "/proc", "/sys"]


async def _open_builds(app: LaminaApp, pilot: Any) -> MainScreen:
    for _ in range(3):
        await workers_done(app)
        await pilot.pause()
    await pilot.press("3")
    await pilot.pause()
    return next(s for s in app.screen_stack if isinstance(s, MainScreen))


# The two builders predict differently (BuildKit from lamina's records of its builds and
# BuildKit's cache, the classic builder from the daemon's intermediate images): the
# what-if of a build predicts by the builder that build ran with, and says so.
@pytest.mark.parametrize(
    ("builder", "named"), [("buildkit", "BuildKit"), ("classic", "the classic builder")]
)
async def test_what_if_on_docker_predicts_and_offers_the_build(
    docker_engine: DockerEngine,
    docker_base: str,
    docker_tag: Callable[[str], str],
    tmp_path: Path,
    tree: Any,
    builder: str,
    named: str,
) -> None:
    from lamina.tui.screens.confirm import WhatIfScreen

    token = os.urandom(6).hex()
    ctx = tree(
        tmp_path / "w",
        {"Dockerfile": f"FROM {docker_base}\nCOPY f /f\nRUN cat /f > /g\n", "f": token},
    )
    request = BuildRequest(context=str(ctx), tags=(docker_tag("whatif"),), builder=builder)
    events = list(docker_engine.build(request))
    assert isinstance(events[-1], BuildFinished), events[-1]
    assert docker_engine.builds(limit=1)[0].builder == builder

    app: LaminaApp = make_app(docker_engine, clock=lambda: 1_800_000_000.0)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await _open_builds(app, pilot)
        # What-if applies on Docker: the action is offered and enabled.
        assert screen.check_action("what_if", ()) is True
        await pilot.press("w")
        for _ in range(4):
            await workers_done(app)
            await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, WhatIfScreen)
        assert dialog.ok and dialog.offers_confirm
        # Nothing changed since the build: every predicted step is a hit.
        verdicts = [s.cached for s in dialog.steps if s.instruction.split()[0] != "FROM"]
        assert verdicts and all(v is True for v in verdicts), dialog.steps
        assert dialog.builder == builder
        assert f"Predicted under {named}'s rules, the builder build #" in dialog.body()
        await pilot.press("escape")


async def test_a_failed_prediction_on_docker_offers_no_build(
    docker_engine: DockerEngine,
    docker_base: str,
    docker_tag: Callable[[str], str],
    tmp_path: Path,
    tree: Any,
) -> None:
    import shutil

    from lamina.tui.screens.confirm import WhatIfScreen

    ctx = tree(tmp_path / "gone", {"Dockerfile": f"FROM {docker_base}\nCOPY f /f\n", "f": "x"})
    request = BuildRequest(context=str(ctx), tags=(docker_tag("gone"),))
    events = list(docker_engine.build(request))
    assert isinstance(events[-1], BuildFinished), events[-1]
    shutil.rmtree(ctx)  # the recorded build's context is gone: nothing can be predicted

    app: LaminaApp = make_app(docker_engine, clock=lambda: 1_800_000_000.0)
    async with app.run_test(size=(120, 36)) as pilot:
        await _open_builds(app, pilot)
        await pilot.press("w")
        for _ in range(4):
            await workers_done(app)
            await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, WhatIfScreen)
        assert not dialog.ok and not dialog.offers_confirm
        assert "The prediction failed" in dialog.body()


async def test_disk_view_on_docker_lists_containers_volumes_and_every_prune(
    docker_engine: DockerEngine, docker_base: str
) -> None:
    import docker as docker_sdk  # type: ignore[import-untyped]

    from lamina.tui.widgets.disk import DiskView

    client = docker_sdk.from_env()
    volume = client.volumes.create(name=f"lamina-app-{os.urandom(4).hex()}")
    container = client.containers.create(
        docker_base, ["sh", "-c", "true"], volumes={volume.name: {"bind": "/v", "mode": "rw"}}
    )
    try:
        usage = docker_engine.disk_usage()
        expected = {c.name: c for c in usage.categories}
        app: LaminaApp = make_app(docker_engine, clock=lambda: 1_800_000_000.0)
        async with app.run_test(size=(120, 36)) as pilot:
            for _ in range(3):
                await workers_done(app)
                await pilot.pause()
            await pilot.press("4")
            for _ in range(3):
                await workers_done(app)
                await pilot.pause()
            view = app.screen.query_one(DiskView)
            table = view.query_one("#disk-table")
            names = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
            for name in ("images", "containers", "volumes", "build cache"):
                assert name in names, names
            containers = table.get_row_at(names.index("containers"))
            assert int(str(containers[1])) == expected["containers"].count >= 1
            volumes = table.get_row_at(names.index("volumes"))
            assert int(str(volumes[1])) == expected["volumes"].count >= 1
            preview = str(view.query_one("#disk-prune").render())
            for command in ("container prune", "volume prune", "system prune"):
                assert command in preview, preview
    finally:
        container.remove(force=True)
        volume.remove(force=True)
        client.close()


async def test_disk_view_lists_buildkits_records(
    docker_engine: DockerEngine,
    docker_base: str,
    docker_tag: Callable[[str], str],
    tmp_path: Path,
    tree: Any,
) -> None:
    ctx = tree(
        tmp_path / "c", {"Dockerfile": f"FROM {docker_base}\nRUN echo {os.urandom(6).hex()}\n"}
    )
    _build(docker_engine, ctx, docker_tag("app-du"))
    records = {r["ID"]: r for r in docker_engine.api.df()["BuildCache"]}
    assert records
    app: LaminaApp = make_app(docker_engine, clock=lambda: 1_800_000_000.0)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("4")
        for _ in range(3):
            await workers_done(app)
            await pilot.pause()
        screen = next(s for s in app.screen_stack if isinstance(s, MainScreen))
        table = screen.query_one(DiskView).query_one("#disk-buildkit", DataTable)
        assert table.display and table.row_count == len(records)
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        # Record, type, description, parents, in use, shared, size, last used, usage.
        by_id = {next(r for r in records if r.startswith(row[0])): row for row in rows}
        assert set(by_id) == set(records)
        for record_id, row in by_id.items():
            r = records[record_id]
            assert row[1] == r["Type"] and row[2] == (r["Description"] or "-")
            assert row[3] == (r["Parent"][:12] if r.get("Parent") else "-")
            assert (row[4], row[5]) == (
                "yes" if r["InUse"] else "no",
                "yes" if r["Shared"] else "no",
            )
            assert row[8] == str(r["UsageCount"])
