"""``container prune`` and ``volume prune`` with Docker's filters, against Docker.

Each filtered prune runs through lamina on one copy of the daemon state
(:func:`make_labelled_state`: containers and volumes, labelled or not, and a container
made after an ``until`` cut-off) and through Debian's ``docker`` on a second copy made by the same script:
lamina's dry run lists exactly what its prune removes, and that is what Docker's own
command removes, with the same bytes. Where Docker refuses a filter (``until`` on
volumes), lamina refuses it too, in Docker's words, and nothing is removed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from daemon_state import (
    DOCKER_2010,
    State,
    clean_slate,
    docker_2010,
    keep_alive,
    release,
    removed,
    snapshot,
)

from lamina.tui.cli import main
from lamina.tui.format import size

pytestmark = pytest.mark.docker

# Stands for the cut-off time in a filter; each copy of the state has its own.
CUTOFF = "<cutoff>"


def lamina(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(["--engine", "docker", *args])
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def lamina_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = lamina(capsys, *args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def docker_refusal(*args: str) -> tuple[int, str]:
    """Debian's docker CLI on a command it refuses: its exit code and its stderr."""
    env = dict(os.environ)
    env.pop("DOCKER_API_VERSION", None)
    proc = subprocess.run(
        [DOCKER_2010, *args], capture_output=True, text=True, env=env, check=False
    )
    return proc.returncode, proc.stderr


@pytest.fixture
def daemon(docker_engine: Any, docker_base: str) -> Iterator[tuple[Any, str, State]]:
    """An emptied daemon whose base images stay in use; emptied again afterwards."""
    api = docker_engine.api
    prefix = f"lamina-filt-{uuid.uuid4().hex[:6]}"
    bases = [docker_base] + [
        t for i in api.images() for t in i.get("RepoTags") or [] if t == "busybox:latest"
    ]
    state = State(prefix, keep_alive(api, bases, prefix))
    clean_slate(api)
    try:
        yield api, docker_base, state
    finally:
        release(api, state)


def make_labelled_state(base: str, prefix: str) -> str:
    """Stopped containers (with data in their writable layers, labelled or not, using
    named and anonymous volumes), unused volumes labelled or not, and one container made
    after the returned cut-off (unix seconds): every other container is older.

    Only containers and volumes: these prunes touch nothing else (the images and build
    cache of :func:`make_state` would only make each copy slower to build).
    """
    for name, tier, data in (
        ("free", None, 300), ("cold", "cold", 600), ("hot", "hot", 0), ("used", "cold", 0),
    ):  # fmt: skip
        label = ["--label", f"tier={tier}"] if tier else []
        docker_2010("volume", "create", *label, f"{prefix}-{name}")
        if data:
            docker_2010(
                "run", "--rm", "--network", "none", "-v", f"{prefix}-{name}:/d", base,
                "sh", "-c", f"head -c {data} /dev/zero > /d/x",
            )  # fmt: skip
    docker_2010(
        "run", "--name", f"{prefix}-c1", "--network", "none", "-v", "/anon", base,
        "sh", "-c", "head -c 5000 /dev/zero > /w && head -c 700 /dev/zero > /anon/a",
    )  # fmt: skip
    docker_2010(
        "create", "--name", f"{prefix}-c2", "--network", "none", "-v", f"{prefix}-used:/u",
        "--label", "role=db", base,
    )  # fmt: skip
    docker_2010("create", "--name", f"{prefix}-c3", "--network", "none", "-v", "/other", base)
    time.sleep(1.1)
    cutoff = str(int(time.time()))  # more than a second after the last container
    time.sleep(1.1)
    docker_2010(
        "run", "--name", f"{prefix}-c4", "--network", "none", "--label", "role=web", base,
        "sh", "-c", "head -c 900 /dev/zero > /n",
    )  # fmt: skip
    return cutoff


def _docker_total(out: str) -> str:
    match = re.search(r"^Total reclaimed space: (\S+)$", out, re.M)
    assert match, out
    return match.group(1)


