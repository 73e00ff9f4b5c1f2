"""What each instruction contributes to its step, before any cache decision.

One handler per kind of instruction: RUN (the command line with the build args the
classic builder prepends), COPY/ADD (sources, their checksum, the destination),
WORKDIR, and the metadata instructions, which only change the image config. Each makes
a :class:`~lamina.core.embedded.builder.state.Step` holding the command line Docker
records (``/bin/sh -c ...`` for RUN, ``#(nop) COPY file:<sum> in <dest>`` for COPY/ADD,
``#(nop) ENV ...`` for metadata) and the resulting config. Handlers read the context
and the store, never write: the preflight runs them too.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lamina.core.context.checksum import Context, multi_checksum
from lamina.core.dockerfile.args import BuildArgs
from lamina.core.dockerfile.instructions import (
    KEYWORDS,
    Instruction,
    Stage,
    health_config,
    sources_and_dest,
)
from lamina.core.dockerfile.mounts import Mount, parse_mount, parse_network, reject_variable_from
from lamina.core.dockerfile.ports import PortSpecError, exposed_ports
from lamina.core.dockerfile.quote import go_quote
from lamina.core.embedded.builder.base import stage_index
from lamina.core.embedded.builder.contenthash import sources_checksum
from lamina.core.embedded.builder.copy import (
    Source,
    context_sources,
    file_source,
    is_git_ref,
    parse_chmod,
    parse_chown,
    rootfs_sources,
)
from lamina.core.embedded.builder.rootfs import RootFS, join, layer_stack
from lamina.core.embedded.builder.rules import (
    CLASSIC_FLAGS,
    CLASSIC_REQUIRES_BUILDKIT,
    CacheRules,
    ClassicRules,
)
from lamina.core.embedded.builder.scratch import Scratch
from lamina.core.embedded.builder.state import State, Step
from lamina.core.embedded.builder.words import Words, no_nul
from lamina.core.embedded.store import Store
from lamina.core.errors import BuildError, ContextError, DockerfileError, LaminaError, NotFound

DEFAULT_SHELL = ["/bin/sh", "-c"]

# Instructions that change only the image config (WORKDIR may also create a directory).
METADATA = frozenset(
    {
        "ENV", "LABEL", "EXPOSE", "USER", "VOLUME", "CMD", "ENTRYPOINT", "HEALTHCHECK",
        "SHELL", "STOPSIGNAL", "ONBUILD", "ARG", "MAINTAINER",
    }
)  # fmt: skip

# Flags the classic builder accepts; the rules say which a build knows.
SUPPORTED_FLAGS: dict[str, frozenset[str]] = CLASSIC_FLAGS


@dataclass
class BuildingStage:
    """The stage being built: what its instructions share while they are prepared.

    Attributes:
        number: the stage's number.
        args: the build args in scope.
        cmd_set: whether a CMD of this stage (not its base's) has been seen: an
            ENTRYPOINT after it keeps it.
    """

    number: int
    args: BuildArgs
    cmd_set: bool = False


@dataclass
class _Draft:
    """One instruction being prepared: the config it changes and what it expands with."""

    ins: Instruction
    state: State
    scope: BuildingStage
    cfg: dict[str, Any]
    env: dict[str, str]
    shell: list[str]

    def nop(self, comment: str) -> Step:
        """A metadata step: ``<shell> #(nop)  <comment>`` (two words, as moby's
        withCmdComment makes them, hence the double space in ``docker history``)."""
        cmd = [*self.shell, "#(nop) ", comment]
        return Step(" ".join(cmd), cmd, self.cfg)


class Handlers:
    """Prepares steps.

    Args:
        store: the store (images and layers ``COPY --from`` and ``--chown`` read).
        words: the Dockerfile's variable expansion.
        context: the build context.
        scratch: where heredocs and downloads go.
        stages: the Dockerfile's stages (``COPY --from`` names one).
        built: the final state of each stage built so far, by number.
        rules: the cache rules (which flags the builder knows, and whether COPY/ADD
            need BuildKit's content checksums).
    """

    def __init__(
        self,
        store: Store,
        words: Words,
        context: Context,
        scratch: Scratch,
        stages: Sequence[Stage],
        built: Mapping[int, State],
        rules: CacheRules | None = None,
        images: Callable[[str], str] | None = None,
    ) -> None:
        self.rules: CacheRules = rules or ClassicRules()
        # What an image reference names: the store's, or a stand-in (``Bases.image``).
        self.images = images or store.images.resolve
        self.store = store
        self.words = words
        self.context = context
        self.scratch = scratch
        self.stages = stages
        self.built = built
        self._metadata: dict[str, Callable[[_Draft], Step]] = {
            "ENV": self._env,
            "LABEL": self._label,
            "ARG": self._arg,
            "USER": self._user,
            "EXPOSE": self._expose,
            "VOLUME": self._volume,
            "CMD": self._command,
            "ENTRYPOINT": self._command,
            "SHELL": self._shell,
            "STOPSIGNAL": self._stopsignal,
            "HEALTHCHECK": self._healthcheck,
            "ONBUILD": self._onbuild,
            "MAINTAINER": self._maintainer,
        }

    def prepare(self, scope: BuildingStage, ins: Instruction, state: State) -> Step:
        """The step ``ins`` makes on ``state``.

        Raises:
            DockerfileError: a malformed ``RUN --mount`` or ``--network`` (names the line).
            BuildError: a flag only BuildKit knows, or an instruction the builder lacks.
            ContextError: a COPY/ADD source that cannot be read.
            DockerfileError: a malformed variable substitution.
        """
        kw = ins.keyword
        if self.rules.name == "classic":
            self._classic_syntax(ins)
        unsupported = sorted(set(ins.flags) - self.rules.flags(kw))
        if unsupported:
            # Flags the builder lacks: ignoring them would build something else silently.
            raise BuildError(
                f"{self.words.where(ins)}: {kw}: the --{unsupported[0]} option requires"
                + (
                    " BuildKit (lamina build --builder buildkit)"
                    if self.rules.name == "classic"
                    else " a newer Dockerfile frontend than lamina follows"
                )
            )
        cfg = copy.deepcopy(state.config)
        draft = _Draft(
            ins,
            state,
            scope,
            cfg,
            scope.args.expansion_env(list(cfg.get("Env") or [])),
            list(cfg.get("Shell") or DEFAULT_SHELL),
        )
        if kw == "RUN":
            return self._run(draft)
        if kw in ("COPY", "ADD"):
            return self._copy(draft)
        if kw == "WORKDIR":
            return self._workdir(draft)
        metadata = self._metadata.get(kw)
        if metadata is None:
            raise self.words.fail(ins, "instruction not supported by the builder")
        return metadata(draft)

    def _classic_syntax(self, ins: Instruction) -> None:
        """Refuses, in the classic builder's words, the syntax it cannot read.

        Measured on Docker 20.10 (``DOCKER_BUILDKIT=0``): a flag its parser does not
        know is a parse error (``Unknown flag: link``); ``RUN --mount`` and
        ``COPY/ADD --chmod`` parse, then fail at their step (``the --mount option
        requires BuildKit``); a heredoc's body is read as instructions, so the first of
        its lines that is none fails (``unknown instruction: ECHO``).

        Raises:
            DockerfileError: an unknown flag or a heredoc (names the line).
        """
        kw = ins.keyword
        unknown = sorted(set(ins.flags) - self.rules.flags(kw) - CLASSIC_REQUIRES_BUILDKIT)
        if unknown:
            raise DockerfileError(
                f"Unknown flag: {unknown[0]} (lamina build --builder buildkit knows it)",
                str(self.words.path),
                ins.line,
            )
        if not ins.heredocs:
            return
        body = [line for doc in ins.heredocs for line in [*doc.content.splitlines(), doc.name]]
        first = ins.end_line - len(body) + 1
        bad = next(
            (
                (first + i, line.split()[0].upper())
                for i, line in enumerate(body)
                if line.strip()
                and not line.lstrip().startswith("#")
                and line.split()[0].upper() not in KEYWORDS
            ),
            (first, (body[0].split() or [""])[0].upper()),
        )
        raise DockerfileError(
            f"unknown instruction: {bad[1]} (the classic builder reads a heredoc's lines as"
            " instructions; lamina build --builder buildkit reads heredocs)",
            str(self.words.path),
            bad[0],
        )

    # -- RUN ----------------------------------------------------------------------------

    def _run(self, s: _Draft) -> Step:
        ins, args = s.ins, s.scope.args
        env_list = list(s.cfg.get("Env") or [])
        command = list(ins.args) if ins.json_form else s.shell + [_run_text(ins)]
        keyed = args.keyed(env_list)
        # moby prefixes "|N K=V..." whenever any build arg reaches the RUN, even
        # when only undeclared proxy args do (which are left out: "|0 ...").
        cmd = [f"|{len(keyed)}", *keyed, *command] if args.active(env_list) else command
        run_env = env_list + [f"{k}={v}" for k, v in sorted(args.active(env_list).items())]
        mounts: list[Mount] = []
        try:
            for value in ins.flags.get("mount", ()):
                reject_variable_from(value)
                expanded = self.words.word(ins, value, s.env)
                ssh_before = sum(1 for m in mounts if m.type == "ssh")
                mount = parse_mount(expanded, ssh_before)
                if not mount.target.startswith("/"):
                    mount = _retarget(mount, join(s.cfg.get("WorkingDir") or "/", mount.target))
                mounts.append(mount)
            network = ins.flag("network")
            if network is not None:
                network = parse_network(self.words.word(ins, network, s.env))
        except DockerfileError as exc:
            # A malformed --mount or --network is a Dockerfile error, as BuildKit's
            # frontend reports it: it names the line.
            raise DockerfileError(
                f"{ins.keyword}: {exc.reason}", str(self.words.path), ins.line
            ) from None
        # A bind mount's files are in the key by content, as BuildKit's read-only
        # mounts with a selector get content keys.
        mount_sums: list[str] = []
        try:
            for mount in mounts:
                root = None
                if mount.from_ref is not None:
                    root = self._from_root(s.scope.number, ins, mount.from_ref)
                if mount.type != "bind":
                    continue
                if mount.from_ref is not None and root is None:
                    mount_sums.append(f"unknown:{mount.from_ref}")
                    continue
                srcs = (
                    rootfs_sources(root, mount.source or "/")
                    if root is not None
                    else context_sources(self.context, mount.source or ".", add=False)
                )
                mount_sums.append(",".join(sources_checksum(srcs)))
        except LaminaError as exc:
            raise ContextError(f"{self.words.where(ins)}: {ins.keyword}: --mount: {exc}") from None
        return Step(
            " ".join(cmd),
            cmd,
            s.cfg,
            layer=True,
            argv=command,
            env=run_env,
            mounts=tuple(mounts),
            network=network,
            content_checksums=mount_sums,
        )

    def mount_root(self, number: int, ins: Instruction, ref: str) -> RootFS | None:
        """The files a ``RUN --mount=from=ref`` reads (None when a dry run cannot know
        them), like ``COPY --from``."""
        return self._from_root(number, ins, ref)

    def _mount_root(self, number: int, ins: Instruction, ref: str) -> None:
        # Resolved now so an unknown stage or image fails the preflight.
        self._from_root(number, ins, ref)

    # -- COPY / ADD ---------------------------------------------------------------------

    def _copy(self, s: _Draft) -> Step:
        ins, kw, env = s.ins, s.ins.keyword, s.env
        paths, contents, raw_dest = sources_and_dest(ins)
        dest_word = self.words.path_word(ins, raw_dest, env)
        dest = join(s.cfg.get("WorkingDir") or "/", dest_word)
        if raw_dest.endswith("/") and not dest.endswith("/"):
            dest += "/"
        from_ref = ins.flag("from")
        sources: list[Source] = []
        root: RootFS | None = None
        unknown: str | None = None
        unfetched: str | None = None
        try:
            if from_ref is not None and kw == "COPY":
                if "$" in from_ref:
                    # Neither builder expands --from (both take it as an image name,
                    # which cannot hold a "$"): an alias stage names it instead.
                    raise BuildError(
                        f"--from={from_ref}: variables are not expanded in --from; name the"
                        " stage with FROM ${VAR} AS alias, then --from=alias"
                    )
                root = self._from_root(s.scope.number, ins, from_ref)
                if root is None:
                    # A dry run cannot know the files of a stage that runs again.
                    unknown = from_ref
                for p in paths:
                    src = self.words.word(ins, p, env)
                    if "\0" in src:
                        raise BuildError(no_nul(src))
                    if root is not None:
                        sources.extend(rootfs_sources(root, src))
            else:
                for p in paths:
                    src = self.words.word(ins, p, env)
                    if kw == "ADD" and self.rules.name != "classic" and is_git_ref(src):
                        unfetched = unfetched or src
                    elif kw == "ADD" and src.startswith(("http://", "https://")):
                        path, name = self.scratch.download(src)
                        sources.append(file_source(path, name, 0o600))
                    else:
                        sources.extend(context_sources(self.context, src, add=kw == "ADD"))
            for doc in contents:
                data = self.words.word(ins, doc.data, env) if doc.expand else doc.data
                sources.append(file_source(self.scratch.heredoc(data), doc.path, 0o644))
            if ins.flag("chmod"):
                parse_chmod(ins.flag("chmod") or "")
            excludes = tuple(self.words.word(ins, e, env) for e in ins.flags.get("exclude", ()))
            parents = ins.flag("parents") == "true"
            if excludes or parents:
                for source in sources:
                    source.exclude, source.parents = excludes, parents
                sources = [
                    source
                    for source in sources
                    if source.is_dir or not _excluded_file(source, excludes)
                ]
                if not sources and unfetched is None:
                    raise ContextError("no source files were specified: every match is excluded")
            if ins.flag("checksum") is not None:
                _verify_checksum(sources, self.words.word(ins, ins.flag("checksum") or "", env))
        except DockerfileError:
            raise  # a bad substitution: it names the file and line already
        except LaminaError as exc:
            raise ContextError(f"{self.words.where(ins)}: {kw}: {exc}") from None
        if (len(sources) > 1 or len(paths) + len(contents) > 1) and not dest.endswith("/"):
            raise ContextError(
                f"{self.words.where(ins)}: {kw}: with more than one source the destination"
                f" must end with '/': {raw_dest}"
            )
        checksum = multi_checksum([src.checksum for src in sources]) if sources else "unknown:"
        chown = ins.flag("chown")
        if chown and s.state.id is not None:
            # Resolve names now so an unknown user fails the preflight, not the build.
            try:
                parse_chown(layer_stack(self.store.layers, s.state.chain), chown)
            except LaminaError as exc:
                raise ContextError(f"{self.words.where(ins)}: {kw}: {exc}") from None
        chown_part = f"--chown={chown}" if chown else ""
        # The destination as written (expanded), not joined with WORKDIR: moby's
        # performCopy comments inst.dest. A WORKDIR change is in the parent state anyway.
        comment = f"{kw} {chown_part}{checksum} in {dest_word} "
        # moby's withCmdCommentString: one "#(nop) <comment>" word (metadata steps use
        # withCmdComment, two words, hence their double space in `docker history`).
        cmd = s.shell + ["#(nop) " + comment]
        content: list[str] = []
        if self.rules.name != "classic" and unknown is None:
            try:
                content = sources_checksum(sources)
            except LaminaError as exc:
                raise ContextError(f"{self.words.where(ins)}: {kw}: {exc}") from None
        return Step(
            " ".join(cmd),
            cmd,
            s.cfg,
            sources,
            checksum,
            layer=True,
            dest=dest,
            from_root=root,
            unknown_sources=unknown,
            unfetched=unfetched,
            content_checksums=content,
        )

    def _from_root(self, number: int, ins: Instruction, ref: str) -> RootFS | None:
        """The files ``COPY --from=ref`` copies from (None when a dry run cannot know them).

        Raises:
            BuildError: no such stage or image (the caller names the instruction).
        """
        idx = stage_index(self.stages, ref, number)
        if idx is not None:
            if idx not in self.built:
                raise BuildError(f"--from={ref}: stage {ref} is not built before this one")
            state = self.built[idx]
            if not state.chain_known:
                return None
            return layer_stack(self.store.layers, state.chain)
        try:
            image_id = self.images(ref)
        except NotFound:
            raise BuildError(f"--from={ref}: no such stage or image") from None
        chain = self.store.images.chain_of(self.store.images.get_config(image_id))
        return layer_stack(self.store.layers, chain[-1] if chain else None)

    # -- WORKDIR ------------------------------------------------------------------------

    def _workdir(self, s: _Draft) -> Step:
        path = self.words.path_word(s.ins, s.ins.args[0], s.env)
        workdir = join(s.cfg.get("WorkingDir") or "/", path).rstrip("/") or "/"
        s.cfg["WorkingDir"] = workdir
        # moby's dispatchWorkdir uses withCmdCommentString: one "#(nop) ..." word.
        cmd = [*s.shell, "#(nop) WORKDIR " + workdir]
        return Step(" ".join(cmd), cmd, s.cfg)

    # -- metadata -----------------------------------------------------------------------

    def _env(self, s: _Draft) -> Step:
        env_list = list(s.cfg.get("Env") or [])
        pairs = []
        for name, raw in s.ins.env_pairs:
            value = self.words.word(s.ins, raw or "", s.env)
            pairs.append(f"{name}={value}")
            env_list = [e for e in env_list if e.split("=", 1)[0] != name] + [f"{name}={value}"]
            s.env[name] = value
        s.cfg["Env"] = env_list
        return s.nop("ENV " + " ".join(pairs))

    def _label(self, s: _Draft) -> Step:
        labels = dict(s.cfg.get("Labels") or {})
        parts = []
        for name, raw in s.ins.env_pairs:
            key = self.words.word(s.ins, name, s.env)
            value = self.words.word(s.ins, raw or "", s.env)
            labels[key] = value
            parts.append(f"{key}={value}")
        s.cfg["Labels"] = labels
        return s.nop("LABEL " + " ".join(parts))

    def _arg(self, s: _Draft) -> Step:
        parts = []
        for name, raw in s.ins.env_pairs:
            default = self.words.word(s.ins, raw, s.env) if raw is not None else None
            s.scope.args.declare(name, default)
            parts.append(name if raw is None else f"{name}={raw}")
        return s.nop("ARG " + " ".join(parts))

    def _user(self, s: _Draft) -> Step:
        s.cfg["User"] = self.words.word(s.ins, s.ins.args[0], s.env)
        return s.nop("USER " + s.cfg["User"])

    def _expose(self, s: _Draft) -> Step:
        ports = dict(s.cfg.get("ExposedPorts") or {})
        raw_ports = []
        # Docker sorts EXPOSE's words as written, before expanding them.
        for word in sorted(s.ins.args):
            raw_ports += self.words.words(s.ins, word, s.env)
        try:
            exposed = exposed_ports(raw_ports)
        except PortSpecError as exc:
            raise self.words.fail(s.ins, str(exc)) from None
        ports.update({port: {} for port in exposed})
        s.cfg["ExposedPorts"] = ports
        return s.nop("EXPOSE " + " ".join(raw_ports))

    def _volume(self, s: _Draft) -> Step:
        volumes = dict(s.cfg.get("Volumes") or {})
        vols = [self.words.word(s.ins, v, s.env) for v in s.ins.args]
        for v in vols:
            volumes[v] = {}
        s.cfg["Volumes"] = volumes
        return s.nop("VOLUME [" + " ".join(vols) + "]")

    def _command(self, s: _Draft) -> Step:
        ins, kw = s.ins, s.ins.keyword
        command = ins.command()
        argv: list[str] = command if ins.json_form else s.shell + command
        if ins.json_form and not ins.args:
            argv = []
        s.cfg["Cmd" if kw == "CMD" else "Entrypoint"] = argv
        if kw == "CMD":
            s.scope.cmd_set = True
        elif not s.scope.cmd_set:
            # Docker: ENTRYPOINT drops a CMD inherited from the base image.
            s.cfg["Cmd"] = None
        return s.nop(f"{kw} [" + " ".join(go_quote(c) for c in argv) + "]")

    def _shell(self, s: _Draft) -> Step:
        s.cfg["Shell"] = list(s.ins.args)
        return s.nop("SHELL [" + " ".join(s.ins.args) + "]")

    def _stopsignal(self, s: _Draft) -> Step:
        s.cfg["StopSignal"] = self.words.word(s.ins, s.ins.args[0], s.env)
        return s.nop("STOPSIGNAL " + s.cfg["StopSignal"])

    def _healthcheck(self, s: _Draft) -> Step:
        hc = health_config(s.ins)
        if hc is None:
            s.cfg["Healthcheck"] = {"Test": ["NONE"]}
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
            s.cfg["Healthcheck"] = check
        return s.nop("HEALTHCHECK " + json.dumps(s.cfg["Healthcheck"], sort_keys=True))

    def _onbuild(self, s: _Draft) -> Step:
        trigger = s.ins.args[0]
        s.cfg["OnBuild"] = list(s.cfg.get("OnBuild") or []) + [trigger]
        return s.nop("ONBUILD " + trigger)

    def _maintainer(self, s: _Draft) -> Step:
        return s.nop("MAINTAINER " + s.ins.args[0])


def _retarget(mount: Mount, target: str) -> Mount:
    """The mount at an absolute target (a relative one is relative to WORKDIR)."""
    import dataclasses

    return dataclasses.replace(mount, target=target)


def _excluded_file(src: Source, excludes: tuple[str, ...]) -> bool:
    """Whether a file source is itself excluded (matched by its path)."""
    from lamina.core.embedded.builder.copy import go_match

    path = src.path.lstrip("/")
    return any(go_match(p.strip("/"), path) or go_match(p, src.name) for p in excludes)


def _verify_checksum(sources: list[Source], expected: str) -> None:
    """``ADD --checksum``: the one downloaded source must have this sha256.

    Raises:
        BuildError: not one download, a malformed digest, or another digest.
    """
    import hashlib
    import re

    if not re.fullmatch(r"sha256:[0-9a-f]{64}", expected):
        raise BuildError(f"invalid checksum {expected!r} (want sha256:<64 hex digits>)")
    if len(sources) != 1 or sources[0].origin != "file":
        raise BuildError("--checksum needs exactly one HTTP source")
    digest = hashlib.sha256()
    with open(sources[0].path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    got = "sha256:" + digest.hexdigest()
    if got != expected:
        raise BuildError(f"checksum mismatch: expected {expected}, got {got}")


def _run_text(ins: Instruction) -> str:
    """A shell-form RUN's script: the command line, with its heredocs."""
    text = " ".join(ins.args)
    if not ins.heredocs:
        return text
    if len(ins.heredocs) == 1 and text.strip() == f"<<{ins.heredocs[0].name}".strip():
        # A heredoc alone is the script.
        return ins.heredocs[0].content
    # Otherwise the shell reads the heredocs itself.
    body = "".join(f"{doc.content}{doc.name}\n" for doc in ins.heredocs)
    return f"{text}\n{body}"
