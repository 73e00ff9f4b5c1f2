"""Typed instructions against BuildKit's instructions test tables, plus stage grouping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lamina.core.dockerfile.instructions import (
    BFlags,
    Instruction,
    handle_json_args,
    health_config,
    instruction_from_node,
    load_dockerfile,
    parse_device,
    parse_duration,
    parse_opt_interval,
    sources_and_dest,
)
from lamina.core.dockerfile.parser import Node, parse
from lamina.core.errors import DockerfileError

CASES_FILE = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "conformance"
    / ("buildkit-parser-cases.json")
)


def _cases(group: str) -> list[dict[str, Any]]:
    if not CASES_FILE.is_file():
        return []
    for g in json.loads(CASES_FILE.read_text())["groups"]:
        if g["id"] == group:
            return list(g["cases"])
    raise AssertionError(f"case group {group} is missing")


def _first(text: str) -> Node:
    return parse(text).children[0]


def test_case_file_is_the_shared_one(conformance: Path) -> None:
    assert conformance / "buildkit-parser-cases.json" == CASES_FILE
    assert len(_cases("instructions.builder_flags")) == 14


ARGUMENT_ERRORS = [
    *_cases("instructions.exactly_one_argument"),
    *_cases("instructions.at_least_one_argument"),
    *_cases("instructions.no_destination_argument"),
]


@pytest.mark.parametrize("case", ARGUMENT_ERRORS, ids=lambda c: c["input"])
def test_argument_count_errors(case: dict[str, Any]) -> None:
    node = _first(case["input"])  # the parser accepts these
    with pytest.raises(DockerfileError) as info:
        instruction_from_node(node, "Dockerfile")
    assert info.value.reason == case["expect"]["instruction_error_equals"]
    assert info.value.line == 1
    assert str(info.value).startswith("Dockerfile:1: ")


@pytest.mark.parametrize(
    "case",
    [*_cases("instructions.error_cases"), *_cases("instructions.heredoc_error_cases")],
    ids=lambda c: c["name"],
)
def test_error_cases(case: dict[str, Any]) -> None:
    node = _first(case["input"])
    with pytest.raises(DockerfileError) as info:
        instruction_from_node(node)
    assert case["expect"]["instruction_error_contains"] in info.value.reason


@pytest.mark.parametrize(
    "case",
    [*_cases("instructions.too_many_arguments"), *_cases("instructions.blank_names")],
    ids=lambda c: c["node_original"],
)
def test_hand_built_key_value_nodes(case: dict[str, Any]) -> None:
    node = Node(
        value=case["node_value"], args=list(case["node_values"]), original=case["node_original"]
    )
    with pytest.raises(DockerfileError) as info:
        instruction_from_node(node)
    assert info.value.reason == case["expect"]["instruction_error_equals"]


@pytest.mark.parametrize("case", _cases("instructions.healthcheck_cmd"))
def test_healthcheck_shell_form(case: dict[str, Any]) -> None:
    node = Node(value=case["node_value"], args=list(case["node_values"]), original="HEALTHCHECK")
    config = health_config(instruction_from_node(node))
    assert config is not None
    assert list(config.test) == case["expect"]["Health.Test"]


def test_healthcheck_options_and_none() -> None:
    df = load_dockerfile(
        'FROM x\nHEALTHCHECK --interval=5s --retries=3 CMD ["/check", "-q"]\nHEALTHCHECK NONE\n'
    )
    check, none = df.stages[0].instructions
    config = health_config(check)
    assert config is not None
    assert config.test == ("CMD", "/check", "-q")
    assert (config.interval, config.retries) == (5_000_000_000, 3)
    assert health_config(none) is None
    with pytest.raises(DockerfileError, match="cannot be less than 1ms"):
        load_dockerfile("FROM x\nHEALTHCHECK --timeout=10us CMD true\n")
    with pytest.raises(DockerfileError, match="Unknown type"):
        load_dockerfile("FROM x\nHEALTHCHECK CONNECT TCP 7000\n")


@pytest.mark.parametrize(
    "case", _cases("instructions.parse_opt_interval"), ids=lambda c: c["input"]
)
def test_parse_opt_interval(case: dict[str, Any]) -> None:
    expect = case["expect"]
    if "error_contains" in expect:
        with pytest.raises(DockerfileError, match=expect["error_contains"]):
            parse_opt_interval("interval", case["input"])
    else:
        parse_opt_interval("interval", case["input"])


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("0", 0),
        ("1ms", 1_000_000),
        ("1m30s", 90_000_000_000),
        ("1.5h", 5_400_000_000_000),
        ("-2s", -2_000_000_000),
    ],
)
def test_parse_duration(text: str, nanos: int) -> None:
    assert parse_duration(text) == nanos


@pytest.mark.parametrize("text", ["", "5", "s", "1x", "1.s.", "ms"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("case", _cases("instructions.comments_detection"))
def test_comments_detection(case: dict[str, Any]) -> None:
    expect = case["expect"]
    df = load_dockerfile(case["input"])
    assert df.stages[0].doc_comment == expect["stages[0].DocComment"]
    meta = df.meta_args[0]
    assert meta.env_pairs[0][0] == expect["metaArgs[0].Args[0].Key"]
    assert meta.doc_comment("foo") == expect["metaArgs[0].Args[0].DocComment"]
    for index, position in ((0, 0), (1, 0), (1, 1)):
        want = expect[f"stages[0].Commands[{index}].Args[{position}]"]
        command = df.stages[0].instructions[index]
        key = command.env_pairs[position][0]
        assert key == want["Key"]
        assert command.doc_comment(key) == want["DocComment"]


@pytest.mark.parametrize("case", _cases("instructions.run_flags_used"))
def test_run_flags_used(case: dict[str, Any]) -> None:
    run = instruction_from_node(_first(case["input"]))
    assert list(run.flags) == case["expect"]["FlagsUsed"]
    assert run.flags["mount"] == ("type=tmpfs,target=/foo/",)


@pytest.mark.parametrize("case", _cases("instructions.copy_heredoc"), ids=lambda c: c["input"])
def test_copy_heredoc(case: dict[str, Any]) -> None:
    expect = case["expect"]
    copy = instruction_from_node(_first(case["input"]))
    paths, contents, dest = sources_and_dest(copy)
    assert dest == expect["DestPath"]
    assert (paths or None) == expect["SourcePaths"]
    got = [{"Path": c.path, "Data": c.data, "Expand": c.expand} for c in contents]
    assert (got or None) == expect["SourceContents"]


@pytest.mark.parametrize("case", _cases("instructions.run_heredoc"), ids=lambda c: c["input"])
def test_run_heredoc(case: dict[str, Any]) -> None:
    expect = case["expect"]
    run = instruction_from_node(_first(case["input"]))
    assert (not run.json_form) == expect["PrependShell"]
    assert run.command() == expect["CmdLine"]
    files = [{"Name": d.name, "Data": d.content, "Chomp": d.chomp} for d in run.heredocs]
    assert (files or None) == expect["Files"]


def _bflags(case: dict[str, Any]) -> BFlags:
    flags = BFlags(case["args"])
    for spec in case["defined_flags"]:
        if spec["type"] == "bool":
            flags.add_bool(spec["name"], spec["default"])
        else:
            flags.add_string(spec["name"], spec["default"])
    return flags


@pytest.mark.parametrize(
    "case", _cases("instructions.builder_flags"), ids=lambda c: " ".join(c["args"]) or "none"
)
def test_builder_flags(case: dict[str, Any]) -> None:
    expect = case["expect"]
    flags = _bflags(case)
    if expect["error"]:
        with pytest.raises(DockerfileError):
            flags.parse()
        return
    flags.parse()
    for name, value in expect.get("values", {}).items():
        assert flags.value(name) == value
    for name, used in expect.get("used", {}).items():
        assert flags.is_used(name) == used
    if "used_sorted" in expect:
        assert sorted(flags.used()) == expect["used_sorted"]


@pytest.mark.parametrize("case", _cases("instructions.handle_json_args"), ids=lambda c: c["name"])
def test_handle_json_args(case: dict[str, Any]) -> None:
    json_form = bool((case["attributes"] or {}).get("json"))
    assert handle_json_args(case["args"], json_form) == case["expect"]


def test_load_dockerfile_stages() -> None:
    df = load_dockerfile(
        "ARG BASE=alpine\n"
        "FROM --platform=linux/amd64 ${BASE} AS Build\n"
        "COPY --from=other --link a b\n"
        'ENV A=1 B="two words"\n'
        "ENV OLD value with spaces\n"
        "ARG X Y=2\n"
        "FROM scratch\n"
        "COPY --from=build /out /\n"
        "ONBUILD RUN echo hi\n",
        "Dockerfile",
    )
    assert [a.original for a in df.meta_args] == ["ARG BASE=alpine"]
    build, final = df.stages
    assert (build.name, build.base, build.platform) == ("build", "${BASE}", "linux/amd64")
    copy, env, old, arg = build.instructions
    assert copy.flags == {"from": ("other",), "link": ("true",)}
    assert copy.flag("from") == "other"
    assert env.env_pairs == (("A", "1"), ("B", '"two words"'))
    assert old.env_pairs == (("OLD", "value with spaces"),)
    assert arg.env_pairs == (("X", None), ("Y", "2"))
    assert (final.name, final.base, final.platform) == (None, "scratch", None)
    onbuild = final.instructions[1]
    assert onbuild.inner is not None
    assert onbuild.inner.keyword == "RUN" and onbuild.args == ("RUN echo hi",)
    assert df.stage("BUILD") is build and df.stage("1") is final


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("RUN true\n", 1, "no build stage in current context"),
        ("ARG A\nENV B=1\nFROM x\n", 2, "no build stage in current context"),
        ("FROM x AS 1bad\n", 1, "invalid name for build stage"),
        ("FROM x AS\n", 1, "FROM requires either one or three arguments"),
        ("FROM x AS a\nFROM y AS A\n", 2, "duplicate stage name"),
        ("FROM x\nCOPY --chmod a b\n", 2, "missing a value on flag: chmod"),
        ("FROM x\nCOPY --bogus=1 a b\n", 2, "unknown flag: --bogus"),
        ("FROM x\nRUN --link true\n", 2, "unknown flag: --link"),
        ("FROM x\nSHELL /bin/sh\n", 2, "SHELL requires the arguments to be in JSON form"),
        ("FROM x\nENV =v\n", 2, "ENV names can not be blank"),
        ("ARG =v\nFROM x\n", 1, "ARG names can not be blank"),
        ("FROM x\n\nBOGUS thing\n", 3, "unknown instruction: BOGUS"),
    ],
)
def test_load_dockerfile_errors(text: str, line: int, message: str) -> None:
    with pytest.raises(DockerfileError) as info:
        load_dockerfile(text, "ctx/Dockerfile")
    assert info.value.line == line
    assert message in info.value.reason
    assert str(info.value).startswith(f"ctx/Dockerfile:{line}: ")


def test_instruction_is_frozen() -> None:
    run = instruction_from_node(_first("RUN echo"))
    assert isinstance(run, Instruction)
    with pytest.raises(AttributeError):
        run.keyword = "CMD"  # type: ignore[misc]


@pytest.mark.parametrize(
    "case",
    sorted((CASES_FILE.parent / "real-dockerfiles").glob("*/Dockerfile")),
    ids=lambda p: p.parent.name,
)
def test_real_dockerfiles_load(case: Path) -> None:
    df = load_dockerfile(case.read_text(), str(case))
    assert df.stages
    assert all(stage.base for stage in df.stages)


@pytest.mark.parametrize("case", _cases("instructions.parse_device"), ids=lambda c: c["input"])
def test_parse_device(case: dict[str, Any]) -> None:
    expect = case["expect"]
    if "error_equals" in expect:
        with pytest.raises(DockerfileError) as info:
            parse_device(case["input"])
        assert info.value.reason == expect["error_equals"]
        return
    device = parse_device(case["input"])
    assert {"Name": device.name, "Required": device.required} == expect["device"]


def test_bad_device_flag_is_rejected_at_load() -> None:
    with pytest.raises(DockerfileError, match="invalid value for required: maybe"):
        load_dockerfile("FROM x\nRUN --device=a,required=maybe true\n", "Dockerfile")
