"""Results: one row per comparison, written as ``results.json`` and ``results.md``.

A row holds lamina's samples and, where there is one, the reference measured in the
same run (Docker, or the machine's own ``sha256sum``/``tar``). The speed-up is always
"how many times better lamina is", so above 1 is faster whichever the unit.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.measure import Samples, human_bytes


@dataclass
class Row:
    """One comparison in the results table.

    Attributes:
        section: the group it belongs to ("Builds", "Inspect at scale", ...).
        what: what was measured, in a few words.
        lamina: lamina's samples.
        reference: the same thing done by the reference, if any.
        reference_name: "Docker 20.10.24", "sha256sum" ...
        higher_is_better: True for throughputs (MB/s), False for times.
        target_speedup: the speed-up the target asks for (20.0, 1.0), if any.
        target_max: an absolute ceiling for lamina's median (1.0 s), if any.
        notes: a short remark shown under the table (peak memory, bytes read ...).
        profile: the ``bench.profiling`` path that exercises it ("" if none).
        others: further references measured in the same run, shown as columns of
            their own (the classic builder and podman beside BuildKit); the speed-up
            and the target are against ``reference`` alone.
    """

    section: str
    what: str
    lamina: Samples
    reference: Samples | None = None
    reference_name: str = ""
    higher_is_better: bool = False
    target_speedup: float | None = None
    target_max: float | None = None
    notes: str = ""
    profile: str = ""
    others: list[tuple[str, Samples]] = field(default_factory=list)

    @property
    def speedup(self) -> float | None:
        if self.reference is None or not self.reference.values or not self.lamina.values:
            return None
        ref, own = self.reference.median, self.lamina.median
        if self.higher_is_better:
            return own / ref if ref else None
        return ref / own if own else None

    @property
    def target(self) -> str:
        parts = []
        if self.target_speedup is not None:
            parts.append(f"≥ {self.target_speedup:g}× {self.reference_name or 'reference'}")
        if self.target_max is not None:
            parts.append(f"≤ {_fmt(self.target_max, self.lamina.unit)}")
        return ", ".join(parts)

    @property
    def met(self) -> bool | None:
        """True/False against the target; None when there is no target or no data."""
        verdicts: list[bool] = []
        if self.target_speedup is not None:
            speedup = self.speedup
            if speedup is None:
                return None
            verdicts.append(speedup >= self.target_speedup)
        if self.target_max is not None:
            verdicts.append(self.lamina.median <= self.target_max)
        return all(verdicts) if verdicts else None

    def to_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "what": self.what,
            "lamina": self.lamina.to_json(),
            "reference": self.reference.to_json() if self.reference else None,
            "reference_name": self.reference_name,
            "higher_is_better": self.higher_is_better,
            "speedup": None if self.speedup is None else round(self.speedup, 3),
            "target": self.target,
            "met": self.met,
            "notes": self.notes,
            "others": [{"name": name, **s.to_json()} for name, s in self.others],
        }


@dataclass
class Results:
    """Everything one run produced."""

    command: str
    config: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    docker: str | None = None
    # Each reference builder that ran, with what it is ("BuildKit": "Docker 20.10.24's").
    builders: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    # Taken when the run starts: what was measured, even if the tree moves meanwhile.
    commit: str = field(default_factory=lambda: _git_commit())

    def skip(self, what: str, why: str) -> None:
        """Records a measurement that could not run here."""
        self.skipped.append((what, why))

    def fail(self, what: str, why: str) -> None:
        """Records a measurement that ran and broke."""
        self.failed.append((what, why))

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "machine": machine(),
            "git_commit": self.commit,
            "docker": self.docker,
            "builders": self.builders,
            "config": self.config,
            "rows": [row.to_json() for row in self.rows],
            "skipped": [{"what": w, "why": y} for w, y in self.skipped],
            "failed": [{"what": w, "why": y} for w, y in self.failed],
            "profiles": self.profiles,
        }

    def write(self, out: Path) -> tuple[Path, Path]:
        """Writes ``results.json`` and ``results.md`` into ``out``; returns both paths."""
        out.mkdir(parents=True, exist_ok=True)
        data = self.to_json()
        json_path = out / "results.json"
        md_path = out / "results.md"
        json_path.write_text(json.dumps(data, indent=2) + "\n")
        md_path.write_text(markdown(data))
        return json_path, md_path


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "B":
        return human_bytes(value)
    if unit == "×":
        return f"{value:.2f}×"
    if unit == "files":
        return f"{value:,.0f} file" + ("" if value == 1 else "s")
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"


def cell(samples: dict[str, Any] | None) -> str:
    if samples is None:
        return "–"
    unit = samples["unit"]
    if len(samples["values"]) == 1:
        return _fmt(samples["median"], unit)
    return (
        f"{_fmt(samples['median'], unit)} "
        f"({_fmt(samples['min'], unit)}–{_fmt(samples['max'], unit)})"
    )


def escape(text: str) -> str:
    """Text safe inside a Markdown table cell (a bare ``|`` would split it)."""
    return text.replace("|", "\\|")


def builds_table(data: dict[str, Any]) -> list[str]:
    """The build rows as one table, a column per builder (lamina first)."""
    rows = [r for r in data["rows"] if r["section"] == "Builds"]
    if not rows:
        return []
    names: list[str] = []
    for row in rows:
        for name in [row["reference_name"] if row["reference"] else ""] + [
            o["name"] for o in row.get("others", [])
        ]:
            if name and name not in names:
                names.append(name)
    primary = next((r["reference_name"] for r in rows if r["reference"]), "")
    head = ["measurement", "lamina", *names]
    head += [f"lamina vs {primary}" if primary else "speed-up", "target", "met"]
    lines = ["| " + " | ".join(escape(h) for h in head) + " |"]
    lines.append("| " + " | ".join("---" for _ in head) + " |")
    for row in rows:
        by_name = {o["name"]: o for o in row.get("others", [])}
        if row["reference"] is not None:
            by_name[row["reference_name"]] = row["reference"]
        cells = [escape(row["what"]), cell(row["lamina"])]
        cells += [cell(by_name.get(name)) for name in names]
        speedup = "–" if row["speedup"] is None else f"{row['speedup']:.2f}×"
        met = {True: "yes", False: "**no**", None: "–"}[row["met"]]
        cells += [speedup, escape(row["target"]) or "–", met]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def header(data: dict[str, Any]) -> list[str]:
    """Where, when and how the numbers were taken."""
    m = data["machine"]
    lines = [
        f"Measured {data['date']} on {m['cpu']} ({m['nproc']} CPUs), "
        f"{human_bytes(m['memory'])} RAM, Linux {m['kernel']}, Python {m['python']}"
        + f", lamina at `{data['git_commit']}`.",
        "",
    ]
    builders = data.get("builders") or {}
    if builders:
        lines += ["Builders: " + "; ".join(f"{k}: {v}" for k, v in builders.items()) + ".", ""]
    elif data.get("docker"):
        lines += [f"Docker Engine {data['docker']}.", ""]
    lines.append(
        f"Command: `{data['command']}`. Medians over the repeats, (min–max) in brackets; "
        "the builders take turns going first within each repeat."
    )
    return lines


def markdown(data: dict[str, Any]) -> str:
    """The results as Markdown: the machine, the command, the tables, what was skipped."""
    lines = header(data)
    builds = builds_table(data)
    if builds:
        lines += ["", *builds]
    rest = [r for r in data["rows"] if r["section"] != "Builds"]
    if rest:
        lines += [
            "",
            "| | measurement | lamina | reference | speed-up | target | met |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
    for row in rest:
        ref = cell(row["reference"])
        if row["reference"] is not None:
            ref = f"{escape(row['reference_name'])}: {ref}"
        speedup = "–" if row["speedup"] is None else f"{row['speedup']:.2f}×"
        met = {True: "yes", False: "**no**", None: "–"}[row["met"]]
        lines.append(
            f"| {row['section']} | {escape(row['what'])} | {cell(row['lamina'])} | {ref} | "
            f"{speedup} | {escape(row['target']) or '–'} | {met} |"
        )
    notes = [f"- {row['what']}: {row['notes']}" for row in data["rows"] if row["notes"]]
    if notes:
        lines += ["", "Notes:", "", *notes]
    if data["skipped"]:
        lines += ["", "Skipped:", ""]
        lines += [f"- {s['what']}: {s['why']}" for s in data["skipped"]]
    if data["failed"]:
        lines += ["", "Failed:", ""]
        lines += [f"- {s['what']}: {s['why']}" for s in data["failed"]]
    for prof in data["profiles"]:
        for key, order in (
            ("top", "all functions by own time"),
            ("lamina_top", "lamina's functions by cumulative time"),
        ):
            if not prof.get(key):
                continue
            lines += ["", f"Profile of {prof['what']} ({prof['seconds']:.2f} s), {order}:", ""]
            lines += ["| function | calls | own s | cumulative s |", "| --- | --- | --- | --- |"]
            for entry in prof[key]:
                lines.append(
                    f"| `{escape(entry['function'])}` | {entry['calls']} | "
                    f"{entry['tottime']:.3f} | {entry['cumtime']:.3f} |"
                )
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        pass
    return {
        "cpu": cpu,
        "nproc": os.cpu_count() or 1,
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "executable": sys.executable,
    }


def _git_commit() -> str:
    """The lamina commit being measured.

    ``$LAMINA_BENCH_COMMIT`` when set (a run from an exported tree, which has no .git),
    else ``git rev-parse`` of this checkout, with ``-dirty`` when core/ or tui/ differ.
    """
    if os.environ.get("LAMINA_BENCH_COMMIT"):
        return os.environ["LAMINA_BENCH_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parents[1],
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip()
    if not commit:
        return "unknown"
    dirty = subprocess.run(
        ["git", "diff", "--quiet", "HEAD", "--", "core", "tui"],
        cwd=Path(__file__).resolve().parents[1],
        check=False,
        capture_output=True,
    )
    return commit + ("-dirty" if dirty.returncode == 1 else "")
