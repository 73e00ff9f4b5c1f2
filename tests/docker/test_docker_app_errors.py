"""The app on a Docker Engine shows a build the daemon rejects in the daemon's own words.

The same context is built by Debian's ``docker build`` (``/usr/bin/docker``) with the
builder the recorded build used, which the app's rebuild uses too: what it prints after
``Error response from daemon:`` (a Dockerfile the daemon's parser rejects) or as the
step's failure (a RUN that exits non-zero) is what the app notifies and shows in the
Builds view, verbatim. The two builders word both failures differently.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from app_workers import workers_done
from daemon_state import DOCKER_2010
from textual.widgets import Static

from lamina.core.docker.engine import DockerEngine
from lamina.core.events import BuildFinished
from lamina.core.model import BuildRequest
from lamina.tui.app import LaminaApp, make_app
from lamina.tui.screens.main import MainScreen
from lamina.tui.widgets.builds import BuildsView

pytestmark = pytest.mark.docker

GOOD = "RUN echo {token}\n"
BROKEN = {
    # The daemon's parser rejects it: the API call answers 400 with the message.
    "parse error": "RUN echo {token}\n\n# a comment\nENV A=1\nLABEL a=b\nWORKDIR /x\nSET x=1\n",
    # The daemon runs it and the step fails: the build stream carries the message.
    "failing RUN": "RUN echo {token}\nRUN exit 3\n",
}


# Per builder and failure: Docker's words.
WORDS = {
    ("classic", "parse error"): "dockerfile parse error line 8: unknown instruction: SET",
    ("classic", "failing RUN"): "The command '/bin/sh -c exit 3' returned a non-zero code: 3",
    ("buildkit", "parse error"): "failed to solve with frontend dockerfile.v0: failed to create"
    " LLB definition: dockerfile parse error line 8: unknown instruction: SET",
    ("buildkit", "failing RUN"): "executor failed running [/bin/sh -c exit 3]: exit code: 3",
}


def dockers_words(ctx: Path, builder: str) -> str:
    """The last line Debian's docker build prints for the failure, without its prefix."""
    env = dict(os.environ, DOCKER_BUILDKIT="1" if builder == "buildkit" else "0")
    env.pop("DOCKER_API_VERSION", None)
    proc = subprocess.run(
        [DOCKER_2010, "build", "--force-rm", "--network", "none", str(ctx)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode != 0, proc.stdout
    line = proc.stderr.strip().splitlines()[-1]
    return line.removeprefix("Error response from daemon: ")


@pytest.mark.parametrize("builder", ["buildkit", "classic"])
@pytest.mark.parametrize("broken", sorted(BROKEN))
async def test_app_shows_the_daemons_build_error_verbatim(
    docker_engine: DockerEngine,
    docker_base: str,
    docker_tag: Callable[[str], str],
    tmp_path: Path,
    tree: Any,
    broken: str,
    builder: str,
) -> None:
    token = os.urandom(6).hex()
    ctx = tree(tmp_path / "ctx", {"Dockerfile": f"FROM {docker_base}\n" + GOOD.format(token=token)})
    request = BuildRequest(context=str(ctx), tags=(docker_tag("err"),), builder=builder)
    events = list(docker_engine.build(request))
    assert isinstance(events[-1], BuildFinished), events[-1]
    # The recorded build's Dockerfile now fails on the daemon.
    (ctx / "Dockerfile").write_text(f"FROM {docker_base}\n" + BROKEN[broken].format(token=token))
    words = dockers_words(ctx, builder)
    assert words and "lamina" not in words

    app: LaminaApp = make_app(docker_engine, clock=lambda: 1_800_000_000.0)
    notified: list[tuple[str, str]] = []
    notify = app.notify

    def record(message: str, *, title: str = "", **kwargs: Any) -> None:
        notified.append((title, message))
        notify(message, title=title, **kwargs)

    app.notify = record  # type: ignore[method-assign]
    async with app.run_test(size=(120, 36)) as pilot:
        for _ in range(3):
            await workers_done(app)
            await pilot.pause()
        await pilot.press("3")
        await pilot.pause()
        screen = next(s for s in app.screen_stack if isinstance(s, MainScreen))
        builds = screen.query_one(BuildsView)
        assert builds.selected_build is not None
        assert screen.check_action("rebuild", ()) is True
        await pilot.press("r")
        for _ in range(4):
            await workers_done(app)
            await pilot.pause()
        assert not screen.building
        failures = [m for t, m in notified if t == "Build failed"]
        assert len(failures) == 1, notified
        (message,) = failures
        assert words == WORDS[builder, broken]
        if broken == "parse error":
            # Docker's message and line number, nothing added.
            assert message == words
        else:
            # Docker's words, after the step lamina says it was running (its line).
            assert message == f"{ctx / 'Dockerfile'}:3: 'RUN exit 3': {words}"
        assert builds.last_outcome == f"failed: {message}"
        # The failed build, recorded and selected, keeps saying why once the
        # notification has gone.
        failed = builds.selected_build
        assert failed is not None and failed.status == "failed" and failed.error == message
        title = str(builds.query_one("#steps-title", Static).render())
        assert f"Build #{failed.id} of " in title and f"failed: {message}" in title
