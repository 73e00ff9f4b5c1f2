"""``.dockerignore`` reading and matching with moby/patternmatcher semantics.

* :func:`read_ignore_file` reads a ``.dockerignore`` like ``ignorefile.ReadAll``.
* :class:`PatternMatcher` matches slash-separated context paths like
  ``patternmatcher.PatternMatcher``: patterns in order, ``!`` re-includes, the last
  matching pattern wins, and a path matches when one of its parents does.
* :func:`walk_context` walks a context directory the way BuildKit's fsutil filter
  does: excluded directories are pruned unless an exclusion pattern could bring
  back something below them, and parents of re-included entries are emitted.
* :func:`ignore_file_for` picks ``<Dockerfile>.dockerignore`` over
  ``<context>/.dockerignore``, as BuildKit does.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lamina.core.errors import ContextError

__all__ = [
    "SKIP_DIR",
    "BadPattern",
    "DirFS",
    "FilterFS",
    "MatchInfo",
    "MemoryFS",
    "Pattern",
    "PatternMatcher",
    "clean_path",
    "filepath_match",
    "ignore_file_for",
    "load_ignore_patterns",
    "matches",
    "matches_or_parent_matches",
    "read_ignore_file",
    "walk_context",
]

log = logging.getLogger(__name__)

SKIP_DIR = "skip-dir"


class BadPattern(ContextError):
    """A .dockerignore pattern that is malformed (Go's ``filepath.ErrBadPattern``)."""


_BAD_PATTERN = "syntax error in pattern"


def clean_path(path: str) -> str:
    """Go's ``path.Clean``: collapse ``//``, ``.`` and ``..`` lexically; ``""`` is ``"."``."""
    if path and path[0] != "/":
        # A walk's paths are clean already: three searches instead of a rebuild.
        probe = f"/{path}/"
        if "//" not in probe and "/./" not in probe and "/../" not in probe:
            return path
    if path == "":
        return "."
    rooted = path.startswith("/")
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    cleaned = "/".join(out)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def _dir(path: str) -> str:
    """Go's ``filepath.Dir``."""
    idx = path.rfind("/")
    if idx > 0 and clean_path(path) is path:
        # The parent of a clean relative path is clean: no second cleaning.
        return path[:idx]
    return clean_path(path[: idx + 1])


# --- filepath.Match, used to validate patterns ---------------------------------


class _Bad(Exception):
    pass


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    star = False
    while pattern.startswith("*"):
        pattern = pattern[1:]
        star = True
    in_range = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 < len(pattern):
                i += 1
        elif c == "[":
            in_range = True
        elif c == "]":
            in_range = False
        elif c == "*" and not in_range:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _get_esc(chunk: str) -> tuple[str, str]:
    if chunk == "" or chunk[0] in "-]":
        raise _Bad
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if chunk == "":
            raise _Bad
    r, rest = chunk[0], chunk[1:]
    if rest == "":
        raise _Bad
    return r, rest


def _match_chunk(chunk: str, s: str) -> tuple[str, bool]:
    # Keep scanning after a failed match so a malformed pattern is always reported.
    failed = False
    while chunk:
        if not failed and s == "":
            failed = True
        c = chunk[0]
        if c == "[":
            r = ""
            if not failed:
                r, s = s[0], s[1:]
            chunk = chunk[1:]
            negated = False
            if chunk.startswith("^"):
                negated = True
                chunk = chunk[1:]
            matched = False
            nrange = 0
            while True:
                if chunk.startswith("]") and nrange > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _get_esc(chunk)
                hi = lo
                if chunk[0] == "-":
                    hi, chunk = _get_esc(chunk[1:])
                if not failed and lo <= r <= hi:
                    matched = True
                nrange += 1
            if matched == negated:
                failed = True
        elif c == "?":
            if not failed:
                if s[0] == "/":
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
        else:
            if c == "\\":
                chunk = chunk[1:]
                if chunk == "":
                    raise _Bad
            if not failed:
                if chunk[0] != s[0]:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
    if failed:
        return "", False
    return s, True


def filepath_match(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match`` on Unix.

    Raises:
        BadPattern: the pattern is malformed.
    """
    try:
        return _filepath_match(pattern, name)
    except _Bad:
        raise BadPattern(_BAD_PATTERN) from None


def _filepath_match(pattern: str, name: str) -> bool:
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and chunk == "":
            return "/" not in name
        t, ok = _match_chunk(chunk, name)
        if ok and (t == "" or pattern):
            name = t
            continue
        if star:
            i = 0
            found = False
            while i < len(name) and name[i] != "/":
                t, ok = _match_chunk(chunk, name[i + 1 :])
                if ok:
                    if pattern == "" and t:
                        i += 1
                        continue
                    name = t
                    found = True
                    break
                i += 1
            if found:
                continue
        while pattern:
            _, chunk, pattern = _scan_chunk(pattern)
            _match_chunk(chunk, "")
        return False
    return name == ""


# --- Patterns ---------------------------------------------------------------------

_EXACT, _PREFIX, _SUFFIX, _REGEXP = "exact", "prefix", "suffix", "regexp"
_REGEX_ESCAPE = frozenset(".+()|{}$")


@dataclass
class Pattern:
    """One cleaned pattern of a :class:`PatternMatcher`."""

    cleaned: str
    exclusion: bool
    dirs: list[str]
    match_type: str | None = None
    regex: re.Pattern[str] | None = None
    regex_source: str = ""

    def __str__(self) -> str:
        return self.cleaned

    def compile(self) -> None:
        """Classify the pattern (exact, prefix, suffix, regexp) and build its regexp.

        Raises:
            BadPattern: the regexp does not compile.
        """
        reg = "^"
        detected = _EXACT
        pattern = self.cleaned
        pattern = pattern.removeprefix("\ufeff")
        n = len(pattern)
        pos = 0
        i = 0
        while pos < n:
            ch = pattern[pos]
            pos += 1
            if ch == "*":
                if pos < n and pattern[pos] == "*":
                    pos += 1
                    # **/ is the same as **.
                    if pos < n and pattern[pos] == "/":
                        pos += 1
                    if pos >= n:
                        if detected == _EXACT:
                            detected = _PREFIX
                        else:
                            reg += ".*"
                            detected = _REGEXP
                    else:
                        reg += "(.*/)?"
                        detected = _REGEXP
                    if i == 0:
                        detected = _SUFFIX
                else:
                    reg += "[^/]*"
                    detected = _REGEXP
            elif ch == "?":
                reg += "[^/]"
                detected = _REGEXP
            elif ch in _REGEX_ESCAPE:
                reg += "\\" + ch
            elif ch == "\\":
                if pos < n:
                    reg += "\\" + pattern[pos]
                    pos += 1
                    detected = _REGEXP
                else:
                    reg += "\\"
            elif ch in "[]":
                reg += ch
                detected = _REGEXP
            else:
                reg += ch
            i += 1
        if detected == _REGEXP:
            reg += "$"
            self.regex_source = reg
            try:
                with warnings.catch_warnings():
                    # Python warns about "[[" (possible nested set); Go has no such notion.
                    warnings.simplefilter("ignore")
                    # Go's $ only matches at the very end; Python's also before a final \n.
                    self.regex = re.compile(reg[:-1] + r"\Z")
            except (re.error, OverflowError, RecursionError):
                raise BadPattern(_BAD_PATTERN) from None
        self.match_type = detected

    def match(self, path: str) -> bool:
        """Whether ``path`` (slash-separated, cleaned) matches this pattern alone."""
        if self.match_type is None:
            self.compile()
        if self.match_type == _EXACT:
            return path == self.cleaned
        if self.match_type == _PREFIX:
            return path.startswith(self.cleaned[:-2])
        if self.match_type == _SUFFIX:
            suffix = self.cleaned[2:]
            if path.endswith(suffix):
                return True
            return suffix[:1] == "/" and path == suffix[1:]
        assert self.regex is not None
        return self.regex.match(path) is not None


@dataclass
class MatchInfo:
    """Per-pattern results for a directory, passed down while walking."""

    parent_matched: list[bool] = field(default_factory=list)


class PatternMatcher:
    """Ordered include/exclude patterns, as moby/patternmatcher evaluates them.

    Args:
        patterns: patterns as read from a ``.dockerignore`` (``!`` re-includes).

    Raises:
        BadPattern: a lone ``!`` or a malformed pattern.
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns: list[Pattern] = []
        self.exclusions = False
        self._parents: dict[tuple[int, str], bool] = {}
        for raw in patterns:
            p = raw.strip()
            if p == "":
                continue
            p = clean_path(p)
            exclusion = False
            if p[0] == "!":
                if len(p) == 1:
                    raise BadPattern('illegal exclusion pattern: "!"')
                exclusion = True
                p = p[1:]
                self.exclusions = True
            # filepath.Match reports malformed patterns; its answer is irrelevant.
            filepath_match(p, ".")
            self.patterns.append(Pattern(cleaned=p, exclusion=exclusion, dirs=p.split("/")))
        self._prefix_exceptions = [
            _without_trailing_glob(p) + "/" for p in self.patterns if p.exclusion
        ]
        self._only_prefix_exceptions = not any(
            any(c in _PATTERN_CHARS for c in _without_trailing_glob(p))
            for p in self.patterns
            if p.exclusion
        )

    def matches(self, path: str) -> bool:
        """Whether ``path`` or one of its parents matches (``MatchesOrParentMatches``).

        Raises:
            BadPattern: a pattern that only fails when compiled.
        """
        return self.matches_or_parent_matches(path)

    def matches_or_parent_matches(self, path: str) -> bool:
        """``MatchesOrParentMatches``: true when the path or any parent directory matches."""
        matched = False
        parent = _dir(path)
        for index, pattern in enumerate(self.patterns):
            if pattern.exclusion != matched:
                continue
            match = pattern.match(path)
            if not match and parent != ".":
                match = self._parent_matches(index, parent)
            if match:
                matched = not pattern.exclusion
        return matched

    def _parent_matches(self, index: int, parent: str) -> bool:
        """Whether pattern ``index`` matches ``parent`` or a directory above it.

        Remembered per directory: the files of one directory share every answer, so a
        walk asks each pattern about each directory once.
        """
        key = (index, parent)
        known = self._parents.get(key)
        if known is not None:
            return known
        if parent.startswith("/"):
            dirs = parent.split("/")
            answer = any(
                self.patterns[index].match("/".join(dirs[: i + 1])) for i in range(len(dirs))
            )
        else:
            up = parent.rpartition("/")[0]
            answer = self.patterns[index].match(parent) or (
                bool(up) and self._parent_matches(index, up)
            )
        self._parents[key] = answer
        return answer

    def matches_single_parent(self, path: str) -> bool:
        """The deprecated ``Matches``: checks only the parent prefix as deep as the pattern."""
        matched = False
        parent = _dir(path)
        parent_dirs = parent.split("/")
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            match = pattern.match(path)
            if not match and parent != "." and len(pattern.dirs) <= len(parent_dirs):
                match = pattern.match("/".join(parent_dirs[: len(pattern.dirs)]))
            if match:
                matched = not pattern.exclusion
        return matched

    def matches_exact(self, path: str) -> bool:
        """``MatchesExact``: no parent matching."""
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            if pattern.match(path):
                matched = not pattern.exclusion
        return matched

    def matches_using_parent_result(self, path: str, parent_matched: bool) -> bool:
        """The deprecated ``MatchesUsingParentResult``: one bool carried from the parent."""
        matched = parent_matched
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            if pattern.match(path):
                matched = not pattern.exclusion
        return matched

    def matches_using_parent_results(self, path: str, parent: MatchInfo) -> tuple[bool, MatchInfo]:
        """``MatchesUsingParentResults``: per-pattern results carried down a walk.

        Pass ``MatchInfo()`` when nothing is known about the parent; the parents are
        then checked like :meth:`matches_or_parent_matches`.
        """
        parent_matched = parent.parent_matched
        if parent_matched and len(parent_matched) != len(self.patterns):
            raise ValueError("wrong number of values in parentMatched")
        matched = False
        info = MatchInfo([False] * len(self.patterns))
        for i, pattern in enumerate(self.patterns):
            match = parent_matched[i] if parent_matched else False
            if not match:
                if pattern.exclusion != matched:
                    continue
                match = pattern.match(path)
                if not match and not parent_matched:
                    parent_path = _dir(path)
                    if parent_path != ".":
                        dirs = parent_path.split("/")
                        for j in range(len(dirs)):
                            if pattern.match("/".join(dirs[: j + 1])):
                                match = True
                                break
            info.parent_matched[i] = match
            if match:
                matched = not pattern.exclusion
        return matched, info

    def included(self, rel_path: str, is_dir: bool) -> bool:
        """Whether a context path survives these (``.dockerignore``) patterns.

        ``is_dir`` is accepted so a walker can ask the same question of every entry;
        use :meth:`can_skip_dir` to prune an excluded directory.
        """
        del is_dir  # directories and files match alike
        return not self.matches(clean_path(rel_path))

    def can_skip_dir(self, rel_dir: str) -> bool:
        """Whether nothing below excluded directory ``rel_dir`` can be re-included.

        When every ``!`` pattern is a plain path (globs only at the end), a directory
        can be skipped unless one of them lies inside it; fsutil makes the same cut.
        """
        if not self.exclusions:
            return True
        if not self._only_prefix_exceptions:
            return False
        dir_slash = clean_path(rel_dir) + "/"
        return not any(p.startswith(dir_slash) for p in self._prefix_exceptions)

    def may_include_below(self, rel_dir: str) -> bool:
        """Whether an excluded directory may still hold re-included paths (must be walked)."""
        return not self.can_skip_dir(rel_dir)


_PATTERN_CHARS = "*[]?^\\"


def _without_trailing_glob(pattern: Pattern) -> str:
    text = pattern.cleaned
    for suffix in ("/**", "/*"):
        text = text.removesuffix(suffix)
    return text


def matches(path: str, patterns: Sequence[str]) -> bool:
    """patternmatcher's deprecated top-level ``Matches`` (one parent level); ``.`` never matches."""
    pm = PatternMatcher(patterns)
    path = clean_path(path)
    if path == ".":
        return False
    return pm.matches_single_parent(path)


def matches_or_parent_matches(path: str, patterns: Sequence[str]) -> bool:
    """patternmatcher's top-level ``MatchesOrParentMatches``; ``.`` never matches.

    This is what docker/cli uses to decide whether the Dockerfile or
    ``.dockerignore`` is excluded.
    """
    pm = PatternMatcher(patterns)
    path = clean_path(path)
    if path == ".":
        return False
    return pm.matches_or_parent_matches(path)


# --- .dockerignore files ----------------------------------------------------------


def read_ignore_file(text: str | None) -> list[str]:
    """Read ``.dockerignore`` content into patterns, like ``ignorefile.ReadAll``.

    A UTF-8 BOM is dropped; lines starting with ``#`` are comments (checked before
    trimming); lines are trimmed and empty ones dropped; a leading ``!`` is kept;
    each pattern is cleaned and one leading ``/`` removed.
    """
    if text is None:
        return []
    patterns: list[str] = []
    for number, line in enumerate(text.split("\n")):
        if number == 0 and line.startswith("\ufeff"):
            line = line[1:]
        line = line.removesuffix("\r")
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if pattern == "":
            continue
        invert = pattern[0] == "!"
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = clean_path(pattern)
            if len(pattern) > 1 and pattern[0] == "/":
                pattern = pattern[1:]
        if invert:
            pattern = "!" + pattern
        patterns.append(pattern)
    return patterns


def ignore_file_for(context_dir: str | Path, dockerfile_path: str | Path | None) -> Path | None:
    """The ignore file BuildKit would use for this build, if any.

    ``<Dockerfile-name>.dockerignore`` next to the Dockerfile wins over
    ``<context>/.dockerignore``.
    """
    if dockerfile_path is not None:
        dockerfile = Path(dockerfile_path)
        if not dockerfile.is_absolute():
            candidate_df = Path(context_dir) / dockerfile
            dockerfile = (
                candidate_df if candidate_df.exists() or not dockerfile.exists() else dockerfile
            )
        specific = dockerfile.with_name(dockerfile.name + ".dockerignore")
        if specific.is_file():
            return specific
    default = Path(context_dir) / ".dockerignore"
    return default if default.is_file() else None


def load_ignore_patterns(context_dir: str | Path, dockerfile_path: str | Path | None) -> list[str]:
    """Read the patterns of :func:`ignore_file_for` (none when there is no file).

    Raises:
        ContextError: the file cannot be read.
    """
    path = ignore_file_for(context_dir, dockerfile_path)
    if path is None:
        return []
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ContextError(f"{path}: cannot read: {exc.strerror}") from exc
    return read_ignore_file(data.decode("utf-8", "surrogateescape"))


# --- Walking a context ------------------------------------------------------------

WalkFn = Callable[[str, bool], "str | None"]


class DirFS:
    """A real directory walked like fsutil's FS: lexical order, parents first, no symlink follow."""

    def __init__(self, root: str | Path) -> None:
        self.root = os.fspath(root)

    def walk(self, fn: WalkFn) -> None:
        """Call ``fn(rel_path, is_dir)`` for every entry; ``SKIP_DIR`` prunes a directory."""
        _walk_tree(self._children, fn)

    def _children(self, rel: str) -> list[tuple[str, bool]]:
        base = os.path.join(self.root, rel) if rel else self.root
        try:
            with os.scandir(base) as it:
                entries = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it)
        except OSError as exc:
            raise ContextError(f"{base}: cannot list: {exc.strerror}") from exc
        return [(f"{rel}/{name}" if rel else name, is_dir) for name, is_dir in entries]


class MemoryFS:
    """An in-memory tree of ``(path, is_dir)`` entries, walked like :class:`DirFS`."""

    def __init__(self, entries: Sequence[tuple[str, bool]]) -> None:
        self.children: dict[str, list[tuple[str, bool]]] = {}
        for path, is_dir in entries:
            parent = path.rsplit("/", 1)[0] if "/" in path else ""
            self.children.setdefault(parent, []).append((path, is_dir))

    def walk(self, fn: WalkFn) -> None:
        """Call ``fn(rel_path, is_dir)`` for every entry; ``SKIP_DIR`` prunes a directory."""
        _walk_tree(lambda rel: sorted(self.children.get(rel, [])), fn)


def _walk_tree(children: Callable[[str], list[tuple[str, bool]]], fn: WalkFn) -> None:
    """fsutil's walk order, parents first, each directory listed when it is entered.

    Iterative, with one list of pending entries per open directory: a context may be
    thousands of directories deep, far past Python's recursion limit.
    """
    stack = [iter(children(""))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        path, is_dir = entry
        result = fn(path, is_dir)
        if result == SKIP_DIR:
            if not is_dir:
                stack.pop()  # a file asking to skip skips the rest of its directory
            continue
        if is_dir:
            stack.append(iter(children(path)))


@dataclass
class _Visited:
    path_with_sep: str
    path: str
    include_info: MatchInfo = field(default_factory=MatchInfo)
    exclude_info: MatchInfo = field(default_factory=MatchInfo)
    called: bool = False


class FilterFS:
    """fsutil's ``filterFS``: a walkable tree filtered by include and exclude patterns.

    Args:
        fs: the tree to filter (:class:`DirFS`, :class:`MemoryFS` or another FilterFS).
        include: patterns a path must match (COPY sources); None for all.
        exclude: patterns a path must not match (``.dockerignore``).

    Raises:
        BadPattern: malformed patterns.
    """

    def __init__(
        self,
        fs: DirFS | MemoryFS | FilterFS,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
    ) -> None:
        self.fs = fs
        self.include = PatternMatcher(include) if include else None
        self.exclude = PatternMatcher(exclude) if exclude else None
        self.only_prefix_includes = True
        if self.include is not None:
            self.only_prefix_includes = not any(
                any(c in _PATTERN_CHARS for c in _without_trailing_glob(p))
                for p in self.include.patterns
                if not p.exclusion
            )

    def is_visible(self, path: str) -> bool:
        """What ``Open`` would allow: the path is included and not excluded."""
        path = clean_path(path)
        if self.include is not None and not self.include.matches(path):
            return False
        if self.exclude is not None and self.exclude.matches(path):
            return False
        if isinstance(self.fs, FilterFS):
            return self.fs.is_visible(path)
        return True

    def walk(self, fn: WalkFn) -> None:
        """Call ``fn(rel_path, is_dir)`` for every entry that passes the filters."""
        parents: list[_Visited] = []

        def visit(path: str, is_dir: bool) -> str | None:
            while parents and not path.startswith(parents[-1].path_with_sep):
                parents.pop()
            current = _Visited(path + "/", path) if is_dir else None
            skip = False
            if self.include is not None:
                info = parents[-1].include_info if parents else MatchInfo()
                m, info = self.include.matches_using_parent_results(path, info)
                if current is not None:
                    current.include_info = info
                if not m:
                    if is_dir and self.only_prefix_includes:
                        dir_slash = path + "/"
                        if not any(
                            (_without_trailing_glob(p) + "/").startswith(dir_slash)
                            for p in self.include.patterns
                            if not p.exclusion
                        ):
                            return SKIP_DIR
                    skip = True
            if self.exclude is not None:
                info = parents[-1].exclude_info if parents else MatchInfo()
                m, info = self.exclude.matches_using_parent_results(path, info)
                if current is not None:
                    current.exclude_info = info
                if m:
                    if is_dir and self.exclude.can_skip_dir(path):
                        return SKIP_DIR
                    skip = True
            if current is not None:
                parents.append(current)
            if skip:
                return None
            for parent in parents:
                if parent is current or parent.called:
                    continue
                parent.called = True
                if fn(parent.path, True) == SKIP_DIR:
                    return SKIP_DIR
            if current is not None:
                current.called = True
            return fn(path, is_dir)

        self.fs.walk(visit)


def walk_context(
    context_dir: str | Path,
    exclude: Sequence[str] | None = None,
    include: Sequence[str] | None = None,
) -> Iterator[tuple[str, bool]]:
    """Entries of a build context that survive the patterns, in walk order.

    Args:
        context_dir: the context root.
        exclude: ``.dockerignore`` patterns.
        include: patterns a path must match (e.g. COPY sources), or None.

    Yields:
        ``(rel_path, is_dir)``, slash-separated, parents before children.

    Raises:
        BadPattern: malformed patterns.
        ContextError: a directory that cannot be listed.
    """
    found: list[tuple[str, bool]] = []
    FilterFS(DirFS(context_dir), include=include, exclude=exclude).walk(
        lambda path, is_dir: found.append((path, is_dir))
    )
    log.debug("context %s: %d entries after filtering", context_dir, len(found))
    yield from found
