"""One cache with the user's own docker build, Docker's own error words, records per
daemon, ``lamina builds``, and what-if on Docker."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemon_state import docker_2010

from lamina.core.docker.context import STYLE_LOOKUPS, STYLE_PLAIN, tar_style
from lamina.core.docker.records import daemon_key
from lamina.core.open import default_home
from lamina.tui.cli import main

pytestmark = pytest.mark.docker

# These tests are about the classic builder (BuildKit's are in test_docker_buildkit.py).
CLASSIC = ("build", "--builder", "classic")


def lamina(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--engine", "docker", *args])
    out, err = capsys.readouterr()
    return code, out, err


def steps(out: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, out.splitlines()) if e["type"] == "step"]


@pytest.fixture
def context(tmp_path: Path, tree: Any, docker_base: str) -> Path:
    """A context with files of another owner (20.10 hashes their owner's name)."""
    token = os.urandom(6).hex()
    ctx = tree(
        tmp_path / "ctx",
        {
            "Dockerfile": f"FROM {docker_base}\nCOPY f /f\nCOPY d /d\nRUN echo {token}\n",
            "f": "file\n",
            "d/e/y": "deep\n",
            "d/link-target": "t\n",
        },
    )
    os.symlink("link-target", ctx / "d" / "link")
    os.chown(ctx / "d" / "e" / "y", 1000, 1000)
    return ctx


def test_lamina_and_debian_docker_build_share_every_step(
    capsys: pytest.CaptureFixture[str], context: Path, docker_tag: Callable[[str], str]
) -> None:
    tag = docker_tag("shared")
    code, out, err = lamina(capsys, *CLASSIC, "--progress", "json", "-t", tag, str(context))
    assert code == 0, err
    assert [s["cached"] for s in steps(out)] == [None, False, False, False]
    # Debian's 20.10 CLI, named explicitly: every step lamina made is a hit for it.
    out = docker_2010("build", "--network", "none", "-t", tag, str(context))
    assert out.count(" ---> Using cache") == 3, out
    # And the other way round: a new file, built first by docker, then by lamina.
    (context / "g").write_text("g\n")
    text = (context / "Dockerfile").read_text() + "COPY g /g\n"
    (context / "Dockerfile").write_text(text)
    out = docker_2010("build", "--network", "none", "-t", tag, str(context))
    assert out.count(" ---> Using cache") == 3
    code, out, _ = lamina(capsys, *CLASSIC, "--progress", "json", "-t", tag, str(context))
    assert [s["cached"] for s in steps(out)] == [None, True, True, True, True]


def test_newer_cli_hashes_like_its_own_daemons(
    capsys: pytest.CaptureFixture[str],
    context: Path,
    docker_tag: Callable[[str], str],
    newer_docker: str,
) -> None:
    """A 24+ CLI writes no owner names and no type bits: on this 20.10 daemon its COPY
    cache is its own, and lamina's tar style for 24+ daemons is that one."""
    newer = newer_docker
    assert tar_style("1.41") == STYLE_LOOKUPS and tar_style("1.47") == STYLE_PLAIN
    tag = docker_tag("newer")
    assert lamina(capsys, *CLASSIC, "--progress", "json", "-t", tag, str(context))[0] == 0
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    out = subprocess.run(
        [newer, "build", "--network", "none", "-t", tag, str(context)],
        capture_output=True, text=True, env=env, check=True,
    ).stdout  # fmt: skip
    # FROM's base has no step; the COPYs of an owned-by-1000 file hash differently.
    assert out.count(" ---> Using cache") < 3


def test_bad_dockerfile_shows_dockers_message_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tree: Any, docker_base: str
) -> None:
    lines = f"FROM {docker_base}\nRUN true\n\n# a comment\nENV A=1\nLABEL a=b\nWORKDIR /x\n"
    ctx = tree(tmp_path / "bad", {"Dockerfile": lines + "RUN echo\nSET x=1\n"})
    code, _, err = lamina(capsys, *CLASSIC, str(ctx))
    assert code == 1
    assert err.splitlines() == ["lamina: dockerfile parse error line 9: unknown instruction: SET"]
    theirs = docker_2010("build", str(ctx), check=False)
    proc = subprocess.run(
        ["/usr/bin/docker", "build", str(ctx)], capture_output=True, text=True, check=False,
        env=dict(os.environ, DOCKER_BUILDKIT="0"),
    )  # fmt: skip
    assert "dockerfile parse error line 9: unknown instruction: SET" in proc.stderr + theirs


