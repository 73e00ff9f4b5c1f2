"""FROM: where a stage starts.

A stage stands on ``scratch``, on an earlier stage's final state, or on an image in the
store (lamina has no registry to pull from). Like the classic builder it then gets a
default ``PATH`` and runs the base image's ``ONBUILD`` triggers as its first steps.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lamina.core.dockerfile.instructions import Instruction, Stage, load_dockerfile
from lamina.core.embedded.builder.state import SCRATCH, State
from lamina.core.embedded.builder.words import Words
from lamina.core.embedded.store import Store
from lamina.core.errors import DockerfileError, NotFound

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def stage_index(stages: Sequence[Stage], ref: str, before: int) -> int | None:
    """The stage ``ref`` names (by name, or by number) among the first ``before``."""
    lowered = ref.lower()
    for i, stage in enumerate(stages[:before]):
        if stage.name == lowered:
            return i
    if ref.isdigit() and int(ref) < before:
        return int(ref)
    return None


@dataclass(frozen=True)
class Base:
    """A stage's starting point.

    Attributes:
        state: the state the first step runs on (default ``PATH`` set, triggers taken).
        id: what FROM resolved to (an image ID, an earlier stage's state, ``scratch``);
            None when a dry run cannot know it (that stage runs again first).
        instruction: the FROM instruction.
        image: the image the stage stands on, recorded as the built image's parent
            (None for ``scratch`` and for earlier stages).
        triggers: the base image's ``ONBUILD`` instructions, to run first.
    """

    state: State
    id: str | None
    instruction: Instruction
    image: str | None
    triggers: tuple[Instruction, ...]


class Bases:
    """Resolves each stage's FROM.

    Args:
        store: the store holding base images.
        words: the Dockerfile's variable expansion.
        stages: the Dockerfile's stages.
        built: the final state of each stage built so far, by number.
        substitutes: stand-in images for bases the store lacks (``FROM`` reference, or
            ``*`` for any, to an image of the store): a Dockerfile whose bases cannot
            be had offline can still be checked.
    """

    def __init__(
        self,
        store: Store,
        words: Words,
        stages: Sequence[Stage],
        built: Mapping[int, State],
        substitutes: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.words = words
        self.stages = stages
        self.built = built
        self.substitutes = dict(substitutes or {})

    def resolve(self, number: int, stage: Stage, meta: Mapping[str, str | None]) -> Base:
        """Where stage ``number`` starts.

        Args:
            number: the stage's number.
            stage: the stage.
            meta: the meta ARG values FROM may use (None when unset).

        Raises:
            DockerfileError: the base is not in the store, or a trigger does not parse.
        """
        ref = self.words.word(
            stage.from_instruction,
            stage.base,
            {k: v for k, v in meta.items() if v is not None},
        )
        blank = not ref.strip()
        if blank or ref.startswith((":", "@", "/")) or ref.endswith((":", "@", "/")):
            # Docker's words, and which variable left it blank or cut.
            problem = (
                f"base name ({stage.base}) should not be blank"
                if blank
                else f"invalid reference format: {ref!r}"
            )
            raise DockerfileError(
                f"FROM {stage.base}: {problem}{_blank_variables(stage.base, meta)}",
                str(self.words.path),
                stage.from_instruction.line,
            )
        try:
            state, base_id = self._state(number, stage, ref)
        except DockerfileError as exc:
            note = _blank_variables(stage.base, meta)
            if not note:
                raise
            raise DockerfileError(exc.reason + note, exc.path, exc.line) from None
        from_stage = stage_index(self.stages, stage.base, number) is not None
        image = base_id if base_id and base_id.startswith("sha256:") and not from_stage else None
        env = list(state.config.get("Env") or [])
        if not any(e.startswith("PATH=") for e in env):
            # Like the classic builder's setDefaultPath: every stage starts with a PATH.
            state.config["Env"] = env + [DEFAULT_PATH]
        triggers = list(state.config.get("OnBuild") or [])
        if triggers:
            state.config["OnBuild"] = None
        return Base(
            state,
            base_id,
            stage.from_instruction,
            image,
            tuple(self._trigger(stage, text) for text in triggers),
        )

    def _state(self, number: int, stage: Stage, ref: str) -> tuple[State, str | None]:
        if ref.lower() == SCRATCH:
            return State.scratch(), SCRATCH
        idx = stage_index(self.stages, ref, number)
        if idx is not None:
            built = self.built[idx]
            state = State(
                built.id, copy.deepcopy(built.doc), built.chain, built.chain_known, built.key
            )
            return state, built.id
        try:
            image_id = self.image(ref)
            doc = self.store.images.get_config(image_id)
        except NotFound:
            raise DockerfileError(
                f"FROM {ref}: no such image in the store (lamina has no registry to pull"
                " from; load or import it first)",
                str(self.words.path),
                stage.from_instruction.line,
            ) from None
        chain = self.store.images.chain_of(doc)
        return State(image_id, doc, chain[-1] if chain else None, key=image_id), image_id

    def image(self, ref: str) -> str:
        """The image ``ref`` names: in the store, else its stand-in.

        Raises:
            NotFound: neither the image nor a stand-in is in the store.
        """
        try:
            return self.store.images.resolve(ref)
        except NotFound:
            stand_in = self.substitutes.get(ref) or self.substitutes.get("*")
            if stand_in is None:
                raise
            return self.store.images.resolve(stand_in)

    def _trigger(self, stage: Stage, text: str) -> Instruction:
        """An ``ONBUILD`` trigger as an instruction placed on the FROM line."""
        line = stage.from_instruction.line
        try:
            parsed = load_dockerfile(f"FROM scratch\n{text}\n", str(self.words.path))
        except DockerfileError as exc:
            raise DockerfileError(
                f"ONBUILD trigger of {stage.base} does not parse: {exc.reason}",
                str(self.words.path),
                line,
            ) from None
        inner = parsed.stages[0].instructions[0]
        return Instruction(
            keyword=inner.keyword,
            args=inner.args,
            flags=inner.flags,
            original=inner.original,
            line=line,
            end_line=line,
            json_form=inner.json_form,
            heredocs=inner.heredocs,
            inner=inner.inner,
            env_pairs=inner.env_pairs,
        )


_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))")


def _blank_variables(text: str, meta: Mapping[str, str | None]) -> str:
    """``: X is empty`` (or not set, or not an ARG before the first FROM) for the
    variables of ``text`` that expand to nothing; "" when none does."""
    notes = []
    for braced, bare in _VARIABLE.findall(text):
        name = braced or bare
        if name not in meta:
            notes.append(f"{name} is not an ARG declared before the first FROM")
        elif meta[name] is None:
            notes.append(f"{name} is not set (no default and no --build-arg)")
        elif meta[name] == "":
            notes.append(f"{name} is empty")
    return ": " + "; ".join(dict.fromkeys(notes)) if notes else ""
