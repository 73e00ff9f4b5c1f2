"""The builder: walks a Dockerfile's stages, decides cache hits like Docker's classic
builder, executes misses, and records builds.

A *state* is an OCI image config (``rootfs.diff_ids``, ``history``, ``config``) stored
as a blob; its digest is the parent id the next step's cache key chains on. A hit reuses
the stored result state, so a fully cached rebuild yields the same image ID. A step's
key holds what the classic builder compares (see :mod:`lamina.core.embedded.builder.keys`): the
parent state, the step's command line as Docker records it (``/bin/sh -c ...`` with
``|N K=V`` build args for RUN, ``#(nop) COPY file:<sum> in <dest>`` for COPY/ADD,
``#(nop) ENV ...`` for metadata) and the resulting config's compared fields.

Every build first runs a *preflight*: the same walk in dry-run mode (parse, resolve
bases and ``--from``, checksum every COPY/ADD source, read nothing but the context and
the store). Only when it passes does anything get written, so a malformed Dockerfile or
a missing source leaves the store exactly as it was. ``--dry-run`` is the preflight
with its decisions reported.
"""

from __future__ import annotations

import copy as _copy
import json
import logging
import os
import platform
import shutil
import tempfile
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lamina.core.accounting import reasons
from lamina.core.context.checksum import Context, StatCache, manifest_to_json, multi_checksum
from lamina.core.context.dockerignore import PatternMatcher, load_ignore_patterns
from lamina.core.dockerfile.instructions import (
    Dockerfile,
    Instruction,
    Stage,
    health_config,
    load_dockerfile,
    sources_and_dest,
)
from lamina.core.dockerfile.quote import go_quote
from lamina.core.dockerfile.shell import Lexer
from lamina.core.embedded.builder.args import BuildArgs
from lamina.core.embedded.builder.copy import (
    Source,
    apply_copy,
    context_sources,
    download,
    file_source,
    parse_chmod,
    parse_chown,
    rootfs_sources,
)
from lamina.core.embedded.builder.keys import compared_config, step_key
from lamina.core.embedded.builder.rootfs import RootFS, join, split
from lamina.core.embedded.store import Store
from lamina.core.embedded.store.cache import CacheHit
from lamina.core.errors import (
    BuildError,
    ContextError,
    DockerfileError,
    LaminaError,
    NotFound,
    RunFailed,
    UsageError,
)
from lamina.core.events import (
    BuildEvent,
    BuildFailed,
    BuildFinished,
    BuildStarted,
    StepFinished,
    StepOutput,
    StepStarted,
)
from lamina.core.model import BuildRecord, BuildRequest, Reason, StepRecord

log = logging.getLogger(__name__)

SCRATCH = "scratch"
DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
METADATA = frozenset(
    {
        "ENV", "LABEL", "EXPOSE", "USER", "VOLUME", "CMD", "ENTRYPOINT", "HEALTHCHECK",
        "SHELL", "STOPSIGNAL", "ONBUILD", "ARG", "MAINTAINER", "WORKDIR",
    }
)  # fmt: skip


# Flags the classic builder accepts (COPY --link is accepted as a no-op: lamina's layers
# are content-addressed either way).
SUPPORTED_FLAGS: dict[str, set[str]] = {
    "COPY": {"from", "chown", "chmod", "link"},
    "ADD": {"chown", "chmod", "link"},
    "FROM": {"platform"},
    "HEALTHCHECK": {"interval", "timeout", "start-period", "start-interval", "retries"},
}


class _Cancelled(Exception):
    pass


@dataclass
class _State:
    """Where a stage stands: the config digest (None when a dry run cannot know it),
    the config document, and the top layer."""

    id: str | None
    doc: dict[str, Any]
    chain: str | None
    chain_known: bool = True

    @property
    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = self.doc.setdefault("config", {})
        return cfg


@dataclass
class _StageResult:
    state: _State
    missed: bool


@dataclass
class _Step:
    """What one instruction contributes to its key, before the decision."""

    created_by: str
    cmd: list[str]
    new_config: dict[str, Any]
    sources: list[Source] = field(default_factory=list)
    source_checksum: str | None = None
    layer: bool = False
    dest: str = ""
    from_root: RootFS | None = None
    unknown_sources: str | None = None


def _now_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _scratch_doc() -> dict[str, Any]:
    return {
        "architecture": _ARCH.get(platform.machine(), platform.machine()),
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    }


def _step_label(stage: int, index: int) -> str:
    return f"{stage}/{index}"


