"""Inspecting at scale: system df, a prune plan and the app on a synthetic store.

Each sample runs in a fresh process (``bench.probe``) so its time and peak memory are
its own; the numbers exclude interpreter start-up and imports, which the notes give
separately as the memory already resident before the operation.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from bench.measure import BenchError, Samples, human_bytes, run_child
from bench.report import Row

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]


def probe(op: str, home: Path, *extra: str) -> dict[str, Any]:
    """Runs ``python -m bench.probe OP`` and returns its JSON report.

    Raises:
        BenchError: the probe failed (its one-line error is in the message).
    """
    result = run_child(
        [sys.executable, "-m", "bench.probe", op, "--home", str(home), *extra], cwd=REPO
    )
    lines = [line for line in result.output.strip().splitlines() if line.startswith("{")]
    if not lines:
        tail = result.output.strip().splitlines()[-1:] or ["no output"]
        raise BenchError(f"probe {op}: exited {result.returncode}: {tail[0]}")
    report: dict[str, Any] = json.loads(lines[-1])
    if "error" in report:
        raise BenchError(f"probe {op} on {home}: {report['error']}")
    return report


def _memory_note(reports: list[dict[str, Any]], peak_key: str = "max_rss") -> str:
    peak = max(r[peak_key] for r in reports)
    before = min(r["rss_before"] for r in reports)
    return (
        f"peak RSS {human_bytes(peak)} ({human_bytes(before)} of it resident before the operation)"
    )


def measure_inspect(
    home: Path, scale: str, repeat: int, presses: int
) -> tuple[list[Row], list[str]]:
    """Times df, a prune plan and the app ``repeat`` times each on the store at ``home``.

    Args:
        home: a store (see ``bench.synthetic_store``).
        scale: "2,000 images / 20,000 layers", for the row titles.
        repeat: samples per measurement.
        presses: key presses per app session.

    Returns:
        The rows, and one line per operation that could not run (with why).
    """
    rows: list[Row] = []
    problems: list[str] = []
    for op, what in (("df", "system df"), ("prune-plan", "prune plan (system -a)")):
        try:
            reports = [probe(op, home) for _ in range(repeat)]
        except BenchError as exc:
            problems.append(f"{what}: {exc}")
            continue
        samples = Samples("s", [r["seconds"] for r in reports])
        found = {
            k: v
            for k, v in reports[0].items()
            if k not in ("seconds", "rss_before", "max_rss", "read_bytes")
        }
        rows.append(
            Row(
                "Inspect at scale",
                f"{what}, {scale}",
                samples,
                target_max=1.0,
                notes=f"{_memory_note(reports)}; found {found}",
                profile=op,
            )
        )
    try:
        reports = [probe("app", home, "--presses", str(presses)) for _ in range(repeat)]
    except BenchError as exc:
        problems.append(f"app: {exc}")
        return rows, problems
    opened = Samples("s", [r["open_seconds"] for r in reports])
    keys = Samples("s", [k for r in reports for k in r["key_seconds"]])
    loaded = Samples("s", [r["loaded_seconds"] for r in reports])
    rows.append(
        Row(
            "Inspect at scale",
            f"open the app until the first view shows data, {scale}",
            opened,
            target_max=1.0,
            profile="app",
            notes=_memory_note(reports, "rss_open") + " when the first view showed; every view "
            f"(builds, disk usage and prune preview too) loaded after {loaded.median:.2f} s "
            f"({loaded.low:.2f}–{loaded.high:.2f})",
        )
    )
    rows.append(
        Row(
            "Inspect at scale",
            f"key press round trip (`down`, {presses} per session)",
            keys,
            notes=f"{len(keys.values)} presses; {_memory_note(reports)} over the session",
        )
    )
    return rows, problems
