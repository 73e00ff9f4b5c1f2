"""Builds on a Docker Engine with BuildKit, explained by lamina.

How lamina drives BuildKit: the Engine API's ``POST /build?version=2`` with the context
tar as the request body. moby's builder-next (``builder/builder-next/builder.go``,
``Build``, 20.10) serves an uploaded body to BuildKit as the build context
(``reqBodyHandler``) when no client session names one, so no session is needed; the
response is the same JSON stream as the classic builder's, its progress carried by
``moby.buildkit.trace`` messages (:mod:`lamina.core.docker.trace`) and the image by
``moby.image.id``. The alternatives were worse: running ``docker build`` needs a CLI
installed and parses output written for people, and BuildKit's own gRPC API is not
reachable on dockerd 20.10 without a session, which needs gRPC over a hijacked
connection and fsutil's file-sync protocol. What the upload costs: BuildKit reads the
Dockerfile from it, and a copy of the context's root does not share the CLI's cache
(:func:`~lamina.core.docker.context.buildkit_context_tar` says why); each upload is
also kept by BuildKit as an ``http url`` build cache record, where the CLI's session
leaves one ``local source`` record per context (``builder prune`` removes either).

Every vertex BuildKit names as a Dockerfile step (:mod:`lamina.core.docker.vertices`)
becomes the same events as the embedded engine yields: ``StepStarted`` when it starts,
``StepOutput`` per line it prints, ``StepFinished`` with BuildKit's own ``cached`` flag
when it completes. A miss is explained from lamina's record of the previous BuildKit
build of the same tag on this daemon, by what the step's BuildKit key holds
(:func:`~lamina.core.docker.inputs.explain_buildkit`). The notes are the embedded
engine's: a LABEL edited above a COPY is no miss there, and the hit says BuildKit does
not key it on the LABEL (:func:`~lamina.core.docker.inputs.hit_note`); a stage the
target does not need is its ``FROM`` with a note that it was skipped; a step BuildKit
ran once for two stages is a hit saying so; and each says what the classic builder
would have decided (``StepRecord.other``). The context is the one BuildKit would have
had from the docker CLI, so lamina's builds and ``DOCKER_BUILDKIT=1 docker build`` hit
each other's steps (but for a copy of the whole context, see above).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from lamina.core.accounting import reasons
from lamina.core.docker.client import (
    CANCELLED,
    call,
    unreachable,
    until_cancelled,
)
from lamina.core.docker.context import buildkit_context_tar
from lamina.core.docker.inputs import (
    dockerfile_of,
    explain_buildkit,
    failed_at,
    hit_note,
    plan_buildkit,
    trigger_inputs,
)
from lamina.core.docker.inventory import Inventory
from lamina.core.docker.records import BuildRecords
from lamina.core.docker.trace import IMAGE_ID, TRACE_ID, TraceError, Vertex, decode_aux
from lamina.core.docker.vertices import BuildKitPlan, VertexName, parse_name
from lamina.core.errors import BuildError, DockerfileError, LaminaError
from lamina.core.events import (
    BuildEvent,
    BuildFailed,
    BuildFinished,
    BuildStarted,
    StepFinished,
    StepOutput,
    StepStarted,
)
from lamina.core.model import BuildRequest, Reason, StepRecord

log = logging.getLogger(__name__)


class BuildKitBuilder:
    """Runs BuildKit builds on a Docker Engine and records them.

    Args:
        inventory: what the daemon holds (its API client is used).
        records: lamina's records of builds on this daemon.
    """

    def __init__(self, inventory: Inventory, records: BuildRecords) -> None:
        self.inventory = inventory
        self.api = inventory.api
        self.records = records

    def build(
        self, request: BuildRequest, cancel: threading.Event | None = None
    ) -> Iterator[BuildEvent]:
        """Build and yield progress events (see ``Engine.build``).

        Raises:
            UsageError: an unknown target.
            ContextError: the context or the Dockerfile cannot be read.
        """
        try:
            plan: BuildKitPlan | None = self.plan(request)
        except DockerfileError as exc:
            # As with the classic builder: the daemon's own parser decides, and its words
            # are the error; should it accept the file, steps come from vertex names.
            log.info("lamina's parser refused %s (%s); BuildKit decides", request.context, exc)
            plan = None
        upload, dockerfile_name = buildkit_context_tar(
            Path(request.context).resolve(), dockerfile_of(request)
        )
        return self._guarded(request, plan, cancel, upload, dockerfile_name)

    def plan(self, request: BuildRequest) -> BuildKitPlan:
        """The build's steps (:func:`~lamina.core.docker.inputs.plan_buildkit`), with the
        ONBUILD triggers of each base the daemon already holds (a base it must pull
        first has none lamina can read before the build).

        Raises:
            DockerfileError: the Dockerfile does not parse.
            ContextError: the context or the Dockerfile cannot be read.
            UsageError: an unknown target.
        """
        plan = plan_buildkit(request, self.platform())
        for stage in plan.stages.values():
            if not stage.steps or "from" not in stage.steps[0]:
                continue
            try:
                config = self.inventory.resolve(str(stage.steps[0]["from"])).get("Config") or {}
            except LaminaError:
                continue
            for step in stage.add_triggers([str(t) for t in config.get("OnBuild") or ()]):
                step.update(trigger_inputs(request, step["instruction"]))
        return plan

    def platform(self) -> str:
        """The daemon's platform, which BuildKit on it builds for (``linux/amd64``)."""
        version = call("reading the Docker Engine's version", self.api.version)
        os_, arch = str(version.get("Os") or "linux"), str(version.get("Arch") or "amd64")
        # containerd's default for 32-bit arm is v7; other architectures have no variant.
        return f"{os_}/{arch}/v7" if arch == "arm" else f"{os_}/{arch}"

    def predict(self, request: BuildRequest) -> Iterator[BuildEvent]:
        """What-if under BuildKit's rules, from lamina's records (see :func:`predict`).

        Raises:
            DockerfileError: the Dockerfile does not parse.
            UsageError: an unknown target.
        """
        plan = self.plan(request)
        probe = _probe(request)
        previous = self.records.previous(probe, builder="buildkit")
        classic_before = previous is None and self.records.previous(probe) is not None
        return predict(self.inventory, plan, previous, classic_before, probe)

    def _guarded(
        self,
        request: BuildRequest,
        plan: BuildKitPlan | None,
        cancel: threading.Event | None,
        upload: IO[bytes],
        dockerfile_name: str,
    ) -> Iterator[BuildEvent]:
        """``_run``, recording (and cancelling) a build its consumer abandoned."""
        run = _Run(self, request, plan)
        try:
            yield from run.events(cancel, upload, dockerfile_name)
        finally:
            upload.close()
            if run.record.get("status") == "running":
                run.cancel_daemon_build()
                run.record.update(status="cancelled", error="abandoned", finished=time.time())
                self.records.save(run.record)


