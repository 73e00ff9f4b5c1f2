"""Typed instructions and build stages, validated as BuildKit's ``instructions`` package does.

:func:`load_dockerfile` parses a Dockerfile (:mod:`lamina.core.dockerfile.parser`),
checks every instruction (known keyword, known flags, argument counts, stage names,
ONBUILD triggers, HEALTHCHECK options) and groups them into stages. Variables are not
expanded here: the builder expands words with :class:`~lamina.core.dockerfile.shell.Lexer`
when it knows the build arguments and environment.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field

from lamina.core.dockerfile.parser import (
    Heredoc,
    Node,
    ParseResult,
    chomp_heredoc_content,
    parse,
    parse_heredoc,
)
from lamina.core.errors import DockerfileError

__all__ = [
    "BFlags",
    "Device",
    "Dockerfile",
    "HealthConfig",
    "Instruction",
    "SourceContent",
    "Stage",
    "handle_json_args",
    "health_config",
    "instruction_from_node",
    "load_dockerfile",
    "parse_device",
    "parse_duration",
    "parse_opt_interval",
    "sources_and_dest",
]

# Flags each instruction accepts: name -> kind ("bool", "string", "strings"; the
# last may repeat, like RUN --mount).
_FLAGS: dict[str, dict[str, str]] = {
    "ADD": {
        "chown": "string",
        "chmod": "string",
        "link": "bool",
        "keep-git-dir": "bool",
        "checksum": "string",
        "exclude": "strings",
        "unpack": "bool",
    },
    "COPY": {
        "from": "string",
        "chown": "string",
        "chmod": "string",
        "link": "bool",
        "parents": "bool",
        "exclude": "strings",
    },
    "FROM": {"platform": "string"},
    "RUN": {"mount": "strings", "network": "string", "security": "string", "device": "strings"},
    "HEALTHCHECK": {
        "interval": "string",
        "timeout": "string",
        "start-period": "string",
        "start-interval": "string",
        "retries": "string",
    },
}

KEYWORDS = frozenset(
    {
        "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
        "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
        "WORKDIR",
    }
)  # fmt: skip

_STAGE_NAME_RE = re.compile(r"[a-z][a-z0-9\-_.]*\Z")


@dataclass(frozen=True)
class Instruction:
    """One validated instruction.

    Attributes:
        keyword: upper case: ``"RUN"``, ``"COPY"``, ...
        args: the argument words as in the AST (flags removed; heredoc words such
            as ``<<EOF`` kept).
        flags: ``--name=value`` flags by name; a bare bool flag is ``("true",)``;
            repeatable flags (``--mount``) hold every value in order.
        original: the instruction as written, continuation lines joined.
        line: first line (1-based).
        end_line: last line, heredoc bodies included.
        json_form: the arguments were a JSON array (exec form).
        heredocs: here-documents, bodies raw.
        inner: ONBUILD's instruction.
        env_pairs: ENV/LABEL/ARG ``(key, raw value)`` with quotes kept; an ARG
            without a default has value None.
        comments: the ``#`` comment lines right above the instruction.
    """

    keyword: str
    args: tuple[str, ...]
    flags: dict[str, tuple[str, ...]]
    original: str
    line: int
    end_line: int
    json_form: bool = False
    heredocs: tuple[Heredoc, ...] = ()
    inner: Instruction | None = None
    env_pairs: tuple[tuple[str, str | None], ...] = ()
    comments: tuple[str, ...] = ()

    def flag(self, name: str, default: str | None = None) -> str | None:
        """The last value of flag ``name``, or ``default`` when not given."""
        values = self.flags.get(name)
        return values[-1] if values else default

    def command(self) -> list[str]:
        """RUN/CMD/ENTRYPOINT command: the JSON array, or ``[shell text]`` for shell form."""
        return handle_json_args(list(self.args), self.json_form)

    def doc_comment(self, name: str) -> str:
        """What the comment above says about ``name`` (``# name does X`` gives ``does X``)."""
        prefix = name + " "
        for comment in self.comments:
            if comment.startswith(prefix):
                return comment[len(prefix) :]
        return ""


@dataclass(frozen=True)
class Stage:
    """A build stage: ``FROM base [AS name]`` and the instructions after it."""

    name: str | None
    base: str
    platform: str | None
    from_instruction: Instruction
    instructions: tuple[Instruction, ...]

    @property
    def doc_comment(self) -> str:
        """The stage's description from a ``# <name> ...`` comment above its FROM."""
        return self.from_instruction.doc_comment(self.name) if self.name else ""


@dataclass(frozen=True)
class Dockerfile:
    """A parsed and validated Dockerfile."""

    path: str | None
    escape: str
    meta_args: tuple[Instruction, ...]
    stages: tuple[Stage, ...]
    directives: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def stage(self, ref: str) -> Stage | None:
        """The stage named ``ref`` (case-insensitive) or with that index, if any."""
        lowered = ref.lower()
        for stage in self.stages:
            if stage.name == lowered:
                return stage
        if ref.isdigit() and int(ref) < len(self.stages):
            return self.stages[int(ref)]
        return None


@dataclass(frozen=True)
class SourceContent:
    """An inline COPY/ADD source from a heredoc."""

    path: str
    data: str
    expand: bool


@dataclass(frozen=True)
class HealthConfig:
    """HEALTHCHECK settings; durations in nanoseconds (0 = default)."""

    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


class _InstructionError(Exception):
    """Internal: an instruction problem, located by the caller."""


class BFlags:
    """BuildKit's ``BFlags``: parse an instruction's ``--flags`` against declared ones.

    Args:
        args: the flags as the parser split them (``["--from=build", "--link"]``).
    """

    def __init__(self, args: list[str]) -> None:
        self.args = list(args)
        self.kinds: dict[str, str] = {}
        self.defaults: dict[str, str | bool] = {}
        self.values: dict[str, list[str]] = {}
        self.order: list[str] = []

    def add_string(self, name: str, default: str = "") -> None:
        """Declare a string flag (``--name=value``)."""
        self.kinds[name] = "string"
        self.defaults[name] = default

    def add_strings(self, name: str) -> None:
        """Declare a repeatable string flag."""
        self.kinds[name] = "strings"
        self.defaults[name] = ""

    def add_bool(self, name: str, default: bool = False) -> None:
        """Declare a bool flag (``--name``, ``--name=true|false``)."""
        self.kinds[name] = "bool"
        self.defaults[name] = default

    def parse(self) -> None:
        """Check ``args`` against the declared flags.

        Raises:
            DockerfileError: unknown flag, duplicate, missing or malformed value.
        """
        try:
            self._parse()
        except _InstructionError as exc:
            raise DockerfileError(str(exc)) from None

    def _parse(self) -> None:
        for arg in self.args:
            if not arg.startswith("--"):
                raise _InstructionError(f"arg should start with -- : {arg}")
            if arg == "--":
                return
            body = arg[2:]
            name, eq, value = body.partition("=")
            kind = self.kinds.get(name)
            if kind is None:
                raise _InstructionError(f"unknown flag: --{name}")
            if name in self.values and kind != "strings":
                raise _InstructionError(f"duplicate flag specified: {name}")
            if kind == "bool":
                if eq and value == "":
                    raise _InstructionError(f"missing a value on flag: {name}")
                lowered = value.lower()
                if lowered in ("", "true"):
                    value = "true"
                elif lowered == "false":
                    value = "false"
                else:
                    raise _InstructionError(
                        f"expecting boolean value for flag {name}, not: {value}"
                    )
            elif not eq:
                raise _InstructionError(f"missing a value on flag: {name}")
            if name not in self.values:
                self.order.append(name)
            self.values.setdefault(name, []).append(value)

    def value(self, name: str) -> str | bool:
        """The flag's value (bool flags give a bool), or its default."""
        values = self.values.get(name)
        if not values:
            return self.defaults[name]
        if self.kinds[name] == "bool":
            return values[-1] == "true"
        return values[-1]

    def is_used(self, name: str) -> bool:
        """Whether the flag appeared in ``args`` (even with its default value)."""
        return name in self.values

    def used(self) -> list[str]:
        """Names of the flags that appeared, in order of first appearance."""
        return list(self.order)


def handle_json_args(args: list[str], json_form: bool) -> list[str]:
    """Exec form keeps the array; shell form joins the words with single spaces."""
    if json_form:
        return list(args)
    return [" ".join(args)] if args else []


_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART_RE = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(text: str) -> int:
    """Parse a Go duration (``"1m30s"``, ``"50ns"``, ``"1.5h"``) into nanoseconds.

    Raises:
        ValueError: not a Go duration.
    """
    s = text
    sign = 1
    if s[:1] in ("+", "-"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if s == "":
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        match = _DURATION_PART_RE.match(s, pos)
        if match is None or match.group(1) in ("", "."):
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return sign * round(total)


_MIN_INTERVAL_NS = 1_000_000  # 1ms


def parse_opt_interval(name: str, value: str) -> int:
    """A HEALTHCHECK duration flag in nanoseconds: 0 means default, else at least 1ms.

    Raises:
        DockerfileError: malformed, negative, or below 1ms.
    """
    try:
        return _opt_interval(name, value)
    except _InstructionError as exc:
        raise DockerfileError(str(exc)) from None


def _opt_interval(name: str, value: str) -> int:
    if value == "":
        return 0
    try:
        nanos = parse_duration(value)
    except ValueError as exc:
        raise _InstructionError(str(exc)) from None
    if nanos == 0:
        return 0
    if nanos < 0:
        raise _InstructionError(f'Interval "{name}" cannot be negative')
    if nanos < _MIN_INTERVAL_NS:
        raise _InstructionError(f'Interval "{name}" cannot be less than 1ms')
    return nanos


def health_config(instruction: Instruction) -> HealthConfig | None:
    """HEALTHCHECK's settings; None for ``HEALTHCHECK NONE``.

    Raises:
        DockerfileError: bad durations or retries.
    """
    try:
        return _health_config(instruction)
    except _InstructionError as exc:
        raise DockerfileError(str(exc), None, instruction.line) from None


def _health_config(instruction: Instruction) -> HealthConfig | None:
    args = list(instruction.args)
    if not args:
        raise _InstructionError("HEALTHCHECK requires at least one argument")
    kind = args[0].upper()
    if kind == "NONE":
        if len(args) > 1:
            raise _InstructionError("HEALTHCHECK NONE takes no arguments")
        return None
    if kind != "CMD":
        raise _InstructionError(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
    cmd = handle_json_args(args[1:], instruction.json_form)
    if not cmd:
        raise _InstructionError("Missing command after HEALTHCHECK CMD")
    test = ("CMD", *cmd) if instruction.json_form else ("CMD-SHELL", *cmd)
    retries_text = instruction.flag("retries", "") or ""
    retries = 0
    if retries_text:
        try:
            retries = int(retries_text, 10)
        except ValueError:
            raise _InstructionError(
                f'strconv.ParseInt: parsing "{retries_text}": invalid syntax'
            ) from None
        if retries < 0:
            raise _InstructionError(f"--retries cannot be negative ({retries})")
    return HealthConfig(
        test=test,
        interval=_opt_interval("interval", instruction.flag("interval", "") or ""),
        timeout=_opt_interval("timeout", instruction.flag("timeout", "") or ""),
        start_period=_opt_interval("start-period", instruction.flag("start-period", "") or ""),
        start_interval=_opt_interval(
            "start-interval", instruction.flag("start-interval", "") or ""
        ),
        retries=retries,
    )


def sources_and_dest(
    instruction: Instruction,
) -> tuple[list[str], list[SourceContent], str]:
    """Split COPY/ADD arguments into file sources, heredoc sources and destination.

    COPY/ADD ``<<-`` heredoc bodies are chomped here (RUN keeps them raw).

    Raises:
        DockerfileError: the destination is a heredoc.
    """
    try:
        return _sources_and_dest(instruction)
    except _InstructionError as exc:
        raise DockerfileError(str(exc), None, instruction.line) from None


def _sources_and_dest(
    instruction: Instruction,
) -> tuple[list[str], list[SourceContent], str]:
    args = list(instruction.args)
    dest = args[-1]
    paths: list[str] = []
    contents: list[SourceContent] = []
    if not instruction.heredocs or instruction.json_form:
        return args[:-1], contents, dest
    if _heredoc_word(dest) is not None:
        raise _InstructionError(f"{instruction.keyword} cannot accept a heredoc as a destination")
    by_name = {doc.name: doc for doc in instruction.heredocs}
    for src in args[:-1]:
        doc = _heredoc_word(src)
        if doc is not None and doc.name in by_name:
            data = by_name[doc.name].content
            if doc.chomp:
                data = chomp_heredoc_content(data)
            contents.append(SourceContent(path=doc.name, data=data, expand=doc.expand))
        else:
            paths.append(src)
    return paths, contents, dest


@dataclass(frozen=True)
class Device:
    """A ``RUN --device=`` request (a CDI device name)."""

    name: str
    required: bool = False


_GO_BOOLS = {
    "1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
    "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False,
}  # fmt: skip


def parse_device(value: str) -> Device:
    """Parse a ``RUN --device`` value like BuildKit's ``ParseDevice``.

    ``vendor.com/dev=foo,required`` and ``name=vendor.com/dev=foo,required=false``
    are both accepted.

    Raises:
        DockerfileError: malformed CSV, a second name, or a bad ``required`` value.
    """
    try:
        fields = next(csv.reader([value], skipinitialspace=False, strict=True), [])
    except csv.Error as exc:
        raise DockerfileError(f"failed to parse csv input: {exc}") from None
    name = ""
    required = False
    for item in fields:
        key, eq, val = item.partition("=")
        lowered = key.lower()
        if lowered == "name":
            if name:
                raise DockerfileError(f"device name already set to {name}")
            name = val
        elif lowered == "required":
            if eq:
                if val not in _GO_BOOLS:
                    raise DockerfileError(f"invalid value for {key}: {val}")
                required = _GO_BOOLS[val]
            else:
                required = True
        else:
            if name:
                raise DockerfileError(f"device name already set to {name}")
            name = item
    return Device(name=name, required=required)


def _heredoc_word(word: str) -> Heredoc | None:
    try:
        return parse_heredoc(word)
    except DockerfileError:
        return None


def _check_flags(keyword: str, flags: list[str]) -> dict[str, tuple[str, ...]]:
    bflags = BFlags(flags)
    for name, kind in _FLAGS.get(keyword, {}).items():
        if kind == "bool":
            bflags.add_bool(name)
        elif kind == "strings":
            bflags.add_strings(name)
        else:
            bflags.add_string(name)
    bflags._parse()
    return {name: tuple(values) for name, values in bflags.values.items()}


def _key_values(keyword: str, args: list[str]) -> tuple[tuple[str, str | None], ...]:
    if not args:
        raise _InstructionError(f"{keyword} requires at least one argument")
    if len(args) % 3 != 0:
        # Key/value/separator triples, as the parser emits them.
        raise _InstructionError(f"Bad input to {keyword}, too many arguments")
    pairs: list[tuple[str, str | None]] = []
    for i in range(0, len(args), 3):
        if args[i] == "":
            raise _InstructionError(f"{keyword} names can not be blank")
        pairs.append((args[i], args[i + 1]))
    return tuple(pairs)


def _arg_pairs(args: list[str]) -> tuple[tuple[str, str | None], ...]:
    if not args:
        raise _InstructionError("ARG requires at least one argument")
    pairs: list[tuple[str, str | None]] = []
    for word in args:
        if "=" in word:
            key, _, value = word.partition("=")
            if key == "":
                raise _InstructionError("ARG names can not be blank")
            pairs.append((key, value))
        else:
            pairs.append((word, None))
    return tuple(pairs)


def instruction_from_node(node: Node, path: str | None = None) -> Instruction:
    """Validate one AST node and build its :class:`Instruction`.

    Raises:
        DockerfileError: naming ``path`` and the node's line.
    """
    try:
        return _instruction(node, path)
    except _InstructionError as exc:
        raise DockerfileError(str(exc), path, node.start_line or None) from None


def _instruction(node: Node, path: str | None) -> Instruction:
    keyword = node.value.upper()
    if keyword not in KEYWORDS:
        # Echo the keyword as written, like BuildKit.
        written = node.original.strip().split(None, 1)[0] if node.original.strip() else node.value
        raise _InstructionError(f"unknown instruction: {written}")
    args = list(node.args)
    flags = _check_flags(keyword, node.flags)
    env_pairs: tuple[tuple[str, str | None], ...] = ()
    inner: Instruction | None = None

    if keyword in ("MAINTAINER", "WORKDIR", "USER", "STOPSIGNAL"):
        if len(args) != 1:
            raise _InstructionError(f"{keyword} requires exactly one argument")
    elif keyword in ("ENV", "LABEL"):
        env_pairs = _key_values(keyword, args)
    elif keyword == "ARG":
        env_pairs = _arg_pairs(args)
    elif keyword in ("EXPOSE", "VOLUME"):
        if not args:
            raise _InstructionError(f"{keyword} requires at least one argument")
        if keyword == "VOLUME" and any(a.strip() == "" for a in args):
            raise _InstructionError("VOLUME specified can not be an empty string")
    elif keyword in ("ADD", "COPY"):
        if len(args) < 2:
            raise _InstructionError(
                f"{keyword} requires at least two arguments, but only one was provided. "
                "Destination could not be determined"
            )
    elif keyword == "FROM":
        if not (len(args) == 1 or (len(args) == 3 and args[1].lower() == "as")):
            raise _InstructionError("FROM requires either one or three arguments")
        if len(args) == 3 and not _STAGE_NAME_RE.match(args[2].lower()):
            raise _InstructionError(
                f"invalid name for build stage: {args[2]!r}, "
                "name can't start with a number or contain symbols"
            )
    elif keyword == "ONBUILD":
        if node.inner is None:
            raise _InstructionError("ONBUILD requires at least one argument")
        trigger = node.inner.value.upper()
        if trigger == "ONBUILD":
            raise _InstructionError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trigger in ("MAINTAINER", "FROM"):
            raise _InstructionError(f"{trigger} isn't allowed as an ONBUILD trigger")
        inner_node = node.inner
        if node.heredocs and not inner_node.heredocs:
            inner_node.heredocs = list(node.heredocs)
        inner = _instruction(inner_node, path)
        # BuildKit keeps the trigger as its text (OnbuildCommand.Expression).
        args = [re.sub(r"(?i)^\s*ONBUILD\s*", "", node.original, count=1)]
    elif keyword == "HEALTHCHECK":
        if not args:
            raise _InstructionError("HEALTHCHECK requires at least one argument")
    elif keyword == "SHELL":
        if not args:
            raise _InstructionError("SHELL requires at least one argument")
        if not node.json_form:
            raise _InstructionError("SHELL requires the arguments to be in JSON form")

    instruction = Instruction(
        keyword=keyword,
        args=tuple(args),
        flags=flags,
        original=node.original,
        line=node.start_line,
        end_line=node.end_line,
        json_form=node.json_form,
        heredocs=tuple(node.heredocs) if keyword != "ONBUILD" else (),
        inner=inner,
        env_pairs=env_pairs,
        comments=tuple(node.prev_comment),
    )
    if keyword == "HEALTHCHECK":
        _health_config(instruction)
    if keyword == "RUN":
        for device in flags.get("device", ()):
            try:
                parse_device(device)
            except DockerfileError as exc:
                raise _InstructionError(exc.reason) from None
    if keyword in ("ADD", "COPY"):
        _sources_and_dest(instruction)
    return instruction


def load_dockerfile(text: str, path: str | None = None) -> Dockerfile:
    """Parse and validate a Dockerfile into meta ARGs and stages.

    Args:
        text: the Dockerfile's content.
        path: its path, for error messages.

    Raises:
        DockerfileError: naming ``path`` and the line of the first problem.
    """
    result = parse(text, path)
    return dockerfile_from_result(result, path)


def dockerfile_from_result(result: ParseResult, path: str | None = None) -> Dockerfile:
    """Validate an already parsed AST (see :func:`load_dockerfile`)."""
    meta_args: list[Instruction] = []
    stages: list[Stage] = []
    current_from: Instruction | None = None
    current: list[Instruction] = []
    names: set[str] = set()

    def close() -> None:
        if current_from is None:
            return
        args = current_from.args
        name = args[2].lower() if len(args) == 3 else None
        stages.append(
            Stage(
                name=name,
                base=args[0],
                platform=current_from.flag("platform"),
                from_instruction=current_from,
                instructions=tuple(current),
            )
        )

    for node in result.children:
        instruction = instruction_from_node(node, path)
        if instruction.keyword == "FROM":
            close()
            if len(instruction.args) == 3:
                name = instruction.args[2].lower()
                if name in names:
                    raise DockerfileError(f"duplicate stage name {name!r}", path, instruction.line)
                names.add(name)
            current_from = instruction
            current = []
        elif current_from is None:
            if instruction.keyword != "ARG":
                raise DockerfileError(
                    f"no build stage in current context: {instruction.keyword} before FROM",
                    path,
                    instruction.line,
                )
            meta_args.append(instruction)
        else:
            current.append(instruction)
    close()
    if not stages:
        raise DockerfileError("no build stage in Dockerfile (missing FROM)", path, None)
    return Dockerfile(
        path=path,
        escape=result.escape_token,
        meta_args=tuple(meta_args),
        stages=tuple(stages),
        directives=dict(result.directives),
        warnings=tuple(result.warnings),
    )
