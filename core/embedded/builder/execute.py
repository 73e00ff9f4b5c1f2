"""Executing a step that missed: running RUN in the sandbox, applying COPY/ADD, making a
WORKDIR's directory, and committing the resulting layer and config to the store.

A dry run executes nothing: :meth:`Executor.predict` says what it can know of the state
after a miss instead (the layers stay known when only the config changes).
"""

from __future__ import annotations

import copy
import os
import shutil
import threading
import time
from collections.abc import Callable, Generator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lamina.core.context.checksum import Context
from lamina.core.dockerfile.args import BuildArgs
from lamina.core.dockerfile.instructions import Instruction
from lamina.core.dockerfile.mounts import Mount
from lamina.core.embedded.builder.copy import (
    LayerWriter,
    apply_copy,
    context_sources,
    parse_chmod,
    parse_chown,
    rootfs_sources,
)
from lamina.core.embedded.builder.rootfs import (
    RootFS,
    layer_stack,
    lookup_group,
    lookup_user,
    split,
)
from lamina.core.embedded.builder.rules import is_link
from lamina.core.embedded.builder.state import State, Step
from lamina.core.embedded.builder.words import Words
from lamina.core.embedded.sandbox.runner import MountSpec, RunSpec, run
from lamina.core.embedded.store import Store, beneath
from lamina.core.errors import BuildError, LaminaError, RunFailed
from lamina.core.events import StepOutput


class Cancelled(Exception):
    """The build's cancel event was set (raised between steps and after a RUN)."""


@dataclass(frozen=True)
class RunOptions:
    """What a build gives its RUN steps besides the step itself.

    Attributes:
        builder: ``classic`` or ``buildkit`` (a BuildKit WORKDIR belongs to USER).
        secrets: secret id to the file holding it.
        ssh: ssh id to an agent socket.
        mount_root: the files a ``--mount=from=`` stage or image holds.
        build_id: the build (cache mounts record who used them).
    """

    builder: str = "classic"
    secrets: Mapping[str, str] = field(default_factory=dict)
    ssh: Mapping[str, str] = field(default_factory=dict)
    mount_root: Callable[[str], RootFS | None] | None = None
    build_id: int = 0


@dataclass(frozen=True)
class Executed:
    """What executing a step made.

    Attributes:
        state: the new state (its config committed to the store).
        layer: the chainID of the layer the step made, or None for a config-only step.
    """

    state: State
    layer: str | None


