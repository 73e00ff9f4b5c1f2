"""The builder's walk: every stage of a Dockerfile, every instruction of a stage,
decided (hit or miss), executed when it missed, and recorded.

The walk itself decides nothing about the cache and runs nothing: handlers
(:mod:`~lamina.core.embedded.builder.handlers`) make each instruction's step, the cache
rules (:mod:`~lamina.core.embedded.builder.rules`) make its key and say how a miss
spreads, :mod:`~lamina.core.embedded.builder.decisions` looks the key up and explains a
miss, :mod:`~lamina.core.embedded.builder.execute` runs a miss and commits its layer,
and :mod:`~lamina.core.embedded.builder.records` records the build. A hit reuses the
stored result state, so a fully cached rebuild yields the same image ID.

Every build first runs a *preflight*: the same walk in dry-run mode (parse, resolve
bases and ``--from``, checksum every COPY/ADD source, read nothing but the context and
the store). Only when it passes does anything get written, so a malformed Dockerfile or
a missing source leaves the store exactly as it was. ``--dry-run`` is the preflight
with its decisions reported.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path

from lamina.core.context.checksum import Context, StatCache
from lamina.core.context.files import load_build_files
from lamina.core.dockerfile.args import BuildArgs, meta_values, stages_to_build
from lamina.core.dockerfile.instructions import Dockerfile, Instruction, Stage, load_dockerfile
from lamina.core.embedded.builder.base import Base, Bases
from lamina.core.embedded.builder.decisions import Decisions, add_source_manifest
from lamina.core.embedded.builder.execute import Cancelled, Executor
from lamina.core.embedded.builder.handlers import BuildingStage, Handlers
from lamina.core.embedded.builder.records import BuildLog
from lamina.core.embedded.builder.rules import CacheRules, ClassicRules, StepKey
from lamina.core.embedded.builder.scratch import Scratch
from lamina.core.embedded.builder.state import SCRATCH, State, Step
from lamina.core.embedded.builder.words import Words
from lamina.core.embedded.prune import apply_retention
from lamina.core.embedded.store import Store, normalize_tag
from lamina.core.embedded.store.cache import CacheHit
from lamina.core.errors import BuildError, LaminaError, NotFound
from lamina.core.events import (
    BuildEvent,
    BuildFailed,
    BuildFinished,
    BuildStarted,
    StepFinished,
    StepStarted,
)
from lamina.core.model import BuildRequest, StepRecord

log = logging.getLogger(__name__)

# ("<stage>/<index>", instruction) of the step whose miss the rest of its stage follows.
Miss = tuple[str, str]


class Walk:
    """One pass over a Dockerfile: a preflight or dry run, or the real build.

    Args:
        store: the store to build in.
        request: what to build.
        dockerfile: the parsed Dockerfile.
        dockerfile_path: where it was read from (errors name it).
        context: the build context.
        scratch: the build's scratch directory (shared by the preflight and the build).
        rules: the cache rules.
        dry_run: decide every step without executing or recording anything.
        cancel: set to stop the walk.
        build_log: the build's record (a dry run records nothing).
    """

    def __init__(
        self,
        store: Store,
        request: BuildRequest,
        dockerfile: Dockerfile,
        dockerfile_path: Path,
        context: Context,
        scratch: Scratch,
        *,
        rules: CacheRules,
        dry_run: bool,
        cancel: threading.Event | None,
        build_log: BuildLog | None = None,
    ) -> None:
        self.store = store
        self.request = request
        self.df = dockerfile
        self.rules = rules
        self.dry_run = dry_run
        self.cancel = cancel
        self.build_log = build_log or BuildLog(store)
        self.words = Words(dockerfile_path, dockerfile.escape)
        # The final state of each stage built so far; later stages and COPY --from read it.
        self.built: dict[int, State] = {}
        self.bases = Bases(store, self.words, dockerfile.stages, self.built)
        self.handlers = Handlers(store, self.words, context, scratch, dockerfile.stages, self.built)
        self.decisions = Decisions(
            store, rules, no_cache=request.no_cache, dockerfile=str(dockerfile_path)
        )
        self.executor = Executor(store, self.words, context, cancel, request.network)
        self.final: State | None = None
        self.final_base: str | None = None

    def run(self) -> Iterator[BuildEvent]:
        """Walks the stages up to the target, yielding step events.

        Raises:
            LaminaError: a step cannot be prepared or fails.
            Cancelled: ``cancel`` was set.
        """
        meta = meta_values(self.df, self.request.build_args)
        for number in stages_to_build(self.df, self.request.target):
            yield from self._stage(number, self.df.stages[number], meta)

    def _stage(
        self, number: int, stage: Stage, meta: dict[str, str | None]
    ) -> Iterator[BuildEvent]:
        base = self.bases.resolve(number, stage, meta)
        from_step = StepRecord(number, 0, base.instruction.original, None, None)
        yield StepStarted(number, 0, from_step.instruction)
        self.build_log.step(from_step, None)
        yield StepFinished(from_step)
        scope = BuildingStage(number, BuildArgs(self.request.build_args, meta))
        state = base.state
        missed: Miss | None = None
        for index, instruction in enumerate((*base.triggers, *stage.instructions), start=1):
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled()
            state, missed = yield from self._step(scope, index, instruction, state, base, missed)
        self.built[number] = state
        self.final, self.final_base = state, base.image

    def _step(
        self,
        scope: BuildingStage,
        index: int,
        ins: Instruction,
        state: State,
        base: Base,
        missed: Miss | None,
    ) -> Generator[BuildEvent, None, tuple[State, Miss | None]]:
        """One instruction: its events, the state after it, and the stage's first miss."""
        number = scope.number
        yield StepStarted(number, index, ins.original)
        started = time.monotonic()
        step = self.handlers.prepare(scope, ins, state)
        key: str | None = None
        if not self.rules.caches(ins):
            # Applied to the state with no cache decision of its own.
            state, layer = yield from self._apply(scope, index, ins, state, step)
            record = StepRecord(
                number,
                index,
                ins.original,
                None,
                None,
                time.monotonic() - started,
                layer=layer,
                size=self._layer_size(layer),
            )
        else:
            decision = self.decisions.decide(
                ins,
                step,
                state,
                scope.args,
                base,
                after_miss=missed,
                first_in_stage=index == 1,
                at=(number, index),
            )
            key = decision.key.key
            if decision.hit is not None:
                hit = decision.hit
                if not self.dry_run and key is not None:
                    self.store.cache.touch(key)
                state = State(hit.result, self.store.images.get_config(hit.result), hit.top_layer)
                record = StepRecord(
                    number,
                    index,
                    ins.original,
                    True,
                    None,
                    time.monotonic() - started,
                    layer=hit.top_layer if step.layer else None,
                    size=self._layer_size(hit.top_layer) if step.layer else 0,
                )
            else:
                if missed is None and self.rules.cascades(ins):
                    missed = (f"{number}/{index}", ins.original)
                parent = state
                state, layer = yield from self._apply(scope, index, ins, parent, step)
                if not self.dry_run:
                    self._remember(decision.key, ins, step, parent, state)
                record = StepRecord(
                    number,
                    index,
                    ins.original,
                    False,
                    decision.reason,
                    0.0 if self.dry_run else time.monotonic() - started,
                    layer=layer,
                    size=self._layer_size(layer),
                )
        self.build_log.step(record, key)
        yield StepFinished(record)
        return state, missed

    def _apply(
        self, scope: BuildingStage, index: int, ins: Instruction, state: State, step: Step
    ) -> Generator[BuildEvent, None, tuple[State, str | None]]:
        """Executes a step (a dry run predicts it): the new state and the layer made."""
        if self.dry_run:
            return self.executor.predict(ins, state, step), None
        executed = yield from self.executor.execute(
            scope.number, index, ins, state, step, scope.args
        )
        return executed.state, executed.layer

    def _remember(
        self, key: StepKey, ins: Instruction, step: Step, parent: State, result: State
    ) -> None:
        """Records a missed step's result in the cache, for the next build to hit."""
        if key.key is None or parent.id is None or result.id is None:
            return
        add_source_manifest(key.inputs, step)
        self.store.cache.record(
            key.key,
            parent.id,
            ins.original,
            key.inputs,
            CacheHit(result.id, result.chain),
            self.build_log.build_id,
        )

    def _layer_size(self, chain: str | None) -> int:
        if not chain:
            return 0
        try:
            return self.store.layers.get(chain).size
        except NotFound:
            return 0


