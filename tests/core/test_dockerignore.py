""".dockerignore reading and matching against moby/patternmatcher, fsutil and BuildKit tables."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.core.context.dockerignore import (
    BadPattern,
    FilterFS,
    MatchInfo,
    MemoryFS,
    PatternMatcher,
    clean_path,
    filepath_match,
    ignore_file_for,
    load_ignore_patterns,
    matches,
    matches_or_parent_matches,
    read_ignore_file,
    walk_context,
)
from lamina.core.errors import ContextError

CASES_FILE = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "conformance"
    / ("dockerignore-cases.json")
)


def _groups() -> dict[str, list[dict[str, Any]]]:
    if not CASES_FILE.is_file():
        return {}
    data = json.loads(CASES_FILE.read_text())
    return {g["id"]: list(g["cases"]) for g in data["groups"]}


GROUPS = _groups()
ALL_GROUPS = {
    "patternmatcher.matches_table",
    "patternmatcher.matches_simple",
    "patternmatcher.filepath_match_compat",
    "patternmatcher.compile",
    "patternmatcher.new_and_patterns",
    "patternmatcher.bad_pattern_lazy",
    "ignorefile.read_all",
    "fsutil.walk_filter",
    "buildkit.context_dockerignore",
}


def test_every_group_is_run(conformance: Path) -> None:
    assert conformance / "dockerignore-cases.json" == CASES_FILE
    assert set(GROUPS) == ALL_GROUPS
    assert sum(len(c) for c in GROUPS.values()) == 199


def _ancestor_info(pm: PatternMatcher, path: str) -> MatchInfo:
    parts = path.split("/")
    info = MatchInfo()
    for i in range(1, len(parts)):
        _, info = pm.matches_using_parent_results("/".join(parts[:i]), info)
    return info


def _ancestor_bool(pm: PatternMatcher, path: str) -> bool:
    parts = path.split("/")
    matched = False
    for i in range(1, len(parts)):
        matched = pm.matches_using_parent_result("/".join(parts[:i]), matched)
    return matched


@pytest.mark.parametrize(
    "case",
    GROUPS.get("patternmatcher.matches_table", []),
    ids=lambda c: f"{','.join(c['patterns'])}|{c['path']}",
)
def test_matches_table(case: dict[str, Any]) -> None:
    pm = PatternMatcher(case["patterns"])
    path = case["path"]
    expected = case["expected"]
    assert pm.matches_or_parent_matches(path) is expected
    assert pm.matches(path) is expected
    assert pm.matches_using_parent_results(path, _ancestor_info(pm, path))[0] is expected
    assert pm.matches_using_parent_results(path, MatchInfo())[0] is expected
    if len(case["patterns"]) == 1:
        assert pm.matches_using_parent_result(path, _ancestor_bool(pm, path)) is expected


@pytest.mark.parametrize(
    "case", GROUPS.get("patternmatcher.matches_simple", []), ids=lambda c: c["name"]
)
def test_matches_simple(case: dict[str, Any]) -> None:
    expect = case["expect"]
    if expect.get("error"):
        with pytest.raises(BadPattern) as info:
            matches(case["path"], case["patterns"])
        assert str(info.value) == expect["error"]
    else:
        assert matches(case["path"], case["patterns"]) is expect["match"]


@pytest.mark.parametrize(
    "case",
    GROUPS.get("patternmatcher.filepath_match_compat", []),
    ids=lambda c: f"{c['pattern']}|{c['path']}",
)
def test_filepath_match_compat(case: dict[str, Any]) -> None:
    if case["error"]:
        with pytest.raises(BadPattern, match="syntax error in pattern"):
            matches(case["path"], [case["pattern"]])
        with pytest.raises(BadPattern):
            filepath_match(case["pattern"], case["path"])
    else:
        assert matches(case["path"], [case["pattern"]]) is case["expected"]


@pytest.mark.parametrize(
    "case", GROUPS.get("patternmatcher.compile", []), ids=lambda c: c["pattern"]
)
def test_compile(case: dict[str, Any]) -> None:
    pattern = PatternMatcher([case["pattern"]]).patterns[0]
    pattern.compile()
    assert f"{pattern.match_type}Match" == case["match_type"]
    assert pattern.regex_source == case["regexp"]


@pytest.mark.parametrize("case", GROUPS.get("patternmatcher.new_and_patterns", []), ids=str)
def test_new_and_patterns(case: dict[str, Any]) -> None:
    expect = case["expect"]
    if expect["error"]:
        with pytest.raises(BadPattern) as info:
            PatternMatcher(case["patterns"])
        assert str(info.value) == expect["error"]
        return
    pm = PatternMatcher(case["patterns"])
    if "patterns_count" in expect:
        assert len(pm.patterns) == expect["patterns_count"]
    if "exclusions" in expect:
        assert pm.exclusions is expect["exclusions"]


@pytest.mark.parametrize("case", GROUPS.get("patternmatcher.bad_pattern_lazy", []), ids=str)
def test_bad_pattern_is_reported_on_every_call(case: dict[str, Any]) -> None:
    pm = PatternMatcher(case["patterns"])
    for key in ("first_call_error", "second_call_error"):
        with pytest.raises(BadPattern) as info:
            pm.matches(case["path"])
        assert str(info.value) == case["expect"][key]


@pytest.mark.parametrize("case", GROUPS.get("ignorefile.read_all", []), ids=str)
def test_read_ignore_file(case: dict[str, Any]) -> None:
    assert read_ignore_file(case["input"]) == case["expect"]["patterns"]


def test_read_ignore_file_bom_and_crlf() -> None:
    assert read_ignore_file("\ufeff# c\r\n ./a//b/ \r\n#x\n !/c/../d\n") == ["a/b", "!d"]


@pytest.mark.parametrize(
    ("path", "cleaned"),
    [("", "."), ("a//b/./c/..", "a/b"), ("/../x", "/x"), ("../../a", "../../a"), ("a/", "a")],
)
def test_clean_path(path: str, cleaned: str) -> None:
    assert clean_path(path) == cleaned


def _walk_output(fs: FilterFS) -> list[str]:
    out: list[str] = []
    fs.walk(lambda path, is_dir: out.append(("dir " if is_dir else "file ") + path) and None)
    return out


def _make_tree(root: Path, tree: list[dict[str, str]]) -> None:
    for entry in tree:
        target = root / entry["path"]
        if entry["type"] == "dir":
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(entry["path"])


@pytest.mark.parametrize(
    "case",
    GROUPS.get("fsutil.walk_filter", []),
    ids=lambda c: f"{c['name']}:{c.get('include')}:{c.get('exclude')}",
)
def test_walk_filter(case: dict[str, Any], tmp_path: Path) -> None:
    entries = [(e["path"], e["type"] == "dir") for e in case["tree"]]
    if case.get("expect", {}).get("error_on_NewFilterFS"):
        with pytest.raises(BadPattern):
            FilterFS(MemoryFS(entries), include=case.get("include"), exclude=case.get("exclude"))
        return
    if "stacked_excludes_inner_to_outer" in case:
        inner, outer = case["stacked_excludes_inner_to_outer"]
        fs = FilterFS(FilterFS(MemoryFS(entries), exclude=inner), exclude=outer)
    else:
        fs = FilterFS(MemoryFS(entries), include=case.get("include"), exclude=case.get("exclude"))
    if "expect_walk" in case:
        assert _walk_output(fs) == case["expect_walk"]
        if "stacked_excludes_inner_to_outer" not in case:
            # The same answer from a real directory on disk.
            _make_tree(tmp_path, case["tree"])
            walked = [
                ("dir " if d else "file ") + p
                for p, d in walk_context(tmp_path, case.get("exclude"), case.get("include"))
            ]
            assert walked == case["expect_walk"]
    for path, expected in case.get("expect_open", {}).items():
        assert fs.is_visible(path) is (expected == "ok"), path


def _write_context(root: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        (root / name).write_text(content)


@pytest.mark.parametrize(
    "case", GROUPS.get("buildkit.context_dockerignore", []), ids=lambda c: c["name"]
)
def test_buildkit_context_cases(case: dict[str, Any], tmp_path: Path) -> None:
    _write_context(tmp_path, case["context_files"])
    builds = case.get("builds") or [
        {
            "dockerfile": case.get("build", {}).get("dockerfile", "Dockerfile"),
            "expect": case["expect"],
        }
    ]
    for build in builds:
        expect = build["expect"]
        if expect.get("build_error"):
            with pytest.raises(BadPattern):
                list(walk_context(tmp_path, load_ignore_patterns(tmp_path, build["dockerfile"])))
            continue
        patterns = load_ignore_patterns(tmp_path, build["dockerfile"])
        names = {p for p, is_dir in walk_context(tmp_path, patterns) if not is_dir}
        for name in expect.get("present", {}):
            assert name in names
        for name in expect.get("context_has", []):
            assert name in names
        for name in [*expect.get("absent", []), *expect.get("context_lacks", [])]:
            assert name not in names


def test_ignore_file_for_prefers_dockerfile_specific(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    assert ignore_file_for(context, None) is None
    (context / ".dockerignore").write_text("a\n")
    assert ignore_file_for(context, "Dockerfile") == context / ".dockerignore"
    elsewhere = tmp_path / "build"
    elsewhere.mkdir()
    (elsewhere / "app.Dockerfile").write_text("FROM x\n")
    (elsewhere / "app.Dockerfile.dockerignore").write_text("b\n")
    assert ignore_file_for(context, elsewhere / "app.Dockerfile") == (
        elsewhere / "app.Dockerfile.dockerignore"
    )
    assert load_ignore_patterns(context, elsewhere / "app.Dockerfile") == ["b"]
    assert load_ignore_patterns(context, None) == ["a"]


def test_ignore_file_must_be_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").mkdir()
    assert ignore_file_for(tmp_path, None) is None
    (tmp_path / "Dockerfile.dockerignore").symlink_to(tmp_path / "missing")
    assert ignore_file_for(tmp_path, "Dockerfile") is None
    assert load_ignore_patterns(tmp_path, "Dockerfile") == []


def test_walk_of_missing_context_is_a_context_error(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="cannot list"):
        list(walk_context(tmp_path / "missing", ["a"]))


def test_included_and_can_skip_dir() -> None:
    pm = PatternMatcher(read_ignore_file("node_modules\n*.log\n!keep.log\nbuild/**\n!build/out\n"))
    assert pm.included("src/a.py", False)
    assert not pm.included("node_modules/x/y.js", False)
    assert not pm.included("a.log", False) and pm.included("keep.log", False)
    assert pm.can_skip_dir("node_modules")
    assert not pm.can_skip_dir("build")
    globbed = PatternMatcher(["vendor", "!vendor/**/*.go"])
    assert not globbed.can_skip_dir("vendor")


def test_walk_large_context_prunes_ignored_directories(tmp_path: Path) -> None:
    # 20,000 files: 19,000 under an ignored node_modules, 1,000 kept.
    modules = tmp_path / "node_modules"
    for d in range(190):
        sub = modules / f"pkg{d:03}"
        sub.mkdir(parents=True)
        for f in range(100):
            (sub / f"f{f}.js").write_bytes(b"")
    src = tmp_path / "src"
    for d in range(10):
        sub = src / f"m{d}"
        sub.mkdir(parents=True)
        for f in range(100):
            (sub / f"f{f}.py").write_bytes(b"")
    (tmp_path / ".dockerignore").write_text("node_modules\n**/*.pyc\n")
    patterns = load_ignore_patterns(tmp_path, None)
    start = time.perf_counter()
    entries = list(walk_context(tmp_path, patterns))
    elapsed = time.perf_counter() - start
    files = [p for p, is_dir in entries if not is_dir]
    assert len(files) == 1001  # src files plus .dockerignore
    assert not any(p.startswith("node_modules") for p, _ in entries)
    # Pruning means the ignored 19,000 files are never listed.
    assert elapsed < 5, elapsed


def test_matches_or_parent_matches_helper_and_walk_protocol() -> None:
    assert matches_or_parent_matches("docker/sub/Dockerfile", ["docker"])
    assert not matches_or_parent_matches(".", ["*"])
    pm = PatternMatcher(["build", "!build/keep"])
    assert pm.may_include_below("build")
    assert not PatternMatcher(["build"]).may_include_below("build")


_PATTERN_ALPHABET = st.sampled_from(list("ab/*?[]^-!\\. \n#") + ["**", "\\*"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_PATTERN_ALPHABET, max_size=40).map("".join),
    st.lists(_PATTERN_ALPHABET, max_size=20).map("".join),
)
def test_matcher_only_raises_bad_pattern(ignore_text: str, path: str) -> None:
    try:
        pm = PatternMatcher(read_ignore_file(ignore_text))
        result = pm.matches(path)
    except BadPattern:
        return
    # The walk-time API agrees with the one-shot one.
    assert pm.matches_using_parent_results(path, MatchInfo())[0] is result
