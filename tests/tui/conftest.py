"""Stores for the app tests, built for real.

* ``demo_home``: the demo workspace built once per session (RUN steps: needs root);
  read-only tests share it.
* ``fresh_demo``: a demo store of the test's own, for tests that rebuild or prune.
* ``dive_home``: dive's test image loaded with ``load_archive``, with every timestamp
  pinned, so SVG snapshots are byte-stable.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.core.engine import Engine
from lamina.core.open import open_engine

# A fixed "now" for relative times in snapshots: 2026-01-01T00:00:00Z.
FIXED_NOW = 1767225600.0
# Layers of the snapshot store were "committed" an hour before FIXED_NOW.
FIXED_COMMIT = FIXED_NOW - 3600


def fixed_clock() -> float:
    return FIXED_NOW


def open_embedded(home: Path) -> Engine:
    return open_engine("embedded", home)


def _build_demo(home: Path, workspace: Path) -> None:
    from lamina.core.demo.workspace import create_demo
    from lamina.core.embedded.store import Store

    store = Store(home)
    try:
        create_demo(store, workspace)
    finally:
        store.close()


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo store shared by read-only tests."""
    if os.geteuid() != 0:
        pytest.skip("the demo store needs RUN steps (root)")
    base = tmp_path_factory.mktemp("demo")
    _build_demo(base / "store", base / "ws")
    return base / "store"


@pytest.fixture
def fresh_demo(tmp_path: Path) -> Path:
    """A demo store this test may change."""
    if os.geteuid() != 0:
        pytest.skip("the demo store needs RUN steps (root)")
    _build_demo(tmp_path / "store", tmp_path / "ws")
    return tmp_path / "store"


@pytest.fixture
def demo_engine(demo_home: Path) -> Iterator[Engine]:
    engine = open_embedded(demo_home)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def dive_home(tmp_path_factory: pytest.TempPathFactory, conformance: Path) -> Path:
    """dive's test image, loaded, with pinned timestamps."""
    from lamina.core.embedded.archive import load_archive
    from lamina.core.embedded.store import Store

    home = tmp_path_factory.mktemp("dive") / "store"
    store = Store(home)
    try:
        load_archive(store, conformance / "images/dive/test-docker-image.tar")
    finally:
        store.close()
    db = sqlite3.connect(home / "index.db")
    with db:
        db.execute("UPDATE layers SET created = ?", (FIXED_COMMIT,))
        db.execute("UPDATE images SET added = ?", (FIXED_COMMIT,))
    db.close()
    return home


@pytest.fixture
def dive_engine(dive_home: Path) -> Iterator[Engine]:
    engine = open_embedded(dive_home)
    yield engine
    engine.close()


# A long line edited at its end: the reason must show where the two differ. (A COPY, so
# it is a cached step under either builder's rules.)
BUILDS_DOCKERFILE = (
    "FROM busybox\n"
    "COPY app.txt /srv/greeter/share/a/destination/long/enough/to/be/cut/by/any/table/column"
    "/version-one.txt\n"
    "COPY app.txt /app/app.txt\n"
    "LABEL org.example.team=core\n"
)


@pytest.fixture(scope="session")
def builds_home(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Path:
    """Two builds of one Dockerfile (COPY and metadata only), the second after an edit
    at the end of a long line, with pinned times, durations and paths."""
    from lamina.core.embedded.archive import import_rootfs
    from lamina.core.embedded.builder.walk import run_build
    from lamina.core.embedded.store import Store
    from lamina.core.events import BuildFinished
    from lamina.core.model import BuildRequest

    base = tmp_path_factory.mktemp("builds")
    ctx = base / "ctx"
    ctx.mkdir()
    (ctx / "app.txt").write_text("app\n")
    store = Store(base / "store")
    try:
        import_rootfs(store, busybox_tar, "busybox:latest")
        for text in (BUILDS_DOCKERFILE, BUILDS_DOCKERFILE.replace("version-one", "version-two")):
            (ctx / "Dockerfile").write_text(text)
            events = list(run_build(store, BuildRequest(context=str(ctx), tags=("greeter",))))
            assert isinstance(events[-1], BuildFinished), events[-1]
    finally:
        store.close()
    db = sqlite3.connect(base / "store" / "index.db")
    with db:
        db.execute(
            "UPDATE builds SET started = ? + id * 60, finished = ? + id * 60 + 2,"
            " dockerfile = '/srv/greeter/Dockerfile', context = '/srv/greeter'",
            (FIXED_COMMIT, FIXED_COMMIT),
        )
        db.execute("UPDATE build_steps SET duration = 0.25 WHERE cached IS NOT NULL")
        db.execute("UPDATE layers SET created = ?", (FIXED_COMMIT,))
        db.execute("UPDATE images SET added = ?", (FIXED_COMMIT,))
    db.close()
    return base / "store"


@pytest.fixture
def builds_engine(builds_home: Path) -> Iterator[Engine]:
    engine = open_embedded(builds_home)
    yield engine
    engine.close()


def break_layer(home: Path, chain_id: str) -> None:
    """Removes a layer's directory behind the index's back (what fsck reports)."""
    hex_part = chain_id.split(":", 1)[1]
    shutil.rmtree(home / "layers" / hex_part)
