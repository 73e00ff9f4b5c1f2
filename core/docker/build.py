"""Builds on a Docker Engine with the classic builder, explained by lamina.

The classic builder (``POST /build`` without BuildKit) streams ``Step k/N : ...`` lines
and ``---> Using cache`` on a hit; those become the same step events as the embedded
engine yields. Docker says nothing about *why* a step missed (moby/buildkit#2567), so
before each build lamina records the build's own inputs per step (the instruction as
written, a checksum and manifest of COPY/ADD sources in the context, the build args in
scope, the base image) and on a miss compares them with the previous build of the same
tag, using the embedded engine's reason vocabulary (``lamina.core.accounting.reasons``).

Records are JSON files under ``$LAMINA_HOME/docker/<daemon-id>/builds/``, one per
build, so builds on different daemons never explain each other.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from lamina.core.accounting import reasons
from lamina.core.digest import chain_ids
from lamina.core.docker.client import call, unreachable
from lamina.core.docker.context import context_tar
from lamina.core.errors import ContextError, LaminaError, NotFound, UsageError
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

if TYPE_CHECKING:
    from lamina.core.docker.engine import DockerEngine

log = logging.getLogger(__name__)

_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_ID_RE = re.compile(r"^ ---> ([0-9a-f]{12,64})$")
_TRIGGERS_RE = re.compile(r"^# Executing (\d+) build triggers?$")
_SAFE_RE = re.compile(r"[^A-Za-z0-9_.-]+")


# -- what lamina records per step ------------------------------------------------------


def _dockerfile_path(request: BuildRequest) -> Path:
    context = Path(request.context)
    if request.dockerfile is None:
        return context / "Dockerfile"
    path = Path(request.dockerfile)
    return path if path.is_absolute() else Path.cwd() / path


def _context(root: Path) -> Any:
    """The context as the classic builder's daemon sees it (``<context>/.dockerignore``)."""
    from lamina.core.context.checksum import Context
    from lamina.core.context.dockerignore import PatternMatcher, read_ignore_file

    ignore = root / ".dockerignore"
    try:
        patterns = read_ignore_file(ignore.read_text(encoding="utf-8")) if ignore.is_file() else []
    except OSError as exc:
        raise ContextError(f"cannot read {ignore}: {exc.strerror or exc}") from exc
    if not patterns:
        return Context(root)
    matcher = PatternMatcher(patterns)

    def excluded(rel: str, is_dir: bool) -> tuple[bool, bool]:
        if matcher.included(rel, is_dir):
            return False, True
        return True, is_dir and not matcher.can_skip_dir(rel)

    return Context(root, excluded)


def _sources(ctx: Any, patterns: list[str]) -> dict[str, Any] | None:
    """Checksum and manifest of COPY/ADD sources from the context (None if unreadable)."""
    from lamina.core.context.checksum import manifest_to_json, multi_checksum

    try:
        sums: list[str] = []
        manifest: dict[str, list[Any]] = {}
        for pattern in patterns:
            rel = os.path.normpath(pattern.lstrip("/")) if pattern not in ("", ".", "/") else "."
            rel = "." if rel in ("", ".") else rel
            if any(c in rel for c in "*?["):
                matches = sorted(p for p in ctx.entries if fnmatch.fnmatchcase(p, rel))
            else:
                matches = [rel] if ctx.exists(rel) else []
            for match in matches:
                sums.append(ctx.checksum(match))
                manifest.update(manifest_to_json(ctx.manifest(match)))
        return {"checksum": multi_checksum(sums) if sums else "", "manifest": manifest}
    except (LaminaError, OSError, KeyError) as exc:
        log.debug("sources %s not checksummed: %s", patterns, exc)
        return None