_FILTERED = [
    ("container", ("label=role=db",)),
    ("container", ("label!=role=db",)),
    ("container", ("label=role",)),
    ("container", (f"until={CUTOFF}",)),
    ("container", (f"until={CUTOFF}", "label!=role=db")),
    ("container", ("until=24h",)),
    ("volume", ("label=tier=cold",)),
    ("volume", ("label!=tier=cold",)),
    ("volume", ("label=tier", "label!=tier=hot")),
]


@pytest.mark.parametrize(
    ("verb", "filters"), _FILTERED, ids=[f"{v} {' '.join(f)}" for v, f in _FILTERED]
)
def test_filtered_prune_removes_its_dry_run_and_what_docker_removes(
    capsys: pytest.CaptureFixture[str],
    daemon: tuple[Any, str, State],
    verb: str,
    filters: tuple[str, ...],
) -> None:
    api, base, state = daemon

    def args(cutoff: str) -> list[str]:
        return [w for f in filters for w in ("--filter", f.replace(CUTOFF, cutoff))]

    # lamina on the first copy: the dry run, then the prune.
    cutoff = make_labelled_state(base, state.prefix)
    before = snapshot(api)
    plan = lamina_json(capsys, verb, "prune", *args(cutoff), "--dry-run")
    result = lamina_json(capsys, verb, "prune", *args(cutoff), "-f")
    ours = removed(before, snapshot(api))
    assert result["skipped"] == []
    assert set(result["containers"]) == {c["id"] for c in plan["containers"]}
    assert set(result["volumes"]) == {v["name"] for v in plan["volumes"]}
    assert result["reclaimed_bytes"] == plan["reclaimable_bytes"]
    names = {v: k for k, v in before["containers"].items()}
    assert sorted(names[c["id"]] for c in plan["containers"]) == ours["containers"]
    assert len(plan["volumes"]) == len(ours["named"]) + ours["anonymous"]
    assert ours["images"] == ours["cache"] == 0 and ours["tags"] == []
    # Docker's own command on a second copy made by the same script.
    clean_slate(api)
    cutoff = make_labelled_state(base, state.prefix)
    before = snapshot(api)
    out = docker_2010(verb, "prune", *args(cutoff), "-f")
    theirs = removed(before, snapshot(api))
    assert theirs == ours
    assert _docker_total(out) == size(plan["reclaimable_bytes"], docker=True, precision=4)
    # The filter chose: something matched it and something did not (until=24h keeps all).
    p = state.prefix
    stopped = {f"{p}-c1", f"{p}-c2", f"{p}-c3", f"{p}-c4"}
    volumes = {f"{p}-cold", f"{p}-hot", f"{p}-free", f"{p}-used"}
    if verb == "container":
        assert set(ours["containers"]) < stopped
        assert bool(ours["containers"]) is (filters != ("until=24h",))
    else:
        assert ours["named"] and set(ours["named"]) < volumes - {f"{p}-used"}


@pytest.mark.parametrize(
    ("command", "docker_words"),
    [
        (("volume", "prune"), "Error response from daemon: Invalid filter 'until'"),
        (("system", "prune", "--volumes"), 'ERROR: The "until" filter is not supported with'),
    ],
    ids=" ".join,
)
def test_until_on_volumes_is_refused_in_dockers_words(
    capsys: pytest.CaptureFixture[str],
    daemon: tuple[Any, str, State],
    command: tuple[str, ...],
    docker_words: str,
) -> None:
    api, base, state = daemon
    make_labelled_state(base, state.prefix)
    before = snapshot(api)
    code, their_err = docker_refusal(*command, "--filter", "until=24h", "-f")
    assert code == 1 and their_err.startswith(docker_words), their_err
    words = their_err.strip().split(": ", 1)[-1]  # without Docker's own prefix
    assert snapshot(api) == before
    for extra in (("-f",), ("--dry-run",)):
        code, out, err = lamina(capsys, *command, "--filter", "until=24h", *extra)
        assert code == 2 and out == ""
        assert len(err.splitlines()) == 1 and words in err, (err, words)
    assert snapshot(api) == before
