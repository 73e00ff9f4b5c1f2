"""The Docker side: the classic builder (``DOCKER_BUILDKIT=0``) through the docker CLI.

The CLI is what users run, so its time includes what they wait for: packing the context
into a tar, sending it over the socket, the daemon's checksums, RUN containers and
layer commits.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from bench.dockerd import DockerDaemon
from bench.measure import BenchError, ChildResult, run_child

log = logging.getLogger(__name__)

_STEP_RE = re.compile(r"^Step \d+/(\d+) :", re.MULTILINE)
_CACHE_RE = re.compile(r"^ ---> Using cache$", re.MULTILINE)


@dataclass(frozen=True)
class DockerBuild:
    """One ``docker build``.

    Attributes:
        result: the CLI process.
        steps: instructions the builder ran through (FROM included).
        cached: how many of them were cache hits.
    """

    result: ChildResult
    steps: int
    cached: int


class DockerSide:
    """The docker CLI against one daemon.

    Args:
        daemon: the daemon to talk to.
    """

    def __init__(self, daemon: DockerDaemon) -> None:
        docker = shutil.which("docker")
        if docker is None:
            raise BenchError("the docker CLI disappeared")
        self.docker = docker
        self.daemon = daemon
        self.env = daemon.env()

    def run(self, *args: str, what: str) -> ChildResult:
        """One docker CLI command, checked."""
        return run_child([self.docker, *args], env=self.env).check(what)

    def import_base(self, rootfs_tar: Path, tag: str) -> str:
        """``docker import`` of a root filesystem tar; returns the image ID."""
        # No --change: lamina's import_rootfs sets no CMD either, so both bases match.
        out = self.run("import", str(rootfs_tar), tag, what=f"importing {rootfs_tar} into Docker")
        return out.output.strip().splitlines()[-1]

    def build(self, context: Path, tag: str) -> DockerBuild:
        """``docker build -t tag context`` with the classic builder.

        Raises:
            BenchError: the build failed.
        """
        result = self.run("build", "-t", tag, str(context), what=f"docker build of {context}")
        totals = _STEP_RE.findall(result.output)
        steps = int(totals[0]) if totals else 0
        cached = len(_CACHE_RE.findall(result.output))
        if "Successfully built" not in result.output:
            raise BenchError(f"docker build of {context}: no 'Successfully built' line")
        return DockerBuild(result=result, steps=steps, cached=cached)

    def remove(self, tag: str) -> None:
        """``docker rmi``: the image and its untagged intermediate parents (the cache)."""
        out = run_child([self.docker, "rmi", "-f", tag], env=self.env)
        if out.returncode != 0 and "No such image" not in out.output:
            out.check(f"removing {tag} from Docker")

    def remove_dangling(self) -> None:
        """Removes dangling images left by earlier builds, so a cold build is cold."""
        self.run("image", "prune", "-f", what="docker image prune")
