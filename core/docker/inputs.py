"""What lamina records of each step of a Docker build, and what a change in it explains.

Docker says nothing about *why* a step missed (moby/buildkit#2567), so before each build
lamina records the build's own inputs per step: the instruction as written, a checksum
and manifest of COPY/ADD sources in the context, the build args in scope, the base
image. On a miss, :func:`explain` compares them with the previous build of the same tag
in the embedded engine's reason vocabulary (``lamina.core.accounting.reasons``). The
Dockerfile, context and variable scoping are read as the embedded builder reads them
(``lamina.core.context.files``, ``lamina.core.dockerfile.args``).

The two builders key their steps differently, so each has its plan and its
explanation: :func:`plan_inputs` and :func:`explain` follow the classic builder (every
instruction a step, each keyed on the whole config before it), :func:`plan_buildkit` and
:func:`explain_buildkit` follow BuildKit (``../shared/buildkit-semantics.md``): only the
instructions that make a vertex are steps, only the stages the target needs are built,
and a step is compared on what its own key holds: a RUN on its command, the build args
and environment, user, working directory, network and mounts; a COPY or ADD on its
options and the content of its sources (no build arg, no image setting); a WORKDIR on
its path and user.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import posixpath
from pathlib import Path
from typing import Any

from lamina.core.accounting import reasons
from lamina.core.context.checksum import Context, manifest_to_json, multi_checksum
from lamina.core.context.files import dockerfile_path, load_build_files
from lamina.core.docker.vertices import VERTEX_KEYWORDS, BuildKitPlan, StagePlan
from lamina.core.dockerfile.args import (
    StageScope,
    expand,
    meta_values,
    platform_args,
    stages_to_build,
)
from lamina.core.dockerfile.instructions import Dockerfile, load_dockerfile
from lamina.core.dockerfile.reachable import needed_stages
from lamina.core.errors import LaminaError
from lamina.core.model import BuildRequest, Reason

log = logging.getLogger(__name__)


def dockerfile_of(request: BuildRequest) -> Path:
    """The build's Dockerfile; a ``-f`` path made absolute, so records name one file."""
    path = dockerfile_path(request.context, request.dockerfile)
    return path if request.dockerfile is None else path.absolute()


