"""`lamina container prune` and `lamina volume prune` on the embedded engine.

lamina's own store has no containers and no volumes (they exist on ``--engine docker``):
every form of the two verbs answers with one line saying so, exits 0, asks nothing and
leaves the store as it was; a filter Docker refuses is refused first, in Docker's words.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lamina.tui.cli import main

if TYPE_CHECKING:
    from lamina.core.embedded.store import Store


def lamina(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(["--engine", "embedded", *args])
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _images(capsys: pytest.CaptureFixture[str]) -> list[str]:
    code, out, err = lamina(capsys, "images", "-q", "--no-trunc")
    assert code == 0, err
    return out.split()


FORMS = [
    (),
    ("-f",),
    ("--dry-run",),
    ("--filter", "label=role=db", "-f"),
    ("--filter", "label!=role", "--dry-run"),
]


@pytest.mark.parametrize("verb", ["container", "volume"])
@pytest.mark.parametrize("form", FORMS, ids=" ".join)
def test_embedded_says_in_one_line_there_is_nothing_to_prune(
    capsys: pytest.CaptureFixture[str],
    lamina_home: Path,
    busybox_store: Store,
    monkeypatch: pytest.MonkeyPatch,
    verb: str,
    form: tuple[str, ...],
) -> None:
    assert busybox_store.home == lamina_home  # the CLI opens the store the fixture filled
    before = _images(capsys)
    assert before  # busybox is there, and must stay
    # Without -f it must not ask: reading stdin fails the test.
    monkeypatch.setattr("builtins.input", lambda *_: pytest.fail("asked for confirmation"))
    code, out, err = lamina(capsys, verb, "prune", *form)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"lamina's own store has no {verb}s (they exist on --engine docker): nothing to prune"
    ]
    assert _images(capsys) == before


@pytest.mark.parametrize("verb", ["container", "volume"])
@pytest.mark.parametrize("form", [("-f",), ("--dry-run",)], ids=" ".join)
def test_embedded_json_is_an_empty_prune(
    capsys: pytest.CaptureFixture[str],
    lamina_home: Path,
    busybox_store: Store,
    verb: str,
    form: tuple[str, ...],
) -> None:
    code, out, err = lamina(capsys, verb, "prune", *form, "--format", "json")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    for key in ("containers", "volumes", "images", "cache", "layers"):
        assert doc[key] == [], key
    bytes_key = "reclaimable_bytes" if "--dry-run" in form else "reclaimed_bytes"
    assert doc[bytes_key] == 0
    assert doc.get("dry_run", False) is ("--dry-run" in form)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("volume", "prune", "--filter", "until=24h", "-f"), "Invalid filter 'until'"),
        (("container", "prune", "--filter", "colour=red", "-f"), "Invalid filter 'colour'"),
        (("volume", "prune", "--keep-storage", "1MB"), "unrecognized arguments"),
    ],
    ids=["until on volumes", "unknown filter", "builder-only flag"],
)
def test_embedded_refuses_what_docker_refuses_in_one_line(
    capsys: pytest.CaptureFixture[str],
    lamina_home: Path,
    busybox_store: Store,
    args: tuple[str, ...],
    message: str,
) -> None:
    code, out, err = lamina(capsys, *args)
    assert code == 2
    assert out == "" and len(err.splitlines()) == 1 and message in err, err
