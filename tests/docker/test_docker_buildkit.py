"""BuildKit builds on a real daemon (the default builder): HIT/MISS per step as Debian's
``DOCKER_BUILDKIT=1 /usr/bin/docker build --progress=plain`` decides on the same
scenarios, a reason for every miss, one cache with the docker CLI, Docker's own error
words, cancellation, what-if, and BuildKit's records as ``buildx du --verbose`` lists
them."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lamina.core.demo.busybox import busybox_rootfs_tar
from lamina.core.docker.buildkit_build import BuildKitBuilder
from lamina.core.docker.convert import BUILDKIT_PREFIX
from lamina.core.docker.engine import DockerEngine
from lamina.core.docker.inventory import Inventory
from lamina.core.docker.records import BuildRecords
from lamina.core.events import BuildFailed, BuildFinished, StepFinished, StepStarted
from lamina.core.model import BuildRequest, StepRecord
from lamina.tui.cli import main
from lamina.tui.format import size

pytestmark = pytest.mark.docker

DOCKER_2010 = "/usr/bin/docker"
Decisions = dict[tuple[str, int], tuple[str, str]]


def docker_buildkit(ctx: Path, tag: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Debian's 20.10 CLI with BuildKit, named explicitly; its progress is on stderr."""
    if not os.path.exists(DOCKER_2010):
        pytest.fail("Debian's docker.io CLI (/usr/bin/docker) is needed to compare with BuildKit")
    env = dict(os.environ, DOCKER_BUILDKIT="1")
    env.pop("DOCKER_API_VERSION", None)
    return subprocess.run(
        [DOCKER_2010, "build", "--progress=plain", "--network", "none", "-t", tag, *extra, str(ctx)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip


# "#7 [build 2/3] COPY notes /notes", then "#7 CACHED" or "#7 DONE 0.1s".
_LINE = re.compile(r"^#(\d+) (.*)$")
_STEP = re.compile(r"^\[(?:([^\s\]]+) +)? *(\d+)/(\d+)\] (\S+)")


def docker_decisions(progress: str) -> Decisions:
    """(stage label, BuildKit's step number) -> (keyword, HIT/MISS), FROM left out."""
    names: dict[str, tuple[str, int, str]] = {}
    cached: set[str] = set()
    for line in progress.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        number, rest = match.groups()
        if rest == "CACHED":
            cached.add(number)
        elif number not in names and (step := _STEP.match(rest)):
            names[number] = ((step.group(1) or "").lower(), int(step.group(2)), step.group(4))
    return {
        (label, index): (keyword.upper(), "HIT" if number in cached else "MISS")
        for number, (label, index, keyword) in names.items()
        if keyword.upper() != "FROM"
    }


def finished(events: list[Any]) -> list[StepRecord]:
    return [e.step for e in events if isinstance(e, StepFinished)]


def lamina_build(
    engine: DockerEngine, request: BuildRequest, records: list[StepRecord] | None = None
) -> tuple[Decisions, list[str]]:
    """lamina's BuildKit build: its decisions keyed as BuildKit's progress names steps,
    and in Dockerfile order ``HIT`` (``HIT <note kind>`` with a note) or ``MISS <reason
    kind>`` per step. A step BuildKit ran once for two stages has no vertex of its own
    there. Every step lamina reported goes to ``records``."""
    plan = BuildKitBuilder(Inventory(engine.api), BuildRecords(None)).plan(request)
    where = {(s["stage"], s["index"]): (s["label"], s["cmd"]) for s in plan.steps}
    events = list(engine.build(request))
    assert isinstance(events[-1], BuildFinished), events[-1]
    if records is not None:
        records[:] = finished(events)
    out: Decisions = {}
    ordered = []
    for step in sorted(finished(events), key=lambda s: (s.stage, s.index)):
        if step.cached is None:
            continue
        # Every miss says why, in the reasons vocabulary.
        assert step.cached or (step.reason and step.reason["kind"] and step.reason["message"])
        kind = step.reason["kind"] if step.reason else None
        ordered.append(("HIT" if step.cached else "MISS") + (f" {kind}" if kind else ""))
        if kind == "merged":
            continue
        label, cmd = where[(step.stage, step.index)]
        out[("" if plan.single else label, cmd)] = (
            step.instruction.split()[0].upper(),
            "HIT" if step.cached else "MISS",
        )
    return out, ordered


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return busybox_rootfs_tar(tmp_path_factory.mktemp("rootfs") / "busybox.tar").read_bytes()


@pytest.fixture
def fresh_base(
    docker_engine: DockerEngine, rootfs: bytes, docker_tag: Callable[[str], str]
) -> Callable[[], str]:
    """Makes a busybox base of its own, so a scenario starts on an empty cache whatever
    ran before it on this daemon. BuildKit keys a local base by its layers, not its
    config, so the base gets a file no other has."""

    def make() -> str:
        tag = docker_tag("bkbase")
        repo, version = tag.rsplit(":", 1)
        token = os.urandom(8).hex().encode()
        out = io.BytesIO()
        with (
            tarfile.open(fileobj=io.BytesIO(rootfs)) as src,
            tarfile.open(fileobj=out, mode="w") as tar,
        ):
            for member in src.getmembers():
                tar.addfile(member, src.extractfile(member) if member.isreg() else None)
            info = tarfile.TarInfo(".lamina-test-base")
            info.size = len(token)
            tar.addfile(info, io.BytesIO(token))
        docker_engine.api.import_image_from_data(
            out.getvalue(), repository=repo, tag=version, changes=['CMD ["sh"]']
        )
        return tag

    return make


@pytest.fixture(scope="module", autouse=True)
def _drop_build_cache() -> Iterator[None]:
    """These tests fill BuildKit's cache; leave the daemon without it."""
    yield
    import docker  # type: ignore[import-untyped]

    try:
        client = docker.from_env(version="auto")
    except Exception:
        return
    try:
        client.api.prune_builds(all=True)
    finally:
        client.close()


@dataclass
class Scenario:
    """A context built several times, edited between builds.

    Attributes:
        files: the context (``{base}`` in the Dockerfile is the scenario's own base).
        builds: per build: the edits made before it, its build args, and lamina's
            expected decisions in Dockerfile order, with the reason kind of each miss.
        twins: steps BuildKit runs once for two stages, as (label, BuildKit's step
            number), and their places in ``builds``' lists: its progress names the one
            vertex after either, build by build, so which of the two says ``merged``
            varies.
    """

    files: dict[str, str]
    builds: list[tuple[dict[str, str], dict[str, str], list[str]]] = field(default_factory=list)
    twins: tuple[tuple[str, int], ...] = ()
    twins_at: tuple[int, ...] = ()


SCENARIOS = {
    # Under BuildKit image settings make no step and enter no COPY's key.
    "label-above-copy": Scenario(
        {"Dockerfile": "FROM {base}\nLABEL v=1\nCOPY f /f\nRUN cat /f > /g\n", "f": "f\n"},
        [
            ({}, {}, ["MISS first_build", "MISS parent_missed"]),
            # Each hit says the LABEL changed, which BuildKit does not key them on.
            ({"Dockerfile": "FROM {base}\nLABEL v=2\nCOPY f /f\nRUN cat /f > /g\n"}, {},
             ["HIT settings_not_keyed", "HIT settings_not_keyed"]),
        ],
    ),
    # A build arg reaches RUN's environment, never a COPY's key.
    "arg-change": Scenario(
        {"Dockerfile": "FROM {base}\nCOPY f /f\nARG V=1\nCOPY g /g\nRUN echo $V > /v\n",
         "f": "f\n", "g": "g\n"},
        [
            ({}, {}, ["MISS first_build", "MISS parent_missed", "MISS parent_missed"]),
            ({}, {"V": "2"}, ["HIT", "HIT", "MISS build_arg_changed"]),
        ],
    ),
    "context-edit": Scenario(
        {"Dockerfile": "FROM {base}\nCOPY a /a\nCOPY b /b\nRUN cat /a /b > /ab\n",
         "a": "a\n", "b": "b\n"},
        [
            ({}, {}, ["MISS first_build", "MISS parent_missed", "MISS parent_missed"]),
            ({"b": "b, edited\n"}, {}, ["HIT", "MISS sources_changed", "MISS parent_missed"]),
        ],
    ),
    # The target does not need `unused`: BuildKit never builds it.
    "unused-stage": Scenario(
        {"Dockerfile": "FROM {base} AS unused\nRUN echo never > /n\n"
         "FROM {base} AS used\nCOPY f /f\n"
         "FROM {base}\nCOPY --from=used /f /f\nRUN cat /f\n",
         "f": "f\n"},
        [
            # The COPY --from puts the same file on the same base as `used`'s COPY: one
            # key, so it hits within the first build already.
            ({}, {}, ["MISS first_build", "HIT", "MISS first_build"]),
            ({}, {}, ["HIT", "HIT", "HIT"]),
        ],
    ),
    # BuildKit predefines the platform args: FROM base-$TARGETOS names the stage
    # base-linux, which the target then needs; a stage sees TARGETARCH once declared.
    "platform-args": Scenario(
        {"Dockerfile": "FROM {base} AS base-linux\nCOPY f /f\n"
         "FROM {base} AS base-other\nRUN echo never > /n\n"
         "FROM base-$TARGETOS\nARG TARGETARCH\nRUN echo $TARGETARCH > /arch\n",
         "f": "f\n"},
        [
            ({}, {}, ["MISS first_build", "MISS parent_missed"]),
            ({"f": "f, edited\n"}, {}, ["MISS sources_changed", "MISS parent_missed"]),
            ({}, {"TARGETARCH": "other"}, ["HIT", "MISS build_arg_changed"]),
        ],
    ),
    # The same step on the same state in two stages: BuildKit runs it once, under the
    # name of either ([a 2/2] or [b 2/2]); lamina's other one ran once for both.
    "merged-steps": Scenario(
        {"Dockerfile": "FROM {base} AS a\nRUN echo same > /s\n"
         "FROM {base} AS b\nRUN echo same > /s\n"
         "FROM {base}\nCOPY --from=a /s /a\nCOPY --from=b /s /b\n"},
        [
            ({}, {}, ["MISS first_build", "HIT merged", "MISS first_build",
                      "MISS parent_missed"]),
            ({}, {}, ["HIT", "HIT merged", "HIT", "HIT"]),
        ],
        twins=(("a", 2), ("b", 2)),
        twins_at=(0, 1),
    ),
    # A stage that runs again but makes the same file: COPY --from hits again.
    "copy-from-reconverges": Scenario(
        {"Dockerfile": "FROM {base} AS build\nCOPY notes /notes\nCOPY src /src\n"
         "RUN cat /src > /out\nFROM {base}\nCOPY --from=build /out /out\nRUN cat /out\n",
         "notes": "n\n", "src": "s\n"},
        [
            ({}, {}, ["MISS first_build", "MISS parent_missed", "MISS parent_missed",
                      "MISS first_build", "MISS parent_missed"]),
            ({"notes": "n, edited\n"}, {}, ["MISS sources_changed", "MISS parent_missed",
                                           "MISS parent_missed", "HIT", "HIT"]),
            ({"src": "s, edited\n"}, {}, ["HIT", "MISS sources_changed", "MISS parent_missed",
                                         "MISS sources_changed", "MISS parent_missed"]),
        ],
    ),
}  # fmt: skip


def write(ctx: Path, files: dict[str, str], base: str) -> None:
    for rel, text in files.items():
        path = ctx / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("{base}", base))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_hits_and_misses_are_buildkits(
    name: str,
    docker_engine: DockerEngine,
    fresh_base: Callable[[], str],
    docker_tag: Callable[[str], str],
    tmp_path: Path,
) -> None:
    scenario = SCENARIOS[name]
    # Each side on a base of its own: neither sees the other's cache.
    ours, theirs = tmp_path / "lamina", tmp_path / "docker"
    our_base, their_base = fresh_base(), fresh_base()
    write(ours, scenario.files, our_base)
    write(theirs, scenario.files, their_base)
    our_tag, their_tag = docker_tag(name), docker_tag(name)
    for number, (edits, build_args, expected) in enumerate(scenario.builds, 1):
        write(ours, edits, our_base)
        write(theirs, edits, their_base)
        request = BuildRequest(
            context=str(ours), tags=(our_tag,), build_args=build_args, network="none"
        )
        steps: list[StepRecord] = []
        decisions, ordered = lamina_build(docker_engine, request, steps)
        args = [f"--build-arg={k}={v}" for k, v in build_args.items()]
        proc = docker_buildkit(theirs, their_tag, *args)
        assert proc.returncode == 0, proc.stderr
        theirs_decided = docker_decisions(proc.stderr)
        if scenario.twins:
            # Whichever twin each side's progress named, the one vertex decided alike.
            (ours_twin,) = [decisions.pop(t) for t in scenario.twins if t in decisions]
            (theirs_twin,) = [theirs_decided.pop(t) for t in scenario.twins if t in theirs_decided]
            assert ours_twin == theirs_twin, f"build {number}"
            twins = [ordered[i] for i in scenario.twins_at]
            assert sorted(twins) == sorted(expected[i] for i in scenario.twins_at)
            ordered = [o for i, o in enumerate(ordered) if i not in scenario.twins_at]
            expected = [o for i, o in enumerate(expected) if i not in scenario.twins_at]
        assert decisions == theirs_decided, f"build {number}"
        assert ordered == expected, f"build {number}: {decisions}"
        if name == "unused-stage":
            assert {label for label, _ in decisions} == {"used", "stage-2"}
            assert "[unused" not in proc.stderr
            # The skipped stage is its FROM with the note, and what the classic builder
            # would have done (built it).
            (skipped,) = [s for s in steps if s.stage == 0]
            assert skipped.cached is None and skipped.reason is not None
            assert skipped.reason["message"] == (
                "the stage `unused` is not needed by the target and was skipped"
            )
            assert skipped.other is not None and skipped.other["cached"] is False
        if name == "label-above-copy" and number == 2:
            for step in steps[1:]:
                assert step.reason is not None and step.reason["message"].startswith(
                    "hit: the LABEL above changed, but under BuildKit image settings don't enter a "
                )
                assert step.other is not None and step.other["builder"] == "classic"
                assert step.other["cached"] is False
        if name == "platform-args":
            assert {label for label, _ in decisions} == {"base-linux", "stage-2"}


def test_onbuild_triggers_are_steps_before_the_stages_own(
    docker_engine: DockerEngine, fresh_base: Callable[[], str], docker_tag: Callable[[str], str],
    tmp_path: Path,
) -> None:  # fmt: skip
    """BuildKit runs a base's ONBUILD triggers first, numbered after FROM ("[3/2] COPY f
    /f"); lamina makes them steps 1..n as the classic builder does."""
    sides = []
    for side in ("lamina", "docker"):
        parent = tmp_path / side / "parent"
        write(parent, {"Dockerfile": "FROM {base}\nONBUILD RUN echo t > /t\n"
                       "ONBUILD LABEL x=1\nONBUILD COPY f /f\n"}, fresh_base())  # fmt: skip
        onbuild = docker_tag("onbuild")
        assert docker_buildkit(parent, onbuild).returncode == 0
        child = tmp_path / side / "child"
        write(child, {"Dockerfile": "FROM {base}\nRUN cat /t /f > /tf\n", "f": "f\n"}, onbuild)
        sides.append(child)
    ours, theirs = sides
    tag = docker_tag("onbuild-child")
    request = BuildRequest(context=str(ours), tags=(tag,), network="none")
    for edit in ("f\n", "f, edited\n"):
        (ours / "f").write_text(edit)
        (theirs / "f").write_text(edit)
        decisions, ordered = lamina_build(docker_engine, request)
        proc = docker_buildkit(theirs, docker_tag("onbuild-child"))
        assert decisions == docker_decisions(proc.stderr), proc.stderr
    assert ordered == ["HIT", "MISS sources_changed", "MISS parent_missed"]
    steps = [(s.index, s.instruction) for s in docker_engine.builds(limit=1)[0].steps]
    assert steps == [(0, f"FROM {request_base(ours)}"), (1, "RUN echo t > /t"),
                     (3, "COPY f /f"), (4, "RUN cat /t /f > /tf")]  # fmt: skip


def request_base(ctx: Path) -> str:
    return (ctx / "Dockerfile").read_text().splitlines()[0].split()[1]


def test_lamina_and_docker_buildkit_share_the_cache(
    docker_engine: DockerEngine, fresh_base: Callable[[], str], docker_tag: Callable[[str], str],
    tmp_path: Path,
) -> None:  # fmt: skip
    """The upload is the context the CLI's session gives BuildKit: owners, ignore
    patterns, symlinks and directories key the same."""
    base = fresh_base()
    ctx = tmp_path / "ctx"
    write(
        ctx,
        {
            "Dockerfile": "FROM {base}\nCOPY f /f\nCOPY d /d\nCOPY src/ /src/\n"
            "RUN ls -lR /d /src > /l\n",
            ".dockerignore": "**/*.tmp\n",
            "f": "file\n",
            "d/e/y": "deep\n",
            "d/link-target": "t\n",
            "src/main.txt": "main\n",
            "src/scratch.tmp": "ignored\n",
        },
        base,
    )
    os.symlink("link-target", ctx / "d" / "link")
    os.chown(ctx / "d" / "e" / "y", 1000, 1000)
    tag = docker_tag("bkshared")
    request = BuildRequest(context=str(ctx), tags=(tag,), network="none")
    first, _ = lamina_build(docker_engine, request)
    assert [d for _k, (_w, d) in sorted(first.items())] == ["MISS"] * 4
    proc = docker_buildkit(ctx, tag)
    assert proc.returncode == 0, proc.stderr
    assert set(docker_decisions(proc.stderr).values()) == {("COPY", "HIT"), ("RUN", "HIT")}
    # And the other way round: docker builds a new step first, lamina hits it.
    (ctx / "g").write_text("g\n")
    (ctx / "Dockerfile").write_text((ctx / "Dockerfile").read_text() + "COPY g /g\n")
    proc = docker_buildkit(ctx, tag)
    assert proc.returncode == 0, proc.stderr
    assert docker_decisions(proc.stderr)[("", 6)] == ("COPY", "MISS")
    again, _ = lamina_build(docker_engine, request)
    assert set(again.values()) == {("COPY", "HIT"), ("RUN", "HIT")}
    assert again[("", 6)] == ("COPY", "HIT")


def test_a_copy_of_the_whole_context_is_not_shared_with_the_cli(
    docker_engine: DockerEngine, fresh_base: Callable[[], str], docker_tag: Callable[[str], str],
    tmp_path: Path,
) -> None:  # fmt: skip
    """The one step the two cannot share: BuildKit checksums the root of a context the
    CLI's session sent with a placeholder header, and the root of an upload from its
    directory (see lamina.core.docker.context.buildkit_context_tar). Each side still
    hits its own."""
    ctx = tmp_path / "all"
    write(ctx, {"Dockerfile": "FROM {base}\nCOPY . /all\n", "f": "f\n"}, fresh_base())
    tag = docker_tag("bkall")
    request = BuildRequest(context=str(ctx), tags=(tag,), network="none")
    assert lamina_build(docker_engine, request)[0] == {("", 2): ("COPY", "MISS")}
    assert lamina_build(docker_engine, request)[0] == {("", 2): ("COPY", "HIT")}
    for expected in ("MISS", "HIT"):
        proc = docker_buildkit(ctx, tag)
        assert docker_decisions(proc.stderr) == {("", 2): ("COPY", expected)}, proc.stderr


def lamina_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--engine", "docker", *args])
    out, err = capsys.readouterr()
    return code, out, err


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


def test_errors_are_dockers_own_words(
    capsys: pytest.CaptureFixture[str], docker_base: str, docker_tag: Callable[[str], str],
    tmp_path: Path,
) -> None:  # fmt: skip
    token = os.urandom(4).hex()
    failing = tmp_path / "failing"
    write(failing, {"Dockerfile": f"FROM {docker_base}\nRUN echo {token} && exit 3\n"}, "")
    code, _, err = lamina_cli(capsys, "build", "--network", "none", str(failing))
    theirs = docker_buildkit(failing, docker_tag("fails"))
    assert code == 1 and theirs.returncode != 0
    assert err.splitlines() == [
        f"lamina: {failing / 'Dockerfile'}:2: 'RUN echo {token} && exit 3': "
        f"{last_line(theirs.stderr)}"
    ]
    assert "exit code: 3" in err
    bad = tmp_path / "bad"
    write(bad, {"Dockerfile": f"FROM {docker_base}\nRUN true\nSET x=1\n"}, "")
    code, _, err = lamina_cli(capsys, "build", str(bad))
    theirs = docker_buildkit(bad, docker_tag("bad"))
    assert code == 1 and theirs.returncode != 0
    assert last_line(theirs.stderr).endswith(
        "dockerfile parse error line 3: unknown instruction: SET"
    )
    assert err.splitlines() == [f"lamina: {last_line(theirs.stderr)}"]


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_cancel_stops_the_build_on_the_daemon(
    docker_engine: DockerEngine, docker_base: str, tmp_path: Path
) -> None:
    marker = f"lamina-cancel-{os.urandom(4).hex()}"
    ctx = tmp_path / "slow"
    # The marker is in the shell's command line while `sleep` runs (not the last command,
    # so the shell does not exec it away).
    write(ctx, {"Dockerfile": f"FROM {docker_base}\nRUN sleep 30 && echo {marker}\n"}, "")
    local = docker_engine.api.base_url.startswith("http+docker://local")
    cancel = threading.Event()
    events: list[Any] = []
    began = time.monotonic()
    request = BuildRequest(context=str(ctx), network="none")
    for event in docker_engine.build(request, cancel):
        events.append(event)
        if isinstance(event, StepStarted) and event.index == 1:
            deadline = time.monotonic() + 10
            while local and not _processes_with(marker) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not local or _processes_with(marker), "the RUN never started"
            cancel.set()
    assert isinstance(events[-1], BuildFailed) and events[-1].cancelled
    assert time.monotonic() - began < 20
    assert docker_engine.builds(limit=1)[0].status == "cancelled"
    if local:
        deadline = time.monotonic() + 15
        while _processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _processes_with(marker), "the daemon kept running the cancelled RUN"


def test_what_if_predicts_buildkit(
    capsys: pytest.CaptureFixture[str], fresh_base: Callable[[], str],
    docker_tag: Callable[[str], str], tmp_path: Path,
) -> None:  # fmt: skip
    ctx = tmp_path / "wi"
    write(
        ctx,
        {
            "Dockerfile": "FROM {base}\nARG V=1\nCOPY f /f\nLABEL l=1\nRUN echo $V > /v\n",
            "f": "a\n",
        },
        fresh_base(),
    )
    tag = docker_tag("bkwhatif")

    def decisions(*extra: str) -> list[tuple[Any, Any]]:
        code, out, err = lamina_cli(
            capsys, "build", "--network", "none", "--progress", "json", "-t", tag, *extra, str(ctx)
        )
        assert code == 0, err
        steps = [e for e in map(json.loads, out.splitlines()) if e["type"] == "step"]
        return [(s["cached"], (s["reason"] or {}).get("kind")) for s in steps]

    unknown = decisions("--dry-run")
    assert unknown[0] == (None, None) and {k for _, k in unknown[1:]} == {"unpredictable"}
    # With BuildKit the default, a what-if predicts BuildKit's decisions and says so.
    code, out, _ = lamina_cli(capsys, "build", "--dry-run", "--progress", "json", str(ctx))
    assert code == 0 and json.loads(out.splitlines()[-1])["builder"] == "buildkit"
    code, out, _ = lamina_cli(capsys, "build", "--dry-run", str(ctx))
    assert code == 0 and out.splitlines()[0] == (
        "Dry run: predicting BuildKit's decisions (the builder `docker build` runs since Docker 23)"
    )
    decisions()
    assert decisions("--dry-run") == [(None, None), (True, None), (True, None)] == decisions()
    (ctx / "Dockerfile").write_text((ctx / "Dockerfile").read_text().replace("l=1", "l=2"))
    # The RUN below the LABEL hits, and says BuildKit does not key it on the LABEL.
    expect = [(None, None), (True, None), (True, "settings_not_keyed")]
    assert decisions("--dry-run") == expect == decisions()
    (ctx / "f").write_text("b\n")
    expect = decisions("--dry-run")
    assert expect == [(None, None), (False, "sources_changed"), (False, "parent_missed")]
    assert expect == decisions()
    expect = decisions("--dry-run", "--build-arg", "V=2")
    assert expect == [(None, None), (True, None), (False, "build_arg_changed")]
    assert expect == decisions("--build-arg", "V=2")


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DOCKER_API_VERSION", None)
    return env


def cache_table(text: str) -> dict[str, tuple[str, ...]]:
    """A build cache table of ``system df -v``: CACHE ID -> (type, size, usage, shared)."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = re.split(r"\s{2,}", lines[0])
    out = {}
    for line in lines[1:]:
        cells = dict(zip(header, re.split(r"\s{2,}", line), strict=False))
        out[cells["CACHE ID"]] = tuple(cells[c] for c in ("CACHE TYPE", "SIZE", "USAGE", "SHARED"))
    return out


def docker_df_cache(env: dict[str, str]) -> tuple[str, dict[str, tuple[str, ...]]]:
    """What Debian's docker CLI prints for the build cache in ``system df -v``: its
    total and its table."""
    done = subprocess.run(
        [DOCKER_2010, "system", "df", "-v"], capture_output=True, text=True, env=env, check=True
    )
    section = done.stdout.split("\nBuild cache usage:", 1)[1]
    total, table = section.split("\n\n", 1)
    return total.strip(), cache_table(table)


def test_buildkit_records_are_listed_as_buildx_du_verbose_does(
    capsys: pytest.CaptureFixture[str], docker_engine: DockerEngine,
    fresh_base: Callable[[], str], docker_tag: Callable[[str], str], tmp_path: Path,
) -> None:  # fmt: skip
    ctx = tmp_path / "du"
    write(
        ctx, {"Dockerfile": "FROM {base}\nCOPY f /f\nRUN cat /f > /g\n", "f": "f\n"}, fresh_base()
    )
    lamina_build(docker_engine, BuildRequest(context=str(ctx), tags=(docker_tag("du"),)))
    records = docker_engine.api.df()["BuildCache"]
    assert records
    code, out, _ = lamina_cli(capsys, "system", "df", "--format", "json")
    assert code == 0
    ours = {c["key"].split(":", 1)[1]: c for c in json.loads(out)["cache"] if c["record_type"]}
    assert set(ours) == {r["ID"] for r in records}
    for r in records:
        c = ours[r["ID"]]
        assert c["record_type"] == r["Type"] and c["description"] == r["Description"]
        assert c["parents"] == ([r["Parent"]] if r.get("Parent") else [])
        assert (c["in_use"], c["shared"], c["use_count"]) == (
            r["InUse"],
            r["Shared"],
            r["UsageCount"],
        )
    code, verbose, _ = lamina_cli(capsys, "builder", "du", "--verbose")
    assert code == 0

    def kv(name: str, value: object) -> str:
        return f"{name + ':':<16}{value}"

    for r in records:
        block = verbose.split(kv("ID", r["ID"]) + "\n", 1)[1].split("\n\n", 1)[0]
        assert kv("Type", r["Type"]) in block
        assert kv("Reclaimable", "false" if r["InUse"] else "true") in block
        assert kv("Shared", "true" if r["Shared"] else "false") in block
        assert kv("Usage count", r["UsageCount"]) in block
        assert (kv("Parent", r["Parent"]) in block) == bool(r.get("Parent"))
        assert (kv("Description", r["Description"]) in block) == bool(r["Description"])
    # buildx du's totals over the records listed: BuildKit's, and the classic builder's
    # intermediate images that other builds on this daemon left (no Type; buildx does
    # not list them).
    code, out, _ = lamina_cli(capsys, "builder", "du", "--format", "json")
    listed = json.loads(out)["records"]
    assert {r["id"] for r in listed if r["type"]} == {r["ID"] for r in records}
    total = sum(r["size"] for r in listed)
    assert kv("Total", size(total, docker=True, precision=4)) in verbose
    code, listing, _ = lamina_cli(capsys, "builder", "du")
    rows = {line.split()[0]: line.split()[1:] for line in listing.splitlines()[1:] if line}
    for r in records:
        shared = "*" if r["Shared"] else ""
        assert rows[r["ID"]][:2] == [
            "false" if r["InUse"] else "true",
            size(r["Size"], docker=True, precision=4) + shared,
        ]
    # system df -v lists them as Debian's docker CLI does: the same total, and per
    # record the same ID, type, size, usage count and sharing.
    theirs = docker_df_cache(subprocess_env())
    code, out, _ = lamina_cli(capsys, "system", "df", "-v")
    ours = out.split("\nBuild cache usage:", 1)[1].split("\n\n", 2)
    assert ours[0].strip() == theirs[0]
    # lamina also lists the classic builder's intermediate images (type "-"), which
    # Docker counts as images.
    assert {k: v for k, v in cache_table(ours[1]).items() if v[0] != "-"} == theirs[1]
    # builder prune still does what its plan says, on lamina's own BuildKit cache too.
    code, out, _ = lamina_cli(capsys, "builder", "prune", "--all", "--dry-run", "--format", "json")
    planned = {c["key"] for c in json.loads(out)["cache"]}
    assert planned >= {BUILDKIT_PREFIX + r["ID"] for r in records}
    code, out, _ = lamina_cli(capsys, "builder", "prune", "--all", "-f", "--format", "json")
    assert code == 0 and set(json.loads(out)["cache"]) == planned
    assert not docker_engine.api.df()["BuildCache"]


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--no-cache-filter", "build"], "--no-cache-filter is not in the Docker Engine API"),
        (["--secret", "id=tok,src={ctx}/f"], "--secret needs a BuildKit session"),
        (["--ssh", "default=/nonexistent.sock"], "--ssh needs a BuildKit session"),
        (["--base-substitute", "*=busybox"], "--base-substitute uses images of lamina's own"),
    ],
)
def test_options_the_engine_api_cannot_carry_are_refused_before_building(
    capsys: pytest.CaptureFixture[str], docker_engine: DockerEngine, docker_base: str,
    flags: list[str], words: str, tmp_path: Path,
) -> None:  # fmt: skip
    ctx = tmp_path / "opts"
    write(ctx, {"Dockerfile": "FROM {base} AS build\nRUN echo ran\n", "f": "s\n"}, docker_base)
    before = len(docker_engine.builds())
    for dry_run in ([], ["--dry-run"]):
        args = [f.replace("{ctx}", str(ctx)) for f in flags]
        code, out, err = lamina_cli(capsys, "build", *dry_run, *args, str(ctx))
        assert (code, out) == (2, ""), (out, err)
        assert err.startswith(f"lamina: {words}") and len(err.splitlines()) == 1, err
    # Refused before anything ran: no build was recorded.
    assert len(docker_engine.builds()) == before


def read_file(engine: DockerEngine, image: str, path: str) -> str:
    """A file of an image, read from a container created (never started) on it."""
    container = engine.api.create_container(image, command=["true"], network_disabled=True)
    try:
        stream, _ = engine.api.get_archive(container["Id"], path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.extractfile(os.path.basename(path))
            assert member is not None
            return member.read().decode()
    finally:
        engine.api.remove_container(container["Id"], force=True)


def test_a_cache_mount_survives_to_the_next_build_and_shows_in_df(
    capsys: pytest.CaptureFixture[str], docker_engine: DockerEngine,
    fresh_base: Callable[[], str], docker_tag: Callable[[str], str], tmp_path: Path,
) -> None:  # fmt: skip
    mount_id = f"lamina-test-{os.urandom(4).hex()}"
    ctx = tmp_path / "cm"
    write(
        ctx,
        {
            "Dockerfile": "FROM {base}\nARG N=1\n"
            # The target is in the record's description: make it this test's own.
            f"RUN --mount=type=cache,target=/{mount_id},id={mount_id} "
            f"echo $N >> /{mount_id}/log && cat /{mount_id}/log > /seen\n"
        },
        fresh_base(),
    )
    tag = docker_tag("cachemount")

    def build(*extra: str) -> list[str]:
        code, out, err = lamina_cli(
            capsys, "build", "--network", "none", "--progress", "json", "-t", tag, *extra, str(ctx)
        )
        assert code == 0, err
        (run,) = [e for e in map(json.loads, out.splitlines()) if e["type"] == "step"][1:]
        assert run["cached"] is False, run
        return read_file(docker_engine, tag, "/seen").split()

    assert build() == ["1"]
    # The RUN misses on the build arg and finds what the first build left in the mount.
    assert build("--build-arg", "N=2") == ["1", "2"]
    code, out, _ = lamina_cli(capsys, "builder", "du", "--format", "json")
    assert code == 0
    (mount,) = [
        r
        for r in json.loads(out)["records"]
        if r["type"] == "exec.cachemount" and f"cached mount /{mount_id} " in r["description"]
    ]
    assert mount["size"] > 0 and mount["use_count"] >= 2
    # system df -v lists it in the build cache, typed as BuildKit types it.
    code, out, _ = lamina_cli(capsys, "system", "df", "-v")
    (row,) = [line for line in out.splitlines() if line.startswith(mount["id"][:12])]
    assert row.split()[1] == "exec.cachemount"
    # --no-cache reruns the RUN with its cache mount emptied, as BuildKit does.
    assert build("--no-cache", "--build-arg", "N=3") == ["3"]
