"""An image saved from lamina's own store shows the same sizes in lamina as in Docker.

Built (or loaded) in the embedded store, written with ``lamina save``, read back with
Debian's ``docker load`` (CLI 20.10, ``/usr/bin/docker``) into the daemon the tests run
against: ``lamina images``/``history`` and ``docker images``/``history`` then print the
same bytes and the same words for them, since both measure a layer the way moby's
overlay2 does (``directory.Size`` of its diff).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lamina.tui.cli import main

pytestmark = [pytest.mark.docker, pytest.mark.root]

DEBIAN_DOCKER = "/usr/bin/docker"


def docker(*args: str) -> str:
    if not os.path.exists(DEBIAN_DOCKER):
        pytest.fail("Debian's docker.io CLI (/usr/bin/docker) is needed to load the archive")
    proc = subprocess.run([DEBIAN_DOCKER, *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def lamina(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _lamina_sizes(capsys: pytest.CaptureFixture[str], tag: str) -> tuple[Any, ...]:
    rows = json_lines(lamina(capsys, "images", "--format", "json"))
    image = next(r for r in rows if f"{r['Repository']}:{r['Tag']}" == tag)
    history = json_lines(lamina(capsys, "history", "--format", "json", "--no-trunc", tag))
    return (
        image["SizeBytes"],
        image["Size"],
        [(h["CreatedBy"], h["SizeBytes"], h["Size"]) for h in history],
    )


def _docker_sizes(tag: str) -> tuple[Any, ...]:
    inspected = json.loads(docker("image", "inspect", tag))[0]
    listed = json_lines(docker("images", "--format", "{{json .}}", tag))[0]
    exact = json_lines(
        docker("history", "--no-trunc", "--human=false", "--format", "{{json .}}", tag)
    )
    words = json_lines(docker("history", "--no-trunc", "--format", "{{json .}}", tag))
    return (
        inspected["Size"],
        listed["Size"],
        [(e["CreatedBy"], int(e["Size"]), w["Size"]) for e, w in zip(exact, words, strict=True)],
    )


def _round_trip(capsys: pytest.CaptureFixture[str], tmp_path: Path, tag: str) -> None:
    archive = tmp_path / "saved.tar"
    lamina(capsys, "save", "-o", str(archive), tag)
    docker("load", "-i", str(archive))
    ours, theirs = _lamina_sizes(capsys, tag), _docker_sizes(tag)
    assert ours == theirs


def test_a_built_image_has_the_same_sizes_after_docker_load(
    capsys: pytest.CaptureFixture[str],
    lamina_home: Path,
    busybox_tar: Path,
    docker_tag: Callable[[str], str],
    tmp_path: Path,
) -> None:
    lamina(capsys, "import", str(busybox_tar), "busybox:latest")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f15").write_bytes(b"fifteen bytes!\n")
    (ctx / "big").write_bytes(os.urandom(123_457))
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        "COPY f15 /f15\n"
        "RUN ln -s /f15 /l && mkdir -p /d/e && echo hi > /d/e/x && ln /d/e/x /d/e/y\n"
        "RUN rm /f15\n"
        "COPY big /srv/big\n"
        "ENV K=v\n"
    )
    tag = docker_tag("sizes")
    lamina(capsys, "build", "-t", tag, str(ctx))
    _round_trip(capsys, tmp_path, tag)
    # The layers the issue measured on Docker 20.10, in history order (newest first).
    sizes = [row[1] for row in _docker_sizes(tag)[2]]
    assert sizes[:5] == [0, 123_457, 0, 7, 15]


def test_a_loaded_image_has_the_same_sizes_after_docker_load(
    capsys: pytest.CaptureFixture[str],
    lamina_home: Path,
    conformance: Path,
    docker_tag: Callable[[str], str],
    tmp_path: Path,
) -> None:
    # dive's test image: deletions, opaque directories, a base of real size.
    lamina(capsys, "load", "-i", str(conformance / "images/dive/test-docker-image.tar"))
    tag = docker_tag("dive")
    lamina(capsys, "tag", "dive-test:latest", tag)
    _round_trip(capsys, tmp_path, tag)
    assert _docker_sizes(tag)[1] == "1.22MB"