# -- the entry point ----------------------------------------------------------------------


def run_build(
    store: Store,
    request: BuildRequest,
    cancel: threading.Event | None = None,
    *,
    rules: CacheRules | None = None,
) -> Iterator[BuildEvent]:
    """Builds (or with ``request.dry_run`` predicts) an image, yielding progress events.

    Nothing is written before a preflight (parse, resolve bases and ``--from``,
    checksum every COPY/ADD source) passes; a failure then ends the iterator with
    ``BuildFailed(build_id=0)`` and the store untouched. A failing step ends it with
    ``BuildFailed`` naming the step; cache entries of the steps that succeeded stay.

    Args:
        store: the store to build in.
        request: what to build.
        cancel: set to stop the build (ends with ``BuildFailed(cancelled=True)``).
        rules: the cache rules (Docker's classic builder's by default).

    Yields:
        ``BuildStarted``, then per instruction ``StepStarted``, ``StepOutput``...,
        ``StepFinished``, then ``BuildFinished`` or ``BuildFailed``.
    """
    # Always an event, so an interrupted caller can stop a running RUN.
    cancel = cancel if cancel is not None else threading.Event()
    with Scratch() as scratch:
        yield from _build(store, request, cancel, rules or ClassicRules(), scratch)


def _build(
    store: Store,
    request: BuildRequest,
    cancel: threading.Event,
    rules: CacheRules,
    scratch: Scratch,
) -> Iterator[BuildEvent]:
    """The preflight, then (unless this is a dry run) the recorded build."""
    try:
        files = load_build_files(request.context, request.dockerfile)
        df_path, context = files.dockerfile, files.context
        dockerfile = load_dockerfile(files.text, str(df_path))
        context.stat_cache = StatCache(store.stat_cache)
        preflight = Walk(
            store,
            request,
            dockerfile,
            df_path,
            context,
            scratch,
            rules=rules,
            dry_run=True,
            cancel=cancel,
        )
        planned = list(preflight.run())
    except LaminaError as exc:
        yield BuildFailed(0, str(exc))
        return
    except Cancelled:
        yield BuildFailed(0, "build cancelled", cancelled=True)
        return
    steps_total = sum(1 for e in planned if isinstance(e, StepFinished))
    if request.dry_run:
        yield BuildStarted(0, str(df_path), str(Path(request.context)), steps_total)
        yield from planned
        yield BuildFinished(0, None, tuple(request.tags))
        return
    # Checks that cannot wait until the image is made: bad tags are usage errors.
    try:
        tags = tuple(normalize_tag(t) for t in request.tags)
    except LaminaError as exc:
        yield BuildFailed(0, str(exc))
        return
    context.stat_cache.flush()
    record = BuildLog.start(store, request, df_path)
    yield BuildStarted(record.build_id, str(df_path), str(Path(request.context)), steps_total)
    walk = Walk(
        store,
        request,
        dockerfile,
        df_path,
        context,
        scratch,
        rules=rules,
        dry_run=False,
        cancel=cancel,
        build_log=record,
    )
    yield from _recorded(store, walk, record, tags, cancel)


