"""Cache rules: what makes a step's cache key, and how a miss spreads.

The walk asks a :class:`CacheRules` what to do and decides nothing of this itself, so
builders whose caches work differently share one walk:

* :meth:`~CacheRules.key`: what the step's key is made of (recorded with the entry,
  and compared by ``accounting.reasons`` when a later build misses) and the key;
* :meth:`~CacheRules.caches`: whether the instruction is a cached step at all;
* :meth:`~CacheRules.cascades`: whether a miss there makes the rest of the stage miss;
* :meth:`~CacheRules.parent`: what of the parent state a key chains on (and a cache
  entry is recorded under);
* :attr:`~CacheRules.hit_keeps_config`: whether a hit's stored state is taken whole, or
  only its filesystem, with the image settings of this build applied on top;
* :meth:`~CacheRules.flags`: the instruction flags the builder knows;
* :meth:`~CacheRules.links`: whether a step's layer is independent of the layers
  below it (``COPY --link``);
* :attr:`~CacheRules.needed_stages_only`, :attr:`~CacheRules.merges`: whether stages
  the target does not need are skipped, and identical steps of a build run once.

:class:`ClassicRules` are Docker's classic builder's (``../shared/cache-semantics.md``):
a key chains on the parent state's config digest and holds the step's command line as
Docker records it plus the config fields the builder compares; every instruction,
metadata included, is a cached step; the first miss of a stage makes every later step
of the stage miss. BuildKit's rules part from these (``buildkit-semantics.md``): its
metadata instructions make no step and no key, and a miss there does not cascade.
:class:`BuildKitRules` are those: a key chains on the parent's *key*, so image
settings that no step reads never reach it, and a RUN's key holds what the process
gets (argv, the final env, user, working dir, network, mount specs), a COPY/ADD's its
own options and the content checksum of its sources by base name
(:mod:`~lamina.core.embedded.builder.contenthash`), a WORKDIR's the directory and its
owner. A ``COPY --link`` key chains on nothing below it: BuildKit copies onto an empty
filesystem and merges that onto the parent, so after an edit above it the step hits,
its layer (the same diffID) rebased onto the new parent, while the next step chains on
the parent and the linked key together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from lamina.core.dockerfile.args import BuildArgs
from lamina.core.dockerfile.instructions import Instruction
from lamina.core.embedded.builder.base import Base
from lamina.core.embedded.builder.keys import compared_config, step_key
from lamina.core.embedded.builder.state import State, Step

# The instruction flags each builder knows (the parser knows all of them), as measured on
# Docker 20.10's classic builder: it knows COPY --from/--chown and ADD --chown; it parses
# RUN --mount and COPY/ADD --chmod only to refuse them at their step ("the --chmod option
# requires BuildKit"), and any other flag is a parse error ("Unknown flag: link").
CLASSIC_FLAGS: dict[str, frozenset[str]] = {
    "COPY": frozenset({"from", "chown"}),
    "ADD": frozenset({"chown"}),
    "FROM": frozenset({"platform"}),
    "HEALTHCHECK": frozenset({"interval", "timeout", "start-period", "start-interval", "retries"}),
}
CLASSIC_REQUIRES_BUILDKIT = frozenset({"mount", "chmod"})
BUILDKIT_FLAGS: dict[str, frozenset[str]] = {
    **CLASSIC_FLAGS,
    "COPY": CLASSIC_FLAGS["COPY"] | {"chmod", "link", "parents", "exclude"},
    "ADD": CLASSIC_FLAGS["ADD"] | {"chmod", "link", "checksum", "exclude", "keep-git-dir"},
    "RUN": frozenset({"mount", "network"}),
}

# Instructions BuildKit makes a vertex of (a cached step); the rest only set the image
# config (``commitToHistory``).
BUILDKIT_STEPS = frozenset({"RUN", "COPY", "ADD", "WORKDIR"})

# What a ``COPY --link`` key chains on instead of its parent: BuildKit copies onto
# ``llb.Scratch()`` and merges the result onto the parent.
LINK_BASE = "scratch"


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
    """What decides a hit, for one kind of builder.

    Attributes:
        name: ``classic`` or ``buildkit``.
        hit_keeps_config: a hit's stored state is the new state, config included
            (classic); otherwise only its filesystem is, under this build's config.
        needed_stages_only: stages the target does not need are skipped.
        merges: a step whose key already ran in this build runs once.
        platform_args: the platform args (``TARGETARCH``, ``BUILDPLATFORM`` ...) are
            predefined meta args (``dockerfile.args.platform_args``).
    """

    name: str
    hit_keeps_config: bool
    needed_stages_only: bool
    merges: bool
    platform_args: bool

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

    def parent(self, state: State) -> str | None:
        """What a key on ``state`` chains on (None when a dry run cannot know it)."""
        ...

    def flags(self, keyword: str) -> frozenset[str]:
        """The flags of ``keyword`` this builder knows."""
        ...

    def links(self, ins: Instruction) -> bool:
        """Whether ``ins`` makes a layer that does not depend on the layers below it
        (``COPY --link``): its key does not chain on the parent, a hit's layer is
        rebased onto this build's parent, and the next step chains on both
        (:func:`linked_key`)."""
        ...


class ClassicRules:
    """Docker's classic builder's cache rules."""

    name = "classic"
    hit_keeps_config = True
    needed_stages_only = False
    merges = False
    platform_args = False

    def key(
        self, ins: Instruction, step: Step, parent: State, args: BuildArgs, base: Base
    ) -> StepKey:
        """The classic key: the parent's config digest, the step's command line (with
        the source checksum for COPY/ADD) and the compared config."""
        config = compared_config(step.new_config)
        keyed: dict[str, Any] = {"cmd": step.cmd, "config": config}
        if step.source_checksum is not None:
            keyed["sources"] = step.source_checksum
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

    def parent(self, state: State) -> str | None:
        """The parent's config digest."""
        return state.id

    def flags(self, keyword: str) -> frozenset[str]:
        """The classic builder's flags."""
        return CLASSIC_FLAGS.get(keyword, frozenset())

    def links(self, ins: Instruction) -> bool:
        """Never: the classic builder does not know ``--link``."""
        return False