def _probe(request: BuildRequest) -> dict[str, Any]:
    """What :meth:`BuildRecords.previous` matches a build by."""
    return {
        "id": None,
        "tags": list(request.tags),
        "dockerfile": str(dockerfile_of(request)),
        "context": str(Path(request.context).resolve()),
    }


class _Run:
    """One BuildKit build: its record, and the state of its steps as vertices report."""

    def __init__(
        self, builder: BuildKitBuilder, request: BuildRequest, plan: BuildKitPlan | None
    ) -> None:
        self.builder = builder
        self.api = builder.api
        self.inventory = builder.inventory
        self.request = request
        self.plan = plan
        self.build_id = "lamina-" + uuid.uuid4().hex
        self.record: dict[str, Any] = {}
        self.prev_build: dict[str, Any] | None = None
        self.classic_before = False
        # Per step (stage, index): started, finished, and the first miss of each stage.
        self.started: set[tuple[int, int]] = set()
        self.finished: dict[tuple[int, int], StepRecord] = {}
        self.first_miss: dict[int, tuple[str, str]] = {}
        # Per vertex digest: the step it is, and output not yet ended by a newline.
        self.vertex_step: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, bytes] = {}
        self.failed_step: dict[str, Any] | None = None
        self.failed_error = ""
        # Without a plan (lamina cannot parse the Dockerfile): steps from vertex names.
        self.labels: dict[str, int] = {}
        self.has_from: set[str] = set()

    # -- the build -----------------------------------------------------------------------

    def events(
        self, cancel: threading.Event | None, upload: IO[bytes], dockerfile_name: str
    ) -> Iterator[BuildEvent]:
        request, records = self.request, self.builder.records
        dockerfile = dockerfile_of(request)
        self.record.update(
            {
                "id": records.next_id(),
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
                "inputs": self.plan.steps if self.plan is not None else [],
                "builder": "buildkit",
            }
        )
        records.save(self.record)
        self.prev_build = records.previous(self.record, builder="buildkit")
        any_before = records.previous(self.record)
        self.classic_before = self.prev_build is None and any_before is not None
        yield BuildStarted(
            build_id=self.record["id"],
            dockerfile=str(dockerfile),
            context=self.record["context"],
            steps_total=self.plan.total if self.plan is not None else 0,
            builder="buildkit",
        )
        for record in skipped_steps(self.plan):
            self.record["steps"].append(asdict(record))
            yield StepStarted(record.stage, record.index, record.instruction)
            yield StepFinished(record)
        image_id: str | None = None
        error: str | None = None
        try:
            response = self._start(upload, dockerfile_name)
            try:
                for message in until_cancelled(_messages(response), cancel):
                    if message is CANCELLED:
                        self.cancel_daemon_build()
                        self.record.update(
                            status="cancelled", error="cancelled", finished=time.time()
                        )
                        records.save(self.record)
                        yield BuildFailed(self.record["id"], "build cancelled", cancelled=True)
                        return
                    assert isinstance(message, dict)
                    if "error" in message or "errorDetail" in message:
                        detail = message.get("errorDetail") or {}
                        error = str(detail.get("message") or message.get("error") or "")
                        error = error or "build failed"
                        break
                    if message.get("id") == TRACE_ID:
                        yield from self._trace(message.get("aux"))
                    elif message.get("id") == IMAGE_ID:
                        aux = message.get("aux")
                        if isinstance(aux, dict) and aux.get("ID"):
                            image_id = str(aux["ID"])
            finally:
                response.close()
        except LaminaError as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the stream dies with requests' errors
            error = str(unreachable(exc))
        if error is None and image_id is None:
            error = "Docker ended the build without an image"
        if error is not None:
            yield from self._fail(error)
            return
        assert image_id is not None
        yield from self._merged()
        self._layers(image_id)
        self.record.update(status="ok", image=image_id, finished=time.time())
        records.save(self.record)
        yield BuildFinished(self.record["id"], image_id, tuple(request.tags))

    def _start(self, upload: IO[bytes], dockerfile_name: str) -> Any:
        """Sends the build; a request the daemon refuses fails with the daemon's words."""
        request = self.request
        params: dict[str, Any] = {
            "version": "2",
            "buildid": self.build_id,
            "dockerfile": dockerfile_name,
            "t": list(request.tags),
            "buildargs": json.dumps(dict(request.build_args)),
        }
        network = self._network()
        if network:
            params["networkmode"] = network
        if request.target:
            params["target"] = request.target
        if request.no_cache:
            params["nocache"] = "1"
        try:
            response = self.api.post(
                self._url("/build"),
                params=params,
                data=upload,
                headers={"Content-Type": "application/x-tar"},
                stream=True,
                timeout=None,
            )
        except Exception as exc:  # requests' connection errors are not OSErrors
            raise unreachable(exc) from exc
        if response.status_code >= 400:
            try:
                body = response.json()
                text = str(body.get("message") or "") if isinstance(body, dict) else ""
            except ValueError:
                text = response.text.strip()
            response.close()
            raise BuildError(text.splitlines()[0] if text else f"HTTP {response.status_code}")
        return response

    def _network(self) -> str:
        """The network mode to ask for ("": the daemon's default).

        BuildKit keys a RUN on its network mode, so lamina's RUNs with network use the
        daemon's default network, as a plain ``docker build`` does, and the two share
        their RUN steps; a daemon without a ``bridge`` network has no default to use
        (its own ``docker build`` fails there), so they get the host's network, as the
        classic builder's RUNs do.
        """
        if self.request.network == "none":
            return "none"
        try:
            bridges = call("listing Docker's networks", self.api.networks, names=["bridge"])
        except LaminaError:
            return "host"
        return "" if any(n.get("Name") == "bridge" for n in bridges) else "host"

    def _url(self, path: str) -> str:
        return f"{self.api.base_url}/v{self.api.api_version}{path}"

    def cancel_daemon_build(self) -> None:
        """Asks the daemon to stop this build (``POST /build/cancel``)."""
        try:
            call(
                "cancelling the build",
                self.api.post,
                self._url("/build/cancel"),
                params={"id": self.build_id},
                timeout=10,
            )
        except LaminaError:
            log.debug("cancelling BuildKit build %s failed", self.build_id, exc_info=True)

    def _fail(self, error: str) -> Iterator[BuildEvent]:
        """Ends the build with Docker's words, after the step that failed (if one did)."""
        where = ""
        step = self.failed_step
        if step is not None:
            where = failed_at(str(self.record["dockerfile"]), step, None)
        message = " ".join((where + error).split())
        self.record.update(status="failed", error=message, finished=time.time())
        self.builder.records.save(self.record)
        yield BuildFailed(self.record["id"], message)

    # -- progress ------------------------------------------------------------------------

    def _trace(self, aux: object) -> Iterator[BuildEvent]:
        try:
            status = decode_aux(aux)
        except TraceError as exc:
            log.debug("skipping a BuildKit progress message: %s", exc)
            return
        for vertex in status.vertexes:
            yield from self._vertex(vertex)
        for entry in status.logs:
            step = self.vertex_step.get(entry.vertex)
            if step is None:
                continue
            data = self.pending.get(entry.vertex, b"") + entry.data
            *lines, rest = data.split(b"\n")
            self.pending[entry.vertex] = rest
            for line in lines:
                yield StepOutput(step["stage"], step["index"], _text(line))

    def _vertex(self, vertex: Vertex) -> Iterator[BuildEvent]:
        step = self.vertex_step.get(vertex.digest)
        if step is None:
            name = parse_name(vertex.name)
            if name is None:
                return  # BuildKit's own work: loading the context, exporting the image
            step = self._step_for(name)
            if step is None:
                log.debug("no Dockerfile step for BuildKit vertex %r", vertex.name)
                return
            self.vertex_step[vertex.digest] = step
        pos = (step["stage"], step["index"])
        if pos in self.finished:
            return
        if pos not in self.started and (vertex.started is not None or vertex.cached):
            self.started.add(pos)
            yield StepStarted(step["stage"], step["index"], step["instruction"])
        if vertex.error:
            # When one step fails BuildKit cancels the others: name the one that failed.
            cancelled = "context canceled"
            if self.failed_step is None or (
                cancelled in self.failed_error and cancelled not in vertex.error
            ):
                self.failed_step, self.failed_error = step, vertex.error
            return
        if vertex.completed is None:
            return
        if pos not in self.started:
            self.started.add(pos)
            yield StepStarted(step["stage"], step["index"], step["instruction"])
        rest = self.pending.pop(vertex.digest, b"")
        if rest.strip():
            yield StepOutput(step["stage"], step["index"], _text(rest))
        duration = 0.0
        if vertex.started is not None:
            duration = round(max(0.0, vertex.completed - vertex.started), 3)
        yield self._finish(step, vertex.cached, duration)

    def _finish(self, step: dict[str, Any], cached: bool, duration: float) -> StepFinished:
        stage, index = step["stage"], step["index"]
        is_from = "from" in step or (self.plan is None and index == 0)
        reason: Reason | None = None
        decision: bool | None = None if is_from else cached
        if is_from:
            step["base"] = self._base_id(step)
        elif not cached:
            reason = self._reason(step)
            self.first_miss.setdefault(stage, (f"{stage}/{index}", step["instruction"]))
        elif not self.request.no_cache:
            reason = hit_note(step, self.prev_build)
        record = StepRecord(
            stage=stage,
            index=index,
            instruction=step["instruction"],
            cached=decision,
            reason=reason,
            duration=duration,
            other=reasons.contrast("buildkit", _keyword(step), decision, reason),
        )
        self.finished[(stage, index)] = record
        self.record["steps"].append(asdict(record))
        return StepFinished(record)

    def _base_id(self, step: dict[str, Any]) -> str | None:
        """The image a FROM resolved to, as the daemon now holds it."""
        ref = str(step.get("from") or "")
        if not ref:
            return None
        try:
            return str(self.inventory.resolve(ref)["Id"])
        except LaminaError:
            return None

    def _reason(self, step: dict[str, Any]) -> Reason:
        """Why BuildKit missed this step."""
        stage = step["stage"]
        if self.request.no_cache:
            return reasons.no_cache()
        if self.plan is None:
            if stage in self.first_miss:
                return reasons.parent_missed(*self.first_miss[stage])
            return reasons.first_build(
                "lamina's parser does not read this Dockerfile, so it recorded nothing to"
                " compare this step with"
            )
        stage_plan = self.plan.stages[stage]
        first_miss = self.first_miss.get(stage)
        if first_miss is None and stage_plan.base_stage is not None:
            first_miss = self._stage_first_miss(stage_plan.base_stage)
        source_miss = None
        source = step.get("from_stage")
        if isinstance(source, int):
            miss = self._stage_first_miss(source)
            if miss is not None:
                name = self.plan.stages[source].label if source in self.plan.stages else source
                source_miss = (str(name), *miss)
        base_step = stage_plan.steps[0] if stage_plan.steps else None
        if base_step is not None and "from" in base_step and not base_step.get("base"):
            # BuildKit solves a base that several stages share once, under one stage's
            # name: this stage's FROM may not have reported yet.
            base_step["base"] = self._base_id(base_step)
        return explain_buildkit(
            step,
            self.prev_build,
            first_miss=first_miss,
            no_cache=False,
            source_miss=source_miss,
            classic_before=self.classic_before,
            base_step=base_step if base_step is not None and "from" in base_step else None,
        )

    def _stage_first_miss(self, stage: int) -> tuple[str, str] | None:
        """The first miss a stage's last state stands on (its own, or its base stage's)."""
        seen: set[int] = set()
        current: int | None = stage
        while current is not None and current not in seen:
            seen.add(current)
            if current in self.first_miss:
                return self.first_miss[current]
            plan = self.plan.stages.get(current) if self.plan is not None else None
            current = plan.base_stage if plan is not None else None
        return None

    def _step_for(self, name: VertexName) -> dict[str, Any] | None:
        if self.plan is not None:
            return self.plan.step_for(name)
        # No plan: number stages by label as they come, steps by BuildKit's count.
        label = name.label
        if label not in self.labels:
            if label.startswith("stage-") and label[6:].isdigit():
                self.labels[label] = int(label[6:])
            else:
                self.labels[label] = max(self.labels.values(), default=-1) + 1
        if name.keyword == "FROM":
            self.has_from.add(label)
        index = 0 if name.keyword == "FROM" else name.index - (1 if label in self.has_from else 0)
        return {"stage": self.labels[label], "index": index, "instruction": name.text}

    # -- after the build -----------------------------------------------------------------

    def _merged(self) -> Iterator[BuildEvent]:
        """Steps that never showed as a vertex of their own: BuildKit solved an identical
        step of another stage (same op on the same state) once for both. Each takes the
        decision of its twin."""
        if self.plan is None:
            return
        signatures: dict[str, StepRecord] = {}
        pending: list[tuple[dict[str, Any], str]] = []
        chains: dict[int, str] = {}
        for number in sorted(self.plan.stages):
            stage_plan = self.plan.stages[number]
            chain = (
                chains.get(stage_plan.base_stage, "") if stage_plan.base_stage is not None else ""
            )
            for step in stage_plan.steps:
                keyed = {k: v for k, v in step.items() if k not in _PLACE}
                chain = json.dumps([chain, keyed], sort_keys=True)
                record = self.finished.get((step["stage"], step["index"]))
                if record is not None:
                    signatures.setdefault(chain, record)
                else:
                    pending.append((step, chain))
            chains[number] = chain
        for step, chain in pending:
            twin = signatures.get(chain)
            if twin is None:
                continue
            yield StepStarted(step["stage"], step["index"], step["instruction"])
            # One result serves both stages: a hit here, whatever the twin decided (a
            # FROM that other stages share is no cached step at all).
            is_from = "from" in step
            note = (
                None if is_from else reasons.merged(f"{twin.stage}/{twin.index}", twin.instruction)
            )
            record = StepRecord(
                stage=step["stage"],
                index=step["index"],
                instruction=step["instruction"],
                cached=None if is_from else True,
                reason=note,
                other=None if is_from else reasons.contrast("buildkit", _keyword(step), True, note),
            )
            self.finished[(step["stage"], step["index"])] = record
            self.record["steps"].append(asdict(record))
            yield StepFinished(record)

    def _layers(self, image_id: str) -> None:
        """Adds to the record the layer each step of the target stage made.

        BuildKit writes one history row per instruction of the target stage (image
        settings included), so the image's last rows are that stage's instructions.
        """
        if self.plan is None or not self.plan.stages:
            return
        target = self.plan.target
        stage = self.plan.stages.get(target)
        if stage is None:
            return
        try:
            data = self.inventory.resolve(image_id)
            rows = self.inventory.layer_rows(data)
        except LaminaError:
            return
        # Each ONBUILD trigger writes its row first, then each instruction of the stage.
        count = stage.triggers + self.plan.instructions.get(target, 0)
        if count == 0 or len(rows) < count:
            return
        by_index = {}
        for offset, (row, empty, chain) in enumerate(rows[-count:], 1):
            by_index[offset] = (row, empty, chain)
        for saved in self.record["steps"]:
            if saved["stage"] != target or saved["index"] not in by_index:
                continue
            row, empty, chain = by_index[saved["index"]]
            created_by = str(row.get("CreatedBy") or "").split(None, 1)[:1]
            keyword = str(saved["instruction"]).split(None, 1)[:1]
            if [w.upper() for w in created_by] != [w.upper() for w in keyword]:
                return  # the rows are not this stage's (ONBUILD triggers ran first)
            if not empty and chain is not None:
                saved["layer"] = chain
                saved["size"] = int(row.get("Size") or 0)


