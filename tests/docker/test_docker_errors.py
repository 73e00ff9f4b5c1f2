"""Docker not running, a socket without permission, an API too old: one line each."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lamina.core.docker.convert import parse_time, split_tag
from lamina.core.docker.engine import DockerEngine
from lamina.core.errors import EngineUnavailable, UsageError
from lamina.core.open import open_engine


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_no_daemon_at_the_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = f"unix://{tmp_path}/nothing.sock"
    monkeypatch.setenv("DOCKER_HOST", host)
    with pytest.raises(EngineUnavailable) as info:
        open_engine("docker")
    text = _one_line(info.value)
    assert text == (
        f"cannot reach the Docker Engine at {host}: is dockerd running? "
        "(set DOCKER_HOST to use another daemon)"
    )


def test_socket_nobody_listens_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "dead.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()  # the file stays; connecting to it is refused
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    with pytest.raises(EngineUnavailable, match="is dockerd running"):
        DockerEngine()


def test_tcp_port_nobody_listens_on(monkeypatch: pytest.MonkeyPatch) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
    with pytest.raises(EngineUnavailable) as info:
        DockerEngine()
    assert _one_line(info.value).startswith(
        f"cannot reach the Docker Engine at tcp://127.0.0.1:{port}"
    )


@pytest.mark.parametrize(
    "verb",
    [["images"], ["history", "busybox"], ["system", "df"], ["image", "prune", "--dry-run"]],
    ids=lambda v: " ".join(v),
)
def test_cli_prints_one_line_without_traceback(tmp_path: Path, verb: list[str]) -> None:
    host = f"unix://{tmp_path}/nothing.sock"
    env = dict(os.environ, DOCKER_HOST=host, LAMINA_HOME=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "lamina.tui", "--engine", "docker", *verb],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    expected = (
        f"lamina: cannot reach the Docker Engine at {host}: is dockerd running? "
        "(set DOCKER_HOST to use another daemon)"
    )
    assert proc.stderr.splitlines() == [expected]


@pytest.mark.docker
def test_api_too_old() -> None:
    with pytest.raises(EngineUnavailable) as info:
        DockerEngine(min_api="99.0")
    text = _one_line(info.value)
    assert "lamina needs 99.0 or newer" in text and "speaks API 1." in text


@pytest.mark.docker
def test_socket_without_permission(tmp_path: Path) -> None:
    """An unprivileged user on a root-only socket gets the permission line."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        pytest.skip(f"DOCKER_HOST {host} is not a unix socket")
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as an unprivileged user")
    code = (
        "from lamina.core.docker.engine import DockerEngine\n"
        "from lamina.core.errors import EngineUnavailable\n"
        "try:\n"
        "    DockerEngine()\n"
        "except EngineUnavailable as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        env={"DOCKER_HOST": host, "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert proc.stderr == ""
    assert proc.stdout.strip() == (
        f"permission denied on the Docker socket ({host}): run as a member of the 'docker' "
        "group or point DOCKER_HOST at a socket you may use"
    )


def test_split_tag_and_time_parsing() -> None:
    assert split_tag("localhost:5000/x") == ("localhost:5000/x", "latest")
    assert split_tag("a/b:v1") == ("a/b", "v1")
    with pytest.raises(UsageError):
        split_tag("bad tag")
    assert parse_time("2026-11-28T00:36:38.055906675Z") == pytest.approx(1795826198.055906)
    assert parse_time("1970-01-01T00:00:01Z") == 1.0
    assert parse_time(None) == 0.0
