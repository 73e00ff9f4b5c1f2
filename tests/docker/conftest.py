"""Fixtures for tests against a real Docker Engine (``DOCKER_HOST`` honoured).

Every test here that talks to Docker is marked ``docker``: on a laptop without a daemon
it skips with the reason, in CI it fails. Images the tests make are tagged under a
per-session prefix and removed at the end of the session.
"""

from __future__ import annotations

import os
import subprocess
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

# As tests/conftest.py: in CI a missing capability fails the test instead of skipping it.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Where a newer docker CLI is installed beside Debian's (.ci/run puts one here).
NEWER_CLI = "/usr/local/bin/docker"

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


def _client_version(exe: str) -> str:
    """The CLI's own version (it prints it even when no daemon answers)."""
    proc = subprocess.run(
        [exe, "version", "--format", "{{.Client.Version}}"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    return proc.stdout.strip()


@pytest.fixture(scope="session")
def newer_docker() -> str:
    """A docker CLI of 24.0 or newer, wherever it sits: every ``docker`` on PATH is
    asked its version, so which one comes first never decides what the test runs.

    Without one a test skips on a laptop and fails in CI, saying what is missing.
    """
    seen: set[str] = set()
    tried: list[str] = []
    for exe in [os.path.join(d, "docker") for d in os.get_exec_path()] + [NEWER_CLI]:
        real = os.path.realpath(exe)
        if real in seen or not os.access(real, os.X_OK):
            continue
        seen.add(real)
        version = _client_version(exe)
        tried.append(f"{exe} {version or '?'}")
        major = version.split(".", 1)[0]
        if major.isdigit() and int(major) >= 24:
            return exe
    reason = "no docker CLI 24.0 or newer found (" + (", ".join(tried) or "none on PATH") + ")"
    if IN_CI:
        pytest.fail(f"CI must provide a docker CLI 24.0 or newer at {NEWER_CLI}: {reason}")
    pytest.skip(reason)


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