class Executor:
    """Executes steps in one store.

    Args:
        store: where layers and configs are committed.
        words: the Dockerfile (errors name the instruction's line).
        context: the build context COPY/ADD read.
        cancel: set to stop a running RUN.
        network: ``host`` or ``none`` for RUN.
        options: secrets, ssh sockets, ``--mount=from=`` and the builder's kind.
    """

    def __init__(
        self,
        store: Store,
        words: Words,
        context: Context,
        cancel: threading.Event | None,
        network: str,
        options: RunOptions | None = None,
    ) -> None:
        self.store = store
        self.words = words
        self.context = context
        self.cancel = cancel
        self.network = network
        self.options = options or RunOptions()

    def execute(
        self,
        number: int,
        index: int,
        ins: Instruction,
        state: State,
        step: Step,
        args: BuildArgs,
        *,
        fresh_mounts: bool = False,
    ) -> Generator[StepOutput, None, Executed]:
        """Executes one step on ``state``, yielding a RUN's output lines as they come.

        ``fresh_mounts`` empties the RUN's cache mounts first (``--no-cache`` reruns
        the step from nothing, as BuildKit prunes the mounts of the steps it ignores).

        Returns:
            The new state and the layer made, if any.

        Raises:
            RunFailed: a RUN exited non-zero.
            Cancelled: the build was cancelled during a RUN.
            BuildError: a COPY/ADD could not be applied.
        """
        layer: str | None = None
        if ins.keyword == "RUN":
            layer = yield from self._run(number, index, ins, state, step, args, fresh_mounts)
        elif ins.keyword in ("COPY", "ADD"):
            layer = self._copy(ins, state, step)
        elif ins.keyword == "WORKDIR":
            layer = self._workdir(ins, state, step)
        new_state = self._commit(state, step, layer)
        return Executed(new_state, new_state.chain if layer is not None else None)

    def predict(self, ins: Instruction, state: State, step: Step) -> State:
        """What a dry run knows of the state after ``step`` misses: not its ID, but its
        config, and its layers when the step leaves the filesystem as it was (so a
        ``COPY --from`` this stage can still be predicted)."""
        keeps_fs = not step.layer and not self._workdir_creates(ins, state, step)
        doc = copy.deepcopy(state.doc)
        doc["config"] = copy.deepcopy(step.new_config)
        return State(None, doc, state.chain, state.chain_known and keeps_fs)

    # -- committing ---------------------------------------------------------------------

    def _commit(self, state: State, step: Step, layer: str | None) -> State:
        """The new config: ``state``'s with the step's config, history entry and layer."""
        doc = copy.deepcopy(state.doc)
        doc["created"] = _now_iso()
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
        return State(digest, doc, chain)

    # -- COPY / ADD ---------------------------------------------------------------------

    def _copy(self, ins: Instruction, state: State, step: Step) -> str:
        below = layer_stack(self.store.layers, state.chain)
        chown = ins.flag("chown")
        chmod = ins.flag("chmod")
        try:
            owner = parse_chown(below, chown) if chown else (0, 0)
            mode = parse_chmod(chmod) if chmod else None
        except LaminaError as exc:
            raise self.words.fail(ins, str(exc)) from None
        with self.store.tmpdir("copy") as work:
            out = work / "layer"
            out.mkdir()
            # A linked copy reads nothing of the layers below it (its parent
            # directories are made afresh, a symlink below is not followed): it is made
            # on an empty filesystem, so the same layer fits on any parent.
            linked = self.options.builder == "buildkit" and is_link(ins)
            try:
                # Unchanged files become links to the store's identical ones.
                known = apply_copy(
                    out,
                    RootFS([]) if linked else below,
                    step.sources,
                    step.dest,
                    context=self.context,
                    from_root=step.from_root,
                    owner=owner,
                    chmod=mode,
                    pool=self.store.files,
                    held_below=self.store.files.held_by(
                        [c.chain_id for c in self.store.layers.chain(state.chain)]
                        if state.chain
                        else []
                    ),
                )
            except LaminaError as exc:
                raise self.words.fail(ins, str(exc)) from None
            info = self.store.layers.commit_dir(out, state.chain, step.created_by, known)
        return info.chain_id

    # -- WORKDIR ------------------------------------------------------------------------

    def _workdir(self, ins: Instruction, state: State, step: Step) -> str | None:
        workdir = step.new_config.get("WorkingDir") or "/"
        below = layer_stack(self.store.layers, state.chain)
        if below.is_dir(workdir) or workdir == "/":
            return None
        owner = (0, 0)
        user = step.new_config.get("User") or ""
        if self.options.builder == "buildkit" and user:
            # BuildKit's WORKDIR is a mkdir made as USER (numeric without group: gid = uid).
            try:
                owner = _resolve_user(below, user)
            except LaminaError as exc:
                raise self.words.fail(ins, str(exc)) from None
        with self.store.tmpdir("workdir") as work:
            out = work / "layer"
            out.mkdir()
            LayerWriter(out, below).ensure_dir(split(workdir))
            if owner != (0, 0):
                parts = split(workdir)
                for i in range(1, len(parts) + 1):
                    if not below.is_dir("/" + "/".join(parts[:i])):
                        os.lchown(out.joinpath(*parts[:i]), *owner)
            info = self.store.layers.commit_dir(out, state.chain, step.created_by)
        # The layer exists; the step still counts as a layer step.
        step.layer = True
        return info.chain_id

    def _workdir_creates(self, ins: Instruction, state: State, step: Step) -> bool:
        if ins.keyword != "WORKDIR":
            return False
        if not state.chain_known:
            return True
        workdir = step.new_config.get("WorkingDir") or "/"
        return workdir != "/" and not layer_stack(self.store.layers, state.chain).is_dir(workdir)

    # -- RUN ----------------------------------------------------------------------------

    def _run(
        self,
        number: int,
        index: int,
        ins: Instruction,
        state: State,
        step: Step,
        args: BuildArgs,
        fresh_mounts: bool = False,
    ) -> Generator[StepOutput, None, str]:
        env_list = list(state.config.get("Env") or [])
        run_env = env_list + [f"{k}={v}" for k, v in sorted(args.active(env_list).items())]
        run_env += _ssh_agent_env(step.mounts, run_env)
        network = self.network if step.network in (None, "default") else step.network
        argv = (
            step.cmd[1 + int(step.cmd[0][1:]) :]
            if step.cmd and step.cmd[0].startswith("|")
            else step.cmd
        )
        below = layer_stack(self.store.layers, state.chain)
        lowers = tuple(below.layers)
        lines: list[str] = []
        pending: list[str] = []

        def on_output(line: str) -> None:
            lines.append(line)
            pending.append(line)

        with self.store.tmpdir("run") as work, ExitStack() as held:
            upper = work / "upper"
            scratch = work / "work"
            upper.mkdir()
            scratch.mkdir()
            mounts = _volume_layer(work / "volumes", below, state)
            try:
                made = [
                    self._mount(held, work / f"mount-{i}", m, fresh_mounts)
                    for i, m in enumerate(step.mounts)
                ]
                extra = tuple(ms for ms in made if ms is not None)
            except LaminaError as exc:
                raise self.words.fail(ins, str(exc)) from None
            spec = RunSpec(
                lowerdirs=((mounts,) if mounts else ()) + lowers,
                upper=upper,
                work=scratch,
                argv=tuple(argv),
                env=tuple(run_env),
                cwd=state.config.get("WorkingDir") or "/",
                user=state.config.get("User") or "",
                network=network,
                mounts=extra,
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
                        yield StepOutput(number, index, pending.pop(0))
            except (KeyboardInterrupt, GeneratorExit):
                # Ctrl-C, or the caller stopped reading the build's events: stop the
                # sandbox before the work dir goes away.
                if self.cancel is not None:
                    self.cancel.set()
                thread.join()
                raise
            if "error" in result:
                raise result["error"]
            status = int(result["status"])
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled()
            if status != 0:
                last = lines[-1] if lines else ""
                text = ins.original if len(ins.original) <= 60 else ins.original[:59] + "…"
                # Named by its line, as every other build error is: the stage and
                # index ("step 0/2") read like a count of steps.
                raise RunFailed(
                    f"{self.words.where(ins)}: '{text}' exited with status {status}"
                    + (f": {last}" if last else ""),
                    status,
                    lines[-10:],
                )
            _volume_mountpoints(upper, below, state)
            if self.options.builder == "buildkit":
                _runtime_mountpoints(upper, below)
                _drop_secret_mountpoints(upper, below, step.mounts)
            info = self.store.layers.commit_dir(upper, state.chain, step.created_by)
        return info.chain_id

    def _mount(self, held: ExitStack, where: Path, m: Mount, fresh: bool) -> MountSpec | None:
        """What one ``RUN --mount`` binds (None for an optional secret or ssh socket
        the build was not given)."""
        opts = self.options
        if m.type == "tmpfs":
            return MountSpec(m.target, None, size=m.size)
        if m.type == "cache":
            path = held.enter_context(
                self.store.cache_mounts.use(
                    m.id,
                    m.sharing,
                    scope=m.from_ref or "",
                    mode=m.mode if m.mode is not None else 0o755,
                    uid=m.uid or 0,
                    gid=m.gid or 0,
                    empty=fresh,
                    build_id=opts.build_id,
                )
            )
            if m.from_ref is not None and not any(path.iterdir()):
                seed = self._materialize(where, m)
                for child in seed.iterdir() if seed.is_dir() else ():
                    shutil.move(str(child), path / child.name)
            return MountSpec(m.target, path, readonly=m.readonly)
        if m.type in ("secret", "ssh"):
            given = (opts.secrets if m.type == "secret" else opts.ssh).get(m.id)
            if given is None:
                if m.required:
                    flag = "--secret id=" if m.type == "secret" else "--ssh "
                    raise BuildError(f"{m.type} {m.id!r} is required but not given ({flag}{m.id}…)")
                return None
            if m.type == "ssh":
                return MountSpec(m.target, Path(given), readonly=False)
            where.mkdir()
            copied = where / "secret"
            try:
                shutil.copyfile(given, copied)
                os.chmod(copied, m.mode if m.mode is not None else 0o400)
                if os.geteuid() == 0:
                    os.chown(copied, m.uid or 0, m.gid or 0)
            except OSError as exc:
                raise BuildError(f"secret {m.id!r}: cannot read {given}: {exc.strerror}") from exc
            return MountSpec(m.target, copied, readonly=True)
        # bind: a copy of the context (or of a stage), so a read-write bind's writes are
        # discarded and .dockerignore'd files stay out of reach.
        path = self._materialize(where, m)
        return MountSpec(m.target, path, readonly=m.readonly)

    def _materialize(self, where: Path, m: Mount) -> Path:
        """Copies what a bind (or a cache mount's ``from=``) reads into ``where``."""
        where.mkdir(exist_ok=True)
        out = where / "m"
        out.mkdir()
        empty = layer_stack(self.store.layers, None)
        root: RootFS | None = None
        if m.from_ref is not None:
            root = self.options.mount_root(m.from_ref) if self.options.mount_root else None
            if root is None:
                raise BuildError(f"--mount from={m.from_ref}: its files are not known")
            sources = rootfs_sources(root, m.source or "/")
        else:
            sources = context_sources(self.context, m.source or ".", add=False)
        single = len(sources) == 1 and not sources[0].is_dir
        apply_copy(
            out,
            empty,
            sources,
            "/data/" if single else "/data",
            context=self.context,
            from_root=root,
        )
        data = out / "data"
        if single:
            return data / sources[0].name
        data.mkdir(exist_ok=True)
        return data


def _ssh_agent_env(mounts: tuple[Mount, ...], env: list[str]) -> list[str]:
    """``SSH_AUTH_SOCK`` at the first ssh mount's socket, as BuildKit sets it for a RUN
    with an ssh mount (``llb`` ``ExecOp``), whether an agent was given or not, unless
    the environment names one already."""
    targets = [m.target for m in mounts if m.type == "ssh"]
    if not targets or any(e.startswith("SSH_AUTH_SOCK=") for e in env):
        return []
    return [f"SSH_AUTH_SOCK={targets[0]}"]


def _drop_secret_mountpoints(upper: Path, below: RootFS, mounts: tuple[Mount, ...]) -> None:
    """Secrets and ssh sockets leave no file in the layer (BuildKit 0.8 leaves the
    directories above their mount point, as measured, but not the file itself)."""
    for m in mounts:
        if m.type not in ("secret", "ssh"):
            continue
        parts = split(m.target)
        path = upper.joinpath(*parts) if parts else upper
        if parts and not below.exists(m.target) and path.is_file() and not path.is_symlink():
            path.unlink()


def _runtime_mountpoints(upper: Path, below: RootFS) -> None:
    """What BuildKit's runc leaves in a RUN's layer when the image lacks them: the
    directories it mounts /dev, /proc and /sys on."""
    for name in ("dev", "proc", "sys"):
        if not below.is_dir("/" + name) and not os.path.lexists(upper / name):
            (upper / name).mkdir(mode=0o755)
            os.chmod(upper / name, 0o755)


def _resolve_user(root: RootFS, user: str) -> tuple[int, int]:
    """USER as BuildKit resolves it for a mkdir: ``user[:group]``; a numeric user
    without a group gets gid = uid, a named one its primary group."""
    name, _, group = user.partition(":")
    uid, primary = lookup_user(root, name)
    if group:
        return uid, lookup_group(root, group)
    if name.isdigit() or primary is None:
        return uid, uid
    return uid, primary


def _now_iso() -> str:
    return datetime.fromtimestamp(time.time(), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _volume_layer(path: Path, below: RootFS, state: State) -> Path | None:
    """A layer with the VOLUME mount points the image lacks, put on top of the lower
    layers so the command finds them (Docker mounts a volume there)."""
    missing = [v for v in state.config.get("Volumes") or {} if not below.is_dir(v)]
    if not missing:
        return None
    path.mkdir()
    writer = LayerWriter(path, below)
    for volume in missing:
        writer.ensure_dir(split(volume))
    return path


def _volume_mountpoints(upper: Path, below: RootFS, state: State) -> None:
    """What Docker's RUN container leaves for each VOLUME: the mount point exists in the
    layer, and whatever the command wrote inside the volume is gone (it went to the
    volume, which the build discards)."""
    writer = LayerWriter(upper, below)
    for volume in sorted(state.config.get("Volumes") or {}):
        parts = split(volume)
        if not parts:
            continue
        inside = upper.joinpath(*parts)
        if inside.is_dir() and not inside.is_symlink():
            for child in list(inside.iterdir()):
                beneath.remove_path(child)  # iterative: a RUN may make any depth
        elif not below.is_dir(volume):
            writer.ensure_dir(parts)
