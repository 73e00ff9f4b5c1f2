"""``RUN --mount=type=ssh``, with an agent socket and without one.

What BuildKit does, from the Dockerfile reference and measured on Docker 20.10's
BuildKit (``DOCKER_BUILDKIT=1``, no ``--ssh``): a RUN with an ssh mount has
``SSH_AUTH_SOCK`` set to the first ssh mount's socket (``/run/buildkit/ssh_agent.0``
unless ``target=`` says otherwise) whether an agent was given or not; without an agent
an optional mount is left out and the RUN runs without the socket, and its layer holds
no trace of it; ``required=true`` fails the step (BuildKit: ``no SSH key "default"
forwarded from the client``). The agent's socket path enters no cache key.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.store import Store
from lamina.core.events import BuildFailed, BuildFinished, StepFinished, StepOutput
from lamina.core.model import BuildRequest

pytestmark = pytest.mark.usefixtures("busybox_store", "isolation")

PROBE = (
    'sh -c \'echo "sock=$SSH_AUTH_SOCK"; '
    'if test -S "$SSH_AUTH_SOCK"; then echo socket-there; else echo no-socket; fi; '
    "echo done > /probe'"
)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Path]:
    """A listening unix socket standing in for an ssh agent."""
    path = tmp_path / "agent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    yield path
    server.close()


def _build(store: Store, ctx: Path, text: str, **kw: Any) -> tuple[Any, list[str], list[Any]]:
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(text)
    events = list(run_build(store, BuildRequest(context=str(ctx), network="none", **kw)))
    lines = [e.line for e in events if isinstance(e, StepOutput)]
    steps = [e.step for e in events if isinstance(e, StepFinished)]
    return events[-1], lines, steps


def _layer_paths(store: Store, image: str) -> set[str]:
    summary = store.images.summary(store.images.resolve(image))
    top = summary.layers[-1]
    return {c.path for c in store.layers.changes(top)}


def test_without_an_agent_an_optional_mount_is_left_out(store: Store, tmp_path: Path) -> None:
    end, lines, _ = _build(
        store, tmp_path / "ctx", f"FROM busybox\nRUN --mount=type=ssh {PROBE}\n", tags=("t",)
    )
    assert isinstance(end, BuildFinished), end
    assert "sock=/run/buildkit/ssh_agent.0" in lines and "no-socket" in lines
    paths = _layer_paths(store, "t")
    assert "/probe" in paths
    assert not any(p == "/run" or p.startswith("/run/") for p in paths), paths


def test_without_an_agent_a_required_mount_fails_naming_the_line(
    store: Store, tmp_path: Path
) -> None:
    end, _, _ = _build(
        store,
        tmp_path / "ctx",
        "FROM busybox\n\nRUN --mount=type=ssh,id=deploy,required=true true\n",
    )
    assert isinstance(end, BuildFailed)
    assert end.message.startswith(f"{tmp_path / 'ctx' / 'Dockerfile'}:3: RUN: ")
    assert "ssh 'deploy' is required but not given (--ssh deploy" in end.message
    assert "\n" not in end.message


def test_with_an_agent_the_socket_is_there_and_leaves_no_trace(
    store: Store, tmp_path: Path, agent: Path
) -> None:
    text = f"FROM busybox\nRUN --mount=type=ssh,target=/tmp/agent {PROBE}\n"
    end, lines, steps = _build(
        store, tmp_path / "ctx", text, ssh={"default": str(agent)}, tags=("t",)
    )
    assert isinstance(end, BuildFinished), end
    assert "sock=/tmp/agent" in lines and "socket-there" in lines
    assert "/tmp/agent" not in _layer_paths(store, "t")
    assert steps[-1].cached is False
    # Another agent socket, or none at all: the same key, so the step hits.
    other = tmp_path / "other.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(other))
    try:
        end, _, steps = _build(store, tmp_path / "ctx", text, ssh={"default": str(other)})
    finally:
        server.close()
    assert isinstance(end, BuildFinished) and steps[-1].cached is True
    end, _, steps = _build(store, tmp_path / "ctx", text)
    assert isinstance(end, BuildFinished) and steps[-1].cached is True


def test_the_first_ssh_mount_names_the_agent_unless_the_env_does(
    store: Store, tmp_path: Path, agent: Path
) -> None:
    two = "RUN --mount=type=ssh,id=a --mount=type=ssh,id=b sh -c 'echo \"sock=$SSH_AUTH_SOCK\"'"
    end, lines, _ = _build(store, tmp_path / "ctx", f"FROM busybox\n{two}\n")
    assert isinstance(end, BuildFinished) and "sock=/run/buildkit/ssh_agent.0" in lines
    end, lines, _ = _build(
        store, tmp_path / "ctx", f"FROM busybox\nENV SSH_AUTH_SOCK=/mine\n{two}\n"
    )
    assert isinstance(end, BuildFinished) and "sock=/mine" in lines
    # A RUN without an ssh mount gets no agent variable.
    end, lines, _ = _build(
        store, tmp_path / "ctx", "FROM busybox\nRUN sh -c 'echo \"sock=$SSH_AUTH_SOCK\"'\n"
    )
    assert isinstance(end, BuildFinished) and "sock=" in lines
