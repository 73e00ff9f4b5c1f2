"""Variable expansion and word splitting, as BuildKit's shell lexer does it.

A port of ``frontend/dockerfile/shell/lex.go``: quotes (``'`` and ``"``), the escape
token, ``$name`` / ``${name}`` and the modifiers ``${name:-word}``, ``${name:+word}``,
``${name:?word}`` (each also without the colon), ``${name#pattern}``,
``${name##pattern}``, ``${name%pattern}``, ``${name%%pattern}`` and
``${name/pattern/replacement}`` / ``${name//pattern/replacement}``. It is not a
shell: there is no command substitution, arithmetic or globbing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lamina.core.dockerfile.quote import go_quote
from lamina.core.errors import DockerfileError

__all__ = ["MAX_NESTING", "Lexer", "build_envs", "go_isspace"]

# Python's str.isspace() also accepts the ASCII separators 0x1c-0x1f, which Go's
# unicode.IsSpace does not; the lexer must split exactly where BuildKit splits.
_NOT_GO_SPACE = frozenset("\x1c\x1d\x1e\x1f")


def go_isspace(ch: str) -> bool:
    """Return whether ``ch`` is white space by Go's ``unicode.IsSpace``."""
    return ch.isspace() and ch not in _NOT_GO_SPACE


def build_envs(env: Mapping[str, str] | Iterable[str]) -> dict[str, str]:
    """Turn ``["K=V", ...]`` (or a mapping) into a dict, later entries winning.

    An entry without ``=`` defines the variable with an empty value, as BuildKit's
    ``BuildEnvs`` does.
    """
    if isinstance(env, Mapping):
        return dict(env)
    envs: dict[str, str] = {}
    for entry in env:
        key, sep, value = entry.partition("=")
        envs[key] = value if sep else ""
    return envs


class _LexError(Exception):
    """Internal: a lexing failure, turned into a DockerfileError at the API edge."""


