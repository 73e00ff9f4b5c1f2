"""The app's Disk view on a Docker Engine: what each prune would free is what it frees.

On the daemon state of :mod:`daemon_state`, the view's "What each prune would free now"
lists a number per prune command. For each one checked here, that number (as shown,
and in bytes) is what the prune then frees by Docker's own count (the ``SpaceReclaimed``
its prune endpoints answer); the ``p`` key's prune is applied from the app itself.
Where ``docker system df`` defines a row's reclaimable space as what one prune frees
(Containers: ``container prune``; Local Volumes: ``volume prune``, which on 20.10 takes
named volumes too; Build Cache: ``builder prune``), the view's row says the same bytes
as Docker's row.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from app_workers import workers_done
from daemon_state import State, clean_slate, docker_2010, keep_alive, make_state, release
from textual.widgets import DataTable, Static

from lamina.core.docker.engine import DockerEngine
from lamina.tui import format as fmt
from lamina.tui.app import LaminaApp, make_app
from lamina.tui.cli import main
from lamina.tui.screens.confirm import ConfirmPruneScreen
from lamina.tui.widgets.disk import DiskView, prune_rows

pytestmark = pytest.mark.docker

KEY_P = "image prune (dangling)  [key p]"

# (the view's label, the command that applies it, docker system df's row defined by it)
_PRUNES = [
    (KEY_P, None, None),
    ("container prune", ("container", "prune"), "Containers"),
    ("volume prune", ("volume", "prune"), "Local Volumes"),
    ("builder prune", ("builder", "prune"), "Build Cache"),
    ("image prune -a", ("image", "prune", "-a"), None),
    ("system prune -a --volumes", ("system", "prune", "-a", "--volumes"), None),
]
# The Disk view's table names the rows as lamina's categories.
_ROWS = {"Containers": "containers", "Local Volumes": "volumes", "Build Cache": "build cache"}


@pytest.fixture
def daemon(docker_engine: DockerEngine, docker_base: str) -> Iterator[tuple[Any, str, State]]:
    """An emptied daemon whose base images stay in use; emptied again afterwards."""
    api = docker_engine.api
    prefix = f"lamina-disk-{uuid.uuid4().hex[:6]}"
    bases = [docker_base] + [
        t for i in api.images() for t in i.get("RepoTags") or [] if t == "busybox:latest"
    ]
    state = State(prefix, keep_alive(api, bases, prefix))
    clean_slate(api)
    try:
        yield api, docker_base, state
    finally:
        release(api, state)


async def _settle(app: LaminaApp, pilot: Any) -> None:
    for _ in range(3):
        await workers_done(app)
        await pilot.pause()


def _preview(view: DiskView) -> dict[str, str]:
    """The sizes the view prints per prune, by label (as a user reads them)."""
    text = str(view.query_one("#disk-prune", Static).render())
    shown = {}
    assert view.usage is not None
    for label, _ in prune_rows(view.usage, view.dangling_plan):
        pattern = re.compile(rf"^\s*{re.escape(label)}\s{{2,}}(.+?)\s*$")
        (size,) = [m.group(1) for ln in text.splitlines() if (m := pattern.match(ln))]
        shown[label] = size
    return shown


def _docker_df() -> dict[str, dict[str, str]]:
    out = docker_2010("system", "df", "--format", "{{json .}}")
    return {r["Type"]: r for r in map(json.loads, out.splitlines())}


@pytest.mark.parametrize(("label", "command", "df_row"), _PRUNES, ids=[p[0] for p in _PRUNES])
async def test_disk_view_shows_what_each_prune_then_frees(
    capsys: pytest.CaptureFixture[str],
    docker_engine: DockerEngine,
    daemon: tuple[Any, str, State],
    tmp_path: Path,
    label: str,
    command: tuple[str, ...] | None,
    df_row: str | None,
) -> None:
    _, base, state = daemon
    make_state(tmp_path, base, state.prefix)
    app: LaminaApp = make_app(docker_engine, clock=lambda: 1_800_000_000.0)
    async with app.run_test(size=(120, 36)) as pilot:
        await _settle(app, pilot)
        await pilot.press("4")
        await _settle(app, pilot)
        view = app.screen.query_one(DiskView)
        assert view.usage is not None
        predicted = dict(prune_rows(view.usage, view.dangling_plan))
        shown = _preview(view)
        assert shown[label] == fmt.size(predicted[label])
        table = view.query_one("#disk-table", DataTable)
        rows = {str(table.get_row_at(i)[0]): table.get_row_at(i) for i in range(table.row_count)}
        if df_row is not None:
            # Docker's own row: the same bytes, in Docker's own spelling.
            theirs = _docker_df()[df_row]["Reclaimable"].split(" (")[0]
            assert theirs == fmt.size(predicted[label], docker=True, precision=4), df_row
            reclaim = str(rows[_ROWS[df_row]][3])
            assert reclaim == (fmt.size(predicted[label]) if predicted[label] else "")
        if command is None:
            # The p key: the view's plan, confirmed in the dialog, applied by the app.
            await pilot.press("p")
            await _settle(app, pilot)
            assert isinstance(app.screen, ConfirmPruneScreen)
            await pilot.press("y")
            await _settle(app, pilot)
            assert view.last_result is not None
            freed = view.last_result.reclaimed_bytes
            assert view.last_result.skipped == ()
    if command is not None:
        # The command the row names, once the app (which captures stdout) has gone.
        capsys.readouterr()
        assert main(["--engine", "docker", *command, "-f", "--format", "json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["skipped"] == []
        freed = result["reclaimed_bytes"]
    # What Docker said it freed is what the view said the prune would free.
    assert freed == predicted[label], label
    # The state gave this prune something to free (volume prune frees data volumes).
    assert freed > 0, label
