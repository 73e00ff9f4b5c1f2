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

import concurrent.futures
import copy
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lamina.core.accounting import reasons
from lamina.core.context.checksum import Context, StatCache
from lamina.core.context.files import load_build_files
from lamina.core.digest import chain_ids
from lamina.core.dockerfile.args import BuildArgs, meta_values, platform_args, stages_to_build
from lamina.core.dockerfile.instructions import Dockerfile, Instruction, Stage, load_dockerfile
from lamina.core.dockerfile.reachable import dependencies, needed_stages
from lamina.core.embedded.builder.base import Base, Bases, stage_index
from lamina.core.embedded.builder.decisions import Decision, Decisions, add_source_manifest
from lamina.core.embedded.builder.execute import Cancelled, Executor, RunOptions
from lamina.core.embedded.builder.handlers import BuildingStage, Handlers
from lamina.core.embedded.builder.records import BuildLog
from lamina.core.embedded.builder.rootfs import RootFS, layer_stack
from lamina.core.embedded.builder.rules import CacheRules, StepKey, linked_key, rules_for
from lamina.core.embedded.builder.scratch import Scratch
from lamina.core.embedded.builder.state import SCRATCH, State, Step
from lamina.core.embedded.builder.words import Words
from lamina.core.embedded.remotecache import KeyedBuildLog, RemoteCache, RemoteHit, finish_export
from lamina.core.embedded.store import Store, normalize_tag
from lamina.core.embedded.store.cache import CacheHit
from lamina.core.errors import BuildError, LaminaError, NotFound, UsageError
from lamina.core.events import (
    BuildEvent,
    BuildFailed,
    BuildFinished,
    BuildStarted,
    StepFinished,
    StepStarted,
)
from lamina.core.model import BuildRequest, Reason, StepRecord
from lamina.core.registry.manifests import host_platform
from lamina.core.settings import default_builder, load_config

log = logging.getLogger(__name__)

# ("<stage>/<index>", instruction) of the step whose miss the rest of its stage follows.
Miss = tuple[str, str]


class _Shared:
    """A step whose key one stage of this build decided first (BuildKit merges the
    same op on the same input into one vertex): the others wait for its state."""

    def __init__(self, owner: str, instruction: str) -> None:
        self.owner = owner
        self.instruction = instruction
        self.done = threading.Event()
        self.result: tuple[str | None, str | None, bool] | None = None