class BuildKitRules:
    """BuildKit's cache rules (Dockerfile frontend, ``buildkit-semantics.md``)."""

    name = "buildkit"
    hit_keeps_config = False
    needed_stages_only = True
    merges = True
    platform_args = True

    def key(
        self, ins: Instruction, step: Step, parent: State, args: BuildArgs, base: Base
    ) -> StepKey:
        """The BuildKit key: the parent's key and the op (see the module docstring)."""
        config = step.new_config
        keyed: dict[str, Any] = {"rules": self.name}
        kw = ins.keyword
        if kw == "RUN":
            keyed.update(
                op="exec",
                args=step.argv,
                env=step.env,
                cwd=config.get("WorkingDir") or "/",
                user=config.get("User") or "",
                network=step.network or "default",
                mounts=[m.spec() for m in step.mounts],
                mount_sources=step.content_checksums,
            )
        elif kw in ("COPY", "ADD"):
            keyed.update(
                op=kw.lower(),
                dest=step.dest,
                sources=step.content_checksums,
            )
            for flag in ("chmod", "chown", "link", "parents", "checksum"):
                if ins.flag(flag) is not None:
                    keyed[flag] = ins.flag(flag)
            if ins.flags.get("exclude"):
                keyed["exclude"] = list(ins.flags["exclude"])
            if ins.flag("from") is not None:
                # Which stage or image is read is in the content; that it is another
                # filesystem than the context is in the op.
                keyed["from"] = True
        else:  # WORKDIR
            keyed.update(
                op="mkdir", path=config.get("WorkingDir") or "/", user=config.get("User") or ""
            )
        inputs: dict[str, Any] = {
            "instruction": ins.original,
            "step": keyed,
            "args": args.active(list(parent.config.get("Env") or [])),
            "from": base.instruction.original,
            "base": base.id,
            # Not in the key: kept so a hit can tell when the classic builder, which
            # compares the whole config, would have missed.
            "config": compared_config(config),
        }
        # A linked copy is made on an empty filesystem, then merged onto the parent
        # (``llb.Merge``): its key chains on nothing below it.
        chain = LINK_BASE if self.links(ins) else self.parent(parent)
        return StepKey(step_key(chain, keyed) if chain else None, inputs)

    def caches(self, ins: Instruction) -> bool:
        """RUN, COPY, ADD and WORKDIR are steps; image settings are not."""
        return ins.keyword in BUILDKIT_STEPS

    def cascades(self, ins: Instruction) -> bool:
        """A miss spreads only through the keys that chain on it."""
        return False

    def parent(self, state: State) -> str | None:
        """The parent's cache key."""
        return state.key

    def flags(self, keyword: str) -> frozenset[str]:
        """The Dockerfile frontend's flags."""
        return BUILDKIT_FLAGS.get(keyword, frozenset())

    def links(self, ins: Instruction) -> bool:
        """``COPY/ADD --link`` (``--link=false`` is an ordinary copy)."""
        return is_link(ins)


def is_link(ins: Instruction) -> bool:
    """Whether ``ins`` is a ``COPY/ADD --link`` (a bare ``--link`` or ``--link=true``)."""
    return ins.keyword in ("COPY", "ADD") and ins.flag("link") not in (None, "false")


def linked_key(parent: str | None, key: str | None) -> str | None:
    """What the step after a ``--link`` copy chains on: the merge of the parent and the
    linked layer, so the copy's hit does not make later steps hit on a changed parent
    (None when either is unknown)."""
    if parent is None or key is None:
        return None
    return step_key(parent, {"op": "merge", "link": key})


def rules_for(builder: str) -> CacheRules:
    """The cache rules of ``builder`` (``buildkit`` or ``classic``)."""
    return ClassicRules() if builder == "classic" else BuildKitRules()