class _Walk:
    """One pass over the Dockerfile: a preflight/dry run or the real build."""

    def __init__(
        self,
        store: Store,
        request: BuildRequest,
        dockerfile: Dockerfile,
        dockerfile_path: Path,
        context: Context,
        *,
        dry_run: bool,
        cancel: threading.Event | None,
        build_id: int = 0,
    ) -> None:
        self.store = store
        self.request = request
        self.df = dockerfile
        self.df_path = dockerfile_path
        self.ctx = context
        self.dry_run = dry_run
        self.cancel = cancel
        self.build_id = build_id
        self.lexer = Lexer(dockerfile.escape)
        self.results: dict[int, _StageResult] = {}
        self.seq = 0
        self.last_state: _State | None = None
        self.base_image: str | None = None
        self.scratch_dir: Path | None = None
        self.downloads: dict[str, tuple[Path, str]] = {}
        self.cmd_set = False
        self.last_base_image: str | None = None

    # -- helpers ------------------------------------------------------------------

    def where(self, instruction: Instruction) -> str:
        return f"{self.df_path}:{instruction.line}"

    def fail(self, instruction: Instruction, message: str) -> LaminaError:
        return BuildError(f"{self.where(instruction)}: {instruction.keyword}: {message}")

    def stages_to_build(self) -> list[int]:
        stages = self.df.stages
        if self.request.target is None:
            return list(range(len(stages)))
        target = self.request.target.lower()
        for i, stage in enumerate(stages):
            if stage.name == target:
                return list(range(i + 1))
        raise UsageError(f"target stage {self.request.target!r} could not be found")

    def meta_values(self) -> dict[str, str | None]:
        meta: dict[str, str | None] = {}
        for instruction in self.df.meta_args:
            for name, raw in instruction.env_pairs:
                if name in self.request.build_args:
                    meta[name] = self.request.build_args[name]
                elif raw is not None:
                    env = {k: v for k, v in meta.items() if v is not None}
                    meta[name] = self.expand(instruction, raw, env)
                else:
                    meta[name] = None
        return meta

    def expand(self, instruction: Instruction, word: str, env: dict[str, str]) -> str:
        try:
            return self.lexer.process_word(word, env)
        except DockerfileError as exc:
            raise DockerfileError(exc.reason, str(self.df_path), instruction.line) from None

    def expand_words(self, instruction: Instruction, word: str, env: dict[str, str]) -> list[str]:
        try:
            return self.lexer.process_words(word, env)
        except DockerfileError as exc:
            raise DockerfileError(exc.reason, str(self.df_path), instruction.line) from None

    def stage_index(self, ref: str, before: int) -> int | None:
        lowered = ref.lower()
        for i, stage in enumerate(self.df.stages[:before]):
            if stage.name == lowered:
                return i
        if ref.isdigit() and int(ref) < before:
            return int(ref)
        return None

    def rootfs(self, state: _State) -> RootFS:
        if state.chain is None:
            return RootFS([])
        chain = self.store.layers.chain(state.chain)
        return RootFS([self.store.layers.diff_path(layer.chain_id) for layer in reversed(chain)])

    # -- the walk -----------------------------------------------------------------

    def run(self) -> Iterator[BuildEvent]:
        meta = self.meta_values()
        for stage_no in self.stages_to_build():
            yield from self.run_stage(stage_no, self.df.stages[stage_no], meta)

    def resolve_base(
        self, stage_no: int, stage: Stage, meta: dict[str, str | None]
    ) -> tuple[_State, str, bool]:
        """The stage's base state, what it resolved to (for reasons), and whether a dry
        run knows it."""
        env = {k: v for k, v in meta.items() if v is not None}
        ref = self.expand(stage.from_instruction, stage.base, env)
        if ref.lower() == SCRATCH:
            return _State(SCRATCH, _scratch_doc(), None), SCRATCH, True
        idx = self.stage_index(ref, stage_no)
        if idx is not None:
            result = self.results[idx]
            doc = _copy.deepcopy(result.state.doc)
            known = result.state.id is not None
            base = _State(result.state.id, doc, result.state.chain, result.state.chain_known)
            return base, result.state.id or "", known
        try:
            image_id = self.store.images.resolve(ref)
            doc = self.store.images.get_config(image_id)
        except NotFound:
            raise DockerfileError(
                f"FROM {ref}: no such image in the store (lamina has no registry to pull"
                " from; load or import it first)",
                str(self.df_path),
                stage.from_instruction.line,
            ) from None
        chain_list = self.store.images.chain_of(doc)
        return _State(image_id, doc, chain_list[-1] if chain_list else None), image_id, True

    def run_stage(
        self, stage_no: int, stage: Stage, meta: dict[str, str | None]
    ) -> Iterator[BuildEvent]:
        state, base_id, known = self.resolve_base(stage_no, stage, meta)
        from_stage = self.stage_index(stage.base, stage_no) is not None
        base_image = base_id if base_id.startswith("sha256:") and not from_stage else None
        self.cmd_set = False
        from_text = stage.from_instruction.original
        yield StepStarted(stage_no, 0, from_text)
        self.finish_step(StepRecord(stage_no, 0, from_text, None, None), None)
        yield StepFinished(StepRecord(stage_no, 0, from_text, None, None))
        args = BuildArgs(self.request.build_args, meta)
        env0 = list(state.config.get("Env") or [])
        if not any(e.startswith("PATH=") for e in env0):
            # Like the classic builder's setDefaultPath: every stage starts with a PATH.
            state.config["Env"] = env0 + [DEFAULT_PATH]
        triggers = list(state.config.get("OnBuild") or [])
        if triggers:
            state.config["OnBuild"] = None
        instructions: list[Instruction] = []
        for trigger in triggers:
            try:
                parsed = load_dockerfile(f"FROM scratch\n{trigger}\n", str(self.df_path))
            except DockerfileError as exc:
                raise DockerfileError(
                    f"ONBUILD trigger of {stage.base} does not parse: {exc.reason}",
                    str(self.df_path),
                    stage.from_instruction.line,
                ) from None
            inner = parsed.stages[0].instructions[0]
            instructions.append(
                Instruction(
                    keyword=inner.keyword,
                    args=inner.args,
                    flags=inner.flags,
                    original=inner.original,
                    line=stage.from_instruction.line,
                    end_line=stage.from_instruction.line,
                    json_form=inner.json_form,
                    heredocs=inner.heredocs,
                    inner=inner.inner,
                    env_pairs=inner.env_pairs,
                )
            )
        instructions.extend(stage.instructions)
        missed: tuple[str, str] | None = None
        stage_missed = not known
        first = True
        for index, instruction in enumerate(instructions, start=1):
            if self.cancel is not None and self.cancel.is_set():
                raise _Cancelled()
            label = _step_label(stage_no, index)
            yield StepStarted(stage_no, index, instruction.original)
            started = time.monotonic()
            step = self.prepare(stage_no, instruction, state, args)
            inputs: dict[str, Any] = {
                "instruction": instruction.original,
                "step": {"cmd": step.cmd, "config": compared_config(step.new_config)},
                "args": args.active(list(state.config.get("Env") or [])),
                "from": from_text,
                "base": base_id if known else None,
                "config": compared_config(step.new_config),
            }
            if step.source_checksum is not None:
                inputs["step"]["sources"] = step.source_checksum
                if instruction.flag("chmod"):
                    inputs["step"]["chmod"] = instruction.flag("chmod")
            key = step_key(state.id or "", inputs["step"]) if state.id else None
            reason: Reason | None
            row = None
            if self.request.no_cache:
                reason = reasons.no_cache()
            elif missed is not None:
                reason = reasons.parent_missed(*missed)
            else:
                if key is not None and step.unknown_sources is None:
                    row = self.store.cache.lookup(key)
                if row is not None and not self._usable(row.result, row.top_layer):
                    # The entry survived but what it points at was removed (a partial
                    # prune or GC): run the step again.
                    row = None
                    reason = reasons.result_pruned()
                elif row is not None:
                    reason = None
                elif step.unknown_sources is not None:
                    reason = reasons.sources_unknown(step.unknown_sources)
                else:
                    _add_source_manifest(inputs, step)
                    history = self.store.cache.history(
                        key or "",
                        state.id,
                        inputs["instruction"] if first else None,
                    )
                    reason = reasons.explain_miss(inputs, history, first_in_stage=first)
            first = False
            output: list[str] = []
            if row is not None:
                result_id = row.result
                if not self.dry_run and key is not None:
                    self.store.cache.touch(key)
                state = _State(result_id, self.store.images.get_config(result_id), row.top_layer)
                record = StepRecord(
                    stage_no,
                    index,
                    instruction.original,
                    True,
                    None,
                    time.monotonic() - started,
                    layer=row.top_layer if step.layer else None,
                    size=self._layer_size(row.top_layer) if step.layer else 0,
                )
            else:
                if missed is None:
                    missed = (label, instruction.original)
                stage_missed = True
                if self.dry_run:
                    # A metadata miss leaves the filesystem as it was, so a dry run
                    # still knows the layers (COPY --from this stage can be predicted).
                    keeps_fs = not step.layer and not self._workdir_creates(
                        instruction, state, step
                    )
                    state = _State(
                        None,
                        self._dry_doc(state, step),
                        state.chain,
                        state.chain_known and keeps_fs,
                    )
                    record = StepRecord(stage_no, index, instruction.original, False, reason, 0.0)
                else:
                    new_state, layer = None, None
                    for item in self.execute(stage_no, index, instruction, state, step, args):
                        if isinstance(item, StepOutput):
                            output.append(item.line)
                            yield item
                        else:
                            new_state, layer = item
                    assert new_state is not None
                    _add_source_manifest(inputs, step)
                    self.record_cache(key, state, instruction, inputs, new_state)
                    state = new_state
                    record = StepRecord(
                        stage_no,
                        index,
                        instruction.original,
                        False,
                        reason,
                        time.monotonic() - started,
                        layer=layer,
                        size=self._layer_size(layer) if layer else 0,
                    )
            self.finish_step(record, key)
            yield StepFinished(record)
        self.results[stage_no] = _StageResult(state, stage_missed)
        self.last_state = state
        self.last_base_image = base_image

    def _usable(self, result: str, top_layer: str | None) -> bool:
        if not self.store.images.has_blob(result):
            return False
        return top_layer is None or self.store.layers.exists(top_layer)

    def _layer_size(self, chain: str | None) -> int:
        if not chain:
            return 0
        try:
            return self.store.layers.get(chain).size
        except NotFound:
            return 0

    def _workdir_creates(self, ins: Instruction, state: _State, step: _Step) -> bool:
        if ins.keyword != "WORKDIR":
            return False
        if not state.chain_known:
            return True
        workdir = step.new_config.get("WorkingDir") or "/"
        return workdir != "/" and not self.rootfs(state).is_dir(workdir)

    def _dry_doc(self, state: _State, step: _Step) -> dict[str, Any]:
        doc = _copy.deepcopy(state.doc)
        doc["config"] = _copy.deepcopy(step.new_config)
        return doc

    def finish_step(self, record: StepRecord, key: str | None) -> None:
        if self.dry_run:
            return
        self.seq += 1
        self.store.builds.add_step(self.build_id, self.seq, record, key)

    def record_cache(
        self,
        key: str | None,
        parent: _State,
        instruction: Instruction,
        inputs: dict[str, Any],
        result: _State,
    ) -> None:
        if key is None or result.id is None or parent.id is None:
            return
        self.store.cache.record(
            key,
            parent.id,
            instruction.original,
            inputs,
            CacheHit(result.id, result.chain),
            self.build_id,
        )

    # -- per instruction: what goes into the key ----------------------------------

    def prepare(self, stage_no: int, ins: Instruction, state: _State, args: BuildArgs) -> _Step:
        cfg = _copy.deepcopy(state.config)
        env_list = list(cfg.get("Env") or [])
        env = args.expansion_env(env_list)
        shell = list(cfg.get("Shell") or DEFAULT_SHELL)
        kw = ins.keyword
        unsupported = sorted(set(ins.flags) - SUPPORTED_FLAGS.get(kw, set()))
        if unsupported:
            # BuildKit-only flags: ignoring them would build something else silently.
            raise BuildError(
                f"{self.where(ins)}: {kw}: --{unsupported[0]} needs BuildKit; lamina builds"
                " like the classic builder"
            )

        def nop(comment: str) -> list[str]:
            return shell + ["#(nop) ", comment]

        if kw == "RUN":
            if ins.json_form:
                command = list(ins.args)
            else:
                command = shell + [self._run_text(ins)]
            keyed = args.keyed(env_list)
            # moby prefixes "|N K=V..." whenever any build arg reaches the RUN, even
            # when only undeclared proxy args do (which are left out: "|0 ...").
            cmd = [f"|{len(keyed)}", *keyed, *command] if args.active(env_list) else command
            return _Step(" ".join(cmd), cmd, cfg, layer=True)
        if kw in ("COPY", "ADD"):
            return self.prepare_copy(stage_no, ins, state, cfg, env, shell)
        if kw == "ENV":
            pairs = []
            for name, raw in ins.env_pairs:
                value = self.expand(ins, raw or "", env)
                pairs.append(f"{name}={value}")
                env_list = [e for e in env_list if e.split("=", 1)[0] != name] + [f"{name}={value}"]
                env[name] = value
            cfg["Env"] = env_list
            comment = "ENV " + " ".join(pairs)
            return _Step(" ".join(nop(comment)), nop(comment), cfg)
        if kw == "LABEL":
            labels = dict(cfg.get("Labels") or {})
            parts = []
            for name, raw in ins.env_pairs:
                key = self.expand(ins, name, env)
                value = self.expand(ins, raw or "", env)
                labels[key] = value
                parts.append(f"{key}={value}")
            cfg["Labels"] = labels
            comment = "LABEL " + " ".join(parts)
            return _Step(" ".join(nop(comment)), nop(comment), cfg)
        if kw == "ARG":
            parts = []
            for name, raw in ins.env_pairs:
                default = self.expand(ins, raw, env) if raw is not None else None
                args.declare(name, default)
                parts.append(name if raw is None else f"{name}={raw}")
            comment = "ARG " + " ".join(parts)
            return _Step(" ".join(nop(comment)), nop(comment), cfg)
        if kw == "WORKDIR":
            path = self.expand(ins, ins.args[0], env)
            workdir = join(cfg.get("WorkingDir") or "/", path).rstrip("/") or "/"
            cfg["WorkingDir"] = workdir
            # moby's dispatchWorkdir uses withCmdCommentString: one "#(nop) ..." word.
            cmd = [*shell, "#(nop) WORKDIR " + workdir]
            return _Step(" ".join(cmd), cmd, cfg)
        if kw == "USER":
            cfg["User"] = self.expand(ins, ins.args[0], env)
            comment = "USER " + cfg["User"]
        elif kw == "EXPOSE":
            ports = dict(cfg.get("ExposedPorts") or {})
            raw_ports = []
            for word in ins.args:
                for port in self.expand_words(ins, word, env):
                    raw_ports.append(port)
                    ports[port if "/" in port else f"{port}/tcp"] = {}
            cfg["ExposedPorts"] = ports
            comment = "EXPOSE " + " ".join(raw_ports)
        elif kw == "VOLUME":
            volumes = dict(cfg.get("Volumes") or {})
            vols = [self.expand(ins, v, env) for v in ins.args]
            for v in vols:
                volumes[v] = {}
            cfg["Volumes"] = volumes
            comment = "VOLUME [" + " ".join(vols) + "]"
        elif kw in ("CMD", "ENTRYPOINT"):
            command = ins.command()
            argv: list[str] = command if ins.json_form else shell + command
            if ins.json_form and not ins.args:
                argv = []
            cfg["Cmd" if kw == "CMD" else "Entrypoint"] = argv
            if kw == "CMD":
                self.cmd_set = True
            elif not self.cmd_set:
                # Docker: ENTRYPOINT drops a CMD inherited from the base image.
                cfg["Cmd"] = None
            comment = f"{kw} [" + " ".join(go_quote(c) for c in argv) + "]"
        elif kw == "SHELL":
            cfg["Shell"] = list(ins.args)
            comment = "SHELL [" + " ".join(ins.args) + "]"
        elif kw == "STOPSIGNAL":
            cfg["StopSignal"] = self.expand(ins, ins.args[0], env)
            comment = "STOPSIGNAL " + cfg["StopSignal"]
        elif kw == "HEALTHCHECK":
            hc = health_config(ins)
            if hc is None:
                cfg["Healthcheck"] = {"Test": ["NONE"]}
            else:
                check: dict[str, Any] = {"Test": list(hc.test)}
                for field_name, amount in (
                    ("Interval", hc.interval),
                    ("Timeout", hc.timeout),
                    ("StartPeriod", hc.start_period),
                    ("StartInterval", hc.start_interval),
                    ("Retries", hc.retries),
                ):
                    if amount:
                        check[field_name] = amount
                cfg["Healthcheck"] = check
            comment = "HEALTHCHECK " + json.dumps(cfg["Healthcheck"], sort_keys=True)
        elif kw == "ONBUILD":
            trigger = ins.args[0]
            cfg["OnBuild"] = list(cfg.get("OnBuild") or []) + [trigger]
            comment = "ONBUILD " + trigger
        elif kw == "MAINTAINER":
            comment = "MAINTAINER " + ins.args[0]
            step = _Step(" ".join(nop(comment)), nop(comment), cfg)
            step.new_config = cfg
            return step
        else:
            raise self.fail(ins, "instruction not supported by the builder")
        return _Step(" ".join(nop(comment)), nop(comment), cfg)

    def _run_text(self, ins: Instruction) -> str:
        text = " ".join(ins.args)
        if not ins.heredocs:
            return text
        if len(ins.heredocs) == 1 and text.strip() == f"<<{ins.heredocs[0].name}".strip():
            # A heredoc alone is the script.
            return ins.heredocs[0].content
        # Otherwise the shell reads the heredocs itself.
        body = "".join(f"{doc.content}{doc.name}\n" for doc in ins.heredocs)
        return f"{text}\n{body}"

    def prepare_copy(
        self,
        stage_no: int,
        ins: Instruction,
        state: _State,
        cfg: dict[str, Any],
        env: dict[str, str],
        shell: list[str],
    ) -> _Step:
        kw = ins.keyword
        paths, contents, raw_dest = sources_and_dest(ins)
        dest_word = self.expand(ins, raw_dest, env)
        dest = join(cfg.get("WorkingDir") or "/", dest_word)
        if raw_dest.endswith("/") and not dest.endswith("/"):
            dest += "/"
        from_ref = ins.flag("from")
        sources: list[Source] = []
        root: RootFS | None = None
        unknown: str | None = None
        try:
            if from_ref is not None and kw == "COPY":
                from_ref = self.expand(ins, from_ref, env)
                root = self.from_root(stage_no, ins, from_ref)
                if root is None:
                    # A dry run cannot know the files of a stage that runs again.
                    unknown = from_ref
                for p in paths:
                    src = self.expand(ins, p, env)
                    if root is not None:
                        sources.extend(rootfs_sources(root, src))
            else:
                for p in paths:
                    src = self.expand(ins, p, env)
                    if kw == "ADD" and src.startswith(("http://", "https://")):
                        sources.append(self.url_source(src, dest))
                    else:
                        sources.extend(context_sources(self.ctx, src, add=kw == "ADD"))
            for doc in contents:
                data = self.expand(ins, doc.data, env) if doc.expand else doc.data
                sources.append(self.heredoc_source(doc.path, data))
            if ins.flag("chmod"):
                parse_chmod(ins.flag("chmod") or "")
        except LaminaError as exc:
            raise ContextError(f"{self.where(ins)}: {kw}: {exc}") from None
        if (len(sources) > 1 or len(paths) + len(contents) > 1) and not dest.endswith("/"):
            raise ContextError(
                f"{self.where(ins)}: {kw}: with more than one source the destination must"
                f" end with '/': {raw_dest}"
            )
        checksum = multi_checksum([s.checksum for s in sources]) if sources else "unknown:"
        chown = ins.flag("chown")
        if chown and state.id is not None:
            # Resolve names now so an unknown user fails the preflight, not the build.
            try:
                parse_chown(self.rootfs(state), chown)
            except LaminaError as exc:
                raise ContextError(f"{self.where(ins)}: {kw}: {exc}") from None
        chown_part = f"--chown={chown}" if chown else ""
        # The destination as written (expanded), not joined with WORKDIR: moby's
        # performCopy comments inst.dest. A WORKDIR change is in the parent state anyway.
        comment = f"{kw} {chown_part}{checksum} in {dest_word} "
        # moby's withCmdCommentString: one "#(nop) <comment>" word (metadata steps use
        # withCmdComment, two words, hence their double space in `docker history`).
        cmd = shell + ["#(nop) " + comment]
        return _Step(
            " ".join(cmd),
            cmd,
            cfg,
            sources,
            checksum,
            layer=True,
            dest=dest,
            from_root=root,
            unknown_sources=unknown,
        )

    def from_root(self, stage_no: int, ins: Instruction, ref: str) -> RootFS | None:
        idx = self.stage_index(ref, stage_no)
        if idx is not None:
            if idx not in self.results:
                raise self.fail(ins, f"--from={ref}: stage {ref} is not built before this one")
            state = self.results[idx].state
            if not state.chain_known:
                return None
            return self.rootfs(state)
        try:
            image_id = self.store.images.resolve(ref)
        except NotFound:
            raise self.fail(ins, f"--from={ref}: no such stage or image") from None
        doc = self.store.images.get_config(image_id)
        chain = self.store.images.chain_of(doc)
        return self.rootfs(_State(image_id, doc, chain[-1] if chain else None))

    def _scratch(self) -> Path:
        if self.scratch_dir is None:
            self.scratch_dir = Path(tempfile.mkdtemp(prefix="lamina-build-"))
        return self.scratch_dir

    def heredoc_source(self, name: str, data: str) -> Source:
        path = self._scratch() / f"heredoc-{len(os.listdir(self._scratch()))}"
        path.write_text(data)
        return file_source(path, name, 0o644)

    def url_source(self, url: str, dest: str) -> Source:
        # The preflight's download is reused by the build, so both hash the same bytes.
        if url not in self.downloads:
            self.downloads[url] = download(url, self._scratch())
        path, name = self.downloads[url]
        return file_source(path, name, 0o600)

    def cleanup(self) -> None:
        if self.scratch_dir is not None:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)

    # -- executing a miss ---------------------------------------------------------

    def execute(
        self,
        stage_no: int,
        index: int,
        ins: Instruction,
        state: _State,
        step: _Step,
        args: BuildArgs,
    ) -> Iterator[StepOutput | tuple[_State, str | None]]:
        kw = ins.keyword
        layer: str | None = None
        if kw == "RUN":
            layer = yield from self.execute_run(stage_no, index, ins, state, step, args)
        elif kw in ("COPY", "ADD"):
            layer = self.execute_copy(ins, state, step)
        elif kw == "WORKDIR":
            layer = self.execute_workdir(state, step)
        new_state = self.commit_state(state, step, layer)
        yield new_state, (new_state.chain if layer is not None else None)

    def commit_state(self, state: _State, step: _Step, layer: str | None) -> _State:
        now = time.time()
        doc = _copy.deepcopy(state.doc)
        doc["created"] = _now_iso(now)
        doc["config"] = {k: v for k, v in step.new_config.items() if v is not None}
        history = list(doc.get("history") or [])
        entry: dict[str, Any] = {"created": doc["created"], "created_by": step.created_by}
        chain = state.chain
        if layer is not None:
            info = self.store.layers.get(layer)
            doc.setdefault("rootfs", {"type": "layers", "diff_ids": []})
            doc["rootfs"]["diff_ids"] = list(doc["rootfs"].get("diff_ids") or []) + [info.diff_id]
            chain = layer
        else:
            entry["empty_layer"] = True
        history.append(entry)
        doc["history"] = history
        digest = self.store.images.put_config(doc)
        return _State(digest, doc, chain)

    def execute_copy(self, ins: Instruction, state: _State, step: _Step) -> str:
        below = self.rootfs(state)
        dest = step.dest
        chown = ins.flag("chown")
        chmod = ins.flag("chmod")
        try:
            owner = parse_chown(below, chown) if chown else (0, 0)
            mode = parse_chmod(chmod) if chmod else None
        except LaminaError as exc:
            raise self.fail(ins, str(exc)) from None
        from_root = step.from_root
        with self.store.tmpdir("copy") as work:
            out = work / "layer"
            out.mkdir()
            try:
                apply_copy(
                    out,
                    below,
                    step.sources,
                    dest,
                    context=self.ctx,
                    from_root=from_root,
                    owner=owner,
                    chmod=mode,
                )
            except LaminaError as exc:
                raise self.fail(ins, str(exc)) from None
            info = self.store.layers.commit_dir(out, state.chain, step.created_by)
        return info.chain_id

    def execute_workdir(self, state: _State, step: _Step) -> str | None:
        workdir = step.new_config.get("WorkingDir") or "/"
        below = self.rootfs(state)
        if below.is_dir(workdir) or workdir == "/":
            return None
        from lamina.core.embedded.builder.copy import LayerWriter

        with self.store.tmpdir("workdir") as work:
            out = work / "layer"
            out.mkdir()
            LayerWriter(out, below).ensure_dir(split(workdir))
            info = self.store.layers.commit_dir(out, state.chain, step.created_by)
        # The layer exists; the step still counts as a layer step.
        step.layer = True
        return info.chain_id

    def execute_run(
        self,
        stage_no: int,
        index: int,
        ins: Instruction,
        state: _State,
        step: _Step,
        args: BuildArgs,
    ) -> Generator[StepOutput, None, str]:
        from lamina.core.embedded.sandbox.runner import RunSpec, run

        env_list = list(state.config.get("Env") or [])
        run_env = env_list + [f"{k}={v}" for k, v in sorted(args.active(env_list).items())]
        argv = (
            step.cmd[1 + int(step.cmd[0][1:]) :]
            if step.cmd and step.cmd[0].startswith("|")
            else step.cmd
        )
        below = self.rootfs(state)
        lowers = tuple(below.layers)
        lines: list[str] = []
        pending: list[str] = []

        def on_output(line: str) -> None:
            lines.append(line)
            pending.append(line)

        with self.store.tmpdir("run") as work:
            upper = work / "upper"
            scratch = work / "work"
            upper.mkdir()
            scratch.mkdir()
            mounts = self._volume_layer(work / "volumes", below, state)
            spec = RunSpec(
                lowerdirs=((mounts,) if mounts else ()) + lowers,
                upper=upper,
                work=scratch,
                argv=tuple(argv),
                env=tuple(run_env),
                cwd=state.config.get("WorkingDir") or "/",
                user=state.config.get("User") or "",
                network=self.request.network,
            )
            result: dict[str, Any] = {}

            def target() -> None:
                try:
                    result["status"] = run(spec, on_output, self.cancel)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                    result["error"] = exc

            # The sandbox reports lines through a callback; a thread lets this
            # generator yield them as they come.
            thread = threading.Thread(target=target, name="lamina-run", daemon=True)
            thread.start()
            try:
                while thread.is_alive() or pending:
                    thread.join(0.05)
                    while pending:
                        yield StepOutput(stage_no, index, pending.pop(0))
            except KeyboardInterrupt:
                # Ctrl-C in the caller: stop the sandbox before the work dir goes away.
                if self.cancel is not None:
                    self.cancel.set()
                thread.join()
                raise
            if "error" in result:
                raise result["error"]
            status = int(result["status"])
            if self.cancel is not None and self.cancel.is_set():
                raise _Cancelled()
            if status != 0:
                last = lines[-1] if lines else ""
                text = ins.original if len(ins.original) <= 60 else ins.original[:59] + "…"
                raise RunFailed(
                    f"step {stage_no}/{index} '{text}' exited with status {status}: {last}",
                    status,
                    lines[-10:],
                )
            self._volume_mountpoints(upper, below, state)
            info = self.store.layers.commit_dir(upper, state.chain, step.created_by)
        return info.chain_id

    def _volume_layer(self, path: Path, below: RootFS, state: _State) -> Path | None:
        """A layer with the VOLUME mount points the image lacks, put on top of the
        lower layers so the command finds them (Docker mounts a volume there)."""
        from lamina.core.embedded.builder.copy import LayerWriter

        missing = [v for v in state.config.get("Volumes") or {} if not below.is_dir(v)]
        if not missing:
            return None
        path.mkdir()
        writer = LayerWriter(path, below)
        for volume in missing:
            writer.ensure_dir(split(volume))
        return path

    def _volume_mountpoints(self, upper: Path, below: RootFS, state: _State) -> None:
        """What Docker's RUN container leaves for each VOLUME: the mount point exists in
        the layer, and whatever the command wrote inside the volume is gone (it went to
        the volume, which the build discards)."""
        from lamina.core.embedded.builder.copy import LayerWriter

        writer = LayerWriter(upper, below)
        for volume in sorted(state.config.get("Volumes") or {}):
            parts = split(volume)
            if not parts:
                continue
            inside = upper.joinpath(*parts)
            if inside.is_dir() and not inside.is_symlink():
                for child in list(inside.iterdir()):
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            elif not below.is_dir(volume):
                writer.ensure_dir(parts)


