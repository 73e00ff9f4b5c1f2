"""ARG, ENV and --target scoping as both engines read it (lamina.core.dockerfile.args)."""

from __future__ import annotations

import pytest

from lamina.core.dockerfile.args import (
    BuildArgs,
    StageScope,
    meta_values,
    stages_to_build,
)
from lamina.core.dockerfile.instructions import load_dockerfile
from lamina.core.errors import DockerfileError, UsageError

THREE_STAGES = "FROM a AS One\nRUN x\nFROM b AS two\nRUN y\nFROM c\nRUN z\n"


@pytest.mark.parametrize(
    ("target", "stages"), [(None, [0, 1, 2]), ("one", [0]), ("ONE", [0]), ("two", [0, 1])]
)
def test_target_ends_the_build_with_its_stage(target: str | None, stages: list[int]) -> None:
    assert stages_to_build(load_dockerfile(THREE_STAGES, "Dockerfile"), target) == stages


def test_an_unknown_target_names_the_dockerfile() -> None:
    with pytest.raises(UsageError, match="target stage 'three' not found in df/Dockerfile"):
        stages_to_build(load_dockerfile(THREE_STAGES, "df/Dockerfile"), "three")


def test_meta_args_take_the_build_arg_then_the_expanded_default() -> None:
    df = load_dockerfile('ARG A=1\nARG B="${A}-b"\nARG C\nARG D=d\nFROM x\n', "Dockerfile")
    assert meta_values(df, {"D": "cli"}) == {"A": "1", "B": "1-b", "C": None, "D": "cli"}


def test_a_bad_substitution_names_the_line() -> None:
    df = load_dockerfile("FROM x\nARG A=${B:?unset}\n", "Dockerfile")
    scope = StageScope(df, {}, meta_values(df, {}))
    with pytest.raises(DockerfileError, match=r"^Dockerfile:2: "):
        scope.apply(df.stages[0].instructions[0])


def _scope(text: str, build_args: dict[str, str]) -> StageScope:
    df = load_dockerfile(text, "Dockerfile")
    scope = StageScope(df, build_args, meta_values(df, build_args))
    for instruction in df.stages[0].instructions:
        scope.apply(instruction)
    return scope


def test_a_stage_sees_a_meta_arg_only_once_it_declares_it() -> None:
    assert _scope("ARG G=1\nFROM x\n", {}).keyed() == {}
    assert _scope("ARG G=1\nFROM x\nARG G\n", {}).keyed() == {"G": "1"}
    assert _scope("ARG G=1\nFROM x\nARG G\n", {"G": "2"}).keyed() == {"G": "2"}


def test_env_beats_arg_and_defaults_see_earlier_variables() -> None:
    scope = _scope('FROM x\nARG A=a\nENV E="$A-e"\nARG B=$E\nARG L=x\nENV L=fixed\n', {})
    assert scope.keyed() == {"A": "a", "B": "a-e"}
    assert scope.env == ["E=a-e", "L=fixed"]


def test_proxy_args_reach_run_undeclared_but_key_it_only_declared() -> None:
    args = BuildArgs({"HTTP_PROXY": "p", "X": "1"}, {})
    assert args.active([]) == {"HTTP_PROXY": "p"}
    assert args.keyed([]) == []
    assert args.unused() == ["X"]
    args.declare("HTTP_PROXY", None)
    assert args.keyed([]) == ["HTTP_PROXY=p"]


def test_keyed_args_sort_as_moby_sorts_them() -> None:
    args = BuildArgs({}, {})
    args.declare("A", "y")
    args.declare("A0", "x")
    assert args.keyed([]) == ["A0=x", "A=y"]
