"""``lamina diff`` on a Docker Engine against a real unpacking of ``docker save``: two
images built by dockerd on one base, unpacked layer by layer with GNU tar and walked;
the diff must list exactly the paths the walks differ in."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from rootfs_walk import differing, unpack, walk

from lamina.core import diff_images
from lamina.core.docker.engine import DockerEngine

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DOCKER = "/usr/bin/docker"


def test_docker_diff_matches_a_real_unpacking(
    docker_engine: DockerEngine, docker_base: str, docker_tag: Any, tree: Any, tmp_path: Path
) -> None:
    common = (
        f"FROM {docker_base}\nCOPY base/ /app/\n"
        "RUN mkdir -p /data/wipe && echo w > /data/wipe/w1 && ln -s /app/one.txt /app/link\n"
    )
    ctx = tree(
        tmp_path / "ctx",
        {
            "base/one.txt": "one\n",
            "base/two.txt": "same-size-0\n",
            "b/only-b.txt": "b" * 2000,
            "A.Dockerfile": common + "RUN echo same-size-a > /app/two.txt\n",
            "B.Dockerfile": common
            + "COPY b/ /srv/\nRUN echo same-size-b > /app/two.txt && chmod 600 /app/one.txt"
            " && chown 7:7 /app/two.txt && rm -rf /data/wipe && ln -sf /etc /app/link\n",
        },
    )
    tags = []
    for name in ("A", "B"):
        tag = docker_tag(f"diff-{name.lower()}")
        docker_engine.client.images.build(
            path=str(ctx), dockerfile=f"{name}.Dockerfile", tag=tag, rm=True
        )
        tags.append(tag)
    walks = []
    for i, tag in enumerate(tags):
        archive = tmp_path / f"{i}.tar"
        subprocess.run([DOCKER, "save", "-o", str(archive), tag], check=True)
        walks.append(walk(unpack(archive, tmp_path / f"root{i}", tmp_path / "work")))
    expected = differing(walks[0], walks[1])
    result = diff_images(docker_engine.image_files(tags[0]), docker_engine.image_files(tags[1]))
    assert {f.path for f in result.files} == expected
    assert {"/srv/only-b.txt", "/data/wipe", "/data/wipe/w1", "/app/two.txt"} <= expected
    by_path = {f.path: f for f in result.files}
    assert by_path["/app/one.txt"].what == ("mode",)
    assert by_path["/app/two.txt"].what == ("content", "owner")
    assert by_path["/app/link"].what == ("link target",)
    assert by_path["/data/wipe"].b is not None and by_path["/data/wipe"].b.deleted
    assert "rm -rf /data/wipe" in by_path["/data/wipe"].b.created_by
    assert result.parted_at == len(result.shared) == 3
