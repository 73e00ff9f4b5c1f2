"""``advise``: advice on one Dockerfile, from the file, its context and its build history.

What an engine must offer is small and read-only (:class:`BuildHistory`): its build
records and its layers' files; an engine that also records what each build copied from
its context (:class:`SourceHistory`, lamina's own store) lets the rules prove their
rewrites by replaying the builds, and has its layers measured for wasted space.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Protocol, runtime_checkable

from lamina.core.advice.facts import ContextEntry, Facts
from lamina.core.advice.findings import RULES, Advice, AdviceReport
from lamina.core.advice.replay import ReplayBuild
from lamina.core.advice.rewrite import apply, compatible, unified_diff
from lamina.core.advice.rules import RULES as RULE_FUNCTIONS
from lamina.core.context.files import load_build_files
from lamina.core.dockerfile.instructions import load_dockerfile
from lamina.core.errors import LaminaError
from lamina.core.model import BuildRecord, BuildSources, FileChange
from lamina.core.settings import default_builder

log = logging.getLogger(__name__)

# Builds read from the engine to find this Dockerfile's (its builds may be few among them).
SCANNED_BUILDS = 500
# This Dockerfile's builds the advice reads, newest first.
HISTORY = 50


class BuildHistory(Protocol):
    """What advice reads from an engine (every engine offers it)."""

    def builds(self, limit: int = 50) -> list[BuildRecord]:
        """Recorded builds, newest first, each with its steps."""
        ...

    def layer_changes(self, chain_id: str) -> list[FileChange]:
        """What a layer adds, modifies and deletes."""
        ...


@runtime_checkable
class SourceHistory(Protocol):
    """An engine that records what each build copied, path by path."""

    def build_sources(self, build_ids: list[int]) -> dict[int, BuildSources]:
        """The per-path records of these builds."""
        ...


def _same(a: str, b: str) -> bool:
    return os.path.normpath(os.path.abspath(a)) == os.path.normpath(os.path.abspath(b))


def _display(path: Path, root: Path | None) -> str:
    """A path as a diff names it: relative to ``root`` when below it."""
    absolute = Path(os.path.abspath(path))
    if root is not None:
        try:
            return str(absolute.relative_to(Path(os.path.abspath(root))))
        except ValueError:
            pass
    return str(absolute)


def _no_cache(build: BuildRecord) -> bool | frozenset[int]:
    stages: set[int] = set()
    for s in build.steps:
        if s.reason is not None and s.reason.get("kind") == "no_cache":
            if "stage" not in s.reason:
                return True
            stages.add(s.stage)
    return frozenset(stages)


def advise(
    engine: BuildHistory,
    context: str | Path,
    dockerfile: str | Path | None = None,
    *,
    build_id: int | None = None,
    history: int = HISTORY,
    relative_to: Path | None = None,
) -> AdviceReport:
    """Advice on the Dockerfile of a build context, proved on its recorded builds.

    Args:
        engine: where the builds are recorded.
        context: the build context directory.
        dockerfile: ``-f``, or None for ``<context>/Dockerfile``.
        build_id: the build whose layers to measure (the app's selection); by default
            the newest build whose steps match the Dockerfile as it is.
        history: at most this many of the Dockerfile's newest builds are read.
        relative_to: diffs name files relative to this directory (the current one by
            default), so ``patch -p0`` applies them from there.

    Raises:
        ContextError: the context or the Dockerfile cannot be read.
        DockerfileError: the Dockerfile does not parse.
    """
    files = load_build_files(context, dockerfile)
    df = load_dockerfile(files.text, str(files.dockerfile))
    root = relative_to if relative_to is not None else Path.cwd()
    ignore_path = Path(context) / ".dockerignore"
    try:
        ignore_text: str | None = ignore_path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        ignore_text = None
    builds = [
        b
        for b in engine.builds(SCANNED_BUILDS)
        if b.status == "ok"
        and _same(b.dockerfile, str(files.dockerfile))
        and _same(b.context, str(context))
    ][:history]
    builds.reverse()
    builder = next((b.builder for b in reversed(builds) if b.builder), None)
    if builder is None:
        try:
            builder = default_builder()
        except LaminaError:
            builder = "buildkit"
    notes: list[str] = []
    replayable: list[ReplayBuild] = []
    if isinstance(engine, SourceHistory):
        records = engine.build_sources([b.id for b in builds]) if builds else {}
        for b in builds:
            record = records.get(b.id)
            if record is None or not record.complete:
                continue
            replayable.append(
                ReplayBuild(b.id, b.build_args, record.paths, record.bases, b.target, _no_cache(b))
            )
        if builds and len(replayable) < len(builds):
            notes.append(
                f"{len(builds) - len(replayable)} of the {len(builds)} builds have no per-path"
                " record of their context (built before lamina kept one, or too large): they"
                " are not replayed"
            )
    elif builds:
        notes.append(
            "this engine keeps no per-path record of each build's context: nothing is replayed"
        )
    entries: dict[str, ContextEntry] = {}
    for path, st in files.context.entries.items():
        entries[path] = ContextEntry(
            st.st_size if stat.S_ISREG(st.st_mode) else 0, stat.S_ISDIR(st.st_mode)
        )
    facts = Facts(
        dockerfile=df,
        text=files.text,
        name=_display(files.dockerfile, root),
        ignore_name=_display(ignore_path, root),
        ignore_text=ignore_text,
        builder=builder,
        builds=tuple(builds),
        replayable=tuple(replayable),
        context=entries,
    )
    if isinstance(engine, SourceHistory):
        # lamina's own store reads a layer's files from its directory; a Docker Engine
        # would stream a whole image per layer, so there wasted-space reads the
        # Dockerfile alone.
        layers_build, layers = _layers(engine, facts, build_id)
        facts = replace(facts, layers=layers, layers_build=layers_build)
    found: list[Advice] = []
    for rule in RULE_FUNCTIONS:
        found.extend(rule(facts))
    found.sort(key=lambda a: (a.line, RULES.index(a.rule)))
    short = facts.too_short()
    if short is not None:
        notes.append(short)
    return AdviceReport(
        dockerfile=str(files.dockerfile),
        context=str(context),
        builder=builder,
        builds=len(builds),
        replayable=len(replayable),
        advice=tuple(found),
        diff=_combined(facts, found, notes),
        notes=tuple(notes),
    )


def _layers(
    engine: BuildHistory, facts: Facts, build_id: int | None
) -> tuple[int | None, dict[int, list[FileChange]]]:
    """The file changes of each step's layer in the build to measure, by line."""
    candidates = [b for b in reversed(facts.builds) if facts.matches_today(b)]
    if build_id is not None:
        candidates = [b for b in candidates if b.id == build_id] or candidates
    if not candidates:
        return None, {}
    build = candidates[0]
    lines = {
        (n, i): ins.line
        for n, stage in enumerate(facts.dockerfile.stages)
        for i, ins in enumerate(stage.instructions, start=1)
    }
    last = len(facts.dockerfile.stages) - 1
    out: dict[int, list[FileChange]] = {}
    for step in build.steps:
        if step.stage != last or not step.layer or (step.stage, step.index) not in lines:
            continue
        try:
            out[lines[(step.stage, step.index)]] = engine.layer_changes(step.layer)
        except LaminaError as exc:
            log.info("build %d: layer %s not read: %s", build.id, step.layer, exc)
    return build.id, out


def _combined(facts: Facts, found: list[Advice], notes: list[str]) -> str | None:
    """Every rewrite that overlaps no earlier one, as one patch."""
    edits = [e for a in found for e in a.edits]
    taken = compatible(edits)
    if len(taken) < len(edits):
        skipped = sorted({a.line for a in found for e in a.edits if e not in taken})
        notes.append(
            "the rewrites of line " + ", ".join(map(str, skipped)) + " overlap earlier ones and"
            " are left out of the combined --diff: run lamina advise again after applying it"
        )
    patch = unified_diff(facts.text, apply(facts.text, taken), facts.name) if taken else ""
    ignored = [line for a in found for line in a.dockerignore]
    if ignored:
        old = facts.ignore_text or ""
        new = (
            old
            + ("" if not old or old.endswith("\n") else "\n")
            + "".join(line + "\n" for line in dict.fromkeys(ignored))
        )
        patch += unified_diff(old, new, facts.ignore_name, new_file=facts.ignore_text is None)
    return patch or None
