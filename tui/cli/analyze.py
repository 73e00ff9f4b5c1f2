"""``lamina analyze IMAGE``: dive's efficiency, wasted bytes and inefficient files; with
``--ci``, dive's CI gate.

``--ci`` reads the thresholds from the flags, else from dive's ``.dive-ci`` file (in
the current directory, or ``--ci-config PATH``), else dive's defaults, prints dive's
report and exits as dive does: 0 when every rule passes or is skipped, 1 when one
fails or a threshold is malformed. A pipeline can switch from ``dive IMAGE --ci`` to
``lamina analyze IMAGE --ci`` keeping its ``.dive-ci`` and its flags (dive's camelCase
spellings are accepted too).

Unlike dive, ``CI=true`` in the environment does not turn the gate on: ``lamina
analyze`` never opens a user interface, so there is nothing to bypass, and CI systems
set ``CI=true`` for every command.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from lamina.tui.cli.context import CliContext

if TYPE_CHECKING:
    from lamina.core import CiRules

DEFAULT_CI_CONFIG = ".dive-ci"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``lamina analyze``."""
    p = sub.add_parser(
        "analyze",
        help="dive's efficiency score and wasted space; --ci gates on them like dive --ci",
        description=(
            "dive's analysis of an image: efficiency, wasted bytes, the files that waste "
            "them. With --ci, check it against dive's rules and exit 1 when one fails."
        ),
    )
    p.add_argument(
        "ref",
        metavar="IMAGE",
        help="a tag or ID, or docker-archive:PATH, oci-archive:PATH, oci:DIR",
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--ci", action="store_true", help="check dive's CI rules; exit 1 on failure")
    p.add_argument(
        "--ci-config",
        default=DEFAULT_CI_CONFIG,
        metavar="PATH",
        help="dive's CI rules file (default: .dive-ci, used when it exists)",
    )
    p.add_argument(
        "--lowest-efficiency",
        "--lowestEfficiency",
        dest="lowest_efficiency",
        metavar="RATIO",
        help="fail below this efficiency, 0-1 (default 0.9; 'disabled' skips the rule)",
    )
    p.add_argument(
        "--highest-wasted-bytes",
        "--highestWastedBytes",
        dest="highest_wasted_bytes",
        metavar="SIZE",
        help="fail above this many wasted bytes, e.g. 20MB (default disabled)",
    )
    p.add_argument(
        "--highest-user-wasted-percent",
        "--highestUserWastedPercent",
        dest="highest_user_wasted_percent",
        metavar="RATIO",
        help="fail above this ratio of wasted to user bytes, 0-1 (default 0.1)",
    )
    p.set_defaults(func=cmd_analyze)


def rules_from_args(args: argparse.Namespace) -> CiRules:
    """Flags over the ``.dive-ci`` file over dive's defaults."""
    from lamina.core import CiRules, read_dive_ci

    values: dict[str, str] = {}
    config = Path(args.ci_config)
    if config.is_file():
        values.update(read_dive_ci(config))
    for key, attr in (
        ("lowestEfficiency", "lowest_efficiency"),
        ("highestWastedBytes", "highest_wasted_bytes"),
        ("highestUserWastedPercent", "highest_user_wasted_percent"),
    ):
        value = getattr(args, attr)
        if value is not None:
            values[key] = value
    return CiRules.from_mapping(values)


def cmd_analyze(args: argparse.Namespace, ctx: CliContext, out: TextIO | None = None) -> int:
    """``lamina analyze IMAGE [--ci]``."""
    from lamina.core import analysis_lines, ci_report_lines

    out = out or sys.stdout
    rules = rules_from_args(args) if args.ci else None
    if rules is not None:
        rules.check()  # a malformed threshold fails before the image is read, as in dive
    engine, ref = ctx.engine_for(args.ref)
    analysis = replace(engine.analyze(ref), image=args.ref)
    if rules is None:
        if args.format == "json":
            print(json.dumps(asdict(analysis), indent=2), file=out)
        else:
            for line in analysis_lines(analysis):
                print(line, file=out)
        return 0
    evaluation = rules.evaluate(analysis)
    if args.format == "json":
        doc = {
            "analysis": asdict(analysis),
            "rules": [asdict(r) for r in evaluation.results],
            "pass": evaluation.passed,
        }
        print(json.dumps(doc, indent=2), file=out)
    else:
        for line in ci_report_lines(evaluation):
            print(line, file=out)
    if not evaluation.passed:
        print("lamina: evaluation failed", file=sys.stderr)
    return evaluation.exit_code
