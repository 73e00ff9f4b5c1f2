"""``lamina analyze --ci``: dive's rules, thresholds, ``.dive-ci`` file, report and exit
codes, on dive's own fixture image and dive's own test table."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from lamina.core import Analysis, CiConfigError, CiRules, WastedPath, ci_report_lines, read_dive_ci
from lamina.core.accounting.ci import humanize_bytes, parse_bytes
from lamina.tui.cli import main

DIVE = "images/dive"


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def image(conformance: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """dive's test image as an archive source, from a directory with no .dive-ci."""
    monkeypatch.chdir(tmp_path)
    return f"docker-archive:{conformance / DIVE / 'test-docker-image.tar'}"


def _cases(conformance: Path) -> list[dict[str, object]]:
    doc = json.loads((conformance / DIVE / "expected/test-docker-image.analysis.json").read_text())
    return list(doc["ci_rule_evaluation"])


def test_dive_s_evaluator_table(conformance: Path, image: str) -> None:
    """dive's Test_Evaluator: each rule's status, the verdict and the exit code."""
    for case in _cases(conformance):
        code, out, _err = _run(
            [
                "analyze",
                image,
                "--ci",
                "--lowest-efficiency",
                str(case["lowestEfficiency"]),
                "--highest-wasted-bytes",
                str(case["highestWastedBytes"]),
                "--highest-user-wasted-percent",
                str(case["highestUserWastedPercent"]),
            ]
        )
        words = {"passed": "PASS", "failed": "FAIL", "disabled": "SKIP"}
        expect = case["expect"]
        assert isinstance(expect, dict)
        for rule, status in expect.items():
            assert any(
                line.startswith(f"  {words[status]}  {rule} ") for line in out.splitlines()
            ), (
                case["name"],
                rule,
                out,
            )
        assert code == (0 if case["expect_pass"] else 1), case["name"]


def test_dive_s_defaults_and_messages(image: str) -> None:
    code, out, err = _run(["analyze", image, "--ci"])
    assert code == 1 and err == "lamina: evaluation failed\n"
    assert out.splitlines()[-5:] == [
        "  FAIL  highestUserWastedPercent (too many bytes wasted, relative to the user bytes "
        "added (%-user-wasted-bytes=0.48 > threshold=0.1))",
        "  SKIP  highestWastedBytes (disabled)",
        "  PASS  lowestEfficiency (0.9)",
        "",
        "FAIL [pass:1 fail:1 skip:1]",
    ]
    assert out.splitlines()[:4] == [
        "Analysis:",
        "  efficiency:        98.44 %",
        "  wastedBytes:       32025 bytes (32 kB)",
        "  userWastedPercent: 48.35 %",
    ]
    code, out, _ = _run(
        ["analyze", image, "--ci", "--lowestEfficiency", "0.99", "--highestWastedBytes", "1B"]
    )
    assert code == 1
    assert (
        "  FAIL  lowestEfficiency (image efficiency is too low (efficiency=0.98 < threshold=0.99))"
        in out
    )
    assert (
        "  FAIL  highestWastedBytes (too many bytes wasted (wasted-bytes=32025 > threshold=1))"
        in out
    )


