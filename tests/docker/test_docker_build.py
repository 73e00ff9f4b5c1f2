"""Classic-builder builds (``--builder classic``) on a real daemon: step events, HIT/MISS,
and lamina's reasons."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lamina.core.docker.engine import DockerEngine
from lamina.core.errors import UsageError
from lamina.core.events import (
    BuildFailed,
    BuildFinished,
    BuildStarted,
    StepFinished,
    StepOutput,
    StepStarted,
)
from lamina.core.model import BuildRequest, StepRecord

pytestmark = pytest.mark.docker


def run(engine: DockerEngine, ctx: Path, tag: str | None = None, **kw: Any) -> list[Any]:
    tags = (tag,) if tag else ()
    kw.setdefault("builder", "classic")
    return list(engine.build(BuildRequest(context=str(ctx), tags=tags, **kw)))


def steps(events: list[Any]) -> list[StepRecord]:
    return [e.step for e in events if isinstance(e, StepFinished)]


def hm(events: list[Any]) -> list[str]:
    return ["HIT" if s.cached else "MISS" for s in steps(events) if s.index > 0]


@pytest.fixture
def ctx(tmp_path: Path, tree: Any, docker_base: str) -> Path:
    token = os.urandom(6).hex()  # a fresh cache line for each test
    return tree(
        tmp_path / "ctx",
        {
            "Dockerfile": f"FROM {docker_base}\n"
            f"RUN echo {token} > /token && echo built\n"
            "ARG FLAVOUR=plain\n"
            "RUN echo $FLAVOUR > /flavour\n"
            "COPY app /app\n"
            'CMD ["cat", "/flavour"]\n',
            "app/main.txt": "v1\n",
            "app/lib/util.txt": "util\n",
        },
    )


def test_classic_builder_events_and_hits(
    docker_engine: DockerEngine, ctx: Path, docker_tag: Callable[[str], str]
) -> None:
    tag = docker_tag("events")
    first = run(docker_engine, ctx, tag)
    assert isinstance(first[0], BuildStarted) and first[0].steps_total == 6
    assert isinstance(first[-1], BuildFinished) and first[-1].tags == (tag,)
    started = [e for e in first if isinstance(e, StepStarted)]
    assert [(e.stage, e.index) for e in started] == [(0, i) for i in range(6)]
    assert started[4].instruction == "COPY app /app"
    assert hm(first) == ["MISS"] * 5
    assert [s.reason["kind"] for s in steps(first)[1:]] == ["first_build"] + ["parent_missed"] * 4
    assert StepOutput(0, 1, "built") in first
    # A RUN makes a layer; ARG and CMD do not.
    layers = [s.layer is not None for s in steps(first)]
    assert layers == [False, True, False, True, True, False]
    assert steps(first)[4].size > 0
    again = run(docker_engine, ctx, tag)
    assert hm(again) == ["HIT"] * 5
    assert all(s.reason is None for s in steps(again))
    assert again[-1].image == first[-1].image


def test_reasons_for_changed_sources(
    docker_engine: DockerEngine, ctx: Path, docker_tag: Callable[[str], str]
) -> None:
    tag = docker_tag("sources")
    run(docker_engine, ctx, tag)
    (ctx / "app" / "main.txt").write_text("v2\n")
    (ctx / "app" / "new.txt").write_text("new\n")
    events = run(docker_engine, ctx, tag)
    assert hm(events) == ["HIT", "HIT", "HIT", "MISS", "MISS"]
    reason = steps(events)[4].reason
    assert reason is not None and reason["kind"] == "sources_changed"
    assert reason["added"] == ["app/new.txt"]
    assert reason["changed"] == [{"path": "app/main.txt", "what": ["content"]}]
    after = steps(events)[5].reason
    assert after is not None and after["kind"] == "parent_missed" and after["step"] == "0/4"


def test_reasons_for_build_arg_and_instruction(
    docker_engine: DockerEngine, ctx: Path, docker_tag: Callable[[str], str]
) -> None:
    tag = docker_tag("args")
    run(docker_engine, ctx, tag)
    # Passing the default value hits; another value misses at the first RUN after ARG.
    assert hm(run(docker_engine, ctx, tag, build_args={"FLAVOUR": "plain"})) == ["HIT"] * 5
    events = run(docker_engine, ctx, tag, build_args={"FLAVOUR": "spicy"})
    assert hm(events) == ["HIT", "HIT", "MISS", "MISS", "MISS"]
    reason = steps(events)[3].reason
    assert reason == {
        "kind": "build_arg_changed",
        "message": 'build arg FLAVOUR changed from "plain" to "spicy"',
        "name": "FLAVOUR",
        "old": "plain",
        "new": "spicy",
    }
    text = (
        (ctx / "Dockerfile")
        .read_text()
        .replace('CMD ["cat", "/flavour"]', 'CMD ["cat", "/app/main.txt"]')
    )
    (ctx / "Dockerfile").write_text(text)
    events = run(docker_engine, ctx, tag, build_args={"FLAVOUR": "spicy"})
    assert hm(events) == ["HIT", "HIT", "HIT", "HIT", "MISS"]
    reason = steps(events)[5].reason
    assert reason is not None and reason["kind"] == "instruction_changed"
    assert reason["new"] == 'CMD ["cat", "/app/main.txt"]'


def test_no_cache_still_stores_results(
    docker_engine: DockerEngine, ctx: Path, docker_tag: Callable[[str], str]
) -> None:
    tag = docker_tag("nocache")
    run(docker_engine, ctx, tag)
    events = run(docker_engine, ctx, tag, no_cache=True)
    assert hm(events) == ["MISS"] * 5
    assert {s.reason["kind"] for s in steps(events)[1:]} == {"no_cache"}
    assert hm(run(docker_engine, ctx, tag)) == ["HIT"] * 5


def test_failed_run_is_one_line_naming_the_step(
    docker_engine: DockerEngine, tmp_path: Path, tree: Any, docker_base: str
) -> None:
    bad = tree(tmp_path / "bad", {"Dockerfile": f"FROM {docker_base}\nRUN echo oops && exit 3\n"})
    events = run(docker_engine, bad)
    failed = events[-1]
    assert isinstance(failed, BuildFailed) and not failed.cancelled
    assert failed.message.startswith(f"{bad / 'Dockerfile'}:2: 'RUN echo oops && exit 3': ")
    assert "returned a non-zero code: 3" in failed.message and "\n" not in failed.message
    assert StepOutput(0, 1, "oops") in events
    record = docker_engine.builds(limit=1)[0]
    assert record.status == "failed" and record.error == failed.message


def test_dockerfile_outside_context_and_target(
    docker_engine: DockerEngine,
    tmp_path: Path,
    tree: Any,
    docker_base: str,
    docker_tag: Callable[[str], str],
) -> None:
    context = tree(tmp_path / "c", {"data.txt": "d"})
    dockerfile = tmp_path / "elsewhere" / "build.Dockerfile"
    dockerfile.parent.mkdir()
    dockerfile.write_text(
        f"FROM {docker_base} AS first\nCOPY data.txt /d\n"
        f"FROM {docker_base} AS second\nCOPY --from=first /d /e\nRUN false\n"
    )
    tag = docker_tag("target")
    events = run(docker_engine, context, tag, dockerfile=str(dockerfile), target="first")
    assert isinstance(events[-1], BuildFinished)
    assert [(s.stage, s.index) for s in steps(events)] == [(0, 0), (0, 1)]
    with pytest.raises(UsageError, match="target stage 'third' not found"):
        run(docker_engine, context, tag, dockerfile=str(dockerfile), target="third")
    # What-if works on Docker too: the same target, predicted from what the daemon holds.
    predicted = run(
        docker_engine, context, tag, dockerfile=str(dockerfile), target="first", dry_run=True
    )
    assert isinstance(predicted[-1], BuildFinished) and predicted[-1].image is None
    assert [s.cached for s in steps(predicted)] == [None, True]


def test_builds_are_recorded_newest_first(
    docker_engine: DockerEngine, ctx: Path, docker_tag: Callable[[str], str]
) -> None:
    tag = docker_tag("records")
    run(docker_engine, ctx, tag)
    run(docker_engine, ctx, tag, build_args={"FLAVOUR": "x"})
    records = docker_engine.builds()
    assert [r.build_args for r in records[:2]] == [{"FLAVOUR": "x"}, {}]
    assert records[0].status == "ok" and records[0].tags == (tag,)
    assert [s.cached for s in records[0].steps] == [None, True, True, False, False, False]
    assert records[0].id > records[1].id


def test_cancel_ends_with_a_cancelled_event(
    docker_engine: DockerEngine, tmp_path: Path, tree: Any, docker_base: str
) -> None:
    slow = tree(
        tmp_path / "slow",
        {
            "Dockerfile": f"FROM {docker_base}\nRUN echo {os.urandom(4).hex()} && sleep 2\nRUN sleep 30\n"
        },
    )
    cancel = threading.Event()
    events = []
    for event in docker_engine.build(BuildRequest(context=str(slow), builder="classic"), cancel):
        events.append(event)
        if isinstance(event, StepStarted) and event.index == 2:
            cancel.set()
    assert isinstance(events[-1], BuildFailed) and events[-1].cancelled
    assert docker_engine.builds(limit=1)[0].status == "cancelled"