def plan_inputs(request: BuildRequest) -> list[dict[str, Any]]:
    """Per step (FROM included, global ARGs excluded), what lamina records for reasons.

    Args:
        request: the build.

    Returns:
        One dict per step in build order, each with ``stage``, ``index`` and
        ``instruction``, plus ``sources`` for COPY/ADD from the context and ``args``
        (the build args in scope with a value).

    Raises:
        DockerfileError: the Dockerfile does not parse.
        ContextError: the Dockerfile cannot be read.
    """
    from lamina.core.dockerfile.parser import parse

    path = _dockerfile_path(request)
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise ContextError(f"cannot read Dockerfile {path}: {exc.strerror or exc}") from exc
    nodes = parse(text, str(path)).children
    ctx = _context(Path(request.context))
    meta: dict[str, str | None] = {}
    steps: list[dict[str, Any]] = []
    stage = -1
    index = 0
    declared: dict[str, str | None] = {}
    env: set[str] = set()
    stage_names: list[str] = []
    for node in nodes:
        keyword = node.value.lower()
        if keyword == "from":
            if request.target is not None and stage_names and stage_names[-1] == request.target:
                break
            stage += 1
            index = 0
            declared, env = {}, set()
            args = node.args
            stage_names.append(
                args[2].lower() if len(args) >= 3 and args[1].lower() == "as" else ""
            )
            steps.append(
                {
                    "stage": stage,
                    "index": 0,
                    "instruction": node.original,
                    "from": args[0] if args else "",
                }
            )
            continue
        if stage < 0:
            if keyword == "arg":
                for word in node.args:
                    name, eq, default = word.partition("=")
                    meta[name] = default.strip('"') if eq else None
            continue
        index += 1
        if keyword == "arg":
            for word in node.args:
                name, eq, default = word.partition("=")
                declared[name] = default.strip('"') if eq else meta.get(name)
        elif keyword == "env":
            env.update(node.args[0::3])
        active = {
            name: request.build_args.get(name, default)
            for name, default in declared.items()
            if name not in env and request.build_args.get(name, default) is not None
        }
        step: dict[str, Any] = {
            "stage": stage,
            "index": index,
            "instruction": node.original,
            "args": dict(sorted(active.items())),
        }
        if keyword in ("copy", "add") and not any(f.startswith("--from=") for f in node.flags):
            step["sources"] = _sources(ctx, list(node.args[:-1]))
        steps.append(step)
    if request.target is not None and request.target.lower() not in stage_names:
        raise UsageError(f"target stage {request.target!r} not found in {path}")
    return steps


# -- the build records ---------------------------------------------------------------


