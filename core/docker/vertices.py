"""Which Dockerfile step each BuildKit vertex is.

BuildKit's Dockerfile frontend names the vertex of every instruction that makes one
(moby/buildkit ``frontend/dockerfile/dockerfile2llb/convert.go``, ``prefixCommand``,
v0.8 as vendored in moby 20.10)::

    [<stage> <i>/<n>] <INSTRUCTION, variables expanded>

* only ``FROM`` of an image (not ``scratch``, not another stage), ``RUN``, ``COPY``,
  ``ADD`` and ``WORKDIR`` make vertices; image settings (``ENV``, ``ARG``, ``LABEL``,
  ``USER``, ``CMD`` ...) only change the image config and make none;
* ``<i>`` counts them within the stage from 1; ``<n>`` counts them before the build, so
  a ``WORKDIR /`` (which makes no vertex) is in ``n`` but takes no ``i``; ``i`` is
  right-aligned to the width of ``n`` (``[build  2/12]``);
* ``<stage>`` is the stage's name, ``stage-<k>`` for an unnamed stage ``k``, and left
  out when the build has a single stage;
* vertices named without brackets are BuildKit's own (``[internal] load metadata``,
  ``copy /context /``, ``exporting to image``) and are no step;
* only the stages the target needs are built (``isReachable``: its base stages and the
  stages it copies or mounts from), and two identical steps on the same state are one
  vertex, shown under one of their names.

:class:`BuildKitPlan` holds, per stage that will be built, its steps in that order (the
inputs lamina records for each, :mod:`lamina.core.docker.inputs`), so a vertex name
finds its step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Instructions that make a vertex of their own (FROM only for an image base).
VERTEX_KEYWORDS = frozenset({"RUN", "COPY", "ADD", "WORKDIR"})

_NAME_RE = re.compile(r"^\[(?:(?P<label>[^\s\]]+) +)? *(?P<i>\d+)/(?P<n>\d+)\] (?P<text>.*)$", re.S)


@dataclass(frozen=True)
class VertexName:
    """A step vertex's name, taken apart.

    Attributes:
        label: the stage label (``""`` when BuildKit left it out).
        index: ``i``, the step's 1-based place among its stage's vertices.
        total: ``n``.
        text: the instruction as BuildKit shows it (keyword upper case, variables
            expanded).
    """

    label: str
    index: int
    total: int
    text: str

    @property
    def keyword(self) -> str:
        """The instruction's keyword (``RUN``)."""
        return self.text.split(None, 1)[0].upper() if self.text.strip() else ""


def parse_name(name: str) -> VertexName | None:
    """A vertex name as a step's, or None for BuildKit's own vertices."""
    match = _NAME_RE.match(name)
    if match is None:
        return None
    return VertexName(
        label=(match.group("label") or "").lower(),
        index=int(match.group("i")),
        total=int(match.group("n")),
        text=match.group("text"),
    )


@dataclass
class StagePlan:
    """One stage a BuildKit build will solve.

    Attributes:
        number: its 0-based place in the Dockerfile.
        label: BuildKit's name for it: its name, or ``stage-<number>``.
        base_stage: the stage its ``FROM`` names, if any (its steps then stand on that
            stage's last state).
        steps: the recorded inputs of its vertex steps, in BuildKit's order (``FROM``
            first when the base is an image); each has ``stage``, ``index`` (the
            instruction's place in the stage, FROM = 0), ``instruction`` and ``cmd``
            (its ``i``).
        triggers: how many ONBUILD triggers of the base run first (as steps 1..n,
            the stage's own instructions after them, as in the classic builder).
    """

    number: int
    label: str
    base_stage: int | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    triggers: int = 0

    def add_triggers(self, triggers: list[str]) -> list[dict[str, Any]]:
        """Puts the base image's ONBUILD triggers first: BuildKit's frontend dispatches
        them before the stage's instructions, so those that make a vertex take the
        numbers after ``FROM``.

        Returns:
            The steps made for them.
        """
        if not triggers or not self.steps or "from" not in self.steps[0]:
            return []
        first, rest = self.steps[0], self.steps[1:]
        made: list[dict[str, Any]] = []
        for number, trigger in enumerate(triggers, 1):
            keyword = trigger.split(None, 1)[0].upper() if trigger.strip() else ""
            if keyword in VERTEX_KEYWORDS:
                made.append({"stage": self.number, "index": number, "instruction": trigger})
        for cmd, step in enumerate(made, 2):
            step.update(label=self.label, cmd=cmd)
        for step in rest:
            step["index"] += len(triggers)
            step["cmd"] += len(made)
        self.steps = [first, *made, *rest]
        self.triggers = len(triggers)
        return made


@dataclass
class BuildKitPlan:
    """The steps of a BuildKit build, found by their vertex names.

    Attributes:
        stages: the stages the target needs, by number (others are never built).
        single: the Dockerfile has one stage (BuildKit may leave the label out).
        target: the stage the image is made of.
        instructions: per stage, how many instructions follow its ``FROM`` (each
            writes one history row of the image).
        skipped: the stages up to the target that it does not need, which BuildKit
            never builds (and the classic builder would): number -> (name, ``FROM``).
    """

    stages: dict[int, StagePlan] = field(default_factory=dict)
    single: bool = False
    target: int = 0
    instructions: dict[int, int] = field(default_factory=dict)
    skipped: dict[int, tuple[str, str]] = field(default_factory=dict)

    @property
    def steps(self) -> list[dict[str, Any]]:
        """Every step's inputs, stage by stage (what a build record keeps)."""
        return [s for n in sorted(self.stages) for s in self.stages[n].steps]

    @property
    def total(self) -> int:
        """How many steps the build has (a skipped stage's ``FROM`` counts as one)."""
        return sum(len(p.steps) for p in self.stages.values()) + len(self.skipped)

    def stage_by_label(self, label: str) -> StagePlan | None:
        """The stage a vertex label names (``""``: the only stage)."""
        for plan in self.stages.values():
            if plan.label == label:
                return plan
        if label == "" and self.single and len(self.stages) == 1:
            return next(iter(self.stages.values()))
        return None

    def step_for(self, name: VertexName) -> dict[str, Any] | None:
        """The planned step a vertex is, or None when it is none lamina planned."""
        plan = self.stage_by_label(name.label)
        if plan is None:
            return None
        for step in plan.steps:
            if step["cmd"] == name.index:
                keyword = str(step["instruction"]).split(None, 1)[0].upper()
                return step if keyword == name.keyword else None
        return None


__all__ = ["VERTEX_KEYWORDS", "BuildKitPlan", "StagePlan", "VertexName", "parse_name"]