# Where a step sits, not what it is: left out when two stages' steps are compared.
# Where a step is, and what its key does not hold (the image settings above it).
_PLACE = frozenset({"stage", "index", "_line", "label", "cmd", "instruction", "base", "settings"})


def _keyword(step: dict[str, Any]) -> str:
    text = str(step.get("instruction") or "")
    return text.split(None, 1)[0].upper() if text.strip() else ""


def skipped_steps(plan: BuildKitPlan | None) -> list[StepRecord]:
    """The ``FROM`` of each stage BuildKit skips, with the note saying so (and that the
    classic builder would have built it)."""
    out = []
    for number, (name, instruction) in sorted((plan.skipped if plan else {}).items()):
        note = reasons.stage_skipped(name)
        other = reasons.contrast("buildkit", "FROM", None, note)
        out.append(StepRecord(number, 0, instruction, None, note, other=other))
    return out


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace").rstrip("\r")


def _messages(response: Any) -> Iterator[dict[str, Any]]:
    """The JSON messages of a build response (each one object, ``\\r\\n`` between)."""
    decoder = json.JSONDecoder()
    buffer = ""
    for chunk in response.iter_content(chunk_size=None):
        buffer += chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else str(chunk)
        while True:
            buffer = buffer.lstrip()
            if not buffer:
                break
            try:
                message, end = decoder.raw_decode(buffer)
            except ValueError:
                break  # an object not yet whole
            buffer = buffer[end:]
            if isinstance(message, dict):
                yield message
    if buffer.strip():
        raise BuildError(f"Docker's build stream ended inside a message: {buffer[:60]!r}")