def test_the_dive_ci_file_is_read_and_flags_win(image: str, tmp_path: Path) -> None:
    # dive's own cmd/dive/cli/testdata/default-ci-config/.dive-ci, comments and all.
    (tmp_path / ".dive-ci").write_text(
        "rules:\n"
        "  # If the efficiency is measured below X%, mark as failed.\n"
        "  lowestEfficiency: 0.96\n\n"
        "  # If the amount of wasted space is at least X or larger than X, mark as failed.\n"
        "  highestWastedBytes: 19Mb\n\n"
        "  highestUserWastedPercent: 0.6\n"
    )
    code, out, _ = _run(["analyze", image, "--ci"])
    assert code == 0, out
    assert "  PASS  highestWastedBytes (19Mb)" in out and out.endswith("PASS [pass:3]\n")
    code, out, _ = _run(["analyze", image, "--ci", "--highest-user-wasted-percent", "0.2"])
    assert code == 1 and "  FAIL  highestUserWastedPercent" in out
    other = tmp_path / "elsewhere.yaml"
    other.write_text(
        "---\nplugins:\n  - plugin1\nrules:\n  lowest-efficiency: off\n  plugin1/rule1: error\n"
    )
    code, out, _ = _run(["analyze", image, "--ci", "--ci-config", str(other)])
    assert "  SKIP  lowestEfficiency (disabled)" in out and code == 1  # 0.48 > default 0.1
    assert read_dive_ci(other) == {"lowestEfficiency": "off"}


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        (
            "--lowest-efficiency",
            "2",
            "lowestEfficiency config value is outside allowed range (0-1), given '2.000000'",
        ),
        (
            "--highest-user-wasted-percent",
            "lots",
            'invalid highestUserWastedPercent config value, given "lots": '
            'strconv.ParseFloat: parsing "lots": invalid syntax',
        ),
        (
            "--highest-wasted-bytes",
            "20 parsecs",
            'invalid highestWastedBytes config value, given "20 parsecs": unhandled size name: parsecs',
        ),
    ],
)
def test_a_malformed_threshold_fails_with_dive_s_message(
    image: str, flag: str, value: str, message: str
) -> None:
    code, out, err = _run(["analyze", image, "--ci", flag, value])
    assert code == 1 and out == "" and err == f"lamina: {message}\n"


def test_without_ci_the_analysis_alone_and_exit_0(image: str) -> None:
    code, out, _ = _run(["analyze", image])
    assert code == 0 and out.startswith("Analysis:\n") and "Evaluation:" not in out
    code, out, _ = _run(["analyze", image, "--format", "json"])
    assert code == 0 and json.loads(out)["wasted_bytes"] == 32025


def test_dive_s_ci_fail_snapshot_line_for_line() -> None:
    """The report dive's Test_CI_Fail snapshot shows, from the same numbers."""
    analysis = Analysis(
        image="x",
        efficiency=1.0,
        size_bytes=1000,
        user_size_bytes=182,
        wasted_bytes=131,
        wasted_user_percent=131 / 182,
        inefficiencies=(
            WastedPath("/root/saved.txt", 3, 80),
            WastedPath("/root/example/somefile1.txt", 2, 34),
            WastedPath("/root/example/somefile3.txt", 2, 17),
            WastedPath("/root", 2, 0),
            WastedPath("/etc", 10, 0),
        ),
    )
    assert ci_report_lines(CiRules().evaluate(analysis)) == [
        "Analysis:",
        "  efficiency:        100.00 %",
        "  wastedBytes:       131 bytes (131 B)",
        "  userWastedPercent: 71.98 %",
        "",
        "Inefficient Files:",
        "  Count  Wasted Space  File Path",
        "  3      80 B          /root/saved.txt",
        "  2      34 B          /root/example/somefile1.txt",
        "  2      17 B          /root/example/somefile3.txt",
        "  2      0 B           /root",
        "  10     0 B           /etc",
        "",
        "Evaluation:",
        "  FAIL  highestUserWastedPercent (too many bytes wasted, relative to the user bytes "
        "added (%-user-wasted-bytes=0.72 > threshold=0.1))",
        "  SKIP  highestWastedBytes (disabled)",
        "  PASS  lowestEfficiency (0.9)",
        "",
        "FAIL [pass:1 fail:1 skip:1]",
    ]


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("1B", 1),
        ("50kB", 50_000),
        ("20Mb", 20_000_000),
        ("19MB", 19_000_000),
        ("1.5GiB", 1610612736),
        ("1,000", 1000),
        ("7", 7),
    ],
)
def test_sizes_read_as_go_humanize_reads_them(text: str, n: int) -> None:
    assert parse_bytes(text) == n


@pytest.mark.parametrize(
    ("n", "text"),
    # go-humanize 1.0.1 (dive's) rounds to one decimal before choosing the format.
    [(0, "0 B"), (131, "131 B"), (32025, "32 kB"), (1220598, "1.2 MB"), (9_950_000, "10 MB")],
)
def test_sizes_print_as_go_humanize_prints_them(n: int, text: str) -> None:
    assert humanize_bytes(n) == text


def test_rules_refuse_what_dive_refuses() -> None:
    with pytest.raises(CiConfigError, match="outside allowed range"):
        CiRules(lowest_efficiency="-0.1").check()
    CiRules(
        lowest_efficiency="disabled", highest_wasted_bytes="off", highest_user_wasted_percent=""
    ).check()
