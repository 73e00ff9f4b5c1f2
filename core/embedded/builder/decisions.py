"""Deciding one cached step: look its key up, check the hit is still usable, and say
why it missed.

The key comes from the build's :class:`~lamina.core.embedded.builder.rules.CacheRules`;
the lookup, the history a miss is explained against and the tombstones come from the
store; the words come from ``accounting.reasons``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lamina.core.accounting import reasons
from lamina.core.context.checksum import Context, manifest_to_json
from lamina.core.dockerfile.args import BuildArgs
from lamina.core.dockerfile.instructions import Instruction
from lamina.core.embedded.builder.base import Base
from lamina.core.embedded.builder.rules import CacheRules, StepKey
from lamina.core.embedded.builder.state import State, Step
from lamina.core.embedded.remotecache import RemoteCache
from lamina.core.embedded.store import Store
from lamina.core.embedded.store.cache import CacheHit, StepPosition
from lamina.core.model import Reason


@dataclass(frozen=True)
class Decision:
    """A cached step's hit or miss.

    Attributes:
        key: the step's key and inputs.
        hit: the cache entry to reuse, or None on a miss.
        reason: why it missed, or None on a hit.
    """

    key: StepKey
    hit: CacheHit | None
    reason: Reason | None


class Decisions:
    """Decides cached steps in one store, under one set of rules.

    Args:
        store: the store whose cache is consulted.
        rules: what makes a key.
        no_cache: ``--no-cache``: every step misses (results are still recorded).
        dockerfile: the Dockerfile's path as the build records it; a miss is explained
            only against what builds of it recorded at the same step.
        remote: the caches of ``--cache-from``, consulted after the store's own.
    """

    def __init__(
        self,
        store: Store,
        rules: CacheRules,
        *,
        no_cache: bool,
        dockerfile: str = "",
        remote: RemoteCache | None = None,
    ) -> None:
        self.store = store
        self.rules = rules
        self.no_cache = no_cache
        self.dockerfile = dockerfile
        self.remote = remote

    def decide(
        self,
        ins: Instruction,
        step: Step,
        parent: State,
        args: BuildArgs,
        base: Base,
        *,
        after_miss: tuple[str, str] | None,
        first_in_stage: bool,
        ignore_cache: Reason | None = None,
        chain_missed: tuple[str, str] | None = None,
        context: Context | None = None,
        at: tuple[int, int] | None = None,
    ) -> Decision:
        """Hit or miss for ``step`` on ``parent``.

        Args:
            ins: the instruction.
            step: what its handler made of it.
            parent: the state it runs on.
            args: the build args in scope.
            base: where the stage started.
            after_miss: ``("<stage>/<index>", instruction)`` of an earlier miss in the
                stage that cascades to this step, if any.
            first_in_stage: the step runs directly on the stage's base.
            ignore_cache: the reason this step skips the lookup (``--no-cache-filter``).
            chain_missed: rules whose keys chain on keys: the earlier step of the stage
                that missed, to explain a miss on a key nothing was recorded under.
            context: the build context (a miss records its files' mtimes, so a later
                miss can tell where BuildKit would have reused stale content).
            at: ``(stage, index)`` of the step: a miss is compared only with what ran at
                this step of this stage before (None: with whatever ran on the parent).
        """
        key = self.rules.key(ins, step, parent, args, base)
        if self.no_cache:
            return Decision(key, None, reasons.no_cache())
        if ignore_cache is not None:
            return Decision(key, None, ignore_cache)
        if after_miss is not None:
            return Decision(key, None, reasons.parent_missed(*after_miss))
        if step.unknown_sources is not None:
            return Decision(key, None, reasons.sources_unknown(step.unknown_sources))
        if step.unfetched is not None:
            return Decision(key, None, reasons.git_unfetched(step.unfetched))
        hit = self.store.cache.lookup(key.key) if key.key is not None else None
        if (
            self.remote is not None
            and key.key is not None
            and (hit is None or not self._usable(hit))
        ):
            remote = self.remote.lookup(key.key, self.rules.name)
            if remote is not None:
                # Kept for the local entry it becomes once its layers are fetched.
                add_source_manifest(key.inputs, step, context)
                self.remote.note(
                    remote, key.key, self.rules.parent(parent), ins.original, key.inputs
                )
                return Decision(key, remote, None)
        if hit is not None and not self._usable(hit):
            # The entry survived but what it points at was removed (a partial prune or
            # GC): run the step again.
            return Decision(key, None, reasons.result_pruned())
        if hit is not None:
            return Decision(key, hit, None)
        add_source_manifest(key.inputs, step, context)
        history = self.store.cache.history(
            key.key or "",
            self.rules.parent(parent),
            ins.original if first_in_stage else None,
            None if at is None else StepPosition(self.dockerfile, *at),
        )
        if chain_missed is not None and not history.on_parent and not history.pruned:
            return Decision(key, None, reasons.parent_missed(*chain_missed))
        reason = reasons.explain_miss(key.inputs, history, first_in_stage=first_in_stage)
        if self.rules.name == "buildkit" and reason["kind"] == "sources_changed":
            same = [p for p in history.on_parent if p.instruction == ins.original]
            if same:
                stale = reasons.stale_paths(same[0].inputs(), key.inputs, reason)
                if stale:
                    reason = reasons.stale_reuse(reason, stale)
        return Decision(key, None, reason)

    def _usable(self, hit: CacheHit) -> bool:
        if not self.store.images.has_blob(hit.result):
            return False
        return hit.top_layer is None or self.store.layers.exists(hit.top_layer)


def add_source_manifest(inputs: dict[str, Any], step: Step, context: Context | None = None) -> None:
    """Adds the per-path manifest of a COPY/ADD's sources to ``inputs``.

    Only a miss needs it (to explain itself, and to be recorded for the next miss to
    compare with), so a cached rebuild of a large context never builds it. With the
    context given, the mtimes of its regular files go along: BuildKit's context
    transfer skips a file whose size and mtime did not change, which a later miss
    names.
    """
    if step.source_checksum is None or "sources" in inputs:
        return
    manifest: dict[str, Any] = {}
    mtimes: dict[str, int] = {}
    for src in step.sources:
        entries = src.entries()
        manifest.update(manifest_to_json(entries))
        if context is not None and src.origin == "context":
            for e in entries:
                st = context.entries.get(e.path)
                if e.type == "file" and st is not None:
                    mtimes[e.path] = st.st_mtime_ns
    checksum = step.source_checksum
    if step.content_checksums:
        checksum = ",".join(step.content_checksums)
    inputs["sources"] = {"checksum": checksum, "manifest": manifest}
    if mtimes:
        inputs["sources"]["mtimes"] = mtimes
