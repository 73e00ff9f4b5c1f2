"""What-if on a Docker Engine: the classic builder's hits, predicted without building.

This predicts ``--builder classic`` builds (``DOCKER_BUILDKIT=0``) only, and says so
(``BuildStarted.builder``); a what-if under BuildKit, the default, predicts BuildKit's
decisions instead (:func:`lamina.core.docker.buildkit_build.predict`), since the two
builders decide differently on the same edit.

The classic builder's cache lookup is a query over the images the daemon holds (moby's
``image/cache`` ``getLocalCachedImage``): a step hits when some child of the parent
image (an image whose ``Parent`` is it) has the same container config as the step would
make (its ``Cmd`` holds the step: ``RUN``'s command line with the build args in scope,
``#(nop) COPY file:<tarsum> in /dst``, ``#(nop) ENV ...``). After a miss the new parent
has no children, so every later step of the stage misses.

lamina cannot recompute the tarsum-based ``COPY`` hashes and config details Docker
compares, so it predicts from what it recorded of its own earlier builds on this daemon
(each step's inputs and the image it produced) and what the daemon still holds:

* **hit**: a recorded step with the same inputs (instruction, build args in scope, a
  checksum of its sources, its stage's base) produced an image that still exists and
  whose parent is this step's parent: the daemon finds it;
* **miss**: the parent has no children at all, or every child is an image lamina
  recorded with other inputs (the reason says what changed), or an earlier step of the
  stage missed;
* **unknown** (``cached`` None, reason ``unpredictable``): the parent has children lamina
  did not build (``docker build``, a pull), whose configs it cannot compare; or an
  earlier step could not be predicted, so the parent itself is unknown.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lamina.core.accounting import reasons
from lamina.core.docker.inputs import explain
from lamina.core.docker.inventory import Inventory
from lamina.core.errors import LaminaError, NotFound
from lamina.core.events import BuildEvent, BuildFinished, BuildStarted, StepFinished, StepStarted
from lamina.core.model import BuildRequest, Reason, StepRecord


def _keyword(instruction: str) -> str:
    return instruction.split(None, 1)[0].upper() if instruction.strip() else ""


def _comparable(step: dict[str, Any]) -> dict[str, Any]:
    """A step's inputs without what the build added afterwards."""
    # Docker matches on parent and config, not on where the step sits in the file.
    skip = {"result", "base", "stage", "index"}
    if _keyword(str(step.get("instruction", ""))) == "ARG":
        skip.add("args")  # an ARG's config is "#(nop) ARG V=1", whatever V is given
    return {k: v for k, v in step.items() if k not in skip and not k.startswith("_")}


def _could_be(config_cmd: list[str], keyword: str) -> bool:
    """Whether an image's ``ContainerConfig.Cmd`` can be a step of this kind at all.

    The classic builder records ``RUN`` as the command itself and every other step as
    ``/bin/sh -c #(nop) KEYWORD ...``.
    """
    text = " ".join(config_cmd)
    if "#(nop)" not in text:
        return keyword == "RUN"
    return text.split("#(nop)", 1)[1].split(None, 1)[:1] == [keyword]


