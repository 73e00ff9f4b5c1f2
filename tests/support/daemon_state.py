"""A small, deterministic daemon state for the tests that compare lamina with Docker.

Images (a classic build rebuilt once, so one image is dangling with its intermediates,
and a BuildKit build), stopped containers with data in their writable layers, named and
anonymous volumes (used and unused), and classic and BuildKit build cache. Made with
Debian's docker CLI (``/usr/bin/docker``, 20.10) so the BuildKit records are real.

The prune tests run the same command through lamina on one copy of the state and
through ``docker`` on a second copy made by the same script, so everything here has
fixed contents: the two copies hold the same bytes.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DOCKER_2010 = "/usr/bin/docker"


def docker_2010(*args: str, buildkit: bool = False, check: bool = True) -> str:
    """Runs Debian's docker CLI (20.10) explicitly, whatever is first on PATH."""
    if not os.path.exists(DOCKER_2010):
        pytest.fail("Debian's docker.io CLI (/usr/bin/docker) is needed to compare with Docker")
    env = dict(os.environ, DOCKER_BUILDKIT="1" if buildkit else "0")
    env.pop("DOCKER_API_VERSION", None)  # 20.10 speaks the daemon's own version
    proc = subprocess.run(
        [DOCKER_2010, *args], capture_output=True, text=True, env=env, check=False
    )
    if check:
        assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout


@dataclass
class State:
    """Names of what :func:`make_state` made (IDs differ between copies; names do not)."""

    prefix: str
    keep: list[str]  # running containers that keep the session's base images in use


def clean_slate(api: Any) -> None:
    """Removes everything prunable (the running keep-alive containers protect the bases)."""
    api.prune_containers()
    api.prune_volumes()
    for _ in range(3):
        if not api.prune_images(filters={"dangling": "false"}).get("ImagesDeleted"):
            break
    api.prune_builds(all=True)


def keep_alive(api: Any, images: list[str], prefix: str) -> list[str]:
    """A running container on each image, so no prune removes it during the test."""
    names = []
    for n, image in enumerate(images):
        name = f"{prefix}-keep{n}"
        docker_2010("run", "-d", "--network", "none", "--name", name, image, "sleep", "3600")
        names.append(name)
    return names


def release(api: Any, state: State) -> None:
    """Removes what the test made, then the keep-alive containers (the bases stay)."""
    clean_slate(api)
    for name in state.keep:
        docker_2010("rm", "-f", name, check=False)


def make_state(root: Path, base: str, prefix: str) -> None:
    """Builds the state (see the module docstring) from ``base`` under ``prefix``."""
    ctx = root / "classic"
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(
        f"FROM {base}\nRUN head -c 20000 /dev/zero > /z\nCOPY f /f\nLABEL kind=classic\n"
    )
    (ctx / "f").write_text("one\n")
    docker_2010("build", "-q", "--network", "none", "-t", f"{prefix}/classic:1", str(ctx))
    (ctx / "f").write_text("two\n")  # the first image becomes dangling
    docker_2010("build", "-q", "--network", "none", "-t", f"{prefix}/classic:1", str(ctx))
    bk = root / "buildkit"
    bk.mkdir(parents=True, exist_ok=True)
    (bk / "Dockerfile").write_text(f"FROM {base}\nRUN head -c 30000 /dev/zero > /y\nCOPY g /g\n")
    (bk / "g").write_text("g" * 4000)
    docker_2010("build", "-q", "--network", "none", "-t", f"{prefix}/bk:1", str(bk), buildkit=True)
    docker_2010("volume", "create", f"{prefix}-used")
    docker_2010("volume", "create", f"{prefix}-free")
    docker_2010(
        "run", "--rm", "--network", "none", "-v", f"{prefix}-free:/d", base,
        "sh", "-c", "head -c 300 /dev/zero > /d/x",
    )  # fmt: skip
    docker_2010(
        "run", "--name", f"{prefix}-c1", "--network", "none", "-v", "/anon", base,
        "sh", "-c", "head -c 5000 /dev/zero > /w && head -c 700 /dev/zero > /anon/a",
    )  # fmt: skip
    docker_2010(
        "create", "--name", f"{prefix}-c2", "--network", "none", "-v", f"{prefix}-used:/u",
        "--label", "role=db", f"{prefix}/classic:1",
    )  # fmt: skip
    docker_2010("create", "--name", f"{prefix}-c3", "--network", "none", "-v", "/other", base)


def snapshot(api: Any) -> dict[str, Any]:
    """What the daemon holds, by names where names are stable across two copies."""
    containers = {str(c["Names"][0]).lstrip("/"): c["Id"] for c in api.containers(all=True)}
    volumes = (api.volumes() or {}).get("Volumes") or []
    df = api.df()
    return {
        "containers": containers,
        "named": {v["Name"] for v in volumes if len(v["Name"]) != 64},
        "anonymous": {v["Name"] for v in volumes if len(v["Name"]) == 64},
        "images": {i["Id"] for i in api.images(all=True)},
        "tags": {t for i in api.images() for t in i.get("RepoTags") or [] if t != "<none>:<none>"},
        "cache": {r["ID"] for r in df.get("BuildCache") or []},
    }


def removed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What went, comparable between two copies of the state (names and counts)."""
    return {
        "containers": sorted(set(before["containers"]) - set(after["containers"])),
        "named": sorted(before["named"] - after["named"]),
        "anonymous": len(before["anonymous"] - after["anonymous"]),
        "images": len(before["images"] - after["images"]),
        "tags": sorted(before["tags"] - after["tags"]),
        "cache": len(before["cache"] - after["cache"]),
    }
