"""How advice reads a RUN's shell text: its simple commands, index updates, installs, and
what joining RUNs must keep."""

from __future__ import annotations

import subprocess

import pytest

from lamina.core.advice.commands import (
    chain,
    has_cleanup,
    installs_packages,
    is_index_update,
    joinable,
    split_commands,
)
from lamina.core.advice.ecosystems import GO, NPM, PIP, install_of, manifests_in


@pytest.mark.parametrize(
    ("text", "programs"),
    [
        ("apt-get update && apt-get install -y curl", ["apt-get", "apt-get"]),
        ("a; b || c | d & e", ["a", "b", "c", "d", "e"]),
        ("echo 'a && b' && echo \"c; d\"", ["echo", "echo"]),
        ("echo $(date; true) && x", ["echo", "x"]),
        ("DEBIAN_FRONTEND=noninteractive sudo apt-get update", ["apt-get"]),
        ("echo `a;b` ; c", ["echo", "c"]),
    ],
)
def test_commands_are_split_at_the_top_level_only(text: str, programs: list[str]) -> None:
    commands = split_commands(text)
    assert commands is not None
    assert [c.program for c in commands] == programs


@pytest.mark.parametrize("text", ["echo 'open", "echo $(a", "echo )", "echo `a"])
def test_text_that_cannot_be_followed_gives_no_commands(text: str) -> None:
    assert split_commands(text) is None


@pytest.mark.parametrize(
    ("text", "update", "install"),
    [
        ("apt-get update", True, False),
        ("apt-get -qq update", True, False),
        ("apt update", True, False),
        ("apk update", True, False),
        ("yum makecache", True, False),
        ("dnf makecache --refresh", True, False),
        ("zypper refresh", True, False),
        ("pacman -Sy", True, False),
        ("pacman -Syu vim", False, True),
        ("apt-get install -y curl", False, True),
        ("apk add --no-cache curl", False, True),
        ("apt-get update curl", False, False),
        ("echo apt-get update", False, False),
    ],
)
def test_index_updates_and_installs(text: str, update: bool, install: bool) -> None:
    (command,) = split_commands(text) or []
    assert is_index_update(command) is update
    assert installs_packages(command) is install


def test_cleanups_are_recognised_per_family() -> None:
    assert has_cleanup("apt-get install -y x && rm -rf /var/lib/apt/lists/*", "apt")
    assert has_cleanup("apk add --no-cache x", "apk")
    assert not has_cleanup("apt-get install -y x", "apt")


@pytest.mark.parametrize(
    ("text", "ecosystem", "files", "sources"),
    [
        ("pip install -r requirements.txt", PIP, ("requirements.txt",), False),
        ("python3 -m pip install --requirement=req/prod.txt", PIP, ("req/prod.txt",), False),
        ("pip install -e .", PIP, (), True),
        ("npm ci", NPM, (), False),
        ("go build ./...", GO, (), False),
    ],
)
def test_installs_name_what_they_read(
    text: str, ecosystem: object, files: tuple[str, ...], sources: bool
) -> None:
    (command,) = split_commands(text) or []
    install = install_of(command)
    assert install is not None and install.ecosystem is ecosystem
    assert install.files == files and install.needs_sources is sources


def test_manifests_are_found_relative_to_the_install_directory() -> None:
    (npm,) = split_commands("npm ci") or []
    install = install_of(npm)
    assert install is not None
    names = {"package.json", "package-lock.json", "src/index.js"}
    assert manifests_in(install, names, "/app") == ["package.json", "package-lock.json"]
    assert manifests_in(install, {"src/index.js"}, "/app") is None
    (pip,) = split_commands("pip install -r /app/requirements.txt") or []
    pip_install = install_of(pip)
    assert pip_install is not None
    assert manifests_in(pip_install, {"requirements.txt"}, "/app") == ["requirements.txt"]
    (named,) = split_commands("pip install flask") or []
    named_install = install_of(named)
    assert named_install is not None and manifests_in(named_install, set(), "/app") == []


def test_joining_keeps_each_run_its_own_shell_state() -> None:
    # `cd` and `;` would leak into the next RUN's commands: those get a subshell.
    joined = chain(["cd /src && make", "a; b", "echo done"])
    assert joined == "( cd /src && make ) \\\n    && ( a; b ) \\\n    && echo done"
    assert not joinable("echo a # a comment")
    assert not joinable("cat <<EOF")
    assert joinable("echo '#not a comment'")


def test_a_joined_chain_fails_where_its_runs_would_have() -> None:
    joined = chain(["true", "false; true", "exit 3"]).replace("\\\n", "")
    done = subprocess.run(["/bin/sh", "-c", joined], capture_output=True, timeout=10)
    assert done.returncode == 3
    failing = chain(["false", "echo reached"]).replace("\\\n", "")
    done = subprocess.run(["/bin/sh", "-c", failing], capture_output=True, text=True, timeout=10)
    assert done.returncode != 0 and "reached" not in done.stdout