# -- what-if ----------------------------------------------------------------------------


def predict(
    inventory: Inventory,
    plan: BuildKitPlan,
    previous: dict[str, Any] | None,
    classic_before: bool,
    probe: dict[str, Any],
) -> Iterator[BuildEvent]:
    """Every step's hit or miss under BuildKit, predicted from lamina's records.

    BuildKit's cache keys cannot be read through the Engine API, so lamina compares the
    build with its record of the previous BuildKit build of the same tag on this daemon:

    * **miss**: what the step's key holds changed (the reason says what), or a step it
      stands on misses;
    * **hit**: nothing it holds changed and BuildKit still keeps build cache records;
    * **unknown** (``cached`` None, reason ``unpredictable``): no earlier BuildKit build
      of the tag to compare with, or a ``COPY --from`` a stage that runs again (it hits
      if the stage makes the same files).
    """
    yield BuildStarted(0, probe["dockerfile"], probe["context"], plan.total, "buildkit")
    for record in skipped_steps(plan):
        yield StepStarted(record.stage, record.index, record.instruction)
        yield StepFinished(record)
    records: list[Any] = []
    if previous is not None:
        usage = call("reading Docker's build cache", inventory.api.df)
        records = list(usage.get("BuildCache") or [])
    prev_steps = {(s.get("label"), s.get("cmd")): s for s in (previous or {}).get("inputs", ())}
    first_miss: dict[int, tuple[str, str]] = {}
    unknown: set[int] = set()
    for number in sorted(plan.stages):
        stage_plan = plan.stages[number]
        inherited = stage_plan.base_stage
        for step in stage_plan.steps:
            yield StepStarted(step["stage"], step["index"], step["instruction"])
            cached: bool | None
            reason: Reason | None = None
            if "from" in step:
                step["base"] = _resolved(inventory, str(step["from"]))
                yield StepFinished(
                    StepRecord(step["stage"], step["index"], step["instruction"], None, None)
                )
                continue
            miss = first_miss.get(number)
            if miss is None and inherited is not None:
                miss = first_miss.get(inherited)
            source = step.get("from_stage")
            if previous is None:
                cached, reason = (
                    None,
                    reasons.unpredictable(
                        "the tag was only built with the classic builder here, whose cache"
                        " BuildKit does not use"
                        if classic_before
                        else "lamina has no earlier BuildKit build of this tag on this Docker"
                        " Engine to compare with"
                    ),
                )
            elif number in unknown or (inherited is not None and inherited in unknown):
                cached, reason = (
                    None,
                    reasons.unpredictable(
                        "an earlier step cannot be predicted, so neither can this one"
                    ),
                )
            elif miss is not None:
                cached, reason = False, reasons.parent_missed(*miss)
            elif isinstance(source, int) and source in first_miss:
                cached, reason = (
                    None,
                    reasons.unpredictable(
                        f"copies from stage {plan.stages[source].label}, which runs again first:"
                        " BuildKit hits here only if it makes the same files"
                    ),
                )
            else:
                prev = prev_steps.get((step.get("label"), step.get("cmd")))
                first = stage_plan.steps[0]
                base_step = first if "from" in first else None
                reason = explain_buildkit(
                    step,
                    previous,
                    first_miss=None,
                    no_cache=False,
                    base_step=base_step,
                )
                if prev is not None and reason["kind"] == "pruned":
                    # Nothing the key holds changed: a hit while BuildKit keeps its cache.
                    hit = (True, hit_note(step, previous))
                    cached, reason = hit if records else (False, reason)
                else:
                    cached = False
            if cached is False:
                first_miss.setdefault(number, (f"{number}/{step['index']}", step["instruction"]))
            elif cached is None:
                unknown.add(number)
            other = reasons.contrast("buildkit", _keyword(step), cached, reason)
            yield StepFinished(
                StepRecord(
                    step["stage"], step["index"], step["instruction"], cached, reason, other=other
                )
            )
    yield BuildFinished(0, None, tuple(probe["tags"]))


def _resolved(inventory: Inventory, ref: str) -> str | None:
    try:
        return str(inventory.resolve(ref)["Id"])
    except LaminaError:
        return None


__all__ = ["BuildKitBuilder", "predict"]
