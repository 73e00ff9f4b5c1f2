"""Recorded builds replayed through lamina's cache model, as a dry run.

Each replayed build brings what its record says it read: the build args, the base each
stage started from, and the entry of every context path its COPY/ADD steps copied. The
Dockerfile replayed may be another than the one built (a rewrite of it): its steps are
keyed from those inputs, and a step *runs* when no earlier replayed build made its key,
as the builder decides (``cache-semantics.md``, ``buildkit-semantics.md``):

* a key chains on the key of the step before it (the base at a stage's start), so the
  first miss of a stage makes every later step miss, and a revert hits old entries;
* RUN holds its command and the build args in scope with a value (BuildKit: its whole
  environment, ENV included); COPY/ADD the content of exactly the paths its sources
  name (``COPY --from`` the final key of the stage it reads), and both the values of
  the variables they expand;
* under the classic builder every instruction is a step (a changed ENV value misses
  there); under BuildKit only RUN, COPY, ADD and WORKDIR are, and only the stages the
  target needs are built;
* ``--no-cache`` runs every step of the stages it covered, and still records them.

What the record cannot tell is taken as unchanged: downloads (``ADD URL``), the files a
``COPY --from`` another image copies, and (for a context too large to record path by
path) the files below a folded directory, which count as changed whenever anything
below it did.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lamina.core.dockerfile.args import StageScope, meta_values, stages_to_build
from lamina.core.dockerfile.instructions import Dockerfile, Instruction, sources_and_dest
from lamina.core.dockerfile.reachable import needed_stages
from lamina.core.dockerfile.shell import Lexer
from lamina.core.errors import LaminaError

# Instructions BuildKit makes a step of; the others only set the image config.
BUILDKIT_STEPS = frozenset({"RUN", "COPY", "ADD", "WORKDIR"})

_CONTINUATION = re.compile(r"[\\`]\r?\n")
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class ReplayBuild:
    """What one recorded build read.

    Attributes:
        build_id: the build.
        build_args: its ``--build-arg`` values.
        paths: context path to the hash of its entry (``dir/`` keys fold a subtree).
        bases: stage number to the image ID the stage started from.
        target: its ``--target``.
        no_cache: True for ``--no-cache``; else the stages whose lookups were skipped.
    """

    build_id: int
    build_args: Mapping[str, str]
    paths: Mapping[str, str]
    bases: Mapping[int, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool | frozenset[int] = frozenset()

    def skips_lookups(self, stage: int) -> bool:
        if isinstance(self.no_cache, bool):
            return self.no_cache
        return stage in self.no_cache


@dataclass(frozen=True)
class StepRuns:
    """One step of the replayed Dockerfile and whether it ran in each replayed build.

    Attributes:
        stage: the stage number.
        index: the step's place in the stage (FROM is 0).
        line: its first line in the Dockerfile.
        instruction: as written.
        runs: per replayed build (oldest first): True when it ran, False on a hit, None
            when the build did not reach it (a stage BuildKit skips, a ``--target``).
    """

    stage: int
    index: int
    line: int
    instruction: str
    runs: tuple[bool | None, ...]

    @property
    def executions(self) -> int:
        return sum(1 for r in self.runs if r)


@dataclass(frozen=True)
class Replay:
    """The replay of one Dockerfile over the builds.

    Attributes:
        builder: the cache rules replayed.
        build_ids: the replayed builds, oldest first.
        steps: every cached step of the Dockerfile, in order.
    """

    builder: str
    build_ids: tuple[int, ...]
    steps: tuple[StepRuns, ...]

    @property
    def executions(self) -> int:
        return sum(s.executions for s in self.steps)

    def step(self, instruction: str) -> StepRuns | None:
        """The first step whose instruction reads like ``instruction`` (whitespace aside)."""
        wanted = normalized(instruction)
        return next((s for s in self.steps if normalized(s.instruction) == wanted), None)

    def ran_in(self, position: int) -> list[StepRuns]:
        """The steps that ran in the ``position``-th replayed build."""
        return [s for s in self.steps if s.runs[position]]


def normalized(instruction: str) -> str:
    """An instruction with its line continuations joined and its whitespace runs made
    single spaces (how steps are matched between a Dockerfile and its rewrite)."""
    return " ".join(_CONTINUATION.sub(" ", instruction).split())


def _digest(parts: object) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _clean(path: str) -> str:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    out: list[str] = []
    for p in parts:
        if p == "..":
            if out:
                out.pop()
        else:
            out.append(p)
    return "/".join(out)


def _pattern(glob: str) -> re.Pattern[str]:
    """Go's ``filepath.Match`` for one source pattern: ``*`` and ``?`` stop at ``/``."""
    out = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = glob.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = glob[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("^"):
                    body = "!" + body[1:]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        elif c == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 1
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def select(paths: Mapping[str, str], source: str) -> dict[str, str]:
    """The recorded entries a COPY/ADD source names: the path and everything below it
    (the whole context for ``.``); a folded directory counts when the source lies in it.

    Args:
        paths: the build's recorded entries.
        source: the source as written, variables expanded.
    """
    rel = _clean(source)
    if not rel:
        return dict(paths)
    out: dict[str, str] = {}
    if any(c in rel for c in "*?["):
        pattern = _pattern(rel)
        tops = [p for p in paths if pattern.match(p.rstrip("/"))]
        for top in tops:
            base = top.rstrip("/")
            for p, h in paths.items():
                if p == top or p.startswith(base + "/"):
                    out[p] = h
        return out
    for p, h in paths.items():
        if p == rel or p.startswith(rel + "/") or (p.endswith("/") and rel.startswith(p)):
            out[p] = h
    return out


class _StageWalk:
    """The keys of one stage in one replayed build."""

    def __init__(
        self,
        replayer: _Replayer,
        build: ReplayBuild,
        meta: dict[str, str | None],
    ) -> None:
        self.r = replayer
        self.build = build
        self.meta = meta

    def variables(self, scope: StageScope) -> dict[str, str]:
        return scope.args.expansion_env(scope.env)

    def refs(self, ins: Instruction, scope: StageScope) -> dict[str, str | None]:
        """The values of the variables the instruction expands."""
        variables = self.variables(scope)
        names = {a or b for a, b in _VARIABLE.findall(ins.original)}
        return {n: variables.get(n) for n in sorted(names)}

    def expand(self, word: str, scope: StageScope) -> str:
        try:
            return Lexer(self.r.df.escape).process_word(word, self.variables(scope))
        except LaminaError:
            return word

    def sources(self, ins: Instruction, scope: StageScope, finals: dict[int, str]) -> object:
        frm = ins.flag("from")
        if frm is not None:
            stage = self.r.df.stage(frm)
            if stage is not None:
                number = self.r.df.stages.index(stage)
                return ["stage", finals.get(number, f"unbuilt:{number}")]
            return ["image", frm]
        try:
            srcs, contents, _dest = sources_and_dest(ins)
        except LaminaError:
            return ["unreadable", ins.original]
        picked: dict[str, str] = {}
        for src in srcs:
            word = self.expand(src, scope)
            if "://" in word or word.startswith("git@"):
                continue  # a download: what it fetched is not recorded
            picked.update(select(self.r.paths_of(self.build), word))
        return ["context", sorted(picked.items()), [c.data for c in contents]]

    def key(self, parent: str, ins: Instruction, scope: StageScope, finals: dict[int, str]) -> str:
        kw = ins.keyword
        parts: list[object] = [parent, normalized(ins.original), self.refs(ins, scope)]
        if kw == "RUN":
            if self.r.builder == "buildkit":
                active = scope.args.active(scope.env)
                parts.append(sorted(scope.env) + sorted(f"{k}={v}" for k, v in active.items()))
            else:
                parts.append(sorted(scope.keyed().items()))
        elif kw in ("COPY", "ADD"):
            parts.append(self.sources(ins, scope, finals))
        elif kw == "ENV":
            parts.append(list(scope.env))
        return _digest(parts)


class _Replayer:
    def __init__(self, df: Dockerfile, builder: str, exclude: Callable[[str], bool] | None) -> None:
        self.df = df
        self.builder = builder
        self.exclude = exclude
        self._filtered: dict[int, dict[str, str]] = {}

    def paths_of(self, build: ReplayBuild) -> Mapping[str, str]:
        if self.exclude is None:
            return build.paths
        if build.build_id not in self._filtered:
            self._filtered[build.build_id] = {
                p: h for p, h in build.paths.items() if not self.exclude(p.rstrip("/"))
            }
        return self._filtered[build.build_id]

    def stages(self, build: ReplayBuild, meta: dict[str, str | None]) -> list[int]:
        try:
            order = stages_to_build(self.df, build.target)
        except LaminaError:
            order = list(range(len(self.df.stages)))
        if self.builder != "buildkit":
            return order
        try:
            needed = set(needed_stages(self.df, build.target, meta))
        except LaminaError:
            return order
        return [n for n in order if n in needed]


def replay(
    dockerfile: Dockerfile,
    builds: list[ReplayBuild],
    builder: str = "buildkit",
    *,
    exclude: Callable[[str], bool] | None = None,
) -> Replay:
    """Replays ``builds`` (oldest first) through ``dockerfile``, from an empty cache.

    Args:
        dockerfile: the Dockerfile to replay (as it is, or rewritten).
        builds: what each recorded build read.
        builder: ``buildkit`` or ``classic``: whose cache rules decide.
        exclude: context paths to leave out (what a ``.dockerignore`` would exclude).

    Returns:
        Whether each step ran in each build.
    """
    r = _Replayer(dockerfile, builder, exclude)
    cache: set[str] = set()
    runs: dict[tuple[int, int], list[bool | None]] = {}
    order: list[tuple[int, int, Instruction]] = []
    for number, stage in enumerate(dockerfile.stages):
        for index, ins in enumerate(stage.instructions, start=1):
            if builder == "buildkit" and ins.keyword not in BUILDKIT_STEPS:
                continue
            runs[(number, index)] = []
            order.append((number, index, ins))
    for build in builds:
        try:
            meta = meta_values(dockerfile, build.build_args)
        except LaminaError:
            meta = {}
        walk = _StageWalk(r, build, meta)
        finals: dict[int, str] = {}
        built = r.stages(build, meta)
        decided: dict[tuple[int, int], bool] = {}
        for number in built:
            stage = dockerfile.stages[number]
            base_stage = dockerfile.stage(stage.base)
            if base_stage is not None and dockerfile.stages.index(base_stage) < number:
                key = finals.get(dockerfile.stages.index(base_stage), "")
            else:
                base = walk.expand(stage.base, StageScope(dockerfile, build.build_args, meta))
                key = _digest(["from", base, build.bases.get(number, "")])
            scope = StageScope(dockerfile, build.build_args, meta)
            skip = build.skips_lookups(number)
            for index, ins in enumerate(stage.instructions, start=1):
                try:
                    scope.apply(ins)
                except LaminaError:
                    pass  # a bad substitution fails the real build; the key keeps the text
                if (number, index) not in runs:
                    continue
                key = walk.key(key, ins, scope, finals)
                decided[(number, index)] = skip or key not in cache
                cache.add(key)
            finals[number] = key
        for place, column in runs.items():
            column.append(decided.get(place))
    steps = tuple(
        StepRuns(n, i, ins.line, ins.original, tuple(runs[(n, i)])) for n, i, ins in order
    )
    return Replay(builder, tuple(b.build_id for b in builds), steps)
