"""What lamina records of each step of a Docker build, and what a change in it explains.

Docker says nothing about *why* a step missed (moby/buildkit#2567), so before each build
lamina records the build's own inputs per step: the instruction as written, a checksum
and manifest of COPY/ADD sources in the context, the build args in scope, the base
image. On a miss, :func:`explain` compares them with the previous build of the same tag
in the embedded engine's reason vocabulary (``lamina.core.accounting.reasons``). The
Dockerfile, context and variable scoping are read as the embedded builder reads them
(``lamina.core.context.files``, ``lamina.core.dockerfile.args``).
"""

from __future__ import annotations

import fnmatch
import logging
import os
from pathlib import Path
from typing import Any

from lamina.core.accounting import reasons
from lamina.core.context.checksum import Context, manifest_to_json, multi_checksum
from lamina.core.context.files import dockerfile_path, load_build_files
from lamina.core.dockerfile.args import StageScope, meta_values, stages_to_build
from lamina.core.dockerfile.instructions import load_dockerfile
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
                "args": dict(sorted(scope.keyed().items())),
            }
            if instruction.keyword in ("COPY", "ADD") and instruction.flag("from") is None:
                step["sources"] = _sources(files.context, list(instruction.args[:-1]))
            steps.append(step)
    return steps


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