class BuildRecords:
    """lamina's own record of the builds it ran on one Docker daemon.

    Args:
        root: the directory holding ``<id>.json`` files.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        files = [p for p in self.root.glob("*.json") if p.stem.isdigit()]
        return sorted(files, key=lambda p: int(p.stem), reverse=True)

    def next_id(self) -> int:
        """A build ID one above every recorded build."""
        files = self._files()
        return int(files[0].stem) + 1 if files else 1

    def save(self, record: dict[str, Any]) -> None:
        """Writes one build atomically (temp file, then rename)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".{record['id']}.json.{os.getpid()}"
            tmp.write_text(json.dumps(record, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.root / f"{record['id']}.json")
        except OSError as exc:
            log.warning("could not record Docker build %s in %s: %s", record["id"], self.root, exc)

    def load_all(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Recorded builds, newest first."""
        out = []
        for path in self._files():
            try:
                out.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                log.warning("skipping unreadable Docker build record %s", path)
                continue
            if limit is not None and len(out) >= limit:
                break
        return out

    def previous(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The latest finished build of one of the same tags (or the same Dockerfile)."""
        for old in self.load_all():
            if old["id"] == record["id"] or old.get("status") not in ("ok", "failed"):
                continue
            if record["tags"]:
                if set(old.get("tags", ())) & set(record["tags"]):
                    return old
            elif (
                old.get("dockerfile") == record["dockerfile"]
                and old.get("context") == record["context"]
            ):
                return old
        return None


def _to_record(data: dict[str, Any]) -> BuildRecord:
    return BuildRecord(
        id=int(data["id"]),
        started=float(data["started"]),
        finished=data.get("finished"),
        dockerfile=data["dockerfile"],
        context=data["context"],
        tags=tuple(data.get("tags", ())),
        build_args=dict(data.get("build_args", {})),
        target=data.get("target"),
        image=data.get("image"),
        status=data["status"],
        error=data.get("error"),
        steps=tuple(StepRecord(**s) for s in data.get("steps", ())),
    )


# -- explaining a miss -----------------------------------------------------------------


def explain(
    cur: dict[str, Any] | None,
    prev_build: dict[str, Any] | None,
    *,
    first_miss: tuple[str, str] | None,
    no_cache: bool,
) -> dict[str, Any]:
    """Why Docker missed a step, from lamina's records.

    Args:
        cur: the step's recorded inputs (None when lamina could not map the step).
        prev_build: the previous build of the same tag.
        first_miss: ``("<stage>/<index>", instruction)`` of an earlier miss in the stage.
        no_cache: the build ran with ``--no-cache``.

    Returns:
        A reason dict (``lamina.core.accounting.reasons`` vocabulary).
    """
    if no_cache:
        return reasons.no_cache()
    if first_miss is not None:
        return reasons.parent_missed(*first_miss)
    if cur is None or prev_build is None:
        return {
            "kind": "first_build",
            "message": "lamina has no earlier build of this tag on this Docker Engine to compare with",
        }
    prev_steps = {(s["stage"], s["index"]): s for s in prev_build.get("inputs", ())}
    prev = prev_steps.get((cur["stage"], cur["index"]))
    if prev is None:
        return {
            "kind": "first_build",
            "message": "the previous build of this tag had no step here",
        }
    base_prev = prev_steps.get((cur["stage"], 0), {}).get("base")
    base_cur = cur.get("_base")
    if cur["index"] == 1 and base_prev and base_cur and base_prev != base_cur:
        return {
            "kind": "base_changed",
            "message": f"the base image changed from {base_prev[7:19]} to {base_cur[7:19]}",
            "old": base_prev,
            "new": base_cur,
        }
    comparable = {k: v for k, v in cur.items() if not k.startswith("_")}
    if {k: v for k, v in prev.items() if k in comparable} == comparable:
        return {
            "kind": "pruned",
            "message": "nothing lamina records changed since the last build: Docker no longer "
            "had this step's cache (its intermediate image was removed or pruned)",
        }
    return reasons.compare(prev, comparable)


# -- the build -----------------------------------------------------------------------


class DockerBuilder:
    """Runs one classic-builder build on a Docker Engine and records it.

    Args:
        engine: the Docker engine (its API client is used).
        home: the lamina home; records go to ``home/docker/<daemon-id>/builds``.
    """

    def __init__(self, engine: DockerEngine, home: Path | None = None) -> None:
        self.engine = engine
        if home is None:
            from lamina.core.open import default_home

            home = default_home()
        info = call("reading Docker's info", engine.api.info)
        daemon = _SAFE_RE.sub("_", str(info.get("ID") or info.get("Name") or "default"))
        self.records = BuildRecords(Path(home) / "docker" / daemon / "builds")

    def list_builds(self, limit: int = 50) -> list[BuildRecord]:
        """Recorded builds, newest first, each with its steps."""
        return [_to_record(r) for r in self.records.load_all(limit)]

    def build(
        self, request: BuildRequest, cancel: threading.Event | None = None
    ) -> Iterator[BuildEvent]:
        """Build and yield progress events (see ``Engine.build``).

        Raises:
            UsageError: ``dry_run`` (Docker cannot predict a build) or an unknown target.
            DockerfileError: the Dockerfile does not parse.
        """
        if request.dry_run:
            raise UsageError("--dry-run is only available with the embedded engine")
        context = Path(request.context)
        if not context.is_dir():
            raise ContextError(f"build context {context} is not a directory")
        from lamina.core.docker.engine import _split_tag

        tags = tuple(":".join(_split_tag(t)) for t in request.tags)
        request = replace(request, tags=tags)
        planned = plan_inputs(request)
        context_file, dockerfile_name = context_tar(context_abs(request), _dockerfile_path(request))
        return self._guarded(request, planned, cancel, context_file, dockerfile_name)

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
        dockerfile = _dockerfile_path(request)
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
            }
        )
        self.records.save(record)
        prev_build = self.records.previous(record)
        yield BuildStarted(
            build_id=record["id"],
            dockerfile=str(dockerfile),
            context=record["context"],
            steps_total=len(planned),
        )
        by_pos = {(s["stage"], s["index"]): s for s in planned}
        api = self.engine.api
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
            stream = call("starting the build", api.build, **kwargs)
            for chunk in _chunks(stream, cancel):
                if chunk is _CANCELLED:
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
                where = f"step {current['stage']}/{current['index']} ({current['instruction']}): "
            message = " ".join((where + error).split())
            record.update(status="failed", error=message, finished=time.time())
            self.records.save(record)
            yield BuildFailed(record["id"], message)
            return
        assert image_id is not None
        for extra in request.tags[1:]:
            self.engine.tag(image_id, extra)
        record.update(status="ok", image=image_id, finished=time.time())
        self.records.save(record)
        yield BuildFinished(record["id"], image_id, tuple(request.tags))

    def _cancel(self, state: _State) -> None:
        """Stops the step in progress: the classic builder runs RUN in a container."""
        if state.container:
            try:
                self.engine.api.kill(state.container)
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
            yield from state.finish_step(self.engine, id_match.group(1))
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
            triggers = list((self.engine.inspect(ref).get("Config") or {}).get("OnBuild") or [])
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

    def finish_step(self, engine: DockerEngine, short_id: str) -> Iterator[BuildEvent]:
        current = self.current
        if current is None:
            return
        self.current = None
        if short_id:
            self.last_id = short_id
        # FROM adds no layer of its own; every other step may.
        layer, size = (None, 0) if current["index"] == 0 else _step_layer(engine, short_id)
        planned = self.by_pos.get((current["stage"], current["index"] - self.offset))
        if current["index"] == 0:
            cached = None
            reason = None
            if planned is not None:
                planned["base"] = _full_id(engine, short_id)
        else:
            cached = bool(current["hit_seen"])
            reason = None
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