class _Stop(threading.Event):
    """What the build's steps watch: set when a stage of the build failed, and seen set
    whenever the caller's cancel is.

    The caller's event is only ever read: a failing stage must neither look like the
    user's cancel to the caller nor clear a cancel the user gave meanwhile, and the
    other stages stop whether or not the caller passed an event.
    """

    def __init__(self, cancel: threading.Event | None) -> None:
        super().__init__()
        self.cancel = cancel

    def is_set(self) -> bool:
        return super().is_set() or (self.cancel is not None and self.cancel.is_set())

    def wait(self, timeout: float | None = None) -> bool:
        # The caller's event cannot wake this one: poll both, a little at a time.
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                return False
            super().wait(left)
        return True


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
        remote: the caches of ``--cache-from`` (see ``remotecache`` for when a remote
            hit's layers are fetched).
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
        remote: RemoteCache | None = None,
    ) -> None:
        self.store = store
        self.remote = remote
        self.request = request
        self.df = dockerfile
        self.rules = rules
        self.dry_run = dry_run
        self.cancel = cancel
        # Set by the first stage of a parallel build that fails: the others stop.
        self.stop = _Stop(cancel)
        self.context = context
        self.build_log = build_log or BuildLog(store)
        self.words = Words(dockerfile_path, dockerfile.escape)
        # The final state of each stage built so far; later stages and COPY --from read it.
        self.built: dict[int, State] = {}
        self.bases = Bases(
            store, self.words, dockerfile.stages, self.built, request.base_substitutes
        )
        self.handlers = Handlers(
            store,
            self.words,
            context,
            scratch,
            dockerfile.stages,
            self.built,
            rules,
            self.bases.image,
        )
        self.decisions = Decisions(
            store,
            rules,
            no_cache=request.no_cache,
            dockerfile=str(dockerfile_path),
            remote=remote,
        )
        self.executor = Executor(
            store,
            self.words,
            context,
            self.stop,
            request.network,
            RunOptions(
                rules.name,
                request.secrets,
                request.ssh,
                self._mount_root,
                self.build_log.build_id,
            ),
        )
        self.filtered = {name.lower() for name in request.no_cache_filter}
        self.final: State | None = None
        self.final_base: str | None = None
        self._shared: dict[str, _Shared] = {}
        self._lock = threading.Lock()
        # Parallel builds: the steps BuildKit's definition already makes one vertex with
        # an earlier stage's step, and the keys those earlier steps claimed.
        self._twins: dict[tuple[int, int], tuple[int, int]] = {}
        self._claims: dict[tuple[int, int], str | None] = {}
        self._claimed = threading.Condition(self._lock)

    def run(self) -> Iterator[BuildEvent]:
        """Walks the stages the target needs, yielding step events.

        Raises:
            LaminaError: a step cannot be prepared or fails.
            Cancelled: ``cancel`` was set.
        """
        # BuildKit builds for the host here: the build's and the target's platform.
        predefined = platform_args(str(host_platform())) if self.rules.platform_args else None
        meta = meta_values(self.df, self.request.build_args, predefined)
        order = stages_to_build(self.df, self.request.target)
        if self.filtered and self.rules.name == "classic":
            raise UsageError("--no-cache-filter needs BuildKit's rules (--builder buildkit)")
        needed = (
            needed_stages(self.df, self.request.target, meta)
            if self.rules.needed_stages_only
            else order
        )
        self.target = order[-1]
        for number in order:
            if number not in needed:
                yield from self._skipped(number, self.df.stages[number])
        if self.rules.needed_stages_only and not self.dry_run and len(needed) > 1:
            yield from self._parallel(needed, meta)
            return
        for number in needed:
            yield from self._stage(number, self.df.stages[number], meta)

    def _skipped(self, number: int, stage: Stage) -> Iterator[BuildEvent]:
        """A stage BuildKit does not build: its FROM, with the note, and nothing else."""
        name = stage.name or str(number)
        reason = reasons.stage_skipped(name)
        record = StepRecord(
            number,
            0,
            stage.from_instruction.original,
            None,
            reason,
            other=reasons.contrast(self.rules.name, "FROM", None, reason),
        )
        yield StepStarted(number, 0, record.instruction)
        self.build_log.step(record, None)
        yield StepFinished(record)

    def _parallel(self, needed: list[int], meta: dict[str, str | None]) -> Iterator[BuildEvent]:
        """Builds independent stages at once (at most one per CPU), each as soon as the
        stages it reads are built; their events are yielded as they come."""
        deps = {n: dependencies(self.df, n, meta) & set(needed) for n in needed}
        events: queue.Queue[tuple[int, BuildEvent | None, BaseException | None]] = queue.Queue()
        done: set[int] = set()
        running: set[int] = set()
        failure: BaseException | None = None
        workers = max(1, min(os.cpu_count() or 1, len(needed)))
        self._twins = twin_steps(self.df, needed, deps, self.filtered)

        def work(number: int) -> None:
            try:
                for event in self._stage(number, self.df.stages[number], meta):
                    events.put((number, event, None))
                events.put((number, None, None))
            except BaseException as exc:  # noqa: BLE001 - handed to the walking thread
                events.put((number, None, exc))
            finally:
                self._stage_ended(number)

        with concurrent.futures.ThreadPoolExecutor(workers, "lamina-stage") as pool:
            try:
                while len(done) < len(needed):
                    if failure is None:
                        for n in needed:
                            if n not in done and n not in running and deps[n] <= done:
                                running.add(n)
                                pool.submit(work, n)
                    if not running:
                        break
                    number, event, error = events.get()
                    if event is not None:
                        yield event
                        continue
                    running.discard(number)
                    done.add(number)
                    if error is not None and failure is None:
                        failure = error
                        # The other stages stop: a running RUN is killed, the rest stop
                        # at their next step, and no stage starts after this.
                        self.stop.set()
            except BaseException:
                # Ctrl-C, or the caller stopped reading the events: the stages must not
                # run on (the pool waits for them before this propagates).
                self.stop.set()
                raise
        if failure is not None:
            raise failure

    def _mount_root(self, ref: str) -> RootFS | None:
        """The files ``RUN --mount=from=ref`` reads: a built stage, or an image."""
        idx = stage_index(self.df.stages, ref, len(self.df.stages))
        if idx is not None:
            state = self.built.get(idx)
            if state is None or not state.chain_known:
                return None
            self._materialize(state)
            return layer_stack(self.store.layers, state.chain)
        try:
            image_id = self.store.images.resolve(ref)
        except NotFound:
            return None
        chain = self.store.images.chain_of(self.store.images.get_config(image_id))
        return layer_stack(self.store.layers, chain[-1] if chain else None)

    def _stage(
        self, number: int, stage: Stage, meta: dict[str, str | None]
    ) -> Iterator[BuildEvent]:
        base = self.bases.resolve(number, stage, meta)
        self.build_log.base(number, base.id)
        from_step = StepRecord(number, 0, base.instruction.original, None, None)
        yield StepStarted(number, 0, from_step.instruction)
        self.build_log.step(from_step, None)
        yield StepFinished(from_step)
        scope = BuildingStage(number, BuildArgs(self.request.build_args, meta))
        state = base.state
        if state.key is None:
            state.key = base.id
        ignore: Reason | None = None
        if stage.name and stage.name in self.filtered:
            ignore = reasons.no_cache_filter(stage.name)
        walked = _Walked(ignore=ignore)
        for index, instruction in enumerate((*base.triggers, *stage.instructions), start=1):
            if self.stop.is_set():
                raise Cancelled()
            state = yield from self._step(scope, index, instruction, state, base, walked)
        if state.id is None and not self.dry_run:
            # BuildKit's rules apply image settings without committing each of them.
            state = State(
                self.store.images.put_config(state.doc), state.doc, state.chain, key=state.key
            )
        self.built[number] = state
        if number == self.target:
            self._materialize(state)
            self.final, self.final_base = state, base.image

    def _step(
        self,
        scope: BuildingStage,
        index: int,
        ins: Instruction,
        state: State,
        base: Base,
        walked: _Walked,
    ) -> Generator[BuildEvent, None, State]:
        """One instruction: its events, and the state after it."""
        number = scope.number
        yield StepStarted(number, index, ins.original)
        started = time.monotonic()
        self._files_read(number, ins, state)
        step = self.handlers.prepare(scope, ins, state)
        if step.unfetched is not None and not self.request.dry_run:
            # A dry run reports the step as unknown; a build (its preflight first) stops.
            raise BuildError(
                f"{self.words.where(ins)}: ADD: {step.unfetched}: lamina does not fetch git"
                " repositories (ADD <git ref>); clone it into the build context instead"
            )
        if step.sources and not self.dry_run:
            self.build_log.sources(step.sources, self.context)
        key: str | None = None
        builder = self.rules.name
        if not self.rules.caches(ins):
            # Applied to the state with no cache decision of its own.
            if self.rules.hit_keeps_config:
                state, layer = yield from self._apply(scope, index, ins, state, step)
            else:
                state, layer = _settings(state, step), None
            record = StepRecord(
                number,
                index,
                ins.original,
                None,
                None,
                time.monotonic() - started,
                layer=layer,
                size=self._layer_size(layer),
                other=reasons.contrast(builder, ins.keyword, None, None),
            )
            self.build_log.step(record, None)
            yield StepFinished(record)
            return state
        decision = self.decisions.decide(
            ins,
            step,
            state,
            scope.args,
            base,
            after_miss=walked.missed,
            first_in_stage=index == 1,
            ignore_cache=walked.ignore,
            # A linked copy's key does not chain on the step that missed above it.
            chain_missed=None if self.rules.links(ins) else walked.chain_missed,
            context=self.context,
            at=(number, index),
        )
        key = decision.key.key
        position = (number, index - len(base.triggers))
        self._await_twin(position)
        shared = self._share(key, f"{number}/{index}", ins.original)
        self._claim(position, key)
        if shared is not None:
            state = yield from self._merged(scope, index, ins, state, step, key, shared, started)
            walked.chain_missed = None
            return state
        try:
            state, record = yield from self._decided(
                scope, index, ins, state, step, base, decision, walked, started
            )
        except BaseException:
            self._release(key, None)
            raise
        # The step's own finish reaches the caller before the steps merged into it
        # finish: a twin waits until this one's event is out.
        try:
            self.build_log.step(record, key)
            yield StepFinished(record)
        finally:
            self._release(key, state)
        return state

    def _decided(
        self,
        scope: BuildingStage,
        index: int,
        ins: Instruction,
        state: State,
        step: Step,
        base: Base,
        decision: Decision,
        walked: _Walked,
        started: float,
    ) -> Generator[BuildEvent, None, tuple[State, StepRecord]]:
        number = scope.number
        key = decision.key.key
        builder = self.rules.name
        if decision.hit is not None:
            hit = decision.hit
            parent = state
            links = self.rules.links(ins)
            if not self.dry_run and key is not None:
                self.store.cache.touch(key)
            note: Reason | None = None
            if isinstance(hit, RemoteHit):
                note = reasons.remote_cache(hit.ref)
            if self.rules.hit_keeps_config:
                state = State(hit.result, self._config_of(hit), hit.top_layer)
            else:
                if key is not None:
                    old = self.store.cache.recorded_config(key)
                    new = decision.key.inputs.get("config") or {}
                    if old is not None:
                        note = reasons.settings_not_keyed(ins.keyword, old, new)
                if links:
                    if isinstance(hit, RemoteHit) and self.remote is not None and not self.dry_run:
                        # Relinking reads the stored layer: fetch the remote one first.
                        self.remote.materialize(
                            self.store, hit.doc(), self.build_log.build_id, self.stop
                        )
                    state = self._link(parent, step, hit)
                else:
                    state = self._rebase(state, step, hit)
            if links:
                # Reused whatever changed below it; the next step chains on both, and
                # a miss above still explains the misses after it.
                state.key = linked_key(parent.key, key)
            else:
                state.key = key
                walked.chain_missed = None
            if isinstance(hit, RemoteHit) and self.dry_run:
                # Its layers are not in the store: what reads them cannot be predicted.
                state.chain_known = False
            top = state.chain if links else hit.top_layer
            record = StepRecord(
                number,
                index,
                ins.original,
                True,
                note,
                time.monotonic() - started,
                layer=top if step.layer else None,
                size=self._layer_size(top) if step.layer else 0,
                other=reasons.contrast(builder, ins.keyword, True, note),
            )
            return state, record
        first_keyword: str | None = None
        if walked.missed is None and self.rules.cascades(ins):
            walked.missed = (f"{number}/{index}", ins.original)
            # Only a setting that changed since its entry is a cascade BuildKit would not
            # have: a first build or a pruned entry misses under both.
            kind = decision.reason["kind"] if decision.reason is not None else None
            changed = kind in ("instruction_changed", "config_changed")
            walked.missed_keyword = ins.keyword if changed else None
        elif walked.missed is not None:
            first_keyword = walked.missed_keyword
        if not self.rules.hit_keeps_config and walked.chain_missed is None:
            walked.chain_missed = (f"{number}/{index}", ins.original)
        parent = state
        fresh = decision.reason is not None and decision.reason.get("kind") == "no_cache"
        state, layer = yield from self._apply(scope, index, ins, parent, step, fresh)
        state.key = linked_key(parent.key, key) if self.rules.links(ins) else key
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
            other=reasons.contrast(builder, ins.keyword, False, decision.reason, first_keyword),
        )
        return state, record

    def _share(self, key: str | None, where: str, instruction: str) -> _Shared | None:
        """The step of this build that already has ``key`` (None: this one is first)."""
        if not self.rules.merges or key is None:
            return None
        with self._lock:
            shared = self._shared.get(key)
            if shared is None:
                self._shared[key] = _Shared(where, instruction)
                return None
            return shared

    def _await_twin(self, position: tuple[int, int]) -> None:
        """Waits until the earlier step this one is a twin of has claimed its key.

        BuildKit names a merged vertex after the first stage that defines it, whichever
        stage's thread gets there first here: the earlier step always runs, the later
        one is the merged step.
        """
        twin = self._twins.get(position)
        if twin is None:
            return
        with self._claimed:
            while twin not in self._claims:
                if self.stop.is_set():
                    raise Cancelled()
                self._claimed.wait(0.1)

    def _claim(self, position: tuple[int, int], key: str | None) -> None:
        if not self._twins:
            return
        with self._claimed:
            self._claims[position] = key
            self._claimed.notify_all()

    def _stage_ended(self, number: int) -> None:
        """A stage finished or failed: its twins stop waiting for steps it never reached."""
        if not self._twins:
            return
        with self._claimed:
            for twin in self._twins.values():
                if twin[0] == number:
                    self._claims.setdefault(twin, None)
            self._claimed.notify_all()

    def _release(self, key: str | None, state: State | None) -> None:
        if not self.rules.merges or key is None:
            return
        with self._lock:
            shared = self._shared.get(key)
        if shared is not None and not shared.done.is_set():
            if state is not None:
                shared.result = (state.id, state.chain, state.chain_known)
            shared.done.set()

    def _merged(
        self,
        scope: BuildingStage,
        index: int,
        ins: Instruction,
        state: State,
        step: Step,
        key: str | None,
        shared: _Shared,
        started: float,
    ) -> Generator[BuildEvent, None, State]:
        """A step identical to one another stage of this build decided: its result."""
        while not shared.done.wait(0.1):
            if self.stop.is_set():
                raise Cancelled()
        if shared.result is None:
            raise BuildError(
                f"{self.words.where(ins)}: {ins.keyword}: the identical step {shared.owner} failed"
            )
        result_id, chain, known = shared.result
        parent_key = state.key
        if result_id is not None and self.rules.links(ins):
            # The same linked copy on another stage's parent: its layer, on ours.
            state = self._link(state, step, CacheHit(result_id, chain))
        elif result_id is not None:
            hit = CacheHit(result_id, chain)
            state = self._rebase(state, step, hit)
        else:
            doc = copy.deepcopy(state.doc)
            doc["config"] = copy.deepcopy(step.new_config)
            state = State(None, doc, chain, known)
        state.key = linked_key(parent_key, key) if self.rules.links(ins) else key
        note = reasons.merged(shared.owner, shared.instruction)
        record = StepRecord(
            scope.number,
            index,
            ins.original,
            True,
            note,
            time.monotonic() - started,
            layer=state.chain if step.layer else None,
            size=self._layer_size(state.chain) if step.layer else 0,
            other=reasons.contrast(self.rules.name, ins.keyword, True, note),
        )
        self.build_log.step(record, key)
        yield StepFinished(record)
        return state

    def _rebase(self, state: State, step: Step, hit: CacheHit) -> State:
        """A hit under rules whose hits keep only the filesystem: the stored result's
        layers under this build's config, with the stored entry's history times (so a
        fully cached rebuild makes the same image)."""
        stored = self._config_of(hit)
        doc = copy.deepcopy(state.doc)
        doc["config"] = {k: v for k, v in step.new_config.items() if v is not None}
        ours = list((doc.get("rootfs") or {}).get("diff_ids") or [])
        theirs = list((stored.get("rootfs") or {}).get("diff_ids") or [])
        history = list(doc.get("history") or [])
        stored_history = list(stored.get("history") or [])
        last = stored_history[-1] if stored_history else {}
        if theirs[: len(ours)] == ours and len(theirs) - len(ours) <= 1:
            entry: dict[str, Any] = {
                "created": last.get("created", stored.get("created")),
                "created_by": step.created_by,
            }
            if len(theirs) == len(ours):
                entry["empty_layer"] = True
            history.append(entry)
        else:
            # The same step on other layers (a COPY --from that converged): the stored
            # filesystem, with its own history.
            history = stored_history
        doc["history"] = history
        doc.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"] = theirs
        if "created" in stored:
            doc["created"] = stored["created"]
        return State(None, doc, hit.top_layer)

    def _link(self, parent: State, step: Step, hit: CacheHit) -> State:
        """A ``COPY --link`` hit: the stored layer (the same diffID) on this build's
        parent, whatever the parent it was made on, as BuildKit merges a linked copy
        onto its parent. The layer is registered under its new chainID when the store
        lacks it (a dry run only predicts that)."""
        stored = self._config_of(hit)
        theirs = list((stored.get("rootfs") or {}).get("diff_ids") or [])
        stored_history = list(stored.get("history") or [])
        doc = copy.deepcopy(parent.doc)
        doc["config"] = {k: v for k, v in step.new_config.items() if v is not None}
        ours = list((doc.get("rootfs") or {}).get("diff_ids") or [])
        last = stored_history[-1] if stored_history else {}
        if hit.top_layer is None or not theirs:
            raise BuildError(f"{step.created_by}: the cached linked copy has no layer")
        diff_id = theirs[-1]
        if not parent.chain_known:
            # A dry run after a miss: the layers below are not known, nor the chain.
            chain: str | None = None
        elif parent.chain is None:
            chain = diff_id
        else:
            chain = chain_ids([parent.chain, diff_id])[-1]
        known = chain is not None
        if chain is not None and not self.store.layers.exists(chain):
            if self.dry_run:
                chain, known = None, False
            else:
                chain = self._relink(hit.top_layer, parent.chain, diff_id, step.created_by)
        doc.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"] = ours + [diff_id]
        history = list(doc.get("history") or [])
        history.append(
            {"created": last.get("created", stored.get("created")), "created_by": step.created_by}
        )
        doc["history"] = history
        if "created" in stored:
            doc["created"] = stored["created"]
        return State(None, doc, chain, known)

    def _relink(self, layer: str, parent: str | None, diff_id: str, created_by: str) -> str:
        """Commits the bytes of ``layer`` again on ``parent``: the same tar (so the same
        diffID), under the chainID it has there."""
        with self.store.tmpdir("link") as work:
            tar = work / "layer.tar"
            with open(tar, "wb") as out:
                self.store.layers.write_tar(layer, out)
            with open(tar, "rb") as stream:
                info = self.store.layers.commit_tar(stream, parent, created_by, "linked layer")
        if info.diff_id != diff_id:
            raise BuildError(f"{created_by}: the linked layer changed: {info.diff_id} != {diff_id}")
        return info.chain_id

    def _apply(
        self,
        scope: BuildingStage,
        index: int,
        ins: Instruction,
        state: State,
        step: Step,
        fresh_mounts: bool = False,
    ) -> Generator[BuildEvent, None, tuple[State, str | None]]:
        """Executes a step (a dry run predicts it): the new state and the layer made."""
        if self.dry_run:
            return self.executor.predict(ins, state, step), None
        self._materialize(state)
        executed = yield from self.executor.execute(
            scope.number, index, ins, state, step, scope.args, fresh_mounts=fresh_mounts
        )
        return executed.state, executed.layer

    def _remember(
        self, key: StepKey, ins: Instruction, step: Step, parent: State, result: State
    ) -> None:
        """Records a missed step's result in the cache, for the next build to hit."""
        chained = self.rules.parent(parent)
        if key.key is None or chained is None or result.id is None:
            return
        add_source_manifest(key.inputs, step, self.context)
        self.store.cache.record(
            key.key,
            chained,
            ins.original,
            key.inputs,
            CacheHit(result.id, result.chain),
            self.build_log.build_id,
        )

    def _config_of(self, hit: CacheHit) -> dict[str, Any]:
        """The result config of a hit (a remote hit carries its own)."""
        if isinstance(hit, RemoteHit):
            return hit.doc()
        return self.store.images.get_config(hit.result)

    def _materialize(self, state: State) -> None:
        """Fetches the layers of a state a remote hit reached, now that they are needed."""
        if self.remote is not None and not self.dry_run:
            self.remote.materialize(self.store, state.doc, self.build_log.build_id, self.stop)

    def _files_read(self, number: int, ins: Instruction, state: State) -> None:
        """Before a step is prepared: the states whose files preparing it reads (the
        parent's users for ``--chown``, the stage ``COPY --from`` names) are fetched."""
        if self.remote is None or self.dry_run or ins.keyword not in ("COPY", "ADD"):
            return
        if ins.flag("chown"):
            self._materialize(state)
        ref = ins.flag("from")
        idx = stage_index(self.df.stages, ref, number) if ref else None
        if idx is not None and idx in self.built:
            self._materialize(self.built[idx])

    def _layer_size(self, chain: str | None) -> int:
        if not chain:
            return 0
        try:
            return self.store.layers.get(chain).size
        except NotFound:
            return 0


