"""Repeating measurements, summarising them, and timing child processes.

Medians with min/max rather than means: a benchmark on a shared two-core machine gets
the odd sample slowed by a neighbour, and the median ignores it where a mean would not.
"""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Skipped(Exception):
    """A measurement that cannot run on this machine; ``str()`` says why, in one line."""


class BenchError(Exception):
    """A measurement that ran and failed (a build error, a wrong cache decision)."""


@dataclass
class Samples:
    """Repeated observations of one quantity.

    Attributes:
        unit: "s", "MB/s", "MiB" ...
        values: one value per repeat, in the order taken.
    """

    unit: str
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        """Records one repeat."""
        self.values.append(float(value))

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def to_json(self) -> dict[str, Any]:
        """The samples and their summary, for results.json."""
        return {
            "unit": self.unit,
            "values": [round(v, 6) for v in self.values],
            "median": round(self.median, 6),
            "min": round(self.low, 6),
            "max": round(self.high, 6),
        }


@dataclass(frozen=True)
class ChildResult:
    """What one child process did.

    Attributes:
        argv: the command.
        seconds: wall time from spawn to exit.
        returncode: its exit status.
        output: stdout and stderr merged, decoded.
        max_rss: peak resident set size in bytes (from wait4's rusage).
    """

    argv: tuple[str, ...]
    seconds: float
    returncode: int
    output: str
    max_rss: int

    def check(self, what: str) -> ChildResult:
        """Raises BenchError naming ``what`` and the last output line if it failed."""
        if self.returncode != 0:
            tail = [line for line in self.output.strip().splitlines() if line.strip()]
            last = tail[-1] if tail else "(no output)"
            raise BenchError(f"{what}: {' '.join(self.argv[:3])} exited {self.returncode}: {last}")
        return self


def run_child(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: int | None = subprocess.DEVNULL,
) -> ChildResult:
    """Runs a command to completion and times it.

    ``os.wait4`` gives the rusage of exactly this child, so its peak RSS is its own and
    not the maximum over every child this process ever reaped (``RUSAGE_CHILDREN``).

    Args:
        argv: the command and its arguments.
        env: the full environment (default: this process's).
        cwd: working directory.
        stdin: what the child reads.

    Returns:
        Its wall time, exit status, output and peak RSS.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.stdout.close()
    _, status, rusage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    # Popen must not reap it again.
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.debug("%s: %.3fs rc=%d", argv[0], seconds, proc.returncode)
    return ChildResult(
        argv=tuple(argv),
        seconds=seconds,
        returncode=proc.returncode,
        output=out.decode("utf-8", "replace"),
        max_rss=int(rusage.ru_maxrss) * 1024,  # Linux reports KiB
    )


def human_bytes(n: float) -> str:
    """``512 MB`` style, decimal units like ``docker system df``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
