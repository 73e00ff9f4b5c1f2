"""Reaching the Docker Engine the benchmark compares against.

``$DOCKER_HOST`` is used when a daemon answers there. Otherwise a private dockerd is
started the way ``.ci/run`` starts one (data root, exec root, pid file and socket under
a fresh temporary directory; no iptables, no bridge) and stopped by its PID at the end,
so the benchmark never touches, or is slowed by, a system daemon's images.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.measure import Skipped

log = logging.getLogger(__name__)

DEBIAN_DOCKER = "/usr/bin/docker"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class DockerDaemon:
    """A daemon the docker CLI can reach.

    Attributes:
        host: the ``DOCKER_HOST`` value.
        version: the daemon's version string.
        storage_driver: its storage driver (overlay2 on most machines).
        private: True if the benchmark started it.
        config_dir: a private ``DOCKER_CONFIG``, so a user's contexts and credential
            helpers stay out of the measurement.
        data_root: the daemon's data root when the benchmark started it (what its store
            grows by is measured there), else None.
    """

    host: str
    version: str
    storage_driver: str
    private: bool
    config_dir: str
    data_root: Path | None = None

    def env(self, buildkit: bool = False) -> dict[str, str]:
        """The environment for docker CLI calls: this daemon, BuildKit or the classic
        builder."""
        env = dict(os.environ)
        env["DOCKER_HOST"] = self.host
        env["DOCKER_BUILDKIT"] = "1" if buildkit else "0"
        # The CLI may be newer than the daemon (28 vs 20.10 here); it negotiates the API
        # version down by itself.
        env["DOCKER_CONFIG"] = self.config_dir
        env.pop("DOCKER_CONTEXT", None)
        return env


def docker_cli() -> str | None:
    """The docker CLI to time: Debian's 20.10 (``/usr/bin/docker``) where it is installed,
    as it matches the daemon (a newer CLI on PATH would hand BuildKit builds to buildx),
    else the first on PATH."""
    if os.access(DEBIAN_DOCKER, os.X_OK):
        return DEBIAN_DOCKER
    return shutil.which("docker")


def _probe(host: str) -> tuple[str, str, str] | None:
    """(version, storage driver, data root) of the daemon at ``host``, or None if none
    answers."""
    docker = docker_cli()
    if docker is None:
        return None
    env = dict(os.environ, DOCKER_HOST=host)
    try:
        out = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}} {{.Driver}} {{.DockerRootDir}}"],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = out.stdout.split()
    if out.returncode != 0 or len(parts) != 3:
        return None
    return parts[0], parts[1], parts[2]


@contextmanager
def docker_daemon() -> Iterator[DockerDaemon]:
    """Yields a reachable daemon: ``$DOCKER_HOST``'s, or a private one for the block.

    Raises:
        Skipped: the docker CLI or dockerd is not installed, or dockerd would not start.
    """
    if docker_cli() is None:
        raise Skipped("the docker CLI is not installed")
    config_dir = tempfile.mkdtemp(prefix="lamina-bench-docker-config-")
    try:
        yield from _daemon(config_dir)
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)


def _daemon(config_dir: str) -> Iterator[DockerDaemon]:
    host = os.environ.get("DOCKER_HOST")
    if host:
        probed = _probe(host)
        if probed is not None:
            log.info("using the Docker Engine at %s (%s)", host, probed[0])
            # Its store is measured where this process can read it (a daemon on this
            # machine), as a private one's is.
            root = Path(probed[2])
            yield DockerDaemon(
                host,
                probed[0],
                probed[1],
                private=False,
                config_dir=config_dir,
                data_root=root if root.is_dir() else None,
            )
            return
        log.warning("no Docker Engine answers at DOCKER_HOST=%s; starting a private one", host)
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise Skipped(
            "dockerd is not installed (apt-get install docker.io) and DOCKER_HOST is unset"
        )
    tmp = Path(tempfile.mkdtemp(prefix="lamina-bench-dockerd-"))
    sock = tmp / "docker.sock"
    pidfile = tmp / "dockerd.pid"
    log_path = tmp / "dockerd.log"
    argv = [
        dockerd,
        "--data-root",
        str(tmp / "data"),
        "--exec-root",
        str(tmp / "exec"),
        "--pidfile",
        str(pidfile),
        "--host",
        f"unix://{sock}",
        "--iptables=false",
        "--ip-masq=false",
        "--bridge=none",
        "--storage-driver",
        "overlay2",
    ]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    host = f"unix://{sock}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        probed = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if sock.exists():
                probed = _probe(host)
                if probed is not None:
                    break
            time.sleep(0.25)
        if probed is None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no log"]
            raise Skipped(f"a private dockerd did not start within {START_TIMEOUT:.0f}s: {tail[0]}")
        log.info("started a private dockerd %s (pid %d) at %s", probed[0], proc.pid, host)
        yield DockerDaemon(
            host, probed[0], probed[1], private=True, config_dir=config_dir, data_root=tmp / "data"
        )
    finally:
        _stop(proc, pidfile)
        shutil.rmtree(tmp, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes], pidfile: Path) -> None:
    """Stops the private dockerd by its PID (SIGTERM, then SIGKILL after a grace period)."""
    pid = proc.pid
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        pass
    if proc.poll() is not None:
        return
    os.kill(pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log.warning("dockerd (pid %d) ignored SIGTERM for %.0fs; killing it", pid, STOP_TIMEOUT)
        os.kill(pid, signal.SIGKILL)
        proc.wait()
