"""A Dockerfile parser that matches BuildKit's ``frontend/dockerfile/parser``.

The parser turns text into a flat list of instruction nodes, exactly as BuildKit's
``parser.Parse`` does, so that ``ParseResult.dump()`` is byte for byte BuildKit's
``AST.Dump()``. It knows line continuations, comments, parser directives
(``# syntax=``, ``# escape=``, ``# check=``), JSON (exec) form, the per-instruction
argument splitting rules, builder flags and heredocs. It does not validate
instructions (unknown keywords are kept with an empty argument, as BuildKit keeps
them); :mod:`lamina.core.dockerfile.instructions` does that.

Some steps of BuildKit work on bytes rather than characters (flag extraction and
HEALTHCHECK splitting); they are reproduced on the UTF-8 bytes so that odd input
gives the same AST. Text that is not valid UTF-8 should be decoded with
``errors="surrogateescape"``; such bytes are dumped as ``\\xHH`` like Go does.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from lamina.core.dockerfile.quote import go_quote
from lamina.core.dockerfile.shell import Lexer, go_isspace
from lamina.core.errors import DockerfileError

__all__ = [
    "DEFAULT_ESCAPE_TOKEN",
    "Heredoc",
    "Node",
    "ParseResult",
    "chomp_heredoc_content",
    "detect_syntax",
    "heredocs_from_line",
    "parse",
    "parse_directive",
    "parse_heredoc",
]

log = logging.getLogger(__name__)

DEFAULT_ESCAPE_TOKEN = "\\"

# bufio.Scanner's token limit: a physical line of this many bytes or more is refused.
MAX_LINE_BYTES = 65536

_VALID_DIRECTIVES = frozenset({"syntax", "escape", "check"})
_DIRECTIVE_RE = re.compile(
    r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z", re.DOTALL
)
# Go's regexp \s and \d are ASCII-only; spell the classes out.
_WHITESPACE_RE = re.compile(r"[\t\v\f\r ]+")
_HEREDOC_RE = re.compile(r"([0-9]*)<<(-?)[\t\n\f\r ]*([^<]*)\Z", re.DOTALL)
_LEADING_TABS_RE = re.compile(r"^\t+", re.MULTILINE)

_HEREDOC_INSTRUCTIONS = frozenset({"add", "copy", "run"})
_HEREDOC_COMPOUND = frozenset({"onbuild"})

_NOT_STRING_ARRAY = "when using JSON array syntax, arrays must be comprised of strings only"


@dataclass
class Heredoc:
    """A here-document attached to an instruction.

    Attributes:
        name: the terminator word, quotes removed.
        content: the body, raw (every line with its newline; tabs kept even for ``<<-``).
        expand: False when any part of the terminator word was quoted.
        chomp: True for ``<<-``.
        file_descriptor: the number before ``<<`` (``3<<EOF``), else 0.
    """

    name: str
    content: str = ""
    expand: bool = True
    chomp: bool = False
    file_descriptor: int = 0


@dataclass
class Node:
    """One instruction of the AST.

    Attributes:
        value: the lower-cased keyword (``"run"``).
        args: the argument node values, in order.
        flags: the leading ``--flags`` as written (quotes removed).
        original: the instruction as written, continuation lines joined.
        start_line: first line (1-based).
        end_line: last line, heredoc bodies included.
        json_form: the arguments came from a JSON array.
        heredocs: here-documents read after the instruction line.
        inner: ONBUILD's instruction.
        prev_comment: comment lines collected right before the instruction.
    """

    value: str
    args: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    original: str = ""
    start_line: int = 0
    end_line: int = 0
    json_form: bool = False
    heredocs: list[Heredoc] = field(default_factory=list)
    inner: Node | None = None
    prev_comment: list[str] = field(default_factory=list)

    def dump(self) -> str:
        """Render the node like BuildKit's ``Node.Dump()`` (without the parentheses)."""
        # Innermost first: a chain of ONBUILDs is as long as the input makes it, so
        # it is rendered without recursion.
        chain: list[Node] = []
        node: Node | None = self
        while node is not None:
            chain.append(node)
            node = node.inner
        text = ""
        for node in reversed(chain):
            parts = [go_lower(node.value)]
            if node.flags:
                parts.append("[" + " ".join(go_quote(f) for f in node.flags) + "]")
            if node.inner is not None:
                parts.append("(" + text + ")")
            parts.extend(go_quote(a) for a in node.args)
            text = go_trim_space(" ".join(parts))
        return text