@dataclass
class _Walked:
    """What a stage's walk carries from step to step.

    Attributes:
        missed: the step whose miss the rest of the stage follows (cascading rules).
        missed_keyword: its instruction, when it missed for a change of its own (not a
            first build, a prune or ``--no-cache``).
        chain_missed: rules whose keys chain on keys: the last step that missed since
            the last hit (explains a miss on a key nothing was recorded under).
        ignore: the reason every step of the stage skips the lookup, if any.
    """

    missed: Miss | None = None
    missed_keyword: str | None = None
    chain_missed: Miss | None = None
    ignore: Reason | None = None


def _settings(state: State, step: Step) -> State:
    """An image setting applied without a step: the config changes, and the history
    gains its entry (timed like the state it follows, so rebuilds stay identical)."""
    doc = copy.deepcopy(state.doc)
    doc["config"] = {k: v for k, v in step.new_config.items() if v is not None}
    history = list(doc.get("history") or [])
    previous = history[-1].get("created") if history else doc.get("created")
    entry: dict[str, Any] = {"created_by": step.created_by, "empty_layer": True}
    if previous:
        entry["created"] = previous
    history.append(entry)
    doc["history"] = history
    return State(None, doc, state.chain, state.chain_known, state.key)


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
        rules: the cache rules (by default those ``request.builder`` names, else the
            configured builder's, else BuildKit's).

    Yields:
        ``BuildStarted``, then per instruction ``StepStarted``, ``StepOutput``...,
        ``StepFinished``, then ``BuildFinished`` or ``BuildFailed``.
    """
    # Always an event, so an interrupted caller can stop a running RUN.
    cancel = cancel if cancel is not None else threading.Event()
    if rules is None:
        try:
            builder = request.builder or default_builder()
        except LaminaError as exc:
            # A broken config file must not fail a build: BuildKit's rules, logged.
            log.warning("config.toml not read, building with BuildKit's rules: %s", exc)
            builder = "buildkit"
        rules = rules_for(builder)
    with Scratch() as scratch:
        yield from _build(store, request, cancel, rules, scratch)


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
        remote = RemoteCache.load(request.cache_from) if request.cache_from else None
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
            remote=remote,
        )
        planned = list(preflight.run())
    except LaminaError as exc:
        yield BuildFailed(0, str(exc))
        return
    except Cancelled:
        yield BuildFailed(0, "build cancelled", cancelled=True)
        return
    except Exception as exc:
        log.debug("build preflight failed unexpectedly", exc_info=True)
        yield BuildFailed(0, _unexpected_in(store, exc))
        return
    steps_total = sum(1 for e in planned if isinstance(e, StepFinished))
    if request.dry_run:
        yield BuildStarted(0, str(df_path), str(Path(request.context)), steps_total, rules.name)
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
    logs = KeyedBuildLog if request.cache_to is not None else BuildLog
    record = logs.start(store, request, df_path, rules.name)
    yield BuildStarted(
        record.build_id, str(df_path), str(Path(request.context)), steps_total, rules.name
    )
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
        remote=remote,
    )
    for event in _recorded(store, walk, record, tags, cancel):
        if isinstance(event, BuildFinished) and request.cache_to is not None:
            spec = request.cache_to
            yield finish_export(store, spec, record, walk.target, rules.name, event, cancel)
            continue
        yield event


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
        # What the build's own steps remembered (the paths its sources read, by tree).
        walk.context.stat_cache.flush()
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
    except GeneratorExit:
        # The caller stopped reading the events: the walk has stopped its steps, and
        # the record says so (nothing more can be yielded).
        record.finish("cancelled", None, "build cancelled")
        raise
    except LaminaError as exc:
        cancelled = cancel.is_set()
        record.finish("cancelled" if cancelled else "failed", None, str(exc))
        yield BuildFailed(
            build_id, "build cancelled" if cancelled else str(exc), cancelled=cancelled
        )
    except Exception as exc:
        # A defect, not a user error: still a finished record and one line, never a
        # build left "running" for ever (the traceback goes to the debug log).
        log.debug("build %d failed unexpectedly", build_id, exc_info=True)
        message = _unexpected_in(store, exc)
        record.finish("failed", None, message)
        yield BuildFailed(build_id, message)


def _unexpected_in(store: Store, exc: BaseException) -> str:
    """One line for an error no check foresaw: the damaged index, if that explains it."""
    damaged = store.index.damaged()
    return str(damaged) if damaged is not None else unexpected(exc)


def unexpected(exc: BaseException) -> str:
    """One line for an error no check foresaw."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return (
        f"internal error: {type(exc).__name__}: {text}"
        if text
        else (f"internal error: {type(exc).__name__}")
    )


