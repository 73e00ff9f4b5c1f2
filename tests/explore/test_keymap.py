"""``[keymap]`` in config.toml: a binding id remaps its key, the footer and the help
screen show the user's key, a click on a footer key does what the key does, and an
unknown id is reported without stopping the app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from app_workers import workers_done
from textual.widgets import Footer, Static

from lamina.core import Engine, UsageError, load_config, open_archive
from lamina.tui.app import binding_ids, make_app
from lamina.tui.screens.help import HelpScreen
from lamina.tui.screens.main import MainScreen
from lamina.tui.widgets.images import ImagesView

DIVE = "images/dive/test-docker-image.tar"


@pytest.fixture
def engine(conformance: Path) -> Iterator[Engine]:
    engine = open_archive(conformance / DIVE)
    yield engine
    engine.close()


def _footer(app: object) -> dict[str, str]:
    """Footer description -> the key it shows."""
    screen = app.screen  # type: ignore[attr-defined]
    return {k.description: k.key for k in footer_keys(screen)}


def footer_keys(screen: object) -> list[Any]:
    """The footer's key widgets (Textual's FooterKey, which it does not export)."""
    footer = screen.query_one(Footer)  # type: ignore[attr-defined]
    return [k for k in footer.query("*") if hasattr(k, "description") and hasattr(k, "action")]


def test_the_keymap_table_is_read(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[keymap]\n"images.sort" = "o"\nview.builds = "3,b"\nquit = ["ctrl+q", "q"]\n'
    )
    assert load_config(config).keymap == {
        "images.sort": "o",
        "view.builds": "3,b",
        "quit": "ctrl+q,q",
    }
    config.write_text('[keymap]\n"images.sort" = 3\n')
    with pytest.raises(UsageError, match=r"keymap\.images\.sort"):
        load_config(config)


async def test_a_keymap_entry_remaps_a_binding_and_the_footer_shows_it(engine: Engine) -> None:
    app = make_app(engine, keymap={"images.sort": "o", "view.images": "i"})
    app.settle_delay = 0
    async with app.run_test(size=(120, 36)) as pilot:
        await workers_done(app)
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, MainScreen)
        await pilot.press("2")  # no longer bound: nothing happens
        await pilot.pause()
        assert screen.active_view == "layers"
        await pilot.press("i")
        await pilot.pause()
        assert screen.active_view == "images"
        footer = _footer(app)
        assert footer["Sort"] == "o"
        images = screen.query_one(ImagesView)
        before = images.sort_key
        await pilot.press("s")
        await pilot.pause()
        assert images.sort_key == before
        await pilot.press("o")
        await pilot.pause()
        assert images.sort_key != before
        # The mouse does what the key does: a click on the footer's "Sort".
        sort_key = next(k for k in footer_keys(screen) if k.description == "Sort")
        after_key = images.sort_key
        await pilot.click(sort_key)
        await pilot.pause()
        assert images.sort_key != after_key
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("#help-text", Static).render())
        sort_line = next(line for line in text.splitlines() if "Sort by the next column" in line)
        assert sort_line.split()[0] == "o" and "images.sort" in sort_line


async def test_an_unknown_id_is_reported(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(engine, keymap={"no.such.binding": "z", "images.sort": "o"})
    said: list[str] = []
    real = app.notify

    def notify(message: str, **kw: Any) -> None:
        said.append(message)
        real(message, **kw)

    monkeypatch.setattr(app, "notify", notify)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        assert any("no.such.binding" in m for m in said)
        assert app.user_keymap == {"images.sort": "o"}


def test_every_binding_has_an_id() -> None:
    ids = binding_ids()
    assert {"images.sort", "images.mark", "images.diff", "view.builds", "quit", "help"} <= ids
