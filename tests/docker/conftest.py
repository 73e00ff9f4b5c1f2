"""Fixtures for tests against a real Docker Engine (``DOCKER_HOST`` honoured).

Every test here that talks to Docker is marked ``docker``: on a laptop without a daemon
it skips with the reason, in CI it fails. Images the tests make are tagged under a
per-session prefix and removed at the end of the session.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_cleanup import remove_images_tagged

from lamina.core.demo.busybox import busybox_rootfs_tar
from lamina.core.docker.engine import DockerEngine

SESSION = uuid.uuid4().hex[:8]
PREFIX = f"lamina-test-{SESSION}"
BASE = f"{PREFIX}/busybox:latest"

_created: set[str] = set()
_base_ready: dict[str, str] = {}


def _import_base(engine: DockerEngine, tmp: Path) -> str:
    """Imports lamina's reproducible busybox rootfs into Docker once per session."""
    if "id" not in _base_ready:
        tar = busybox_rootfs_tar(tmp / "busybox-rootfs.tar")
        with open(tar, "rb") as fh:
            out = engine.api.import_image_from_data(
                fh.read(), repository=BASE.rsplit(":", 1)[0], tag="latest", changes=['CMD ["sh"]']
            )
        _created.add(BASE)
        _base_ready["id"] = engine.image(BASE).id
        assert out  # the daemon answered with the new image's status
    return BASE


@pytest.fixture(autouse=True)
def _docker_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every Docker test records builds under a temp ``LAMINA_HOME``, never the real home
    (the CLI opens its engine with ``default_home()``)."""
    home = tmp_path / "lamina-home"
    monkeypatch.setenv("LAMINA_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return home


@pytest.fixture
def docker_engine(docker_available: None, tmp_path: Path) -> Iterator[DockerEngine]:
    """A DockerEngine on the daemon ``DOCKER_HOST`` names, recording builds in tmp_path."""
    engine = DockerEngine(home=tmp_path / "lamina-home")
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture
def docker_base(docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A busybox base image in Docker (``<prefix>/busybox:latest``)."""
    return _import_base(docker_engine, tmp_path_factory.mktemp("base"))


@pytest.fixture
def docker_tag() -> Iterator[object]:
    """Makes unique tags under the session prefix; they are removed at session end."""

    def make(name: str = "img") -> str:
        tag = f"{PREFIX}/{name}-{uuid.uuid4().hex[:6]}:latest"
        _created.add(tag)
        return tag

    return make


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Removes the session's images (and the intermediates they leave dangling)."""
    if _created:
        remove_images_tagged(PREFIX + "/", timeout=60)


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    """Writes ``{relative path: content}`` under root, creating directories."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


@pytest.fixture
def tree() -> object:
    """``tree(root, {path: content})`` writes a build context."""
    return write_tree