@dataclass
class _Words:
    """Word accumulator for ``process_words`` (BuildKit's ``wordsStruct``)."""

    word: str = ""
    words: list[str] = field(default_factory=list)
    in_word: bool = False

    def add_char(self, ch: str) -> None:
        if go_isspace(ch) and self.in_word:
            if self.word:
                self.words.append(self.word)
                self.word = ""
                self.in_word = False
        elif not go_isspace(ch):
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.word += ch
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def get_words(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
            self.in_word = False
        return self.words


_SPECIAL_PARAMS = frozenset("@*#?-$!0")

# ``${a:-${b:-...}}`` is lexed by recursion, as BuildKit's lexer does; Go's stacks grow
# to a gigabyte, Python's stop at 1,000 frames, so nesting is bounded (docs/limits.md).
# Real Dockerfiles nest two or three deep.
MAX_NESTING = 100


class _Scanner:
    """Character cursor with Peek/Next like Go's text/scanner (None is EOF)."""

    def __init__(self, text: str) -> None:
        # text/scanner drops a byte-order mark at the very start.
        text = text.removeprefix("\ufeff")
        self.text = text
        self.pos = 0

    def peek(self) -> str | None:
        if self.pos < len(self.text):
            return self.text[self.pos]
        return None

    def next(self) -> str | None:
        if self.pos < len(self.text):
            ch = self.text[self.pos]
            self.pos += 1
            return ch
        return None


class _ShellWord:
    def __init__(self, lexer: Lexer, word: str, envs: dict[str, str]) -> None:
        self.lexer = lexer
        self.escape = lexer.escape_token
        self.scanner = _Scanner(word)
        self.envs = envs
        self.raw_escapes = lexer.raw_escapes
        self.matches: set[str] = set()
        self.nonmatches: set[str] = set()
        self.depth = 0

    def process_stop_on(self, stop: str | None, raw_escapes: bool) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            sc = self.scanner
            while sc.peek() is not None:
                ch = sc.peek()
                if stop is not None and ch == stop:
                    sc.next()
                    return "".join(result), words.get_words()
                if ch == "$":
                    tmp = self.process_dollar()
                    result.append(tmp)
                    words.add_string(tmp)
                elif ch == "<":
                    tmp = self.process_possible_heredoc()
                    result.append(tmp)
                    words.add_raw_string(tmp)
                elif ch in ("'", '"') and not self.lexer.skip_process_quotes:
                    tmp = self.process_single_quote() if ch == "'" else self.process_double_quote()
                    result.append(tmp)
                    words.add_raw_string(tmp)
                else:
                    ch = sc.next()
                    assert ch is not None
                    if ch == self.escape:
                        if self.raw_escapes:
                            words.add_raw_char(ch)
                            result.append(ch)
                        # The escape token escapes the next character, except at the end.
                        ch = sc.next()
                        if ch is None:
                            break
                        words.add_raw_char(ch)
                    else:
                        words.add_char(ch)
                    result.append(ch)
            if stop is not None:
                raise _LexError(f"unexpected end of statement while looking for matching {stop}")
            return "".join(result), words.get_words()
        finally:
            self.raw_escapes = saved

    def process_possible_heredoc(self) -> str:
        # "<<" keeps the blanks after it in the same word, so "<<  EOF" stays one
        # word that the heredoc matcher can recognise.
        sc = self.scanner
        sc.next()
        if sc.peek() != "<":
            return "<"
        sc.next()
        blanks: list[str] = []
        while (ch := sc.peek()) is not None and ch in " \t\r":
            blanks.append(ch)
            sc.next()
        return "<<" + "".join(blanks)

    def process_single_quote(self) -> str:
        # Everything up to the next ' is literal; a ' cannot be escaped inside.
        sc = self.scanner
        result: list[str] = []
        ch = sc.next()
        if self.lexer.raw_quotes and ch is not None:
            result.append(ch)
        while True:
            ch = sc.next()
            if ch is None:
                raise _LexError(
                    "unexpected end of statement while looking for matching single-quote"
                )
            if ch == "'":
                if self.lexer.raw_quotes:
                    result.append(ch)
                return "".join(result)
            result.append(ch)

    def process_double_quote(self) -> str:
        # Literal except $ and the escape token, which escapes only " $ and itself.
        sc = self.scanner
        result: list[str] = []
        ch = sc.next()
        if self.lexer.raw_quotes and ch is not None:
            result.append(ch)
        while True:
            peek = sc.peek()
            if peek is None:
                raise _LexError(
                    "unexpected end of statement while looking for matching double-quote"
                )
            if peek == '"':
                ch = sc.next()
                if self.lexer.raw_quotes and ch is not None:
                    result.append(ch)
                return "".join(result)
            if peek == "$":
                result.append(self.process_dollar())
                continue
            ch = sc.next()
            assert ch is not None
            if ch == self.escape:
                if self.raw_escapes:
                    result.append(ch)
                nxt = sc.peek()
                if nxt is None:
                    continue
                if nxt in ('"', "$", self.escape):
                    ch = sc.next()
                    assert ch is not None
            result.append(ch)

    def process_dollar(self) -> str:
        if self.depth >= MAX_NESTING:
            raise _LexError(f"variable substitutions nested more than {MAX_NESTING} deep")
        self.depth += 1
        try:
            return self._process_dollar()
        finally:
            self.depth -= 1

    def _process_dollar(self) -> str:
        sc = self.scanner
        sc.next()
        if sc.peek() != "{":
            name = self.process_name()
            if name == "":
                return "$"
            value, found = self.get_env(name)
            if not found and self.lexer.skip_unset_env:
                return "$" + name
            return value

        sc.next()
        peek = sc.peek()
        if peek is None:
            raise _LexError("syntax error: missing '}'")
        if peek in ("{", "}", ":"):
            raise _LexError("syntax error: bad substitution")
        name = self.process_name()
        ch = sc.next()
        chs = ch if ch is not None else "\ufffd"
        null_is_unset = False

        if ch == "}":
            value, found = self.get_env(name)
            if not found and self.lexer.skip_unset_env:
                return "${" + name + "}"
            return value
        if ch in (":", "+", "-", "?", "#", "%"):
            if ch == ":":
                null_is_unset = True
                ch = sc.next()
                chs += ch if ch is not None else "\ufffd"
            raw = ch in ("#", "%")
            try:
                word, _ = self.process_stop_on("}", raw)
            except _LexError:
                if sc.peek() is None:
                    raise _LexError("syntax error: missing '}'") from None
                raise
            value, found = self.get_env(name)
            if self.lexer.skip_unset_env and not found:
                return "${" + name + chs + word + "}"
            if ch == "-":
                if not found or (null_is_unset and value == ""):
                    return word
                return value
            if ch == "+":
                if not found or (null_is_unset and value == ""):
                    return ""
                return word
            if ch == "?":
                if not found:
                    raise _LexError(f"{name}: {word or 'is not allowed to be unset'}")
                if null_is_unset and value == "":
                    raise _LexError(f"{name}: {word or 'is not allowed to be empty'}")
                return value
            if ch in ("%", "#"):
                greedy = False
                if word and word[0] == ch:
                    greedy = True
                    word = word[1:]
                if ch == "%":
                    return _trim_suffix(word, value, greedy)
                return _trim_prefix(word, value, greedy)
            raise _LexError(f"unsupported modifier ({chs}) in substitution")
        if ch == "/":
            replace_all = sc.peek() == "/"
            if replace_all:
                sc.next()
            try:
                pattern, _ = self.process_stop_on("/", True)
            except _LexError:
                if sc.peek() is None:
                    raise _LexError("syntax error: missing '/' in ${}") from None
                raise
            try:
                replacement, _ = self.process_stop_on("}", True)
            except _LexError:
                if sc.peek() is None:
                    raise _LexError("syntax error: missing '}'") from None
                raise
            value, found = self.get_env(name)
            if self.lexer.skip_unset_env and not found:
                return "${" + name + "/" + pattern + "/" + replacement + "}"
            regex = _shell_pattern_to_regex(pattern, greedy=True, anchored=False)
            if replace_all:
                return regex.sub(lambda _m: replacement, value)
            m = regex.search(value)
            if m is not None:
                value = value[: m.start()] + replacement + value[m.end() :]
            return value
        raise _LexError(f"unsupported modifier ({chs}) in substitution")

    def process_name(self) -> str:
        # A name is letters, digits and _; a leading digit reads only digits, and a
        # special parameter ($@, $#, ...) is one character.
        sc = self.scanner
        name: list[str] = []
        while (ch := sc.peek()) is not None:
            if not name and ch.isdecimal():
                while (d := sc.peek()) is not None and d.isdecimal():
                    name.append(d)
                    sc.next()
                return "".join(name)
            if not name and ch in _SPECIAL_PARAMS:
                sc.next()
                return ch
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            name.append(ch)
            sc.next()
        return "".join(name)

    def get_env(self, name: str) -> tuple[str, bool]:
        # Unix semantics: keys are case-sensitive.
        if name in self.envs:
            self.matches.add(name)
            return self.envs[name], True
        self.nonmatches.add(name)
        return "", False


_REGEX_SPECIAL = frozenset("[]{}.+()|^$")


def _shell_pattern_to_regex(pattern: str, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """Convert a ``${var#pattern}`` wildcard pattern (``*``, ``?``, ``\\``) to a regex."""
    out: list[str] = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    n = len(pattern)
    while i < n:
        tok = pattern[i]
        i += 1
        if tok == "*":
            out.append(star)
            continue
        if tok == "?":
            out.append(".")
            continue
        if tok == "\\":
            nxt = pattern[i] if i < n else None
            # \} and \/ are escapes for ${} itself, not part of the pattern.
            if nxt in ("}", "/"):
                continue
            if nxt not in ("*", "?", "\\"):
                shown = nxt if nxt is not None else "\ufffd"
                raise _LexError(
                    f"invalid pattern ({pattern}) in substitution: invalid escape '\\{shown}'"
                )
            i += 1
            out.append("\\" + nxt)
            continue
        out.append(re.escape(tok) if tok in _REGEX_SPECIAL else tok)
    return re.compile("".join(out))


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    regex = _shell_pattern_to_regex(pattern, greedy, anchored=True)
    m = regex.search(value)
    if m is not None:
        value = value[m.end() :]
    return value


def _reverse_pattern(pattern: str) -> str:
    # Reverse, keeping each escape pair in order (a\*c -> c\*a).
    chars = list(pattern)
    out = [""] * len(chars)
    last = len(chars) - 1
    i = 0
    while i <= last:
        tok = chars[i]
        out_idx = last - i
        if tok == "\\" and i != last:
            out[out_idx - 1] = tok
            out[out_idx] = chars[i + 1]
            i += 2
        else:
            out[out_idx] = tok
            i += 1
    return "".join(out)


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # A regex cannot find the shortest rightmost match, so reverse both sides and
    # trim a prefix instead.
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


class Lexer:
    """BuildKit's shell lexer: quote removal, escapes and variable expansion.

    Args:
        escape_token: the Dockerfile escape character (``\\`` or `````).
        raw_quotes: keep quote characters in the output.
        raw_escapes: keep escape characters in the output.
        skip_process_quotes: treat quotes as ordinary characters.
        skip_unset_env: leave references to unset variables as written.
    """

    def __init__(
        self,
        escape_token: str = "\\",
        *,
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        skip_process_quotes: bool = False,
        skip_unset_env: bool = False,
    ) -> None:
        self.escape_token = escape_token
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_process_quotes = skip_process_quotes
        self.skip_unset_env = skip_unset_env

    def _process(
        self, word: str, env: Mapping[str, str] | Iterable[str]
    ) -> tuple[str, list[str], set[str], set[str]]:
        sw = _ShellWord(self, word, build_envs(env))
        try:
            result, words = sw.process_stop_on(None, sw.raw_escapes)
        except (_LexError, re.error) as exc:
            raise DockerfileError(f"failed to process {go_quote(word)}: {exc}") from None
        return result, words, sw.matches, sw.nonmatches

    def process_word(self, word: str, env: Mapping[str, str] | Iterable[str]) -> str:
        """Expand variables in ``word`` and remove quotes and escapes.

        Args:
            word: the text to process.
            env: ``{"K": "V"}`` or ``["K=V", ...]``.

        Returns:
            The processed text, spaces between words kept.

        Raises:
            DockerfileError: unbalanced quotes, a bad substitution, ``${x:?msg}``.
        """
        return self._process(word, env)[0]

    def process_words(self, word: str, env: Mapping[str, str] | Iterable[str]) -> list[str]:
        """Like :meth:`process_word`, then split into words on unquoted white space.

        Splitting happens after expansion, so an unquoted variable holding spaces
        gives several words.
        """
        return self._process(word, env)[1]

    def process_word_with_matches(
        self, word: str, env: Mapping[str, str] | Iterable[str]
    ) -> tuple[str, set[str], set[str]]:
        """Like :meth:`process_word`, also returning the variable names found and not found."""
        result, _, matched, unmatched = self._process(word, env)
        return result, matched, unmatched
