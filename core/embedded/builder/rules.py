"""Cache rules: what makes a step's cache key, and how a miss spreads.

The walk asks a :class:`CacheRules` three things per instruction and decides nothing
of this itself, so builders whose caches work differently share one walk:

* :meth:`~CacheRules.key`: what the step's key is made of (recorded with the entry,
  and compared by ``accounting.reasons`` when a later build misses) and the key;
* :meth:`~CacheRules.caches`: whether the instruction is a cached step at all;
* :meth:`~CacheRules.cascades`: whether a miss there makes the rest of the stage miss.

:class:`ClassicRules` are Docker's classic builder's (``../shared/cache-semantics.md``):
a key chains on the parent state's config digest and holds the step's command line as
Docker records it plus the config fields the builder compares; every instruction,
metadata included, is a cached step; the first miss of a stage makes every later step
of the stage miss. BuildKit's rules part from these (``buildkit-semantics.md``): its
metadata instructions make no step and no key, and a miss there does not cascade.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from lamina.core.dockerfile.args import BuildArgs
from lamina.core.dockerfile.instructions import Instruction
from lamina.core.embedded.builder.base import Base
from lamina.core.embedded.builder.keys import compared_config, step_key
from lamina.core.embedded.builder.state import State, Step


@dataclass(frozen=True)
class StepKey:
    """A step's cache key and what it is made of.

    Attributes:
        key: ``sha256:<hex>``, or None when the parent state is not known (a dry run
            after a miss): such a step cannot be looked up.
        inputs: what the key was made of, JSON-ready: ``instruction``, ``step`` (what
            the key hashes), ``args``, ``from``, ``base``, ``config``; a miss adds the
            COPY/ADD ``sources`` manifest before it is recorded.
    """

    key: str | None
    inputs: dict[str, Any]


class CacheRules(Protocol):
    """What decides a hit, for one kind of builder."""

    def key(
        self, ins: Instruction, step: Step, parent: State, args: BuildArgs, base: Base
    ) -> StepKey:
        """The key of ``step`` run on ``parent``.

        Args:
            ins: the instruction.
            step: what its handler made of it.
            parent: the state it runs on.
            args: the build args in scope.
            base: where the stage started.
        """
        ...

    def caches(self, ins: Instruction) -> bool:
        """Whether ``ins`` is a cached step (looked up, recorded, reported hit or miss);
        otherwise it is applied to the state and reported with no cache decision."""
        ...

    def cascades(self, ins: Instruction) -> bool:
        """Whether a miss at ``ins`` makes every later step of its stage miss."""
        ...


class ClassicRules:
    """Docker's classic builder's cache rules."""

    def key(
        self, ins: Instruction, step: Step, parent: State, args: BuildArgs, base: Base
    ) -> StepKey:
        """The classic key: the parent's config digest, the step's command line (with
        the source checksum and ``--chmod`` for COPY/ADD) and the compared config."""
        config = compared_config(step.new_config)
        keyed: dict[str, Any] = {"cmd": step.cmd, "config": config}
        if step.source_checksum is not None:
            keyed["sources"] = step.source_checksum
            if ins.flag("chmod"):
                keyed["chmod"] = ins.flag("chmod")
        inputs: dict[str, Any] = {
            "instruction": ins.original,
            "step": keyed,
            "args": args.active(list(parent.config.get("Env") or [])),
            "from": base.instruction.original,
            "base": base.id,
            "config": config,
        }
        return StepKey(step_key(parent.id, keyed) if parent.id else None, inputs)

    def caches(self, ins: Instruction) -> bool:
        """Every instruction is a cached step, metadata ones included."""
        return True

    def cascades(self, ins: Instruction) -> bool:
        """The first miss in a stage busts the cache for the rest of it."""
        return True