@dataclass
class ParseResult:
    """What :func:`parse` returns.

    Attributes:
        children: the instructions, in file order.
        escape_token: ``\\`` or ````` (from ``# escape=``).
        warnings: non-fatal findings (empty continuation lines).
        directives: parser directives found at the top, by lower-case name.
    """

    children: list[Node]
    escape_token: str = DEFAULT_ESCAPE_TOKEN
    warnings: list[str] = field(default_factory=list)
    directives: dict[str, str] = field(default_factory=dict)

    @property
    def start_line(self) -> int:
        """First line of the first instruction."""
        return self.children[0].start_line

    @property
    def end_line(self) -> int:
        """Last line of the last instruction."""
        return self.children[-1].end_line

    def dump(self) -> str:
        """Render the AST like BuildKit's ``AST.Dump()``: one ``(...)`` line per instruction."""
        return "\n".join("(" + child.dump() + ")" for child in self.children)


# --- Go-compatible string helpers -------------------------------------------------


def go_lower(text: str) -> str:
    """Lower-case like Go's ``strings.ToLower`` (one rune in, one rune out)."""
    if text.isascii():
        return text.lower()
    return "".join(c.lower()[:1] or c for c in text)


def go_trim_space(text: str) -> str:
    """``strings.TrimSpace``: strip Go's Unicode white space from both ends."""
    start, end = 0, len(text)
    while start < end and go_isspace(text[start]):
        start += 1
    while end > start and go_isspace(text[end - 1]):
        end -= 1
    return text[start:end]


def _trim_left_space(text: str) -> str:
    start = 0
    while start < len(text) and go_isspace(text[start]):
        start += 1
    return text[start:]


_BYTE_SPACES = frozenset(b"\t\n\v\f\r \x85\xa0")


