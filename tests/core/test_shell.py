"""BuildKit's shell lexer tables (envVarTest, wordsTest) against lamina's Lexer."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lamina.core.dockerfile.shell import Lexer
from lamina.core.errors import DockerfileError

SHELL_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "buildkit-shell"

ENV_VAR_ENV = ["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]


def _env_var_cases() -> list[tuple[int, str, str, str]]:
    cases: list[tuple[int, str, str, str]] = []
    if not SHELL_DIR.is_dir():
        return cases
    for number, line in enumerate((SHELL_DIR / "envVarTest").read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        platform, source, expected = (part.strip() for part in line.split("|", 2))
        cases.append((number, platform, source, expected))
    return cases


def _words_cases() -> list[tuple[int, str, str | list[str], list[str]]]:
    """(line, input, expected words or "error", environment at that line)."""
    cases: list[tuple[int, str, str | list[str], list[str]]] = []
    if not SHELL_DIR.is_dir():
        return cases
    env: list[str] = []
    for number, line in enumerate((SHELL_DIR / "wordsTest").read_text().splitlines(), 1):
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith("ENV "):
            env = [*env, line[4:]]
            continue
        source, expected = line.split("|", 1)
        source = source.strip()
        expected = expected.lstrip(" ")
        cases.append((number, source, "error" if expected == "error" else expected.split(","), env))
    return cases


ENV_VAR_CASES = _env_var_cases()
WORDS_CASES = _words_cases()
# envVarTest lines marked W describe Windows, where variable names are
# case-insensitive; lamina builds Linux images only, so those lines do not apply.
WINDOWS_ONLY = [c for c in ENV_VAR_CASES if c[1] == "W"]


def test_tables_are_present(conformance: Path) -> None:
    assert conformance / "buildkit-shell" == SHELL_DIR
    assert len(ENV_VAR_CASES) > 200
    assert len(WORDS_CASES) > 20
    assert {c[1] for c in ENV_VAR_CASES} == {"A", "U", "W"}
    assert len(WINDOWS_ONLY) == 2


@pytest.mark.parametrize(
    ("line", "source", "expected"),
    [(n, s, e) for n, p, s, e in ENV_VAR_CASES if p in ("A", "U")],
    ids=lambda v: str(v) if isinstance(v, int) else None,
)
def test_env_var_table(line: int, source: str, expected: str) -> None:
    lexer = Lexer("\\")
    if expected == "error":
        with pytest.raises(DockerfileError):
            lexer.process_word(source, ENV_VAR_ENV)
    else:
        assert lexer.process_word(source, ENV_VAR_ENV) == expected, f"envVarTest:{line}"


@pytest.mark.parametrize(("line", "source", "expected", "env"), WORDS_CASES)
def test_words_table(line: int, source: str, expected: str | list[str], env: list[str]) -> None:
    lexer = Lexer("\\")
    if expected == "error":
        with pytest.raises(DockerfileError):
            lexer.process_words(source, env)
    else:
        assert lexer.process_words(source, env) == expected, f"wordsTest:{line}"


@pytest.mark.parametrize(
    ("word", "env", "expected"),
    [
        ("${FOO#*/}", {"FOO": "a/b/c"}, "b/c"),
        ("${FOO##*/}", {"FOO": "a/b/c"}, "c"),
        ("${FOO%/*}", {"FOO": "a/b/c"}, "a/b"),
        ("${FOO%%/*}", {"FOO": "a/b/c"}, "a"),
        ("${FOO/b/x}", {"FOO": "abcb"}, "axcb"),
        ("${FOO//b/x}", {"FOO": "abcb"}, "axcx"),
        ("${FOO:-def}", {}, "def"),
        ("${FOO+set}", {"FOO": ""}, "set"),
        ("`$FOO", {"FOO": "v"}, "$FOO"),
    ],
)
def test_modifiers(word: str, env: dict[str, str], expected: str) -> None:
    escape = "`" if word.startswith("`") else "\\"
    assert Lexer(escape).process_word(word, env) == expected


def test_required_variable_message_names_variable() -> None:
    with pytest.raises(DockerfileError, match="FOO: must be set"):
        Lexer().process_word("${FOO:?must be set}", {})


def test_skip_unset_env_keeps_references() -> None:
    lexer = Lexer(skip_unset_env=True)
    assert lexer.process_word("$A ${B} ${C:-x} $D", {"D": "d"}) == "$A ${B} ${C:-x} d"


def test_matches_report_used_and_missing_names() -> None:
    _, matched, unmatched = Lexer().process_word_with_matches("$A $B", {"A": "1"})
    assert matched == {"A"}
    assert unmatched == {"B"}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(list("ab $\\`{}:-+?#%/'\"\t<") + ["${", "}"]), max_size=40).map(
        "".join
    )
)
def test_lexer_only_raises_dockerfile_error(word: str) -> None:
    for lexer in (Lexer("\\"), Lexer("`"), Lexer(raw_quotes=True, raw_escapes=True)):
        try:
            lexer.process_words(word, {"a": "x y"})
        except DockerfileError:
            continue
