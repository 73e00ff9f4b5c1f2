"""Docker and lamina through one registry, both ways: the same image IDs.

The private dockerd pulls from and pushes to the loopback registry (Docker allows plain
HTTP to 127.0.0.0/8). Debian's docker CLI is named explicitly.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lamina.core import PullFinished
from lamina.core.docker.engine import DockerEngine
from lamina.core.embedded.engine import EmbeddedEngine

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DOCKER = "/usr/bin/docker"


def docker(*args: str) -> str:
    proc = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def docker_refs() -> Iterator[list[str]]:
    """References the test makes in the daemon; removed afterwards."""
    refs: list[str] = []
    yield refs
    for ref in refs:
        subprocess.run([DOCKER, "rmi", "-f", ref], capture_output=True, timeout=60)


def test_docker_pulls_what_lamina_pushed_with_the_same_id(
    registry,
    make_engine: Callable[[str], EmbeddedEngine],
    base_image: Callable[[EmbeddedEngine, str], str],
    add_layer: Callable[[EmbeddedEngine, str, str, dict[str, bytes]], str],
    repo: Callable[[str], str],
    docker_refs: list[str],
) -> None:
    name = repo("to-docker")
    base, child = f"{registry.address}/{name}:base", f"{registry.address}/{name}:child"
    a = make_engine("a")
    base_image(a, base)
    child_id = add_layer(a, base, child, {"f.txt": b"from lamina\n"})
    list(a.push(base))
    list(a.push(child))
    docker_refs.append(child)
    docker("pull", child)
    assert docker("inspect", "-f", "{{.Id}}", child) == child_id
    assert docker("run", "--rm", "--network", "none", child, "cat", "/data/f.txt") == "from lamina"


def test_lamina_pulls_what_docker_pushed_with_the_same_id(
    registry,
    make_engine: Callable[[str], EmbeddedEngine],
    repo: Callable[[str], str],
    tmp_path: Path,
    docker_refs: list[str],
) -> None:
    name = repo("from-docker")
    ref = f"{registry.address}/{name}:1"
    # An image only this daemon has, so Docker compresses and pushes it itself.
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM busybox:latest\nRUN echo {uuid.uuid4().hex} > /marker\n"
    )
    docker_refs.append(ref)
    docker("build", "--network", "none", "-q", "-t", ref, str(context))
    docker("push", ref)
    docker_id = docker("inspect", "-f", "{{.Id}}", ref)
    b = make_engine("b")
    events = list(b.pull(b.plan_pull(ref)))
    assert isinstance(events[-1], PullFinished)
    assert b.image(ref).id == docker_id
    assert len(b.inspect(ref)["DiffIDs"]) == len(
        docker("inspect", "-f", "{{range .RootFS.Layers}}{{.}} {{end}}", ref).split()
    )


def test_the_docker_engine_plans_against_its_layers_and_pulls_through_the_api(
    registry,
    make_engine: Callable[[str], EmbeddedEngine],
    base_image: Callable[[EmbeddedEngine, str], str],
    add_layer: Callable[[EmbeddedEngine, str, str, dict[str, bytes]], str],
    repo: Callable[[str], str],
    docker_refs: list[str],
    tmp_path: Path,
) -> None:
    name = repo("via-api")
    base, child = f"{registry.address}/{name}:base", f"{registry.address}/{name}:child"
    a = make_engine("a")
    base_image(a, base)
    child_id = add_layer(a, base, child, {"g.txt": b"g"})
    list(a.push(base))
    list(a.push(child))
    docker_refs.extend([base, child])
    engine = DockerEngine(home=tmp_path / "docker-home")
    try:
        list(engine.pull(engine.plan_pull(base)))
        plan = engine.plan_pull(child)
        assert plan.engine == "docker"
        assert [layer.present for layer in plan.layers] == [True, False]
        assert base in plan.layers[0].shared_with
        mark = registry.mark()
        events = list(engine.pull(plan))
        assert isinstance(events[-1], PullFinished) and events[-1].image_id == child_id
        assert engine.image(child).id == child_id
        # The daemon fetched the child's own blobs only.
        fetched = set(registry.blob_fetches(mark, name))
        assert plan.layers[0].digest not in fetched
        assert plan.layers[1].digest in fetched
    finally:
        engine.close()
