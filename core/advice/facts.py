"""What the rules read: the Dockerfile as it is, its context as it is, and what the builds
of it recorded (their steps and reasons, what they copied, the files of their layers).

:class:`Facts` is plain data, gathered once by :mod:`~lamina.core.advice.advise`; the
helpers here answer the questions several rules ask of the history (how long a step
takes when it runs, which builds ran it) and prove a rewrite by replaying it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lamina.core.advice.findings import Proof, ProofBuild, Saving
from lamina.core.advice.replay import Replay, ReplayBuild, normalized, replay
from lamina.core.advice.rewrite import Edit, apply, unified_diff
from lamina.core.dockerfile.instructions import Dockerfile, Instruction, load_dockerfile
from lamina.core.errors import LaminaError
from lamina.core.model import BuildRecord, FileChange, StepRecord

# Fewer replayable builds than this cannot show a pattern: the first build runs
# everything under any Dockerfile.
MIN_HISTORY = 3


@dataclass(frozen=True)
class ContextEntry:
    """One path of the context as it is now (``.dockerignore`` applied)."""

    size: int
    is_dir: bool


@dataclass(frozen=True)
class Facts:
    """Everything the rules read.

    Attributes:
        dockerfile: the Dockerfile, parsed.
        text: its text.
        name: its path as diffs name it.
        ignore_name: the context's ``.dockerignore`` as diffs name it.
        ignore_text: that file's text (None when there is none).
        builder: the cache rules its builds follow.
        builds: its recorded successful builds, oldest first.
        replayable: those with a per-path record of their context, oldest first.
        context: the context's paths now, ``.dockerignore`` applied.
        layers: for the newest build whose steps match today's Dockerfile, the file
            changes of each step's layer, by instruction line.
        layers_build: that build's ID.
    """

    dockerfile: Dockerfile
    text: str
    name: str
    ignore_name: str
    ignore_text: str | None
    builder: str
    builds: tuple[BuildRecord, ...] = ()
    replayable: tuple[ReplayBuild, ...] = ()
    context: Mapping[str, ContextEntry] = field(default_factory=dict)
    layers: Mapping[int, list[FileChange]] = field(default_factory=dict)
    layers_build: int | None = None
    # The replay of today's Dockerfile, made once for every rule that proves a rewrite.
    _replays: dict[str, Replay] = field(default_factory=dict, compare=False, repr=False)

    # -- the history of one instruction ---------------------------------------------------

    def executions(self, ins: Instruction) -> list[tuple[BuildRecord, StepRecord]]:
        """The recorded builds that ran ``ins`` (matched by text), oldest first."""
        wanted = normalized(ins.original)
        out = []
        for build in self.builds:
            for step in build.steps:
                if step.cached is False and normalized(step.instruction) == wanted:
                    out.append((build, step))
                    break
        return out

    def appearances(self, ins: Instruction) -> list[tuple[BuildRecord, StepRecord]]:
        """The recorded builds that had ``ins`` as a cached step, oldest first."""
        wanted = normalized(ins.original)
        out = []
        for build in self.builds:
            for step in build.steps:
                if step.cached is not None and normalized(step.instruction) == wanted:
                    out.append((build, step))
                    break
        return out

    def duration(self, instruction: str) -> float | None:
        """The median seconds an instruction took when it ran (None: never timed)."""
        wanted = normalized(instruction)
        times = [
            s.duration
            for b in self.builds
            for s in b.steps
            if s.cached is False and s.duration > 0 and normalized(s.instruction) == wanted
        ]
        return statistics.median(times) if times else None

    def matches_today(self, build: BuildRecord) -> bool:
        """Whether the build's steps are today's Dockerfile's: every stage it built has
        today's instructions, all of them, in the same places."""
        stages: dict[int, list[tuple[int, str]]] = {}
        for s in build.steps:
            if s.index > 0:
                stages.setdefault(s.stage, []).append((s.index, normalized(s.instruction)))
        if not stages:
            return False
        for number, recorded in stages.items():
            if number >= len(self.dockerfile.stages):
                return False
            today = [normalized(i.original) for i in self.dockerfile.stages[number].instructions]
            if sorted(recorded) != list(enumerate(today, start=1)):
                return False
        return True

    # -- proving a rewrite ----------------------------------------------------------------

    def too_short(self) -> str | None:
        """Why the history cannot prove anything (None when it can)."""
        n = len(self.replayable)
        if n >= MIN_HISTORY:
            return None
        recorded = len(self.builds)
        what = f"{n} build{'s' if n != 1 else ''} of this Dockerfile with a per-path record" + (
            f" (of {recorded} recorded)" if recorded != n else ""
        )
        return f"history too short to replay: {what}; {MIN_HISTORY} are needed"

    def prove(
        self,
        edits: list[Edit],
        focus_now: list[str],
        focus_after: list[str],
        *,
        exclude: Callable[[str], bool] | None = None,
        timed: Mapping[str, float] | None = None,
    ) -> tuple[Saving, Proof | None, str | None]:
        """Replays the history through today's Dockerfile and through the rewrite.

        Args:
            edits: the rewrite.
            focus_now: the instructions (today) whose reruns the saving counts.
            focus_after: the same instructions in the rewrite.
            exclude: context paths the rewrite's ``.dockerignore`` leaves out.
            timed: seconds of instructions the rewrite makes (RUNs joined into one
                take what their parts took).

        Returns:
            ``(saving, proof, note)``: the note says why nothing was proved (a short
            history, a rewrite that does not parse), with a bare saving.
        """
        short = self.too_short()
        if short is not None:
            return Saving(builds=len(self.replayable)), None, short
        try:
            rewritten = load_dockerfile(apply(self.text, edits), self.dockerfile.path)
        except LaminaError as exc:
            return Saving(), None, f"the rewrite does not parse: {exc}"
        builds = list(self.replayable)
        now = self._replays.get("now")
        if now is None:
            now = self._replays["now"] = replay(self.dockerfile, builds, self.builder)
        after = replay(rewritten, builds, self.builder, exclude=exclude)
        saving = self._saving(now, after, focus_now, focus_after, timed or {})
        return saving, self._proof(now, after, focus_now), None

    def _seconds(self, result: Replay, timed: Mapping[str, float]) -> float:
        known = {normalized(k): v for k, v in timed.items()}
        total = 0.0
        for step in result.steps:
            seconds = self.duration(step.instruction)
            if seconds is None:
                seconds = known.get(normalized(step.instruction))
            if seconds:
                total += seconds * step.executions
        return round(total, 3)

    def _saving(
        self,
        now: Replay,
        after: Replay,
        focus_now: list[str],
        focus_after: list[str],
        timed: Mapping[str, float],
    ) -> Saving:
        def reruns(result: Replay, focus: list[str]) -> int:
            steps = [result.step(f) for f in focus]
            return sum(s.executions for s in steps if s is not None)

        return Saving(
            reruns_now=reruns(now, focus_now),
            reruns_after=reruns(after, focus_after),
            seconds_now=self._seconds(now, {}),
            seconds_after=self._seconds(after, timed),
            executions_now=now.executions,
            executions_after=after.executions,
            builds=len(now.build_ids),
        )

    def _proof(self, now: Replay, after: Replay, focus: list[str]) -> Proof:
        records = {b.id: b for b in self.builds}
        rows = []
        agreed = compared = 0
        previous: ReplayBuild | None = None
        for position, build in enumerate(self.replayable):
            ran_now = tuple(normalized(s.instruction) for s in now.ran_in(position))
            ran_after = tuple(normalized(s.instruction) for s in after.ran_in(position))
            record = records.get(build.build_id)
            recorded: tuple[str, ...] | None = None
            if record is not None and self.matches_today(record):
                recorded = tuple(
                    normalized(s.instruction) for s in record.steps if s.cached is False
                )
                compared += 1
                if {normalized(x) for x in recorded} == {normalized(x) for x in ran_now}:
                    agreed += 1
            rows.append(
                ProofBuild(
                    build.build_id,
                    _changed(previous, build),
                    _args_changed(previous, build),
                    ran_now,
                    ran_after,
                    recorded,
                )
            )
            previous = build
        notes = []
        if any(b.paths and any(p.endswith("/") for p in b.paths) for b in self.replayable):
            notes.append(
                "some contexts were too large to record path by path: a folded directory"
                " counts as changed whenever anything below it did"
            )
        return Proof(self.builder, tuple(rows), tuple(focus), agreed, compared, "; ".join(notes))

    def diff(self, edits: list[Edit]) -> tuple[str, str]:
        """``(rewritten text, unified diff)`` of the Dockerfile for ``edits``."""
        new = apply(self.text, edits)
        return new, unified_diff(self.text, new, self.name)


def _changed(previous: ReplayBuild | None, build: ReplayBuild) -> tuple[str, ...]:
    if previous is None:
        return ()
    old, new = previous.paths, build.paths
    out = [p for p in sorted(set(old) | set(new)) if old.get(p) != new.get(p)]
    return tuple(("+" + p) if p not in old else ("-" + p) if p not in new else p for p in out)


def _args_changed(previous: ReplayBuild | None, build: ReplayBuild) -> tuple[str, ...]:
    if previous is None:
        return ()
    old, new = previous.build_args, build.build_args
    return tuple(
        f"{k}={new.get(k, '')}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
    )
