"""``lamina completion bash|zsh|fish``: the scripts load, and completing a word asks
the real parser (verbs, nested verbs, flags, choices), the store (image references) and
the Dockerfile (stage names)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lamina.core import LocalStore, open_engine
from lamina.tui.cli import make_parser
from lamina.tui.cli.completion import FILES, candidates
from lamina.tui.cli.context import CliContext

BIN = Path(sys.executable).parent


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "LAMINA_HOME": str(home)}


def _complete(line: str) -> list[str]:
    ctx = CliContext()
    try:
        return candidates(make_parser(), line, ctx)
    finally:
        ctx.close()


@pytest.fixture
def store(lamina_home: Path, busybox_tar: Path) -> Path:
    engine = open_engine("embedded", lamina_home)
    assert isinstance(engine, LocalStore)
    engine.import_rootfs(busybox_tar, "busybox:latest")
    engine.close()
    return lamina_home


def test_the_bash_script_loads(lamina_home: Path) -> None:
    done = subprocess.run(
        ["bash", "-c", "source <(lamina completion bash) && complete -p lamina"],
        capture_output=True,
        text=True,
        env=_env(lamina_home),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "complete -o default -F _lamina lamina"


def _bash_complete(line: str, env: dict[str, str], words: list[str] | None = None) -> list[str]:
    """What bash offers at the end of ``line``, through the real script (``words``: the
    words as bash splits them, at ':' too, when that matters)."""
    split = (
        "COMP_WORDS=(" + " ".join(repr(w) for w in words) + ")\n"
        if words is not None
        else 'read -ra COMP_WORDS <<< "$COMP_LINE"\n[[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")\n'
    )
    script = (
        "source <(lamina completion bash)\n"
        f"COMP_LINE={line!r}; COMP_POINT=${{#COMP_LINE}}\n"
        + split
        + "COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n"
        "_lamina\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [w for w in done.stdout.splitlines() if w]


def test_bash_completes_verbs_flags_and_images(store: Path) -> None:
    env = _env(store)
    assert _bash_complete("lamina bui", env) == ["build", "builds", "builder"]
    assert _bash_complete("lamina analyze --highest-w", env) == ["--highest-wasted-bytes"]
    assert "busybox:latest" in _bash_complete("lamina diff ", env)
    # bash splits "busybox:la" at the colon; the reply completes the part after it.
    assert _bash_complete(
        "lamina diff busybox:la", env, ["lamina", "diff", "busybox", ":", "la"]
    ) == ["latest"]


def test_verbs_come_from_the_parser() -> None:
    parser = make_parser()
    verbs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    offered = _complete("lamina ")
    assert {v for v in verbs if not v.startswith("__")} <= set(offered)
    assert "__complete" not in offered
    assert _complete("lamina system ") == ["df", "prune"]
    assert _complete("lamina images --format ") == ["table", "json"]
    assert _complete("lamina images --format=j") == ["--format=json"]
    assert _complete("lamina --engine d") == ["docker"]
    assert "--no-cache" in _complete("lamina build --no")


def test_image_references_and_stage_names(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "busybox:latest" in _complete("lamina history ")
    assert _complete("lamina tag busy") == ["busybox:latest"]
    assert "busybox:latest" in _complete("lamina ")  # `lamina IMAGE` opens the app
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox AS base\nFROM base AS test\nRUN true\nFROM scratch\n"
    )
    (tmp_path / "Other.Dockerfile").write_text("FROM busybox AS other\n")
    monkeypatch.chdir(tmp_path)
    assert _complete(f"lamina build {ctx} --target ") == ["base", "test"]
    assert _complete("lamina build -f Other.Dockerfile . --target ") == ["other"]
    assert _complete("lamina build -f ") == [FILES]
    assert _complete("lamina load -i ") == [FILES]


@pytest.mark.parametrize(
    ("shell", "check"), [("zsh", ["zsh", "-n"]), ("fish", ["fish", "--no-execute"])]
)
def test_zsh_and_fish_scripts_parse(
    shell: str, check: list[str], tmp_path: Path, lamina_home: Path
) -> None:
    if shutil.which(check[0]) is None:
        # .ci/run installs both shells: in CI a missing one fails instead of skipping.
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must provide {shell} to check its completion script")
        pytest.skip(f"{shell} is not installed")
    script = subprocess.run(
        ["lamina", "completion", shell],
        capture_output=True,
        text=True,
        env=_env(lamina_home),
        check=True,
    ).stdout
    path = tmp_path / f"lamina.{shell}"
    path.write_text(script)
    done = subprocess.run([*check, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
