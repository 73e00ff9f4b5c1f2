"""Verbs only lamina's own store can serve: they check for it, and refuse Docker in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.core import LocalStore, open_engine
from lamina.tui.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_embedded_engine_is_a_local_store(lamina_home: Path) -> None:
    engine = open_engine("embedded", lamina_home)
    try:
        assert isinstance(engine, LocalStore)
        assert engine.parent_images() == set()
        assert engine.differences == ()
    finally:
        engine.close()


def test_rebuild_index_refuses_docker_without_reaching_it(
    capsys: pytest.CaptureFixture[str], lamina_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens there: the refusal must come before any attempt to connect.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{lamina_home.parent}/nothing.sock")
    code, out, err = run(capsys, "--engine", "docker", "fsck", "--rebuild-index")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "lamina: `lamina fsck` works on lamina's own store; it does not apply to --engine docker"
    ]


@pytest.mark.docker
@pytest.mark.parametrize(
    ("verb", "what"),
    [
        (["load", "-i", "image.tar"], "`lamina load`"),
        (["save", "-o", "image.tar", "busybox"], "`lamina save`"),
        (["import", "rootfs.tar"], "`lamina import`"),
        (["fsck"], "`lamina fsck`"),
        (["system", "df", "--frees", "busybox"], "`--frees`"),
        (["demo", "--no-open"], "`lamina demo`"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_local_store_verbs_refuse_a_docker_engine(
    capsys: pytest.CaptureFixture[str], lamina_home: Path, verb: list[str], what: str
) -> None:
    code, out, err = run(capsys, "--engine", "docker", *verb)
    assert (code, out) == (2, "")
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"lamina: {what} works on lamina's own store; ")
