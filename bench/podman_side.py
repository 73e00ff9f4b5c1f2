"""The podman side: ``podman build`` (buildah underneath) on a private store.

Debian packages podman 4.3 (``apt-get install podman``). When it is installed the
benchmark builds with it too, on a storage root of its own under the work directory
(overlay driver, cgroupfs, no event log), so the machine's podman images are neither
used nor touched. When it is not, or it cannot build here, the column is skipped and
the report says why.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from bench.docker_side import RefBuild
from bench.measure import BenchError, ChildResult, Skipped, run_child

log = logging.getLogger(__name__)

_STEP_RE = re.compile(r"^STEP (\d+)/(\d+): ", re.MULTILINE)
_CACHE_RE = re.compile(r"^--> Using cache ", re.MULTILINE)


def parse_podman(output: str) -> tuple[int, int]:
    """(steps, cache hits) from ``podman build`` output."""
    totals = _STEP_RE.findall(output)
    return (int(totals[0][1]) if totals else 0), len(_CACHE_RE.findall(output))


class PodmanSide:
    """The podman CLI over a private storage root.

    Args:
        root: a directory for its storage (``root/``) and run state (``run/``).

    Raises:
        Skipped: podman is not installed.
    """

    name = "podman"

    def __init__(self, root: Path) -> None:
        podman = shutil.which("podman")
        if podman is None:
            raise Skipped("podman is not installed (Debian: apt-get install podman)")
        self.home = root
        self.argv = [
            podman,
            "--root",
            str(root / "root"),
            "--runroot",
            str(root / "run"),
            "--storage-driver",
            "overlay",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ]

    def run(self, *args: str, what: str) -> ChildResult:
        """One podman command, checked."""
        return run_child([*self.argv, *args]).check(what)

    def version(self) -> str:
        """podman's version number."""
        return self.run("--version", what="podman --version").output.split()[-1]

    def import_base(self, rootfs_tar: Path, tag: str) -> str:
        """``podman import`` of a root filesystem tar; returns the image ID."""
        out = self.run("import", str(rootfs_tar), tag, what=f"importing {rootfs_tar} into podman")
        return out.output.strip().splitlines()[-1]

    def build(self, context: Path, tag: str) -> RefBuild:
        """``podman build --network none -t tag context``.

        Raises:
            BenchError: the build failed.
        """
        result = self.run(
            "build", "--network", "none", "-t", tag, str(context), what=f"podman build of {context}"
        )
        steps, cached = parse_podman(result.output)
        return RefBuild(result=result, steps=steps, cached=cached)

    def reset_cache(self, tag: str) -> None:
        """Removes the built image and its intermediate images (podman's build cache)."""
        self.remove(tag)
        self.run("image", "prune", "-f", what="podman image prune")

    def remove(self, tag: str) -> None:
        """``podman rmi -f``, quiet when there is no such image."""
        out = run_child([*self.argv, "rmi", "-f", tag])
        if out.returncode != 0 and "image not known" not in out.output:
            out.check(f"removing {tag} from podman")

    def store_root(self) -> Path | None:
        """Its storage root (what its store grows by is measured there)."""
        return self.home / "root"

    def destroy(self) -> None:
        """Removes the private storage (overlay mounts first, through podman itself)."""
        run_child([*self.argv, "system", "reset", "-f"])
        shutil.rmtree(self.home, ignore_errors=True)

    @classmethod
    def open(cls, root: Path, rootfs_tar: Path, base_tag: str) -> PodmanSide:
        """A side ready to build on ``base_tag``, or Skipped saying why it cannot be.

        Raises:
            Skipped: podman is missing or cannot import or build here.
        """
        side = cls(root)
        try:
            side.import_base(rootfs_tar, base_tag)
        except BenchError as exc:
            side.destroy()
            raise Skipped(f"podman cannot run here: {exc}") from exc
        return side
