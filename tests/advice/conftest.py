"""Engines with the busybox base for the advice tests, and their build contexts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from advice_builds import Engines, Project

from lamina.core.embedded.engine import EmbeddedEngine


@pytest.fixture
def engines(tmp_path: Path, busybox_tar: Path) -> Iterator[Engines]:
    """Makes embedded engines, each over a store of its own with busybox:latest."""
    made: list[EmbeddedEngine] = []

    def make(name: str) -> EmbeddedEngine:
        engine = EmbeddedEngine(tmp_path / f"store-{name}")
        engine.import_rootfs(busybox_tar, "busybox:latest")
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


@pytest.fixture
def project(tmp_path: Path, engines: Engines) -> Project:
    """A build context at ``tmp_path/ctx`` built by an engine of its own."""
    return Project(tmp_path / "ctx", engines("a"))
