"""The Docker side: BuildKit (``DOCKER_BUILDKIT=1``) or the classic builder through the
docker CLI.

The CLI is what users run, so its time includes what they wait for: sending the context
to the daemon (BuildKit syncs it file by file, the classic builder sends one tar), the
daemon's checksums, RUN containers and layer commits. Builds run with ``--network none``:
the benchmark's daemon has no bridge, and no step needs the network.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from bench.dockerd import DockerDaemon, docker_cli
from bench.measure import BenchError, ChildResult, run_child

log = logging.getLogger(__name__)

_STEP_RE = re.compile(r"^Step \d+/(\d+) :", re.MULTILINE)
_CACHE_RE = re.compile(r"^ ---> Using cache$", re.MULTILINE)
# BuildKit's plain progress: "#5 [2/4] RUN ...", later "#5 CACHED" for a hit.
_BK_STEP_RE = re.compile(r"^#(\d+) \[(\d+)/(\d+)\] ", re.MULTILINE)
_BK_CACHED_RE = re.compile(r"^#(\d+) CACHED$", re.MULTILINE)


@dataclass(frozen=True)
class RefBuild:
    """One build by a reference builder.

    Attributes:
        result: the CLI process.
        steps: instructions the builder ran through (FROM included).
        cached: how many of the steps after FROM were cache hits.
    """

    result: ChildResult
    steps: int
    cached: int


# The old name, for callers that only ever knew the classic builder.
DockerBuild = RefBuild


def parse_classic(output: str) -> tuple[int, int]:
    """(steps, cache hits) from the classic builder's output."""
    totals = _STEP_RE.findall(output)
    return (int(totals[0]) if totals else 0), len(_CACHE_RE.findall(output))


def parse_buildkit(output: str) -> tuple[int, int]:
    """(steps, cache hits after FROM) from BuildKit's ``--progress=plain`` output.

    A vertex is named once per line it prints; the ``[n/N]`` prefix numbers the
    Dockerfile's steps, and FROM (step 1) reports CACHED whenever the base is local.
    """
    vertex_step: dict[str, int] = {}
    total = 0
    for vertex, step, steps in _BK_STEP_RE.findall(output):
        vertex_step[vertex] = int(step)
        total = max(total, int(steps))
    cached = {vertex_step.get(v) for v in _BK_CACHED_RE.findall(output)}
    return total, sum(1 for step in cached if step is not None and step > 1)


class DockerSide:
    """The docker CLI against one daemon, with one builder.

    Args:
        daemon: the daemon to talk to.
        buildkit: BuildKit (``DOCKER_BUILDKIT=1``) or the classic builder.
    """

    def __init__(self, daemon: DockerDaemon, buildkit: bool = False) -> None:
        docker = docker_cli()
        if docker is None:
            raise BenchError("the docker CLI disappeared")
        self.docker = docker
        self.daemon = daemon
        self.buildkit = buildkit
        self.name = "BuildKit" if buildkit else "classic"
        self.env = daemon.env(buildkit=buildkit)

    def run(self, *args: str, what: str) -> ChildResult:
        """One docker CLI command, checked."""
        return run_child([self.docker, *args], env=self.env).check(what)

    def import_base(self, rootfs_tar: Path, tag: str) -> str:
        """``docker import`` of a root filesystem tar; returns the image ID."""
        # No --change: lamina's import_rootfs sets no CMD either, so both bases match.
        out = self.run("import", str(rootfs_tar), tag, what=f"importing {rootfs_tar} into Docker")
        return out.output.strip().splitlines()[-1]

    def build(self, context: Path, tag: str) -> RefBuild:
        """``docker build --network none -t tag context`` with this side's builder.

        Raises:
            BenchError: the build failed.
        """
        args = ["build", "--network", "none", "-t", tag]
        if self.buildkit:
            args.append("--progress=plain")
        result = self.run(*args, str(context), what=f"docker build ({self.name}) of {context}")
        if self.buildkit:
            steps, cached = parse_buildkit(result.output)
        else:
            steps, cached = parse_classic(result.output)
            if "Successfully built" not in result.output:
                raise BenchError(f"docker build of {context}: no 'Successfully built' line")
        return RefBuild(result=result, steps=steps, cached=cached)

    def reset_cache(self, tag: str) -> None:
        """Removes the built image and this builder's cache, so the next build is cold."""
        self.remove(tag)
        if self.buildkit:
            self.run("builder", "prune", "-af", what="docker builder prune")
        self.remove_dangling()

    def remove(self, tag: str) -> None:
        """``docker rmi``: the image and its untagged intermediate parents (the cache)."""
        out = run_child([self.docker, "rmi", "-f", tag], env=self.env)
        if out.returncode != 0 and "No such image" not in out.output:
            out.check(f"removing {tag} from Docker")

    def remove_dangling(self) -> None:
        """Removes dangling images left by earlier builds, so a cold build is cold."""
        self.run("image", "prune", "-f", what="docker image prune")

    def store_root(self) -> Path | None:
        """Where the daemon keeps its data, when the benchmark knows (a private one)."""
        return self.daemon.data_root
