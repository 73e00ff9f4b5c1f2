"""The walk's fast paths of ``.dockerignore`` matching agree with Go's definitions.

``clean_path`` skips work for paths already clean, ``_dir`` for clean parents, and the
matcher remembers per directory whether a pattern matches it or a directory above it.
Each is checked against the plain definition on random paths and patterns.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.core.context.dockerignore import BadPattern, PatternMatcher, _dir, clean_path

SEGMENT = st.sampled_from(["a", "b", "ab", ".", "..", "", ".a", "x.y", "*", "a*", "?", "[ab]"])
PATHS = st.lists(SEGMENT, min_size=0, max_size=6).map("/".join)
ROOTED = st.tuples(st.booleans(), PATHS).map(lambda t: ("/" if t[0] else "") + t[1])


def slow_clean(path: str) -> str:
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
    return ("/" + cleaned) if rooted else (cleaned or ".")


def slow_matches(matcher: PatternMatcher, path: str) -> bool:
    """moby's MatchesOrParentMatches, parent by parent."""
    matched = False
    parent = slow_clean(path[: path.rfind("/") + 1])
    parent_dirs = parent.split("/")
    for pattern in matcher.patterns:
        if pattern.exclusion != matched:
            continue
        match = pattern.match(path)
        if not match and parent != ".":
            match = any(
                pattern.match("/".join(parent_dirs[: i + 1])) for i in range(len(parent_dirs))
            )
        if match:
            matched = not pattern.exclusion
    return matched


@given(ROOTED)
def test_clean_path_and_dir_are_gos(path: str) -> None:
    assert clean_path(path) == slow_clean(path)
    assert _dir(path) == slow_clean(path[: path.rfind("/") + 1])


@settings(max_examples=300)
@given(
    st.lists(st.tuples(st.booleans(), PATHS.filter(bool)), min_size=1, max_size=4),
    st.lists(PATHS.filter(bool), min_size=1, max_size=12),
)
def test_remembered_parent_answers_match_asking_each_parent(
    patterns: list[tuple[bool, str]], paths: list[str]
) -> None:
    try:
        matcher = PatternMatcher([("!" if neg else "") + p for neg, p in patterns])
        # One matcher for the whole walk, as the context uses it: answers remembered
        # for one path must hold for the next.
        for path in paths:
            cleaned = clean_path(path)
            assert matcher.matches_or_parent_matches(cleaned) == slow_matches(matcher, cleaned)
    except BadPattern:
        pass
