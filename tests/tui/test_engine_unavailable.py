"""With the engine out of reach the app opens on an error view instead of not at all."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Static

from lamina.core.errors import EngineUnavailable
from lamina.core.open import open_engine
from lamina.tui.app import make_app


async def test_unreachable_docker_shows_an_error_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real Docker client pointed at a socket nobody listens on.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(EngineUnavailable) as info:
        open_engine("docker")
    message = str(info.value)
    assert "\n" not in message

    app = make_app(None, engine_error=message)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        shown = str(app.screen.query_one("#engine-error", Static).render())
        assert message[:40] in shown
        assert "DOCKER_HOST" in str(app.screen.query_one("#engine-hint", Static).render())
        await pilot.press("q")
    assert app.return_code == 0