def _sources(ctx: Context, patterns: list[str]) -> dict[str, Any] | None:
    """Checksum and manifest of COPY/ADD sources from the context (None if unreadable)."""
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
        ``instruction``, plus ``from`` for FROM, ``sources`` for COPY/ADD from the
        context and ``args`` (the build args in scope with a value) for the others.

    Raises:
        DockerfileError: the Dockerfile does not parse.
        ContextError: the context, the Dockerfile or ``.dockerignore`` cannot be read.
        UsageError: no stage is called ``request.target``.
    """
    # The classic builder's client reads <context>/.dockerignore only.
    files = load_build_files(request.context, dockerfile_of(request), dockerfile_ignore=False)
    dockerfile = load_dockerfile(files.text, str(files.dockerfile))
    meta = meta_values(dockerfile, request.build_args)
    steps: list[dict[str, Any]] = []
    for stage_no in stages_to_build(dockerfile, request.target):
        stage = dockerfile.stages[stage_no]
        steps.append(
            {
                "stage": stage_no,
                "index": 0,
                "instruction": stage.from_instruction.original,
                "_line": stage.from_instruction.line,
                "from": stage.base,
            }
        )
        scope = StageScope(dockerfile, request.build_args, meta)
        for index, instruction in enumerate(stage.instructions, 1):
            scope.apply(instruction)
            step: dict[str, Any] = {
                "stage": stage_no,
                "index": index,
                "instruction": instruction.original,
                "_line": instruction.line,
                "args": dict(sorted(scope.keyed().items())),
            }
            if instruction.keyword in ("COPY", "ADD") and instruction.flag("from") is None:
                step["sources"] = _sources(files.context, list(instruction.args[:-1]))
            steps.append(step)
    return steps


def failed_at(dockerfile: str, step: dict[str, Any], planned: dict[str, Any] | None) -> str:
    """How a failed step is named before Docker's own words: ``<dockerfile>:<line>:
    '<instruction>': ``, as the embedded engine names it (the line from the plan,
    when there is one; ``_line``, like every ``_`` key, is no input a cache decision
    compares)."""
    line = (planned or {}).get("_line") or step.get("_line")
    place = f"{dockerfile}:{line}: " if line else ""
    return f"{place}'{step['instruction']}': "


def explain(
    cur: dict[str, Any] | None,
    prev_build: dict[str, Any] | None,
    *,
    first_miss: tuple[str, str] | None,
    no_cache: bool,
) -> Reason:
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
        return reasons.first_build(
            "lamina has no earlier build of this tag on this Docker Engine to compare with"
        )
    prev_steps = {(s["stage"], s["index"]): s for s in prev_build.get("inputs", ())}
    prev = prev_steps.get((cur["stage"], cur["index"]))
    if prev is None:
        return reasons.first_build("the previous build of this tag had no step here")
    base_prev = prev_steps.get((cur["stage"], 0), {}).get("base")
    base_cur = cur.get("_base")
    if cur["index"] == 1 and base_prev and base_cur and base_prev != base_cur:
        return reasons.base_changed(
            base_prev,
            base_cur,
            f"the base image changed from {base_prev[7:19]} to {base_cur[7:19]}",
        )
    comparable = {k: v for k, v in cur.items() if not k.startswith("_")}
    if {k: v for k, v in prev.items() if k in comparable} == comparable:
        return reasons.pruned(
            "nothing lamina records changed since the last build: Docker no longer "
            "had this step's cache (its intermediate image was removed or pruned)"
        )
    return reasons.compare(prev, comparable)


# -- BuildKit -------------------------------------------------------------------------------


def _stage_ref(dockerfile: Dockerfile, ref: str) -> int | None:
    """The stage a ``--from`` names, as BuildKit finds it (an index, or a name in any
    case); None for an image."""
    if ref.isdigit():
        return int(ref) if int(ref) < len(dockerfile.stages) else None
    lowered = ref.lower()
    for i, stage in enumerate(dockerfile.stages):
        if stage.name == lowered:
            return i
    return None


def plan_buildkit(request: BuildRequest, platform: str = "linux/amd64") -> BuildKitPlan:
    """The steps of a BuildKit build with what each one's cache key holds.

    Args:
        request: the build.
        platform: the daemon's platform (``os/arch[/variant]``), which BuildKit builds
            for and predefines as ``TARGETOS``, ``BUILDARCH`` ... (a ``FROM
            base-$TARGETOS`` names a stage).

    Returns:
        The stages the target needs, each with its vertex steps in BuildKit's order:
        ``FROM`` (``from``: the base as expanded; ``base`` is filled in once known),
        then each RUN (``args``, ``config`` with ``Env``, ``User``, ``WorkingDir`` and
        ``Shell``, ``step`` with ``network`` and ``mounts``), COPY/ADD (``sources``
        from the context, or ``from_stage``/``from_image``, and ``config`` with
        ``WorkingDir``) and WORKDIR (``config`` with ``User`` and ``WorkingDir``).
        Every step also has ``label`` and ``cmd``, where BuildKit's progress puts it,
        and ``settings``: the image-setting instructions above it (in its stage and the
        stages it stands on), by the config field each sets, which its key does not hold
        (for the note on a hit they did not stop, :func:`hit_note`). The stages up to
        the target that it does not need are ``skipped``.

    Raises:
        DockerfileError: the Dockerfile does not parse.
        ContextError: the context, the Dockerfile or an ignore file cannot be read.
        UsageError: no stage is called ``request.target``.
    """
    # BuildKit's frontend reads <Dockerfile>.dockerignore before <context>/.dockerignore.
    files = load_build_files(request.context, dockerfile_of(request), dockerfile_ignore=True)
    dockerfile = load_dockerfile(files.text, str(files.dockerfile))
    meta = meta_values(dockerfile, request.build_args, platform_args(platform))
    meta_env = {k: v for k, v in meta.items() if v is not None}
    stages = dockerfile.stages
    names: dict[str, int] = {}
    bases: list[str] = []
    base_stage: dict[int, int] = {}
    for i, stage in enumerate(stages):
        base = expand(dockerfile, stage.from_instruction, stage.base, meta_env)
        bases.append(base)
        if base in names:  # an earlier stage's name, as BuildKit's statesByName holds it
            base_stage[i] = names[base]
        if stage.name:
            names.setdefault(stage.name, i)
    # The stages the target reads come before it, so the target is the last one.
    needed = needed_stages(dockerfile, request.target, meta)
    plan = BuildKitPlan(
        single=len(stages) == 1,
        target=needed[-1],
        instructions={i: len(stage.instructions) for i, stage in enumerate(stages)},
    )
    for number in stages_to_build(dockerfile, request.target):
        if number not in needed:
            stage = stages[number]
            plan.skipped[number] = (stage.name or str(number), stage.from_instruction.original)
    settings: dict[int, dict[str, list[str]]] = {}
    for number in needed:
        stage = stages[number]
        label = stage.name or f"stage-{number}"
        stage_plan = StagePlan(number, label, base_stage.get(number))
        plan.stages[number] = stage_plan
        inherited = (
            settings.get(stage_plan.base_stage, {}) if stage_plan.base_stage is not None else {}
        )
        settings[number] = _plan_stage(
            request, files.context, dockerfile, meta, stage_plan, bases[number], inherited
        )
    return plan


# The config field each image-setting instruction sets (the names reasons.py knows).
_SETTING_FIELDS = {
    "ENV": "Env",
    "USER": "User",
    "SHELL": "Shell",
    "LABEL": "Labels",
    "EXPOSE": "ExposedPorts",
    "CMD": "Cmd",
    "ENTRYPOINT": "Entrypoint",
    "HEALTHCHECK": "Healthcheck",
    "STOPSIGNAL": "StopSignal",
    "VOLUME": "Volumes",
    "ONBUILD": "OnBuild",
}


def _plan_stage(
    request: BuildRequest,
    ctx: Context,
    dockerfile: Dockerfile,
    meta: dict[str, str | None],
    plan: StagePlan,
    base: str,
    inherited: dict[str, list[str]],
) -> dict[str, list[str]]:
    """Fills one stage's vertex steps (see :func:`plan_buildkit`).

    Returns:
        The image-setting instructions above the stage's end, by config field.
    """
    stage = dockerfile.stages[plan.number]
    cmd = 0
    settings = {name: list(lines) for name, lines in inherited.items()}

    def add(step: dict[str, Any]) -> None:
        nonlocal cmd
        cmd += 1
        step.update(label=plan.label, cmd=cmd)
        plan.steps.append(step)

    if plan.base_stage is None and base != "scratch":
        add(
            {
                "stage": plan.number,
                "index": 0,
                "instruction": stage.from_instruction.original,
                "_line": stage.from_instruction.line,
                "from": base,
            }
        )
    scope = StageScope(dockerfile, request.build_args, meta)
    user, workdir, shell = "", "/", ["/bin/sh", "-c"]
    for index, instruction in enumerate(stage.instructions, 1):
        scope.apply(instruction)
        keyword = instruction.keyword
        variables = scope.args.expansion_env(scope.env)
        if keyword == "USER" and instruction.args:
            user = expand(dockerfile, instruction, instruction.args[0], variables)
        elif keyword == "SHELL":
            shell = list(instruction.command())
        if keyword in _SETTING_FIELDS:
            settings.setdefault(_SETTING_FIELDS[keyword], []).append(instruction.original)
        if keyword not in VERTEX_KEYWORDS:
            continue
        step: dict[str, Any] = {
            "stage": plan.number,
            "index": index,
            "instruction": instruction.original,
            "_line": instruction.line,
            "settings": {name: list(lines) for name, lines in sorted(settings.items())},
        }
        if keyword == "WORKDIR":
            path = expand(dockerfile, instruction, instruction.args[0], variables)
            resolved = path if posixpath.isabs(path) else posixpath.join("/", workdir, path)
            step["config"] = {"User": user, "WorkingDir": workdir}
            workdir = resolved
            if resolved == "/":
                continue  # BuildKit makes no vertex for it
        elif keyword == "RUN":
            step["args"] = dict(sorted(scope.keyed().items()))
            step["config"] = {
                "Env": list(scope.env),
                "User": user,
                "WorkingDir": workdir,
                "Shell": shell,
            }
            step["step"] = {
                "network": instruction.flag("network") or request.network,
                "mounts": list(instruction.flags.get("mount", ())),
                "security": instruction.flag("security") or "",
            }
        else:
            source = instruction.flag("from")
            step["config"] = {"WorkingDir": workdir}
            if source is None:
                step["sources"] = _sources(ctx, list(instruction.args[:-1]))
            elif (number := _stage_ref(dockerfile, source)) is not None:
                step["from_stage"] = number
            else:
                step["from_image"] = source
        add(step)
    return settings


def trigger_inputs(request: BuildRequest, trigger: str) -> dict[str, Any]:
    """What lamina records of an ONBUILD trigger BuildKit runs as a step: the sources of
    a COPY or ADD from the context (nothing else it holds is known before it runs)."""
    try:
        parsed = load_dockerfile(f"FROM scratch\n{trigger}\n").stages[0].instructions[0]
        if parsed.keyword not in ("COPY", "ADD") or parsed.flag("from") is not None:
            return {}
        files = load_build_files(request.context, dockerfile_of(request), dockerfile_ignore=True)
    except (LaminaError, IndexError) as exc:
        log.debug("ONBUILD trigger %r not read: %s", trigger, exc)
        return {}
    return {"sources": _sources(files.context, list(parsed.args[:-1]))}


def _keyed(step: dict[str, Any]) -> dict[str, Any]:
    """What a BuildKit step's key holds, of what lamina records."""
    keys = ("instruction", "sources", "args", "config", "step", "from", "from_stage", "from_image")
    return {k: step[k] for k in keys if k in step}


