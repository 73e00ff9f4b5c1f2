"""``lamina build`` as a user runs it: a separate process each time, so the cache a
later run sees has survived a restart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lamina.core.demo.busybox import busybox_rootfs_tar
from lamina.core.embedded.archive import import_rootfs
from lamina.core.embedded.store import Store

# These tests state the classic builder's rules.
pytestmark = pytest.mark.usefixtures("classic_builder")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def home(tmp_path: Path, busybox: str, lamina_home: Path) -> Path:
    store = Store(lamina_home)
    import_rootfs(store, busybox_rootfs_tar(tmp_path / "busybox.tar", busybox), "busybox")
    store.close()
    return lamina_home


def lamina(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lamina.tui", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=os.environ.copy(),
        timeout=300,
        check=False,
    )


def json_lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.mark.root
def test_json_progress_and_cache_across_processes(home: Path, tmp_path: Path) -> None:
    hello = tmp_path / "hello"
    shutil.copytree(EXAMPLES / "hello", hello)
    first = lamina("build", "--progress", "json", "-t", "hello", str(hello))
    assert first.returncode == 0, first.stderr
    docs = json_lines(first.stdout)
    steps, result = docs[:-1], docs[-1]
    assert [d["type"] for d in steps] == ["step"] * 5
    assert [(d["stage"], d["index"]) for d in steps] == [(0, i) for i in range(5)]
    assert steps[0] == {
        "type": "step",
        "stage": 0,
        "index": 0,
        "instruction": "FROM busybox",
        "cached": None,
        "reason": None,
    }
    assert all(d["cached"] is False and d["reason"]["kind"] for d in steps[1:])
    assert steps[3]["instruction"] == "COPY app/ /app/"
    assert result["type"] == "result" and result["tags"] == ["hello:latest"]
    assert str(result["image"]).startswith("sha256:")

    second = lamina("build", "--progress", "json", "-t", "hello", str(hello))
    docs2 = json_lines(second.stdout)
    assert [d.get("cached") for d in docs2[:-1]] == [None, True, True, True, True]
    assert all(d.get("reason") is None for d in docs2[:-1])
    assert docs2[-1]["image"] == result["image"]


def test_plain_progress_dry_run_and_file_relative_to_cwd(home: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a")
    elsewhere = tmp_path / "dockerfiles"
    elsewhere.mkdir()
    (elsewhere / "Custom.Dockerfile").write_text("FROM busybox\nCOPY a.txt /a\nLABEL k=v\n")
    built = lamina(
        "build", "-f", "dockerfiles/Custom.Dockerfile", "-t", "plain:1", "ctx", cwd=tmp_path
    )
    assert built.returncode == 0, built.stderr
    assert "Step 2/3 : COPY a.txt /a" in built.stdout
    assert "MISS (first_build)" in built.stdout
    assert "Successfully tagged plain:1" in built.stdout
    (ctx / "a.txt").write_text("changed")
    dry = lamina(
        "build",
        "--dry-run",
        "--progress",
        "json",
        "-f",
        "dockerfiles/Custom.Dockerfile",
        "ctx",
        cwd=tmp_path,
    )
    assert dry.returncode == 0, dry.stderr
    docs = json_lines(dry.stdout)
    assert [(d.get("cached"), (d.get("reason") or {}).get("kind")) for d in docs[:-1]] == [
        (None, None),
        (False, "sources_changed"),
        (False, "parent_missed"),
    ]
    # The result says whose decisions were predicted.
    assert docs[-1] == {"type": "result", "image": None, "tags": [], "builder": "classic"}
    again = lamina("build", "-f", "dockerfiles/Custom.Dockerfile", "ctx", cwd=tmp_path)
    assert again.stdout.count("---> CACHED") == 0
    assert "a.txt (content)" in again.stdout


def test_errors_are_one_line_with_exit_code_1(home: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY missing.txt /m\n")
    proc = lamina("build", str(ctx))
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"lamina: {ctx}/Dockerfile:2: COPY: missing.txt")
    bad_arg = lamina("build", "--build-arg", "=x", str(ctx))
    assert bad_arg.returncode == 2
    assert bad_arg.stderr.startswith("lamina: invalid --build-arg")


@pytest.mark.root
def test_ctrl_c_cancels_the_running_step(home: Path, tmp_path: Path) -> None:
    import signal
    import time

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo started && sleep 60\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lamina.tui",
            "build",
            "--progress",
            "plain",
            "-t",
            "never",
            str(ctx),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "started" in line:
            break
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - started < 30
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == "lamina: build cancelled"
    listed = lamina("images")
    assert "never" not in listed.stdout