def test_build_records_belong_to_their_daemon_and_the_temp_home(
    capsys: pytest.CaptureFixture[str], context: Path, docker_tag: Callable[[str], str]
) -> None:
    home = default_home()
    real = Path.home() / ".local" / "share" / "lamina"
    assert not str(home).startswith(str(real))  # every test has a temp LAMINA_HOME
    a = {"ID": "YSNJ:EEL2", "DockerRootDir": "/var/lib/docker"}
    b = {"ID": "YSNJ:EEL2", "DockerRootDir": "/tmp/other/data"}
    assert daemon_key(a) != daemon_key(b)  # one key.json, two daemons
    tag = docker_tag("records")
    assert lamina(capsys, "build", "-t", tag, str(context))[0] == 0
    (key,) = (home / "docker").iterdir()
    info = capsys and __import__("docker").from_env(version="auto").info()
    assert key.name == daemon_key(info)
    assert list((key / "builds").glob("*.json"))
    code, out, _ = lamina(capsys, "builds", "--format", "json")
    assert code == 0
    builds = json.loads(out)
    assert builds[0]["tags"] == [tag] and builds[0]["status"] == "ok"
    assert [s["instruction"].split()[0] for s in builds[0]["steps"]] == [
        "FROM", "COPY", "COPY", "RUN",
    ]  # fmt: skip
    code, out, _ = lamina(capsys, "builds")
    assert code == 0 and tag in out and "BUILD ID" in out


def test_what_if_predicts_the_classic_builder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tree: Any, docker_base: str,
    docker_tag: Callable[[str], str],
) -> None:  # fmt: skip
    token = os.urandom(6).hex()
    ctx = tree(
        tmp_path / "wi",
        {
            "Dockerfile": f"FROM {docker_base}\nARG V=1\nRUN echo {token} $V > /v\n"
            "COPY f /f\nENV X=1\n",
            "f": "a\n",
        },
    )
    tag = docker_tag("whatif")

    def predicted(*extra: str) -> list[Any]:
        code, out, err = lamina(
            capsys, *CLASSIC, "--dry-run", "--progress", "json", "-t", tag, *extra, str(ctx)
        )
        assert code == 0, err
        return [(s["cached"], (s["reason"] or {}).get("kind")) for s in steps(out)]

    def built(*extra: str) -> list[Any]:
        code, out, err = lamina(capsys, *CLASSIC, "--progress", "json", "-t", tag, *extra, str(ctx))
        assert code == 0, err
        return [(s["cached"], (s["reason"] or {}).get("kind")) for s in steps(out)]

    built()
    assert predicted() == [(None, None)] + [(True, None)] * 4 == built()
    # The prediction says whose decisions it is: the classic builder's, as asked.
    code, out, _ = lamina(capsys, *CLASSIC, "--dry-run", "--progress", "json", "-t", tag, str(ctx))
    assert code == 0 and json.loads(out.splitlines()[-1])["builder"] == "classic"
    code, out, _ = lamina(capsys, *CLASSIC, "--dry-run", "-t", tag, str(ctx))
    assert code == 0 and out.splitlines()[0] == (
        "Dry run: predicting the classic builder's decisions (`DOCKER_BUILDKIT=0 docker build`)"
    )
    (ctx / "f").write_text("b\n")
    expect = predicted()
    assert expect[3] == (False, "sources_changed") and expect[4] == (False, "parent_missed")
    assert expect == built()
    expect = predicted("--build-arg", "V=2")
    assert expect[1:3] == [(True, None), (False, "build_arg_changed")]
    assert expect == built("--build-arg", "V=2")
    # A parent with children lamina did not build: the step says it cannot tell.
    (ctx / "Dockerfile").write_text((ctx / "Dockerfile").read_text().replace("V=1", "V=3"))
    docker_2010("build", "-q", "--network", "none", str(ctx))
    unknown = predicted()
    assert unknown[1][0] is None and unknown[1][1] == "unpredictable"
    assert all(s == (None, "unpredictable") for s in unknown[2:])
