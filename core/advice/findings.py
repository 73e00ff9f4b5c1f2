"""What advice says: one :class:`Advice` per finding, its :class:`Saving` and, for the
rules proved on the build history, the :class:`Proof` (the replay, build by build).

Everything is a frozen dataclass with a JSON form, so ``lamina advise --format json``
and the app render the same records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from lamina.core.advice.rewrite import Edit

# Rule ids, in the order a report lists rules that fire on the same line.
RULES = (
    "apt-update-alone",
    "group-runs",
    "volatile-copy-first",
    "arg-too-early",
    "wasted-space",
    "missing-dockerignore",
    "cache-mount",
)


@dataclass(frozen=True)
class Saving:
    """What following the advice would have saved (None: not measured for this rule).

    Attributes:
        reruns_now: executions of the step(s) the advice is about, over the replayed
            builds, with the Dockerfile as it is (recorded executions for rules that are
            not replayed, such as ``cache-mount``).
        reruns_after: the same, rewritten (replayed).
        seconds_now: seconds those builds spent in steps, as the Dockerfile is (from the
            recorded duration of each step when it ran).
        seconds_after: the same, rewritten (steps the history never timed count 0).
        executions_now: every step's executions over the replayed builds, as it is.
        executions_after: the same, rewritten.
        builds: how many builds were replayed.
        bytes: bytes the image would not carry (``wasted-space``), or the bytes sent in
            the context that ``.dockerignore`` would leave out (``missing-dockerignore``).
        layers_now: layers of the stage, as it is.
        layers_after: layers of the stage, rewritten.
    """

    reruns_now: int | None = None
    reruns_after: int | None = None
    seconds_now: float | None = None
    seconds_after: float | None = None
    executions_now: int | None = None
    executions_after: int | None = None
    builds: int | None = None
    bytes: int | None = None
    layers_now: int | None = None
    layers_after: int | None = None


@dataclass(frozen=True)
class ProofBuild:
    """One replayed build.

    Attributes:
        build_id: the recorded build.
        changed: context paths whose entry changed since the previous replayed build
            (``+path`` added, ``-path`` removed).
        args: build args whose value changed since then (``NAME=value``).
        ran_now: the instructions that ran, with the Dockerfile as it is.
        ran_after: the instructions that would have run, rewritten.
        recorded: the instructions that did run, as the build recorded them (None when
            that build's Dockerfile was another than today's).
    """

    build_id: int
    changed: tuple[str, ...]
    args: tuple[str, ...]
    ran_now: tuple[str, ...]
    ran_after: tuple[str, ...]
    recorded: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Proof:
    """The replay behind a saving.

    Attributes:
        builder: the cache rules replayed (``buildkit`` or ``classic``).
        builds: the replayed builds, oldest first.
        focus: the instructions (as written today) the saving's reruns count.
        agreed: recorded builds whose decisions the model reproduced for the Dockerfile
            as it is.
        compared: recorded builds it could compare (those of today's Dockerfile).
        note: what the replay could not know (empty when nothing).
    """

    builder: str
    builds: tuple[ProofBuild, ...]
    focus: tuple[str, ...]
    agreed: int = 0
    compared: int = 0
    note: str = ""


@dataclass(frozen=True)
class Advice:
    """One piece of advice.

    Attributes:
        rule: the rule id (one of :data:`RULES`).
        line: the Dockerfile line it is about (first line of the instruction).
        lines: every line it concerns, first to last.
        message: one line.
        evidence: what it rests on, one line each.
        saving: what following it would save.
        diff: the rewrite as a unified diff ``patch -p0`` applies, None when the rule
            has no safe rewrite here.
        proof: the replay, for rules proved on the build history.
        rewritten: the Dockerfile after this rewrite alone (None without one).
        dockerignore: lines the rewrite adds to ``.dockerignore``.
        edits: the rewrite as line edits of the Dockerfile.
    """

    rule: str
    line: int
    lines: tuple[int, ...]
    message: str
    evidence: tuple[str, ...] = ()
    saving: Saving = field(default_factory=Saving)
    diff: str | None = None
    proof: Proof | None = None
    rewritten: str | None = None
    dockerignore: tuple[str, ...] = ()
    edits: tuple[Edit, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON object ``lamina advise --format json`` prints for it."""
        return {
            "rule": self.rule,
            "line": self.line,
            "lines": list(self.lines),
            "message": self.message,
            "evidence": list(self.evidence),
            "saving": asdict(self.saving),
            "diff": self.diff,
            "proof": None if self.proof is None else asdict(self.proof),
        }


@dataclass(frozen=True)
class AdviceReport:
    """Advice on one Dockerfile.

    Attributes:
        dockerfile: the Dockerfile's path.
        context: the build context's path.
        builder: the cache rules its builds followed (the newest build's).
        builds: recorded builds of this Dockerfile that were read.
        replayable: those with a per-path record of their context (replayable).
        advice: every finding, by line.
        diff: every rewrite that does not overlap an earlier one, as one patch.
        notes: what a reader should know about the report as a whole.
    """

    dockerfile: str
    context: str
    builder: str
    builds: int
    replayable: int
    advice: tuple[Advice, ...]
    diff: str | None = None
    notes: tuple[str, ...] = ()

    def to_json(self) -> list[dict[str, Any]]:
        """The JSON list ``lamina advise --format json`` prints."""
        return [a.to_json() for a in self.advice]