def _to_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _from_bytes(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


# --- Directives -------------------------------------------------------------------


class _DirectiveParser:
    """BuildKit's ``DirectiveParser``: ``# key=value`` lines at the very top."""

    def __init__(self, comment: str = "#", line: int = 0) -> None:
        self.comment = comment
        self.line = line
        self.seen: set[str] = set()
        self.done = False

    def parse_line(self, text: str) -> tuple[str, str, int] | None:
        self.line += 1
        if self.done:
            return None
        if not text.startswith(self.comment):
            self.done = True
            return None
        body = _trim_left_space(text[len(self.comment) :])
        match = _DIRECTIVE_RE.match(body)
        if match is None:
            self.done = True
            return None
        key = match.group(1).lower()
        if key not in _VALID_DIRECTIVES:
            self.done = True
            return None
        if key in self.seen:
            raise _ParseError(f"only one {key} parser directive can be used")
        self.seen.add(key)
        return key, match.group(2), self.line

    def parse_all(self, text: str) -> list[tuple[str, str, int]]:
        found: list[tuple[str, str, int]] = []
        for raw in _physical_lines(text):
            if self.done:
                break
            directive = self.parse_line(raw.rstrip("\r\n"))
            if directive is not None:
                found.append(directive)
        return found


def _discard_bom(text: str) -> str:
    return text.removeprefix("\ufeff")


def _parse_directive(key: str, text: str, any_format: bool) -> tuple[str, str, int] | None:
    text = _discard_bom(text)
    line = 0
    first, _, rest = text.partition("\n")
    if first.startswith("#!"):
        text = rest
        line = 1
    prefixes = ("#", "//") if any_format else ("#",)
    for prefix in prefixes:
        parser = _DirectiveParser(prefix, line)
        try:
            directives = parser.parse_all(text)
        except _ParseError:
            directives = []
        for name, value, where in directives:
            if name == key:
                return value.split(" ", 1)[0], value, where
    if any_format:
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            return None
        if isinstance(doc, dict) and isinstance(doc.get(key), str):
            value = doc[key]
            return value, value, line
    return None


def detect_syntax(text: str) -> tuple[str, str, int] | None:
    """Find the ``syntax`` directive like BuildKit's ``DetectSyntax``.

    Accepts ``# syntax=``, ``// syntax=`` and a JSON object, after an optional BOM
    and shebang line.

    Returns:
        ``(ref, cmdline, line)``: the value up to the first space, the whole value
        and its 1-based line (0 for the JSON form); None when there is none.
    """
    return _parse_directive("syntax", text, any_format=True)


def parse_directive(key: str, text: str) -> tuple[str, str, int] | None:
    """Find directive ``key`` (``# key=value`` form only), like BuildKit's ``ParseDirective``."""
    return _parse_directive(key, text, any_format=False)


# --- Heredocs ---------------------------------------------------------------------


def parse_heredoc(word: str) -> Heredoc | None:
    """Parse one word such as ``<<EOF``, ``<<-'EOF'`` or ``3<<EOF``.

    Returns:
        The heredoc (empty content), or None when the word is not one.

    Raises:
        DockerfileError: the terminator has unbalanced quotes.
    """
    match = _HEREDOC_RE.match(word)
    if match is None:
        return None
    fd_text, dash, rest = match.groups()
    if not rest:
        return None
    lexer = Lexer("\\", skip_unset_env=True)
    # Lex the word with and without quote removal: if the quote counts differ, part
    # of the word was quoted and the body must not be expanded.
    words = lexer.process_words(rest, {})
    if len(words) != 1:
        return None
    lexer.raw_quotes = True
    words_raw = lexer.process_words(rest, {})
    if len(words_raw) != len(words):
        raise DockerfileError(f"internal lexing of heredoc produced inconsistent results: {rest}")
    name = words[0]
    quotes = name.count("'") + name.count('"')
    quotes_raw = words_raw[0].count("'") + words_raw[0].count('"')
    return Heredoc(
        name=name,
        expand=quotes == quotes_raw,
        chomp=dash == "-",
        file_descriptor=int(fd_text) if fd_text else 0,
    )


def heredocs_from_line(line: str) -> list[Heredoc]:
    """The heredocs an instruction line opens, in order (``COPY <<A <<B /d`` gives two)."""
    lexer = Lexer("\\", raw_quotes=True, raw_escapes=True, skip_unset_env=True)
    try:
        words = lexer.process_words(line, {})
    except DockerfileError:
        # BuildKit ignores lexing errors here; the line simply has no heredocs.
        return []
    docs: list[Heredoc] = []
    for word in words:
        doc = parse_heredoc(word)
        if doc is not None:
            docs.append(doc)
    return docs


def chomp_heredoc_content(text: str) -> str:
    """Remove leading tabs from every line (what ``<<-`` asks for)."""
    return _LEADING_TABS_RE.sub("", text)


# --- Line parsers -----------------------------------------------------------------


class _ParseError(Exception):
    """Internal: an error without location, located by the caller."""


def parse_words(rest: str, escape_token: str = DEFAULT_ESCAPE_TOKEN) -> list[str]:
    """Split on white space, keeping quoted parts (with their quotes) in one word.

    The ENV/LABEL/ARG splitter (BuildKit's ``parseWords``); escapes are kept too.
    """
    words: list[str] = []
    in_spaces, in_word, in_quote = 0, 1, 2
    phase = in_spaces
    quote = ""
    blank_ok = False
    buf: list[str] = []
    n = len(rest)
    pos = 0
    while pos <= n:
        ch = rest[pos] if pos < n else ""
        if phase == in_spaces:
            if pos == n:
                break
            if go_isspace(ch):
                pos += 1
                continue
            phase = in_word
        if phase in (in_word, in_quote) and pos == n:
            if blank_ok or buf:
                words.append("".join(buf))
            break
        if phase == in_word:
            if go_isspace(ch):
                phase = in_spaces
                if blank_ok or buf:
                    words.append("".join(buf))
                buf = []
                blank_ok = False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                phase = in_quote
            if ch == escape_token:
                if pos + 1 == n:
                    pos += 1
                    continue
                buf.append(ch)
                pos += 1
                ch = rest[pos]
            buf.append(ch)
            pos += 1
            continue
        # in_quote
        if ch == quote:
            phase = in_word
        if ch == escape_token and quote != "'":
            if pos + 1 == n:
                phase = in_word
                pos += 1
                continue
            pos += 1
            buf.append(ch)
            ch = rest[pos]
        buf.append(ch)
        pos += 1
    return words


def parse_name_val(rest: str, key: str, escape_token: str = DEFAULT_ESCAPE_TOKEN) -> list[str]:
    """ENV/LABEL arguments as key, value, separator triples (BuildKit's ``parseNameVal``).

    The separator is ``""`` for the old ``KEY name value`` form and ``"="`` otherwise.
    """
    words = parse_words(rest, escape_token)
    if not words:
        return []
    if "=" not in words[0]:
        parts = _WHITESPACE_RE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise _ParseError(f"{key} must have two arguments")
        return [parts[0], parts[1], ""]
    values: list[str] = []
    for word in words:
        if "=" not in word:
            raise _ParseError(
                f"Syntax error - can't find = in {go_quote(word)}. Must be of the form: name=value"
            )
        name, _, value = word.partition("=")
        values.extend((name, value, "="))
    return values


class _NotJSON(Exception):
    pass


def _reject_constant(name: str) -> None:
    raise ValueError(name)


def parse_json(rest: str) -> list[str]:
    """Decode a JSON array of strings (exec form).

    Raises:
        _NotJSON: not a JSON array (the caller falls back to shell form).
        _ParseError: an array with an element that is not a string.
    """
    rest = _trim_left_space(rest)
    if not rest.startswith("["):
        raise _NotJSON
    try:
        # Go's decoder refuses NaN/Infinity; Python's accepts them unless told not to.
        data = json.loads(rest, parse_constant=_reject_constant)
    except RecursionError:
        raise _ParseError(_NOT_STRING_ARRAY) from None
    except ValueError:
        raise _NotJSON from None
    if not isinstance(data, list):
        raise _NotJSON
    for item in data:
        if not isinstance(item, str):
            raise _ParseError(_NOT_STRING_ARRAY)
    return data


@dataclass
class _Args:
    values: list[str] = field(default_factory=list)
    json_form: bool = False


def _split_whitespace(rest: str) -> _Args:
    if rest == "":
        return _Args()
    return _Args(_WHITESPACE_RE.split(rest))


def _parse_string(rest: str) -> _Args:
    return _Args([rest] if rest else [])


def _parse_maybe_json(rest: str) -> _Args:
    if rest == "":
        return _Args()
    try:
        return _Args(parse_json(rest), json_form=True)
    except _NotJSON:
        return _Args([rest])


def _parse_maybe_json_to_list(rest: str) -> _Args:
    try:
        return _Args(parse_json(rest), json_form=True)
    except _NotJSON:
        return _split_whitespace(rest)


def _parse_health_config(rest: str) -> _Args:
    # BuildKit scans bytes here, so a UTF-8 byte 0x85/0xA0 counts as a space.
    data = _to_bytes(rest)
    sep = 0
    while sep < len(data) and data[sep] not in _BYTE_SPACES:
        sep += 1
    nxt = sep
    while nxt < len(data) and data[nxt] in _BYTE_SPACES:
        nxt += 1
    if sep == 0:
        return _Args()
    cmd = _parse_maybe_json(_from_bytes(data[nxt:]))
    return _Args([_from_bytes(data[:sep]), *cmd.values], json_form=cmd.json_form)


def _parse_name_or_name_val(rest: str, escape_token: str) -> _Args:
    return _Args(parse_words(rest, escape_token))


def _dispatch(cmd: str, rest: str, escape_token: str) -> _Args:
    if cmd in ("add", "copy", "volume"):
        return _parse_maybe_json_to_list(rest)
    if cmd in ("cmd", "entrypoint", "run", "shell"):
        return _parse_maybe_json(rest)
    if cmd in ("expose", "from"):
        return _split_whitespace(rest)
    if cmd in ("maintainer", "stopsignal", "user", "workdir"):
        return _parse_string(rest)
    if cmd == "arg":
        return _parse_name_or_name_val(rest, escape_token)
    if cmd == "env":
        return _Args(parse_name_val(rest, "ENV", escape_token))
    if cmd == "label":
        return _Args(parse_name_val(rest, "LABEL", escape_token))
    if cmd == "healthcheck":
        return _parse_health_config(rest)
    if cmd == "onbuild":
        # Only a bare ONBUILD gets here: _node_from_line builds its instruction.
        return _Args()
    # Unknown instructions are kept with one empty argument; the instructions
    # layer reports them.
    return _Args([""])


def extract_builder_flags(line: str) -> tuple[str, list[str]]:
    """Split the leading ``--flags`` off an instruction's arguments.

    A port of BuildKit's ``extractBuilderFlags``, which works byte by byte: only
    words starting with ``--`` are flags, a bare ``--`` ends them and is dropped,
    and quotes and backslash escapes inside a flag are removed.

    Returns:
        ``(rest, flags)``: the remaining text and the flags.
    """
    data = _to_bytes(line)
    in_spaces, in_word, in_quote = 0, 1, 2
    words: list[str] = []
    phase = in_spaces
    word: list[str] = []
    quote = 0
    blank_ok = False
    n = len(data)
    pos = 0
    while pos <= n:
        ch = data[pos] if pos < n else -1
        if phase == in_spaces:
            if pos == n:
                break
            if ch in _BYTE_SPACES:
                pos += 1
                continue
            if ch != 0x2D or pos + 1 == n or data[pos + 1] != 0x2D:  # not "--"
                return _from_bytes(data[pos:]), words
            phase = in_word
        if phase in (in_word, in_quote) and pos == n:
            text = "".join(word)
            if text != "--" and (blank_ok or word):
                words.append(text)
            break
        if phase == in_word:
            if ch in _BYTE_SPACES:
                phase = in_spaces
                text = "".join(word)
                if text == "--":
                    return _from_bytes(data[pos:]), words
                if blank_ok or word:
                    words.append(text)
                word = []
                blank_ok = False
                pos += 1
                continue
            if ch in (0x27, 0x22):  # ' or "
                quote = ch
                blank_ok = True
                phase = in_quote
                pos += 1
                continue
            if ch == 0x5C:  # backslash
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = data[pos]
            # Go appends rune(byte): each byte becomes one Latin-1 character.
            word.append(chr(ch))
            pos += 1
            continue
        # in_quote
        if ch == quote:
            phase = in_word
            pos += 1
            continue
        if ch == 0x5C:
            if pos + 1 == n:
                phase = in_word
                pos += 1
                continue
            pos += 1
            ch = data[pos]
        word.append(chr(ch))
        pos += 1
    return "", words


_TOKEN_WHITESPACE_RE = re.compile(r"[\t\v\f\r ]+")


def split_command(line: str) -> tuple[str, list[str], str]:
    """Split an instruction line into ``(keyword, flags, rest)``; the keyword lower-cased."""
    cmdline = _TOKEN_WHITESPACE_RE.split(go_trim_space(line), maxsplit=1)
    cmd = go_lower(cmdline[0])
    flags: list[str] = []
    args = ""
    if len(cmdline) == 2:
        args, flags = extract_builder_flags(cmdline[1])
    return cmd, flags, go_trim_space(args)


def _node_from_line(line: str, escape_token: str, comments: list[str]) -> Node:
    # ONBUILD holds the instruction after it, which may be another ONBUILD: the chain
    # is split off first and the nodes built from the innermost out, so no depth of
    # ``ONBUILD ONBUILD ...`` recurses (the instructions layer then refuses the chain,
    # as BuildKit's does).
    outer: list[tuple[list[str], str]] = []
    cmd, flags, rest = split_command(line)
    while cmd == "onbuild" and rest != "":
        outer.append((flags, line))
        line = rest
        cmd, flags, rest = split_command(line)
    parsed = _dispatch(cmd, rest, escape_token)
    node = Node(
        value=cmd,
        args=parsed.values,
        flags=flags,
        original=line,
        json_form=parsed.json_form,
        prev_comment=[] if outer else list(comments),
    )
    for depth, (outer_flags, outer_line) in reversed(list(enumerate(outer))):
        node = Node(
            value="onbuild",
            flags=outer_flags,
            original=outer_line,
            inner=node,
            prev_comment=[] if depth else list(comments),
        )
    return node


def _can_contain_heredoc(node: Node) -> bool:
    if node.value in _HEREDOC_COMPOUND and node.inner is not None:
        node = node.inner
    return node.value in _HEREDOC_INSTRUCTIONS and not node.json_form


# --- The scanner ------------------------------------------------------------------


def _physical_lines(text: str) -> Iterator[str]:
    """Lines with their ``\\n`` kept (Go's scanLines variant)."""
    start = 0
    n = len(text)
    while start < n:
        end = text.find("\n", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start : end + 1]
        start = end + 1


def _too_long(raw: str) -> bool:
    body = raw.removesuffix("\n")
    # A character is at most 4 UTF-8 bytes, so short lines need no encoding.
    if len(body) * 4 < MAX_LINE_BYTES:
        return False
    return len(_to_bytes(body)) >= MAX_LINE_BYTES


def _is_comment(raw: str) -> bool:
    return _trim_left_space(raw.rstrip("\r\n")).startswith("#")


class _Lines:
    """Physical-line cursor that enforces bufio.Scanner's line length limit."""

    def __init__(self, text: str) -> None:
        self._it = _physical_lines(text)
        self.error: str | None = None

    def scan(self) -> str | None:
        if self.error is not None:
            return None
        raw = next(self._it, None)
        if raw is not None and _too_long(raw):
            self.error = f"dockerfile line greater than max allowed size of {MAX_LINE_BYTES - 1}"
            return None
        return raw


class _State:
    def __init__(self) -> None:
        self.escape_token = DEFAULT_ESCAPE_TOKEN
        self.continuation = self._continuation_re(DEFAULT_ESCAPE_TOKEN)
        self.directive_parser = _DirectiveParser()
        self.directives: dict[str, str] = {}

    @staticmethod
    def _continuation_re(token: str) -> re.Pattern[str]:
        t = re.escape(token)
        # An escape at the end of a line continues it, unless it is itself escaped;
        # the second branch is an escape alone on its line.
        return re.compile(f"([^{t}]){t}[ \\t]*\\Z|^{t}[ \\t]*\\Z")

    def set_escape_token(self, value: str) -> None:
        if value not in ("`", "\\"):
            raise _ParseError(f"invalid escape token '{value}' does not match ` or \\")
        self.escape_token = value
        self.continuation = self._continuation_re(value)

    def process_line(self, raw: str, strip_left: bool) -> str:
        token = raw.rstrip("\r\n")
        if strip_left:
            token = _trim_left_space(token)
        directive = self.directive_parser.parse_line(token)
        if directive is not None:
            key, value, _ = directive
            self.directives[key] = value
            if key == "escape":
                self.set_escape_token(value)
        return "" if _trim_left_space(token).startswith("#") else token

    def trim_continuation(self, line: str) -> tuple[str, bool]:
        if self.continuation.search(line):
            return self.continuation.sub(r"\1", line), False
        return line, True


def parse(text: str, path: str | None = None) -> ParseResult:
    """Parse a Dockerfile the way BuildKit's ``parser.Parse`` does.

    Args:
        text: the Dockerfile's content.
        path: its path, used in error messages only.

    Returns:
        The instructions, the escape token, warnings and parser directives.

    Raises:
        DockerfileError: naming the path and line: a bad directive, JSON arrays
            with non-string elements, ``ENV key`` without a value, an unterminated
            heredoc, an over-long line, or no instructions at all.
    """
    state = _State()
    lines = _Lines(text)
    current = 0
    children: list[Node] = []
    warnings: list[str] = []
    comments: list[str] = []

    def fail(exc: Exception, line: int | None) -> DockerfileError:
        return DockerfileError(str(exc), path, line if line else None)

    while (raw := lines.scan()) is not None:
        if current == 0:
            raw = _discard_bom(raw)
        if _is_comment(raw):
            comment = go_trim_space(raw.rstrip("\r\n")[1:])
            if comment == "":
                comments = []
            else:
                comments.append(comment)
        try:
            processed = state.process_line(raw, strip_left=True)
        except _ParseError as exc:
            raise fail(exc, current + 1) from None
        current += 1
        start = current
        line, end_of_line = state.trim_continuation(processed)
        if end_of_line and line == "":
            continue

        buf = [line]
        empty_continuation = False
        while not end_of_line:
            raw = lines.scan()
            if raw is None:
                break
            try:
                processed = state.process_line(raw, strip_left=False)
            except _ParseError as exc:
                raise fail(exc, current + 1) from None
            current += 1
            if _is_comment(raw):
                continue
            if _trim_left_space(processed) == "":
                empty_continuation = True
                continue
            processed, end_of_line = state.trim_continuation(processed)
            buf.append(processed)
        line = "".join(buf)

        if empty_continuation:
            warnings.append(
                f"Empty continuation line found in: {line} "
                "(empty continuation lines will become errors in a future release)"
            )

        try:
            child = _node_from_line(line, state.escape_token, comments)
        except _ParseError as exc:
            raise fail(exc, start) from None

        if _can_contain_heredoc(child) and "<<" in line:
            try:
                docs = heredocs_from_line(line)
            except DockerfileError as exc:
                raise DockerfileError(exc.reason, path, start) from None
            for doc in docs:
                body: list[str] = []
                terminated = False
                while (raw := lines.scan()) is not None:
                    current += 1
                    candidate = raw.rstrip("\r\n")
                    if doc.chomp:
                        candidate = candidate.lstrip("\t")
                    if candidate == doc.name:
                        terminated = True
                        break
                    body.append(raw)
                if not terminated:
                    if lines.error is not None:
                        break
                    raise DockerfileError("unterminated heredoc", path, start)
                doc.content = "".join(body)
                child.heredocs.append(doc)

        child.start_line = start
        child.end_line = current
        if child.inner is not None:
            child.inner.start_line, child.inner.end_line = start, current
        children.append(child)
        comments = []

    if not children:
        raise DockerfileError("file with no instructions", path, current or None)
    if lines.error is not None:
        raise DockerfileError(lines.error, path, current + 1)
    log.debug("parsed %s: %d instructions", path or "<text>", len(children))
    return ParseResult(
        children=children,
        escape_token=state.escape_token,
        warnings=warnings,
        directives=dict(state.directives),
    )