def explain_buildkit(
    cur: dict[str, Any] | None,
    prev_build: dict[str, Any] | None,
    *,
    first_miss: tuple[str, str] | None,
    no_cache: bool,
    source_miss: tuple[str, str, str] | None = None,
    classic_before: bool = False,
    base_step: dict[str, Any] | None = None,
) -> Reason:
    """Why BuildKit missed a step, from lamina's records.

    Args:
        cur: the step's recorded inputs (None when lamina could not map the step).
        prev_build: the previous BuildKit build of the same tag.
        first_miss: ``("<stage>/<index>", instruction)`` of an earlier miss the step
            stands on (in its stage, or in the stage its ``FROM`` names).
        no_cache: the build ran with ``--no-cache``.
        source_miss: for a ``COPY --from`` a stage that missed in this build: the
            stage's name, and ``("<stage>/<index>", instruction)`` of its first miss.
        classic_before: this tag was only ever built with the classic builder here.
        base_step: the ``FROM`` step of the step's stage in this build (with ``base``,
            the image it resolved to), when the stage stands on an image.

    Returns:
        A reason (``lamina.core.accounting.reasons`` vocabulary).
    """
    if no_cache:
        return reasons.no_cache()
    if first_miss is not None:
        return reasons.parent_missed(*first_miss)
    if cur is None or prev_build is None:
        if classic_before:
            return reasons.first_build(
                "this tag was built with the classic builder before, and BuildKit does"
                " not use the classic builder's cache"
            )
        return reasons.first_build(
            "lamina has no earlier BuildKit build of this tag on this Docker Engine to compare with"
        )
    if source_miss is not None:
        # Had the stage made the same files, BuildKit's content key would have hit.
        return reasons.stage_sources_changed(*source_miss)
    prev_steps = {(s.get("label"), s.get("cmd")): s for s in prev_build.get("inputs", ())}
    if base_step is not None:
        # Every step of a stage stands on its base: a FROM that now resolves to another
        # image explains the stage's first miss.
        prev_from = prev_steps.get((base_step.get("label"), base_step.get("cmd")))
        old = (prev_from or {}).get("base")
        new = base_step.get("base")
        same_ref = prev_from is not None and prev_from.get("from") == base_step.get("from")
        if same_ref and old and new and new != old:
            return reasons.base_changed(
                old, new, f"{base_step['from']} now resolves to {new[7:19]} (was {old[7:19]})"
            )
    prev = prev_steps.get((cur.get("label"), cur.get("cmd")))
    if prev is None:
        return reasons.first_build("the previous build of this tag had no step here")
    mine, theirs = _keyed(cur), _keyed(prev)
    if _canonical(mine) == _canonical(theirs):
        return reasons.pruned(
            "nothing this step's BuildKit cache key holds changed since the last build:"
            " BuildKit no longer had its cache (its build cache records were pruned)"
        )
    return reasons.compare(theirs, mine)


def hit_note(cur: dict[str, Any] | None, prev_build: dict[str, Any] | None) -> Reason | None:
    """The note on a BuildKit hit whose image settings above changed since the previous
    build of the tag (the classic builder, which compares the whole config, would have
    missed); None when nothing changed or lamina recorded nothing to compare.

    The note's ``old`` and ``new`` are the setting instructions as written (BuildKit's
    config is not in its cache records; the embedded engine's notes hold config values).
    """
    if cur is None or prev_build is None or "settings" not in cur:
        return None
    prev_steps = {(s.get("label"), s.get("cmd")): s for s in prev_build.get("inputs", ())}
    prev = prev_steps.get((cur.get("label"), cur.get("cmd")))
    if prev is None or "settings" not in prev or prev.get("instruction") != cur["instruction"]:
        return None
    keyword = str(cur["instruction"]).split(None, 1)[0].upper()
    return reasons.settings_not_keyed(keyword, prev["settings"], cur["settings"])


def _canonical(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))
