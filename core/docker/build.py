"""Builds on a Docker Engine, explained by lamina: the entry point, and the classic builder.

:class:`DockerBuilder` routes a request by its ``builder``: BuildKit (the default) to
:mod:`lamina.core.docker.buildkit_build`, ``classic`` to the classic builder here.

The classic builder (``POST /build`` without BuildKit) streams ``Step k/N : ...`` lines
and ``---> Using cache`` on a hit; those become the same step events as the embedded
engine yields. Before the build lamina records each step's inputs
(:mod:`lamina.core.docker.inputs`); a miss is explained by comparing them with the
previous classic build of the same tag (:mod:`lamina.core.docker.records`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import IO, Any

from lamina.core.digest import chain_ids
from lamina.core.docker import convert
from lamina.core.docker.buildkit_build import BuildKitBuilder
from lamina.core.docker.client import CANCELLED, call, explanation, unreachable, until_cancelled
from lamina.core.docker.context import context_tar, tar_style
from lamina.core.docker.inputs import dockerfile_of, explain, failed_at, plan_inputs
from lamina.core.docker.inventory import Inventory
from lamina.core.docker.predict import predict
from lamina.core.docker.records import BuildRecords, build_record, builder_of, records_dir
from lamina.core.errors import (
    BuildError,
    ContextError,
    DockerfileError,
    LaminaError,
    NotFound,
    UsageError,
)
from lamina.core.events import (
    BuildEvent,
    BuildFailed,
    BuildFinished,
    BuildStarted,
    StepFinished,
    StepOutput,
    StepStarted,
)
from lamina.core.model import BuildRecord, BuildRequest, StepRecord
from lamina.core.settings import BUILDERS, default_builder

log = logging.getLogger(__name__)

_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_ID_RE = re.compile(r"^ ---> ([0-9a-f]{12,64})$")
_TRIGGERS_RE = re.compile(r"^# Executing (\d+) build triggers?$")


class DockerBuilder:
    """Runs one build on a Docker Engine (BuildKit or the classic builder) and records it.

    Args:
        inventory: what the daemon holds (its API client is used).
        home: the lamina home; records go to ``home/docker/<daemon-id>/builds``. None
            keeps no records (builds run; their misses are not explained).
    """

    def __init__(self, inventory: Inventory, home: Path | None) -> None:
        self.inventory = inventory
        self.api = inventory.api
        root = None
        if home is not None:
            root = records_dir(home, call("reading Docker's info", self.api.info))
        self.records = BuildRecords(root)

    def list_builds(self, limit: int = 50) -> list[BuildRecord]:
        """Recorded builds, newest first, each with its steps."""
        return [build_record(r) for r in self.records.load_all(limit)]

    def build(
        self, request: BuildRequest, cancel: threading.Event | None = None
    ) -> Iterator[BuildEvent]:
        """Build and yield progress events (see ``Engine.build``).

        Raises:
            UsageError: an unknown target or builder.
            DockerfileError: for a dry run, the Dockerfile does not parse (a real build
                sends it anyway, so the daemon's own message is the error).
        """
        context = Path(request.context)
        if not context.is_dir():
            raise ContextError(f"build context {context} is not a directory")
        request = replace(
            request,
            tags=tuple(convert.normal_tag(t) for t in request.tags),
            builder=request.builder or default_builder(),
        )
        if request.builder not in BUILDERS:
            raise UsageError(
                f"unknown builder {request.builder!r} (expected {' or '.join(BUILDERS)})"
            )
        _refuse_what_the_engine_api_lacks(request)
        if request.builder == "buildkit":
            builder = BuildKitBuilder(self.inventory, self.records)
            if request.dry_run:
                return builder.predict(request)
            return builder.build(request, cancel)
        if request.dry_run:
            return self._predict(request)
        try:
            planned = plan_inputs(request)
        except DockerfileError as exc:
            # Docker's own parser decides, and its message (with its line number) is the
            # one users know: send the build and let the daemon say what is wrong. Should
            # the daemon accept what lamina's parser refused, the build still runs, only
            # without recorded inputs to explain its misses.
            log.info("lamina's parser refused %s (%s); Docker decides", request.context, exc)
            planned = []
        style = tar_style(str(self.api.api_version))
        context_file, dockerfile_name = context_tar(
            context.resolve(), dockerfile_of(request), style
        )
        return self._guarded(request, planned, cancel, context_file, dockerfile_name)

    def _predict(self, request: BuildRequest) -> Iterator[BuildEvent]:
        """What-if: every step's hit or miss on this daemon (:mod:`~lamina.core.docker.predict`).

        Raises:
            DockerfileError: the Dockerfile does not parse (nothing is sent to Docker).
        """
        planned = plan_inputs(request)
        dockerfile = dockerfile_of(request)
        probe = {
            "id": None,
            "tags": list(request.tags),
            "dockerfile": str(dockerfile),
            "context": str(Path(request.context).resolve()),
        }
        history = [r for r in self.records.load_all() if builder_of(r) == "classic"]
        previous = self.records.previous(probe, builder="classic")
        return predict(self.inventory, request, planned, history, previous, str(dockerfile))

    def _guarded(
        self,
        request: BuildRequest,
        planned: list[dict[str, Any]],
        cancel: threading.Event | None,
        context_file: IO[bytes],
        dockerfile_name: str,
    ) -> Iterator[BuildEvent]:
        """``_run``, recording a build its consumer abandoned as cancelled."""
        record: dict[str, Any] = {}
        try:
            yield from self._run(request, planned, cancel, context_file, dockerfile_name, record)
        finally:
            context_file.close()
            if record.get("status") == "running":
                record.update(status="cancelled", error="abandoned", finished=time.time())
                self.records.save(record)

    def _run(
        self,
        request: BuildRequest,
        planned: list[dict[str, Any]],
        cancel: threading.Event | None,
        context_file: IO[bytes],
        dockerfile_name: str,
        record: dict[str, Any],
    ) -> Iterator[BuildEvent]:
        dockerfile = dockerfile_of(request)
        record.update(
            {
                "id": self.records.next_id(),
                "started": time.time(),
                "finished": None,
                "dockerfile": str(dockerfile),
                "context": str(Path(request.context).resolve()),
                "tags": list(request.tags),
                "build_args": dict(request.build_args),
                "target": request.target,
                "image": None,
                "status": "running",
                "error": None,
                "steps": [],
                "inputs": planned,
                "builder": "classic",
            }
        )
        self.records.save(record)
        prev_build = self.records.previous(record, builder="classic")
        yield BuildStarted(
            build_id=record["id"],
            dockerfile=str(dockerfile),
            context=record["context"],
            steps_total=len(planned),
            builder="classic",
        )
        by_pos = {(s["stage"], s["index"]): s for s in planned}
        api = self.api
        kwargs: dict[str, Any] = {
            "fileobj": context_file,
            "custom_context": True,
            "dockerfile": dockerfile_name,
            "tag": request.tags[0] if request.tags else None,
            "buildargs": dict(request.build_args) or None,
            "target": request.target,
            "nocache": request.no_cache,
            "rm": True,
            "forcerm": True,
            "decode": True,
            "network_mode": "none" if request.network == "none" else "host",
        }
        state = _State(by_pos, prev_build, request)
        image_id: str | None = None
        buffer = ""
        error: str | None = None
        try:
            stream = _start(api, kwargs)
            for chunk in until_cancelled(stream, cancel):
                if chunk is CANCELLED:
                    self._cancel(state)
                    record.update(status="cancelled", error="cancelled", finished=time.time())
                    self.records.save(record)
                    yield BuildFailed(record["id"], "build cancelled", cancelled=True)
                    return
                assert isinstance(chunk, dict)
                if "error" in chunk or "errorDetail" in chunk:
                    detail = chunk.get("errorDetail") or {}
                    error = str(detail.get("message") or chunk.get("error") or "build failed")
                    break
                aux = chunk.get("aux")
                if isinstance(aux, dict) and aux.get("ID"):
                    image_id = str(aux["ID"])
                buffer += str(chunk.get("stream") or "")
                while "\n" in buffer:
                    line, buffer = buffer.split("\n", 1)
                    yield from self._line(line.rstrip("\r"), state, record)
        except LaminaError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the stream dies with requests' errors
            error = str(unreachable(exc))
        if error is None and buffer.strip():
            yield from self._line(buffer, state, record)
        current = state.current
        if error is None and image_id is None:
            error = "Docker ended the build without an image"
        if error is not None:
            where = ""
            if current is not None:
                at = state.by_pos.get((current["stage"], current["index"] - state.offset))
                where = failed_at(str(dockerfile), current, at)
            message = " ".join((where + error).split())
            record.update(status="failed", error=message, finished=time.time())
            self.records.save(record)
            yield BuildFailed(record["id"], message)
            return
        assert image_id is not None
        for extra in request.tags[1:]:
            self.inventory.tag(image_id, extra)
        record.update(status="ok", image=image_id, finished=time.time())
        self.records.save(record)
        yield BuildFinished(record["id"], image_id, tuple(request.tags))

    def _cancel(self, state: _State) -> None:
        """Stops the step in progress: the classic builder runs RUN in a container."""
        if state.container:
            try:
                self.api.kill(state.container)
            except Exception:
                log.debug("killing build container %s failed", state.container, exc_info=True)

    def _line(self, line: str, state: _State, record: dict[str, Any]) -> Iterator[BuildEvent]:
        for event in self._parse_line(line, state):
            if isinstance(event, StepFinished):
                record["steps"].append(asdict(event.step))
            yield event

    def _parse_line(self, line: str, state: _State) -> Iterator[BuildEvent]:
        match = _STEP_RE.match(line)
        if match:
            instruction = match.group(3)
            keyword = instruction.split(None, 1)[0].lower() if instruction.strip() else ""
            if keyword == "from":
                state.new_stage(instruction)
            elif state.stage < 0:
                return  # a global ARG: not a step of any stage
            else:
                state.index += 1
            state.current = {
                "stage": state.stage,
                "index": state.index,
                "instruction": instruction,
                "started": time.monotonic(),
                "cached": None if keyword == "from" else False,
                "hit_seen": False,
            }
            yield StepStarted(state.stage, state.index, instruction)
            return
        current = state.current
        if current is None:
            return
        trigger_match = _TRIGGERS_RE.match(line)
        if trigger_match and current["index"] == 0:
            state.triggers = self._triggers(
                state, current["instruction"], int(trigger_match.group(1))
            )
            return
        if line == " ---> Using cache":
            if state.triggers is not None and current["index"] == 0:
                state.markers.append("hit")
            current["hit_seen"] = True
            return
        if line.startswith(" ---> Running in "):
            if state.triggers is not None and current["index"] == 0:
                state.markers.append("run")
            state.container = line[len(" ---> Running in ") :].strip()
            return
        if line.startswith("Removing intermediate container"):
            state.container = None
            return
        id_match = _ID_RE.match(line)
        if id_match:
            yield from state.finish_step(self.inventory, id_match.group(1))
            if current["index"] == 0 and state.triggers is not None:
                yield from state.trigger_steps()
            return
        if line.startswith(("Successfully built ", "Successfully tagged ")):
            return
        if line.strip():
            yield StepOutput(current["stage"], current["index"], line)

    def _triggers(self, state: _State, from_instruction: str, count: int) -> list[str]:
        """The ONBUILD triggers of a FROM's base, as written (placeholders if unknown)."""
        words = from_instruction.split()
        ref = words[1] if len(words) > 1 else ""
        ref = state.stage_images.get(ref.lower(), ref)
        triggers: list[str] = []
        try:
            config = self.inventory.resolve(ref).get("Config") or {}
            triggers = list(config.get("OnBuild") or [])
        except LaminaError:
            log.debug("cannot read the ONBUILD triggers of %s", ref)
        if len(triggers) != count:
            triggers = [f"(ONBUILD trigger {i + 1})" for i in range(count)]
        return triggers


class _State:
    """The parse state of one line of the build stream."""

    def __init__(
        self,
        by_pos: dict[tuple[int, int], dict[str, Any]],
        prev_build: dict[str, Any] | None,
        request: BuildRequest,
    ) -> None:
        self.stage = -1
        self.index = 0
        self.current: dict[str, Any] | None = None
        self.container: str | None = None  # the RUN container of the step in progress
        self.first_miss: tuple[str, str] | None = None
        self.by_pos = by_pos
        self.prev_build = prev_build
        self.offset = 0  # ONBUILD triggers run as steps 1..n, shifting the stage's steps
        self.triggers: list[str] | None = None
        self.markers: list[str] = []
        self.stage_names: list[str] = []
        self.stage_images: dict[str, str] = {}  # stage name -> its last image ID
        self.last_id: str | None = None
        self.request = request

    def new_stage(self, instruction: str) -> None:
        """A FROM line: the previous stage's result becomes nameable by later stages."""
        if self.stage >= 0 and self.last_id:
            self.stage_images[str(self.stage)] = self.last_id
            if self.stage_names[self.stage]:
                self.stage_images[self.stage_names[self.stage]] = self.last_id
        words = instruction.split()
        self.stage_names.append(
            words[3].lower() if len(words) >= 4 and words[2].lower() == "as" else ""
        )
        self.stage += 1
        self.index = 0
        self.offset = 0
        self.first_miss = None
        self.triggers = None
        self.markers = []

    def trigger_steps(self) -> Iterator[BuildEvent]:
        """The FROM's ONBUILD triggers as steps 1..n, hit or miss from Docker's markers.

        The classic builder runs them inside the FROM step: a hit prints ``Using
        cache``, a missed RUN or metadata step ``Running in``, a missed COPY/ADD
        nothing; after one miss every later trigger misses too (its parent is new).
        """
        triggers, markers = self.triggers or [], list(self.markers)
        self.triggers, self.markers = None, []
        missed = False
        for trigger in triggers:
            self.index += 1
            yield StepStarted(self.stage, self.index, trigger)
            keyword = trigger.split(None, 1)[0].upper() if trigger.strip() else ""
            hit = False
            if not missed and markers and markers[0] == "hit":
                markers.pop(0)
                hit = True
            elif keyword not in ("COPY", "ADD") and markers:
                markers.pop(0)
            reason = None
            if not hit:
                missed = True
                reason = explain(
                    None,
                    self.prev_build,
                    first_miss=self.first_miss,
                    no_cache=self.request.no_cache,
                )
                if self.first_miss is None:
                    self.first_miss = (f"{self.stage}/{self.index}", trigger)
            yield StepFinished(StepRecord(self.stage, self.index, trigger, hit, reason))
        self.offset = len(triggers)

    def finish_step(self, inventory: Inventory, short_id: str) -> Iterator[BuildEvent]:
        """The step in progress ended with image ``short_id``: its layer, hit or miss."""
        current = self.current
        if current is None:
            return
        self.current = None
        if short_id:
            self.last_id = short_id
        # FROM adds no layer of its own; every other step may.
        layer, size = (None, 0) if current["index"] == 0 else _step_layer(inventory, short_id)
        planned = self.by_pos.get((current["stage"], current["index"] - self.offset))
        if current["index"] == 0:
            cached = None
            reason = None
            if planned is not None:
                planned["base"] = _full_id(inventory, short_id)
        else:
            cached = bool(current["hit_seen"])
            reason = None
            if planned is not None:
                # What a later what-if looks for among the parent's children.
                planned["result"] = _full_id(inventory, short_id)
            if not cached:
                cur = dict(planned) if planned is not None else None
                if cur is not None:
                    base = self.by_pos.get((current["stage"], 0), {}).get("base")
                    cur["_base"] = base
                reason = explain(
                    cur,
                    self.prev_build,
                    first_miss=self.first_miss,
                    no_cache=self.request.no_cache,
                )
                if self.first_miss is None:
                    self.first_miss = (
                        f"{current['stage']}/{current['index']}",
                        current["instruction"],
                    )
        step = StepRecord(
            stage=current["stage"],
            index=current["index"],
            instruction=current["instruction"],
            cached=cached,
            reason=reason,
            duration=round(time.monotonic() - current["started"], 3),
            layer=layer,
            size=size,
        )
        yield StepFinished(step)


def _refuse_what_the_engine_api_lacks(request: BuildRequest) -> None:
    """Options the Engine API's ``POST /build`` cannot carry, refused before anything runs.

    moby passes only ``no-cache`` for all stages to BuildKit (buildx sends
    ``--no-cache-filter`` over BuildKit's own API), and secrets and ssh agents travel in
    a client session, which lamina does not open; stand-in bases are images of lamina's
    own store.

    Raises:
        UsageError: one of those options was given.
    """
    if request.no_cache_filter:
        raise UsageError(
            "--no-cache-filter is not in the Docker Engine API (buildx sends it to BuildKit"
            " directly); on --engine docker use --no-cache"
        )
    if request.secrets or request.ssh:
        flag = "--secret" if request.secrets else "--ssh"
        raise UsageError(
            f"{flag} needs a BuildKit session, which lamina does not open on --engine docker"
        )
    if request.base_substitutes:
        raise UsageError("--base-substitute uses images of lamina's own store, not Docker's")


def _start(api: Any, kwargs: dict[str, Any]) -> Any:
    """Starts the build; a request the daemon refuses fails with the daemon's words.

    Docker rejects a Dockerfile it cannot parse before streaming anything (HTTP 400,
    ``dockerfile parse error line 9: unknown instruction: SET``): that message is the
    error, exactly as ``docker build`` prints it.
    """
    import docker  # type: ignore[import-untyped]

    try:
        stream = api.build(**kwargs)
    except docker.errors.APIError as exc:
        raise BuildError(explanation(exc)) from exc
    except (docker.errors.DockerException, OSError) as exc:
        raise unreachable(exc) from exc

    def chunks() -> Iterator[Any]:
        # With a streamed response the SDK reads the status only at the first chunk.
        try:
            yield from stream
        except docker.errors.APIError as exc:
            raise BuildError(explanation(exc)) from exc

    return chunks()


def _full_id(inventory: Inventory, short_id: str) -> str:
    try:
        data = inventory.resolve(short_id)
    except LaminaError:
        return short_id
    inventory.remember(data)
    return str(data["Id"])


def _step_layer(inventory: Inventory, short_id: str) -> tuple[str | None, int]:
    """The chainID and size of the layer a step added (None, 0 for a metadata step)."""
    try:
        data = inventory.resolve(short_id)
        parent_id = data.get("Parent") or ""
        diff_ids = convert.diff_ids(data)
        parent_layers = 0
        if parent_id:
            parent_layers = len(convert.diff_ids(inventory.resolve(parent_id)))
        if len(diff_ids) <= parent_layers:
            return None, 0
        # The newest history row is the step's own: its size is the layer's DiffSize.
        history = inventory.history(data["Id"])
        size = int(history[-1].get("Size") or 0) if history else 0
        return chain_ids(diff_ids)[-1], size
    except (NotFound, LaminaError):
        return None, 0


__all__ = ["DockerBuilder"]
