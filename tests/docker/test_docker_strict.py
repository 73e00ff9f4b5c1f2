"""Where Docker is strict, lamina is strict the same way: checked against the daemon.

Every row of the EXPOSE table (``tests/support/port_specs.py``) is built by Debian's
``docker build`` (CLI 20.10, the classic builder, ``/usr/bin/docker``) and by lamina's
own builder: the same ports are exposed, or both refuse with the same words. Images
saved from lamina's store and loaded into the daemon are listed with the same
``--filter`` values by both tools, and the filters Docker refuses are refused with
Docker's words.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from port_specs import SPECS

from lamina.tui.cli import main

pytestmark = pytest.mark.docker

DEBIAN_DOCKER = "/usr/bin/docker"


def docker(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    if not os.path.exists(DEBIAN_DOCKER):
        pytest.fail("Debian's docker.io CLI (/usr/bin/docker) is needed to compare with Docker")
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    proc = subprocess.run(
        [DEBIAN_DOCKER, *args], capture_output=True, text=True, env=env, check=False
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def lamina(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def lamina_build(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``lamina build --progress json``: (exit code, the image ID or "", stderr)."""
    code, out, err = lamina(capsys, "build", "--progress", "json", *args)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    image = next((e["image"] for e in events if e.get("type") == "result"), "")
    return code, image or "", err


def test_expose_exposes_or_refuses_what_docker_does(
    capsys: pytest.CaptureFixture[str],
    docker_base: str,
    lamina_home: Path,
    busybox_tar: Path,
    tmp_path: Path,
) -> None:
    assert lamina(capsys, "import", str(busybox_tar), "busybox:latest")[0] == 0
    theirs_dir, ours_dir = tmp_path / "docker", tmp_path / "lamina"
    for d, base in ((theirs_dir, docker_base), (ours_dir, "busybox")):
        d.mkdir()
        (d / "Dockerfile").write_text(f"FROM {base}\n")
    for spec, ports, error in SPECS:
        (theirs_dir / "Dockerfile").write_text(f"FROM {docker_base}\nEXPOSE {spec}\n")
        (ours_dir / "Dockerfile").write_text(f"FROM busybox\nEXPOSE {spec}\n")
        built = docker("build", "-q", "--network", "none", str(theirs_dir), ok=False)
        code, image_id, err = lamina_build(capsys, str(ours_dir))
        if error is not None:
            assert built.returncode != 0, spec
            assert built.stderr.strip().splitlines()[-1] == error, spec
            assert code == 1 and err.strip().endswith(f"EXPOSE: {error}"), (spec, err)
            continue
        assert built.returncode == 0, (spec, built.stderr)
        image = built.stdout.strip().splitlines()[-1]
        exposed = json.loads(
            docker("image", "inspect", "-f", "{{json .Config.ExposedPorts}}", image).stdout
        )
        assert sorted(exposed) == sorted(ports or []), spec
        assert code == 0, (spec, err)
        code, out, _ = lamina(capsys, "inspect", image_id)
        assert sorted(json.loads(out)[0]["config"]["ExposedPorts"]) == sorted(ports or [])
        docker("rmi", image)


def _docker_listed(*filters: str) -> list[tuple[str, str, str]]:
    args = [a for f in filters for a in ("--filter", f)]
    out = docker("images", "--format", "{{json .}}", *args).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return sorted((r["Repository"], r["Tag"], r["ID"]) for r in rows)


def _lamina_listed(capsys: pytest.CaptureFixture[str], *filters: str) -> list[tuple[str, str, str]]:
    args = [a for f in filters for a in ("--filter", f)]
    code, out, err = lamina(capsys, "images", "--format", "json", *args)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return sorted((r["Repository"], r["Tag"], r["ID"]) for r in rows)


def test_images_filters_list_what_docker_lists(
    capsys: pytest.CaptureFixture[str],
    lamina_home: Path,
    busybox_tar: Path,
    docker_tag: Callable[[str], str],
    tmp_path: Path,
) -> None:
    assert lamina(capsys, "import", str(busybox_tar), "busybox:latest")[0] == 0
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    tags = {name: docker_tag(name) for name in ("labelled", "plain")}
    prefix = tags["plain"].split("/")[0]
    (ctx / "Dockerfile").write_text('FROM busybox\nLABEL team=core tier="web"\n')
    assert lamina_build(capsys, "-t", tags["labelled"], str(ctx))[0] == 0
    v1 = tags["labelled"].replace(":latest", ":v1")
    assert lamina(capsys, "tag", tags["labelled"], v1)[0] == 0
    (ctx / "Dockerfile").write_text("FROM busybox\nLABEL team=ops\n")
    assert lamina_build(capsys, "-t", tags["plain"], str(ctx))[0] == 0
    # One with no tag at all.
    (ctx / "Dockerfile").write_text("FROM busybox\nLABEL team=old\n")
    dangling = lamina_build(capsys, str(ctx))[1]
    archive = tmp_path / "images.tar"
    refs = [tags["labelled"], v1, tags["plain"], dangling]
    assert lamina(capsys, "save", "-o", str(archive), *refs)[0] == 0
    docker("load", "-i", str(archive))
    ours_ids = {i[7:19] for i in [dangling]} | {
        json.loads(line)["ID"]
        for line in lamina(capsys, "images", "--format", "json")[1].splitlines()
        if json.loads(line)["Repository"].startswith(prefix)
    }

    def mine(rows: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
        return [r for r in rows if r[2] in ours_ids]

    for filters in (
        (f"reference={prefix}/*",),
        (f"reference={prefix}/*:v1",),
        (f"reference={tags['plain'].split(':')[0]}",),
        ("label=team", f"reference={prefix}/*"),
        ("label=team=core",),
        ("label=tier", "label=team=core"),
        ("dangling=true",),
        ("dangling=false", f"reference={prefix}/*"),
        ("dangling=false", "label=team=ops"),
    ):
        assert mine(_lamina_listed(capsys, *filters)) == mine(_docker_listed(*filters)), filters
        assert mine(_lamina_listed(capsys, *filters)), filters  # each shows something
    for bad in ("dangling=1", "dangling=TRUE", "label!=team", "foo=bar", "reference=["):
        theirs = docker("images", "--filter", bad, ok=False)
        assert theirs.returncode != 0
        code, _, err = lamina(capsys, "images", "--filter", bad)
        assert code != 0
        words = theirs.stderr.strip().removeprefix("Error response from daemon: ")
        assert err.strip() == f"lamina: {words}", bad
    for image in refs:
        docker("rmi", "-f", image, ok=False)
