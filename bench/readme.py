"""``python -m bench.readme``: README.md's benchmark table, regenerated from a run.

Reads ``bench/results/results.json`` (or the file given) and replaces what README.md
holds between ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` with the machine, the
date, the command and the table of that run, so the README shows exactly what one run
measured and says how to measure it again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.report import builds_table, cell, escape, header

REPO = Path(__file__).resolve().parents[1]
BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"


def section(data: dict[str, Any]) -> str:
    """The Markdown README.md shows for one run: header, build table, the other rows."""
    lines = header(data) + [""]
    lines += builds_table(data)
    rest = [r for r in data["rows"] if r["section"] != "Builds"]
    if rest:
        lines += [
            "",
            "| measurement | lamina | reference | target | met |",
            "| --- | --- | --- | --- | --- |",
        ]
    for row in rest:
        ref = "–"
        if row["reference"] is not None:
            ref = f"{escape(row['reference_name'])}: {cell(row['reference'])}"
        met = {True: "yes", False: "**no**", None: "–"}[row["met"]]
        lines.append(
            f"| {escape(row['what'])} | {cell(row['lamina'])} | {ref} | "
            f"{escape(row['target']) or '–'} | {met} |"
        )
    if data["skipped"]:
        lines += [
            "",
            "Not measured in this run: "
            + "; ".join(f"{s['what']} ({s['why']})" for s in data["skipped"])
            + ".",
        ]
    return "\n".join(lines) + "\n"


def rewrite(readme: str, data: dict[str, Any]) -> str:
    """``readme`` with the marked block replaced by :func:`section` of ``data``.

    Raises:
        SystemExit: the markers are missing.
    """
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block")
    return readme[: start + len(BEGIN)] + "\n" + section(data) + readme[end:]


def main(argv: list[str] | None = None) -> int:
    """Rewrites README.md from a results file."""
    parser = argparse.ArgumentParser(prog="python -m bench.readme", description=__doc__)
    parser.add_argument(
        "results", nargs="?", type=Path, default=REPO / "bench" / "results" / "results.json"
    )
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    args = parser.parse_args(argv)
    data = json.loads(args.results.read_text())
    args.readme.write_text(rewrite(args.readme.read_text(), data))
    print(f"bench.readme: {args.readme} now shows the run of {data['date']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