def _apply_retention(store: Store) -> None:
    """Applies the cache policy of config.toml after a successful build.

    A broken config file must not fail a build that succeeded: it is logged instead.
    """
    try:
        # Prune and its plans load only where a policy asks for them: a cached
        # rebuild does not wait for their import.
        if not load_config().cache.enabled:
            return
        from lamina.core.embedded.prune import apply_retention

        result = apply_retention(store)
    except LaminaError as exc:
        log.warning("cache retention policy not applied: %s", exc)
        return
    if result is not None and result.reclaimed_bytes:
        log.info("cache retention policy reclaimed %d bytes", result.reclaimed_bytes)


def twin_steps(
    dockerfile: Dockerfile,
    needed: list[int],
    deps: dict[int, set[int]],
    filtered: set[str],
) -> dict[tuple[int, int], tuple[int, int]]:
    """The steps that are the same vertex as an earlier stage's step, by definition.

    Two stages with the same ``FROM`` and the same instructions up to a step define the
    same op on the same input there, which BuildKit merges before it runs anything. Each
    such step maps to the first stage's: ``(stage, n)`` to ``(earlier stage, n)``, ``n``
    counting the stage's own instructions from 1. A stage is only paired with an earlier
    one whose stages it reads are among its own (so the earlier one never waits in the
    queue behind it), and never when ``--no-cache-filter`` names either of them.

    Args:
        dockerfile: the Dockerfile.
        needed: the stages being built.
        deps: the stages each of them reads directly.
        filtered: the stage names of ``--no-cache-filter``, lowercased.
    """
    first: dict[str, tuple[int, int]] = {}
    twins: dict[tuple[int, int], tuple[int, int]] = {}
    for number in needed:
        stage = dockerfile.stages[number]
        if stage.name and stage.name.lower() in filtered:
            continue
        signature = _digest(f"FROM\0{stage.base}\0{stage.platform}")
        for n, ins in enumerate(stage.instructions, start=1):
            signature = _digest(f"{signature}\0{ins.original}")
            earlier = first.get(signature)
            if earlier is None:
                first[signature] = (number, n)
            elif deps[earlier[0]] <= deps[number]:
                twins[(number, n)] = earlier
    return twins


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