# -- entry points -----------------------------------------------------------------


def _dockerfile_path(request: BuildRequest) -> Path:
    if request.dockerfile is None:
        return Path(request.context) / "Dockerfile"
    return Path(request.dockerfile)


def _load(request: BuildRequest) -> tuple[Dockerfile, Path, Context]:
    context_dir = Path(request.context)
    if not context_dir.is_dir():
        raise ContextError(f"build context {context_dir} is not a directory")
    df_path = _dockerfile_path(request)
    try:
        text = df_path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise ContextError(f"cannot read Dockerfile {df_path}: {exc.strerror or exc}") from exc
    dockerfile = load_dockerfile(text, str(df_path))
    patterns = load_ignore_patterns(context_dir, df_path)
    matcher = PatternMatcher(patterns) if patterns else None

    def excluded(rel: str, is_dir: bool) -> tuple[bool, bool]:
        assert matcher is not None
        if matcher.included(rel, is_dir):
            return False, True
        return True, is_dir and not matcher.can_skip_dir(rel)

    return dockerfile, df_path, Context(context_dir, excluded if matcher else None)


def run_build(
    store: Store, request: BuildRequest, cancel: threading.Event | None = None
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

    Yields:
        ``BuildStarted``, then per instruction ``StepStarted``, ``StepOutput``...,
        ``StepFinished``, then ``BuildFinished`` or ``BuildFailed``.
    """
    # Always an event, so an interrupted caller can stop a running RUN.
    cancel = cancel if cancel is not None else threading.Event()
    preflight: _Walk | None = None
    try:
        dockerfile, df_path, context = _load(request)
        context.stat_cache = StatCache(store.stat_cache)
        preflight = _Walk(store, request, dockerfile, df_path, context, dry_run=True, cancel=cancel)
        planned = list(preflight.run())
    except LaminaError as exc:
        if preflight is not None:
            preflight.cleanup()
        yield BuildFailed(0, str(exc))
        return
    except _Cancelled:
        if preflight is not None:
            preflight.cleanup()
        yield BuildFailed(0, "build cancelled", cancelled=True)
        return
    steps_total = sum(1 for e in planned if isinstance(e, StepFinished))
    if request.dry_run:
        preflight.cleanup()
        yield BuildStarted(0, str(df_path), str(Path(request.context)), steps_total)
        yield from planned
        yield BuildFinished(0, None, tuple(request.tags))
        return
    # Checks that cannot wait until the image is made: bad tags are usage errors.
    from lamina.core.embedded.store import normalize_tag

    try:
        tags = tuple(normalize_tag(t) for t in request.tags)
    except LaminaError as exc:
        preflight.cleanup()
        yield BuildFailed(0, str(exc))
        return
    context.stat_cache.flush()
    build_id = store.builds.start(request, df_path)
    walk = _Walk(
        store,
        request,
        dockerfile,
        df_path,
        context,
        dry_run=False,
        cancel=cancel,
        build_id=build_id,
    )
    walk.scratch_dir = preflight.scratch_dir
    walk.downloads = preflight.downloads
    yield BuildStarted(build_id, str(df_path), str(Path(request.context)), steps_total)
    try:
        yield from walk.run()
        final = walk.last_state
        assert final is not None and final.id is not None
        image_id = final.id
        if image_id == SCRATCH:
            raise BuildError("the build produced no image (FROM scratch with no steps)")
        store.images.add_image(image_id, parent=getattr(walk, "last_base_image", None))
        for tag in tags:
            store.images.tag(image_id, tag)
        store.builds.finish(build_id, "ok", image_id, None)
        _apply_retention(store)
        yield BuildFinished(build_id, image_id, tags)
    except (_Cancelled, KeyboardInterrupt):
        cancel.set()
        store.builds.finish(build_id, "cancelled", None, "build cancelled")
        yield BuildFailed(build_id, "build cancelled", cancelled=True)
    except LaminaError as exc:
        cancelled = cancel is not None and cancel.is_set()
        status = "cancelled" if cancelled else "failed"
        store.builds.finish(build_id, status, None, str(exc))
        yield BuildFailed(
            build_id, "build cancelled" if cancelled else str(exc), cancelled=cancelled
        )
    finally:
        walk.cleanup()


def _add_source_manifest(inputs: dict[str, Any], step: Any) -> None:
    """Adds the per-path manifest of a COPY/ADD's sources to ``inputs``.

    Only a miss needs it (to explain itself, and to be recorded for the next miss to
    compare with), so a cached rebuild of a large context never builds it.
    """
    if step.source_checksum is None or "sources" in inputs:
        return
    manifest: dict[str, Any] = {}
    for src in step.sources:
        manifest.update(manifest_to_json(src.entries()))
    inputs["sources"] = {"checksum": step.source_checksum, "manifest": manifest}


def _apply_retention(store: Store) -> None:
    """Applies the cache policy of config.toml after a successful build.

    A broken config file must not fail a build that succeeded: it is logged instead.
    """
    from lamina.core.embedded.prune import apply_retention

    try:
        result = apply_retention(store)
    except LaminaError as exc:
        log.warning("cache retention policy not applied: %s", exc)
        return
    if result is not None and result.reclaimed_bytes:
        log.info("cache retention policy reclaimed %d bytes", result.reclaimed_bytes)


def list_builds(store: Store, limit: int = 50) -> list[BuildRecord]:
    """Recorded builds, newest first, each with its steps.

    Args:
        store: the store.
        limit: at most this many builds.
    """
    return store.builds.recent(limit)


__all__ = ["list_builds", "run_build"]
