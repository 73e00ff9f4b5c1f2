"""Fixtures and gates shared by the whole suite.

Tests that need root (overlay mounts, namespaces) or a Docker Engine are marked
``root`` / ``docker``. On a laptop without them they skip and say why; in CI
(``CI=true``) a missing capability fails the run instead, so nothing is skipped there
silently.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from lamina.core.embedded.store import Store

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CONFORMANCE = SHARED / "conformance"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _busybox() -> str | None:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(candidate):
            return candidate
    return shutil.which("busybox")


def _can_isolate() -> str | None:
    """None when RUN can be sandboxed here, else why not."""
    if os.geteuid() == 0:
        return None
    try:
        max_ns = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except OSError:
        max_ns = 0
    if max_ns == 0:
        return "needs root or unprivileged user namespaces (max_user_namespaces is 0)"
    return None


def _docker_reason() -> str | None:
    """None when a Docker Engine answers, else why not."""
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
        return None
    except Exception as exc:
        return f"no Docker Engine reachable ({type(exc).__name__}: {exc})"


def _gate(reason: str | None, what: str) -> None:
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"CI must provide {what}: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def conformance() -> Path:
    """The shared conformance data (never copied into the repo)."""
    if not CONFORMANCE.is_dir():
        _gate(f"conformance data not found at {CONFORMANCE}", "../shared/conformance")
    return CONFORMANCE


@pytest.fixture(scope="session")
def busybox() -> str:
    """Path of a static busybox binary (Debian's busybox-static)."""
    path = _busybox()
    _gate(None if path else "busybox not installed (apt-get install busybox-static)", "busybox")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory, busybox: str) -> Path:
    """lamina's busybox rootfs tar (``lamina.core.demo.busybox``), made once per session."""
    from lamina.core.demo.busybox import busybox_rootfs_tar

    return busybox_rootfs_tar(tmp_path_factory.mktemp("rootfs") / "busybox.tar", busybox)


@pytest.fixture
def isolation() -> None:
    """Gate for tests that run RUN steps in a sandbox."""
    _gate(_can_isolate(), "root or user namespaces")


def pytest_configure(config: pytest.Config) -> None:
    """No test may write into the real home: unless a test sets its own, every store and
    record lands in one temp directory for the session (``lamina_home`` gives a test a
    fresh one)."""
    import tempfile

    if not os.environ.get("LAMINA_TEST_KEEP_HOME"):
        session_home = Path(tempfile.mkdtemp(prefix="lamina-test-home-"))
        _SESSION_HOME.append(session_home)
        os.environ["LAMINA_HOME"] = str(session_home / "lamina")
        os.environ["XDG_DATA_HOME"] = str(session_home / "data")


def pytest_unconfigure(config: pytest.Config) -> None:
    """The session's temp home goes with the session."""
    import shutil

    for home in _SESSION_HOME:
        shutil.rmtree(home, ignore_errors=True)
    _SESSION_HOME.clear()


_SESSION_HOME: list[Path] = []


_DOCKER_STATE: dict[str, str | None] = {}


@pytest.fixture
def docker_available() -> None:
    """Gate for tests that need a Docker Engine (DOCKER_HOST is honoured)."""
    if "reason" not in _DOCKER_STATE:
        _DOCKER_STATE["reason"] = _docker_reason()
    _gate(_DOCKER_STATE["reason"], "a running Docker Engine")


@pytest.fixture
def lamina_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty store location, also exported as $LAMINA_HOME."""
    home = tmp_path / "store"
    monkeypatch.setenv("LAMINA_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return home


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """An empty embedded store at ``tmp_path / "store"``, closed after the test."""
    from lamina.core.embedded.store import Store

    s = Store(tmp_path / "store")
    yield s
    s.close()


@pytest.fixture
def busybox_store(store: Store, busybox_tar: Path) -> Store:
    """``store`` with ``busybox:latest`` imported, the base builds start FROM.

    A module whose tests all build marks itself ``usefixtures("busybox_store")`` and
    keeps asking for ``store``: both are the same store.
    """
    from lamina.core.embedded.archive import import_rootfs

    import_rootfs(store, busybox_tar, "busybox:latest")
    return store


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Attach the gate fixtures to tests carrying the matching marker."""
    for item in items:
        if item.get_closest_marker("root") and "isolation" not in getattr(item, "fixturenames", []):
            item.fixturenames.append("isolation")  # type: ignore[attr-defined]
        if item.get_closest_marker("docker") and "docker_available" not in getattr(
            item, "fixturenames", []
        ):
            item.fixturenames.append("docker_available")  # type: ignore[attr-defined]


@pytest.fixture
def classic_builder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Builds follow the classic builder's rules (``[build] builder = "classic"`` in an
    isolated config.toml): for tests of the rules of ``cache-semantics.md``, now that
    BuildKit's are the default. Subprocesses inherit it."""
    config = tmp_path / "config"  # the same as ``isolation``'s, whichever runs first
    (config / "lamina").mkdir(parents=True, exist_ok=True)
    (config / "lamina" / "config.toml").write_text('[build]\nbuilder = "classic"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