class _Daemon:
    """Images by ID and the children of each, read once."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.parents: dict[str, str] = {}
        self.children: dict[str, list[str]] = {}
        for row in inventory.listed(all_images=True):
            image_id = str(row["Id"])
            parent = str(row.get("ParentId") or "")
            self.parents[image_id] = parent
            if parent:
                self.children.setdefault(parent, []).append(image_id)

    def cmd(self, image_id: str) -> list[str]:
        """The ``ContainerConfig.Cmd`` the classic builder recorded for an image."""
        try:
            data = self.inventory.inspect_id(image_id)
        except (NotFound, LaminaError):
            return []
        return [str(c) for c in (data.get("ContainerConfig") or {}).get("Cmd") or []]

    def resolve(self, ref: str) -> str | None:
        try:
            return str(self.inventory.resolve(ref)["Id"])
        except (NotFound, LaminaError):
            return None


def predict(
    inventory: Inventory,
    request: BuildRequest,
    planned: list[dict[str, Any]],
    history: list[dict[str, Any]],
    previous: dict[str, Any] | None,
    dockerfile: str,
) -> Iterator[BuildEvent]:
    """Predicts every step's hit or miss on this daemon; yields the build's events.

    Args:
        inventory: what the daemon holds.
        request: the build (``dry_run``).
        planned: the steps' inputs (:func:`lamina.core.docker.inputs.plan_inputs`).
        history: lamina's records of builds on this daemon, newest first.
        previous: the build a miss is explained against (the last one of the same tag).
        dockerfile: the Dockerfile's path, for the start event.
    """
    daemon = _Daemon(inventory)
    # (stage base, parent image, inputs) -> the image a recorded step produced.
    known: dict[str, list[tuple[dict[str, Any], str]]] = {}
    recorded_results: dict[str, dict[str, Any]] = {}
    for build in history:
        for step in build.get("inputs", ()):
            result = step.get("result")
            if step.get("index", 0) and result:
                known.setdefault(str(result), []).append((_comparable(step), str(result)))
                recorded_results.setdefault(str(result), _comparable(step))
    yield BuildStarted(0, dockerfile, request.context, len(planned), "classic")
    stage_result: dict[int, str | None] = {}
    names = _stage_names(planned)
    parent: str | None = None
    base: str | None = None
    first_miss: tuple[str, str] | None = None
    unknown_from: tuple[str, str] | None = None
    for step in planned:
        stage, index, instruction = step["stage"], step["index"], step["instruction"]
        yield StepStarted(stage, index, instruction)
        if index == 0:
            parent, first_miss, unknown_from = _from(step, daemon, stage_result, names)
            base = parent
            yield StepFinished(StepRecord(stage, 0, instruction, None, None))
            stage_result[stage] = parent
            continue
        where = f"{stage}/{index}"
        cached: bool | None
        reason: Reason | None
        if request.no_cache:
            cached, reason = False, reasons.no_cache()
        elif first_miss is not None:
            cached, reason = False, reasons.parent_missed(*first_miss)
        elif parent is None:
            cached = None
            reason = reasons.unpredictable(
                f"step {unknown_from[0]} ({unknown_from[1]}) could not be predicted, so this "
                "step's parent image is unknown"
                if unknown_from
                else "the stage's base image is not in the daemon (docker build would pull it)"
            )
        else:
            cached, reason, parent = _step(
                step, parent, base, daemon, known, recorded_results, previous
            )
        if cached is False and first_miss is None:
            first_miss = (where, instruction)
        if cached is None and unknown_from is None:
            unknown_from = (where, instruction)
        if cached is None:
            parent = None
        yield StepFinished(StepRecord(stage, index, instruction, cached, reason))
        stage_result[stage] = parent if first_miss is None else None
    yield BuildFinished(0, None, tuple(request.tags))


def _stage_names(planned: list[dict[str, Any]]) -> dict[str, int]:
    """Stage name (and number) -> stage, from each FROM line's ``AS name``."""
    out: dict[str, int] = {}
    for step in planned:
        if step["index"] == 0:
            words = str(step["instruction"]).split()
            out[str(step["stage"])] = step["stage"]
            if len(words) >= 4 and words[2].lower() == "as":
                out[words[3].lower()] = step["stage"]
    return out


def _from(
    step: dict[str, Any],
    daemon: _Daemon,
    stage_result: dict[int, str | None],
    names: dict[str, int],
) -> tuple[str | None, tuple[str, str] | None, tuple[str, str] | None]:
    """The parent a stage starts on: its base image, or an earlier stage's result."""
    base = str(step.get("from") or "")
    where = f"{step['stage']}/0"
    if base.lower() in names and names[base.lower()] < step["stage"]:
        earlier = stage_result.get(names[base.lower()])
        if earlier is None:
            return None, None, (where, step["instruction"])
        return earlier, None, None
    if base == "scratch":
        return None, None, (where, "FROM scratch: lamina predicts from a base image only")
    image = daemon.resolve(base)
    return image, None, None if image else (where, f"the base image {base} is not in the daemon")


def _step(
    step: dict[str, Any],
    parent: str,
    base: str | None,
    daemon: _Daemon,
    known: dict[str, list[tuple[dict[str, Any], str]]],
    recorded: dict[str, dict[str, Any]],
    previous: dict[str, Any] | None,
) -> tuple[bool | None, Reason | None, str | None]:
    """One step on a known parent: (cached, reason, the next parent)."""
    cur = _comparable(step)
    # What explain() compares with the previous build: the same position, and the base.
    explained = dict(step, _base=base)
    children = daemon.children.get(parent, [])
    for child in sorted(children):
        for inputs, result in known.get(child, ()):
            if inputs == cur:
                return True, None, result
    if not children:
        reason = explain(explained, previous, first_miss=None, no_cache=False)
        if reason.get("kind") == "pruned":
            reason = reasons.pruned(
                "the daemon holds no image built on this step's parent: the step's cached "
                "image was removed or pruned"
            )
        return False, reason, None
    keyword = _keyword(str(step["instruction"]))
    strangers = [c for c in children if c not in recorded and _could_be(daemon.cmd(c), keyword)]
    if strangers:
        return (
            None,
            reasons.unpredictable(
                f"the daemon holds {len(strangers)} image(s) built on this step's parent "
                "that lamina did not build; whether Docker's config comparison matches one "
                "of them cannot be checked from outside the daemon"
            ),
            None,
        )
    return False, explain(explained, previous, first_miss=None, no_cache=False), None