def _full_id(engine: DockerEngine, short_id: str) -> str:
    try:
        return str(engine.image(short_id).id)
    except LaminaError:
        return short_id


def _step_layer(engine: DockerEngine, short_id: str) -> tuple[str | None, int]:
    """The chainID and size of the layer a step added (None, 0 for a metadata step)."""
    try:
        data = engine.inspect(short_id)
        parent_id = data.get("Parent") or ""
        diff_ids = list(data.get("DiffIDs") or [])
        parent_layers = 0
        if parent_id:
            parent_layers = len(engine.inspect(parent_id).get("DiffIDs") or [])
        if len(diff_ids) <= parent_layers:
            return None, 0
        history = engine.history(short_id)
        size = history[0].size if history else 0
        return chain_ids(diff_ids)[-1], size
    except (NotFound, LaminaError):
        return None, 0


def context_abs(request: BuildRequest) -> Path:
    """The context directory as an absolute path."""
    return Path(request.context).resolve()


_CANCELLED = object()
_END = object()


def _chunks(stream: Any, cancel: threading.Event | None) -> Iterator[object]:
    """The stream's chunks, read in a thread so a cancel is seen while Docker is silent.

    Yields ``_CANCELLED`` once (and stops) when ``cancel`` is set.
    """
    if cancel is None:
        yield from stream
        return
    chunks: queue.Queue[object] = queue.Queue()

    def pump() -> None:
        try:
            for chunk in stream:
                chunks.put(chunk)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            chunks.put(exc)
        chunks.put(_END)

    threading.Thread(target=pump, name="docker-build-stream", daemon=True).start()
    while True:
        if cancel.is_set():
            yield _CANCELLED
            return
        try:
            item = chunks.get(timeout=0.2)
        except queue.Empty:
            continue
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


__all__ = ["BuildRecords", "DockerBuilder", "context_abs", "explain", "plan_inputs"]