def _recorded(
    store: Store,
    walk: Walk,
    record: BuildLog,
    tags: tuple[str, ...],
    cancel: threading.Event,
) -> Iterator[BuildEvent]:
    """The build proper: the walk, then the image and its tags, and how it ended."""
    build_id = record.build_id
    try:
        yield from walk.run()
        final = walk.final
        assert final is not None and final.id is not None
        image_id = final.id
        if image_id == SCRATCH:
            raise BuildError("the build produced no image (FROM scratch with no steps)")
        store.images.add_image(image_id, parent=walk.final_base)
        for tag in tags:
            store.images.tag(image_id, tag)
        record.finish("ok", image_id)
        _apply_retention(store)
        yield BuildFinished(build_id, image_id, tags)
    except (Cancelled, KeyboardInterrupt):
        cancel.set()
        record.finish("cancelled", None, "build cancelled")
        yield BuildFailed(build_id, "build cancelled", cancelled=True)
    except LaminaError as exc:
        cancelled = cancel.is_set()
        record.finish("cancelled" if cancelled else "failed", None, str(exc))
        yield BuildFailed(
            build_id, "build cancelled" if cancelled else str(exc), cancelled=cancelled
        )


def _apply_retention(store: Store) -> None:
    """Applies the cache policy of config.toml after a successful build.

    A broken config file must not fail a build that succeeded: it is logged instead.
    """
    try:
        result = apply_retention(store)
    except LaminaError as exc:
        log.warning("cache retention policy not applied: %s", exc)
        return
    if result is not None and result.reclaimed_bytes:
        log.info("cache retention policy reclaimed %d bytes", result.reclaimed_bytes)


__all__ = ["Walk", "run_build"]
