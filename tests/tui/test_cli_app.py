"""`lamina demo`, `lamina app` and bare `lamina`, run as a user would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lamina.core.open import open_engine


def _lamina(args: list[str], env_home: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LAMINA_HOME=str(env_home), XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    return subprocess.run(
        [sys.executable, "-m", "lamina.tui", *args],
        capture_output=True,
        check=False,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


@pytest.mark.root
def test_demo_no_open_builds_once_then_reuses(tmp_path: Path) -> None:
    home, ws = tmp_path / "store", tmp_path / "ws"
    first = _lamina(["demo", "--workspace", str(ws), "--no-open"], home, tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"demo workspace: {ws}" in first.stdout
    assert "hit" in first.stdout and "miss" in first.stdout
    engine = open_engine("embedded", home)
    try:
        tags = {t for i in engine.images() for t in i.tags}
        assert {"demo-app:latest", "demo-web:latest", "demo-tools:latest"} <= tags
        builds = len(engine.builds())
    finally:
        engine.close()
    again = _lamina(["demo", "--workspace", str(ws), "--no-open"], home, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "nothing rebuilt" in again.stdout
    engine = open_engine("embedded", home)
    try:
        assert len(engine.builds()) == builds
    finally:
        engine.close()


@pytest.mark.parametrize("args", [[], ["app"]])
def test_app_without_a_terminal_says_so(tmp_path: Path, args: list[str]) -> None:
    result = _lamina(args, tmp_path / "store", tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("lamina: the app needs a terminal")
    assert "Traceback" not in result.stderr


def test_demo_on_the_docker_engine_is_refused_in_one_line(tmp_path: Path) -> None:
    env_home = tmp_path / "store"
    env = dict(os.environ, LAMINA_HOME=str(env_home), DOCKER_HOST="unix:///nonexistent.sock")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lamina.tui",
            "--engine",
            "docker",
            "demo",
            "--no-open",
            "--workspace",
            str(tmp_path / "ws"),
        ],
        capture_output=True,
        check=False,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("lamina: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
