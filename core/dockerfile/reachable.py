"""Which stages a target needs, and which stages a stage waits for.

BuildKit solves only what the target reaches (``dockerfile2llb/convert.go``,
``isReachable``): the target stage, the stages its ``FROM`` names, the stages its
``COPY --from`` and ``RUN --mount=from=`` read, and so on down. The classic builder
builds every stage up to the target instead (:func:`~lamina.core.dockerfile.args.stages_to_build`).

References are resolved as the builder resolves them: by stage name
(case-insensitive) or number among the earlier stages. ``FROM`` is read after expanding
the meta ARGs (the values ``FROM`` may use); a ``FROM`` that cannot be expanded keeps
every earlier stage, so nothing a stage may read is skipped. ``COPY --from`` and
``--mount from=`` are taken as written, as both builders take them: a variable there
names no stage (the build refuses it at that step).
"""

from __future__ import annotations

from collections.abc import Mapping

from lamina.core.dockerfile.args import expand, stages_to_build
from lamina.core.dockerfile.instructions import Dockerfile, Instruction, Stage
from lamina.core.dockerfile.mounts import mount_from
from lamina.core.errors import DockerfileError


def _index(stages: list[Stage], ref: str, before: int) -> int | None:
    lowered = ref.lower()
    for i, stage in enumerate(stages[:before]):
        if stage.name == lowered:
            return i
    if ref.isdigit() and int(ref) < before:
        return int(ref)
    return None


def _refs(stage: Stage) -> list[tuple[Instruction, str]]:
    """What a stage names besides its base: ``COPY --from`` and ``RUN --mount from=``."""
    out: list[tuple[Instruction, str]] = []
    for ins in stage.instructions:
        if ins.keyword == "COPY" and ins.flag("from"):
            out.append((ins, ins.flag("from") or ""))
        if ins.keyword == "RUN":
            for mount in ins.flags.get("mount", ()):
                ref = mount_from(mount)
                if ref:
                    out.append((ins, ref))
    return out


def dependencies(dockerfile: Dockerfile, number: int, meta: Mapping[str, str | None]) -> set[int]:
    """The earlier stages stage ``number`` reads directly.

    Args:
        dockerfile: the Dockerfile.
        number: the stage.
        meta: the meta ARG values (None when unset).
    """
    stages = list(dockerfile.stages)
    stage = stages[number]
    env = {k: v for k, v in meta.items() if v is not None}
    out: set[int] = set()
    try:
        base = expand(dockerfile, stage.from_instruction, stage.base, env)
    except DockerfileError:
        base = stage.base
    if "$" in base:
        # Known only once the stage runs: keep whatever it may name.
        out.update(range(number))
    for word in [base, *(ref for _, ref in _refs(stage))]:
        idx = _index(stages, word, number)
        if idx is not None:
            out.add(idx)
    return out


def needed_stages(
    dockerfile: Dockerfile, target: str | None, meta: Mapping[str, str | None]
) -> list[int]:
    """The stages the target needs, in Dockerfile order.

    Args:
        dockerfile: the Dockerfile.
        target: ``--target``, or None for the last stage.
        meta: the meta ARG values.

    Raises:
        UsageError: no stage is called ``target``.
    """
    last = stages_to_build(dockerfile, target)[-1]
    needed = {last}
    todo = [last]
    while todo:
        for dep in dependencies(dockerfile, todo.pop(), meta):
            if dep not in needed:
                needed.add(dep)
                todo.append(dep)
    return sorted(needed)


__all__ = ["dependencies", "needed_stages"]
