"""dive's CI gate: three rules over dive's analysis, dive's ``.dive-ci`` file, dive's report.

dive (``cmd/dive/cli/internal/command/ci`` and ``options/ci*.go``) checks an image's
:class:`~lamina.core.accounting.dive.Analysis` against three thresholds:

* ``lowestEfficiency`` (default ``0.9``): fails when the efficiency is below it;
* ``highestWastedBytes`` (default ``disabled``): fails when more bytes are wasted
  (a size such as ``20MB``, read as go-humanize's ``ParseBytes`` reads it);
* ``highestUserWastedPercent`` (default ``0.1``): fails when wasted bytes over the
  user's bytes (every layer but the base) exceed it (a ratio 0-1).

A rule whose value is empty, ``disabled``, ``off`` or ``false`` is skipped. A value that
does not parse, or a ratio outside 0-1, is an error before anything is evaluated
(``CiConfigError``, dive's own message). The gate passes when no rule fails; dive then
exits 0, else 1, and lamina does the same.

The report is dive's, line for line (without its colours): the analysis, the
inefficient files biggest first, then each rule's verdict sorted by name and the tally.

``.dive-ci`` is YAML; dive reads only its ``rules:`` mapping (camelCase keys, as its
README documents; kebab-case keys are accepted too). lamina reads that mapping with a
small reader of its own rather than a YAML library: block mappings of plain or quoted
scalars, with comments; anything else in the file (dive's ``plugins:`` list) is skipped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lamina.core.accounting.dive import Analysis
from lamina.core.errors import LaminaError

LOWEST_EFFICIENCY = "lowestEfficiency"
HIGHEST_WASTED_BYTES = "highestWastedBytes"
HIGHEST_USER_WASTED_PERCENT = "highestUserWastedPercent"
RULE_KEYS = (LOWEST_EFFICIENCY, HIGHEST_WASTED_BYTES, HIGHEST_USER_WASTED_PERCENT)

# dive's DefaultCIRules().
DEFAULTS: dict[str, str] = {
    LOWEST_EFFICIENCY: "0.9",
    HIGHEST_WASTED_BYTES: "disabled",
    HIGHEST_USER_WASTED_PERCENT: "0.1",
}
DEFAULT_CONFIG = ".dive-ci"

_KEBAB = {
    "lowest-efficiency": LOWEST_EFFICIENCY,
    "highest-wasted-bytes": HIGHEST_WASTED_BYTES,
    "highest-user-wasted-percent": HIGHEST_USER_WASTED_PERCENT,
}

# go-humanize's bytesSizeTable: SI and IEC units, with or without the "b".
_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "ki": 2**10,
    "kib": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mi": 2**20,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gi": 2**30,
    "gib": 2**30,
    "t": 10**12,
    "tb": 10**12,
    "ti": 2**40,
    "tib": 2**40,
    "p": 10**15,
    "pb": 10**15,
    "pi": 2**50,
    "pib": 2**50,
    "e": 10**18,
    "eb": 10**18,
    "ei": 2**60,
    "eib": 2**60,
}


class CiConfigError(LaminaError):
    """A CI rule whose value dive would refuse (exit code 1, as dive's)."""


@dataclass(frozen=True)
class RuleResult:
    """One rule's verdict.

    Attributes:
        key: the rule's name (``lowestEfficiency``…).
        status: ``PASS``, ``FAIL`` or ``SKIP``.
        message: why it failed, else its configured value (``disabled`` when skipped).
    """

    key: str
    status: str
    message: str


@dataclass(frozen=True)
class Evaluation:
    """The gate's outcome for one image.

    Attributes:
        analysis: what was evaluated.
        results: one verdict per rule, sorted by name as dive prints them.
        passed: no rule failed.
    """

    analysis: Analysis
    results: tuple[RuleResult, ...]

    @property
    def passed(self) -> bool:
        return not any(r.status == "FAIL" for r in self.results)

    @property
    def exit_code(self) -> int:
        """dive's: 0 when the gate passes, 1 when it fails."""
        return 0 if self.passed else 1


def go_float(value: float) -> str:
    """A float as Go's ``%v`` prints it (``0.9``, ``1``, ``1e-05``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def humanize_bytes(n: int) -> str:
    """go-humanize's ``Bytes``: SI units, one decimal below 10 (``131 B``, ``32 kB``)."""
    if n < 10:
        return f"{n} B"
    sizes = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
    e = math.floor(math.log(n) / math.log(1000))
    value = math.floor(n / 1000**e * 10 + 0.5) / 10
    # Go's %.0f rounds half to even, as Python's format does.
    return f"{value:.1f} {sizes[e]}" if value < 10 else f"{value:.0f} {sizes[e]}"


def parse_bytes(text: str) -> int:
    """go-humanize's ``ParseBytes`` (``20MB``, ``20Mb``, ``1.5GiB``, ``1,000``).

    Raises:
        ValueError: not a size (the message is go-humanize's).
    """
    m = re.match(r"[0-9.,]*", text)
    digits = m.group(0) if m else ""
    try:
        number = float(digits.replace(",", ""))
    except ValueError:
        raise ValueError(f'strconv.ParseFloat: parsing "{digits}": invalid syntax') from None
    unit = text[len(digits) :].strip().lower()
    if unit not in _UNITS:
        raise ValueError(f"unhandled size name: {unit}")
    value = number * _UNITS[unit]
    if value >= 2.0**64:
        raise ValueError(f"too large: {text}")
    return int(value)


def _disabled(value: str) -> bool:
    return value.strip().lower() in ("", "disabled", "off", "false")


def _ratio(key: str, value: str) -> float:
    try:
        threshold = float(value)
    except ValueError:
        raise CiConfigError(
            f'invalid {key} config value, given "{value}": strconv.ParseFloat: parsing '
            f'"{value}": invalid syntax'
        ) from None
    if threshold < 0 or threshold > 1:
        raise CiConfigError(
            f"{key} config value is outside allowed range (0-1), given '{threshold:f}'"
        )
    return threshold


@dataclass(frozen=True)
class Rules:
    """The three rules as configured (strings, as dive keeps them)."""

    lowest_efficiency: str = DEFAULTS[LOWEST_EFFICIENCY]
    highest_wasted_bytes: str = DEFAULTS[HIGHEST_WASTED_BYTES]
    highest_user_wasted_percent: str = DEFAULTS[HIGHEST_USER_WASTED_PERCENT]

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> Rules:
        """Rules from ``{rule key: value}`` (dive's camelCase keys), defaults elsewhere."""
        merged = {**DEFAULTS, **values}
        return cls(
            merged[LOWEST_EFFICIENCY],
            merged[HIGHEST_WASTED_BYTES],
            merged[HIGHEST_USER_WASTED_PERCENT],
        )

    def check(self) -> None:
        """Raises ``CiConfigError`` for every value dive would refuse, joined as dive
        joins them (one per line)."""
        errors = []
        for fn in (self._efficiency, self._bytes, self._percent):
            try:
                fn()
            except CiConfigError as exc:
                errors.append(str(exc))
        if errors:
            raise CiConfigError("; ".join(errors))

    def _efficiency(self) -> float | None:
        if _disabled(self.lowest_efficiency):
            return None
        return _ratio(LOWEST_EFFICIENCY, self.lowest_efficiency)

    def _bytes(self) -> int | None:
        if _disabled(self.highest_wasted_bytes):
            return None
        try:
            return parse_bytes(self.highest_wasted_bytes)
        except ValueError as exc:
            raise CiConfigError(
                f'invalid highestWastedBytes config value, given "{self.highest_wasted_bytes}": '
                f"{exc}"
            ) from None

    def _percent(self) -> float | None:
        if _disabled(self.highest_user_wasted_percent):
            return None
        return _ratio(HIGHEST_USER_WASTED_PERCENT, self.highest_user_wasted_percent)

    def evaluate(self, analysis: Analysis) -> Evaluation:
        """Checks ``analysis`` against the rules (dive's ``Evaluator.Evaluate``).

        Raises:
            CiConfigError: a value dive would refuse.
        """
        self.check()
        results: list[RuleResult] = []
        eff = self._efficiency()
        if eff is None:
            results.append(RuleResult(LOWEST_EFFICIENCY, "SKIP", "disabled"))
        elif eff > analysis.efficiency:
            results.append(
                RuleResult(
                    LOWEST_EFFICIENCY,
                    "FAIL",
                    f"image efficiency is too low (efficiency={analysis.efficiency:2.2f} < "
                    f"threshold={go_float(eff)})",
                )
            )
        else:
            results.append(RuleResult(LOWEST_EFFICIENCY, "PASS", self.lowest_efficiency))
        wasted = self._bytes()
        if wasted is None:
            results.append(RuleResult(HIGHEST_WASTED_BYTES, "SKIP", "disabled"))
        elif analysis.wasted_bytes > wasted:
            results.append(
                RuleResult(
                    HIGHEST_WASTED_BYTES,
                    "FAIL",
                    f"too many bytes wasted (wasted-bytes={analysis.wasted_bytes} > "
                    f"threshold={wasted})",
                )
            )
        else:
            results.append(RuleResult(HIGHEST_WASTED_BYTES, "PASS", self.highest_wasted_bytes))
        pct = self._percent()
        if pct is None:
            results.append(RuleResult(HIGHEST_USER_WASTED_PERCENT, "SKIP", "disabled"))
        elif analysis.wasted_user_percent > pct:
            results.append(
                RuleResult(
                    HIGHEST_USER_WASTED_PERCENT,
                    "FAIL",
                    "too many bytes wasted, relative to the user bytes added "
                    f"(%-user-wasted-bytes={analysis.wasted_user_percent:2.2f} > "
                    f"threshold={go_float(pct)})",
                )
            )
        else:
            results.append(
                RuleResult(HIGHEST_USER_WASTED_PERCENT, "PASS", self.highest_user_wasted_percent)
            )
        return Evaluation(analysis, tuple(sorted(results, key=lambda r: r.key)))


def analysis_lines(analysis: Analysis) -> list[str]:
    """dive's ``Analysis:`` and ``Inefficient Files:`` sections."""
    wasted = analysis.wasted_bytes
    wasted_text = f"({humanize_bytes(wasted)})" if wasted > 0 else ""
    user = f"{analysis.wasted_user_percent * 100:.2f} %" if wasted > 0 else "0 %"
    lines = [
        "Analysis:",
        f"  {'efficiency:':<18} {analysis.efficiency * 100:.2f} %",
        f"  {'wastedBytes:':<18} {wasted} bytes {wasted_text}",
        f"  {'userWastedPercent:':<18} {user}",
        "",
    ]
    if not analysis.inefficiencies:
        return [*lines, "Inefficient Files: (None)"]
    lines += ["Inefficient Files:", f"  {'Count':<5}  {'Wasted Space':<12}  File Path"]
    for w in analysis.inefficiencies:
        lines.append(f"  {w.count!s:<5}  {humanize_bytes(w.size):<12}  {w.path}")
    return lines


def report_lines(evaluation: Evaluation) -> list[str]:
    """dive's whole CI report, one string per line (no colours)."""
    lines = [*analysis_lines(evaluation.analysis), "", "Evaluation:"]
    for r in evaluation.results:
        lines.append(f"  {r.status}  {r.key} ({r.message})")
    tally = {
        "pass": sum(r.status == "PASS" for r in evaluation.results),
        "fail": sum(r.status == "FAIL" for r in evaluation.results),
        "skip": sum(r.status == "SKIP" for r in evaluation.results),
    }
    parts = " ".join(f"{k}:{v}" for k, v in tally.items() if v > 0)
    lines += ["", f"{'PASS' if evaluation.passed else 'FAIL'} [{parts}]"]
    return lines


def _scalar(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    # A comment starts at " #" outside quotes.
    return re.split(r"\s+#", text, maxsplit=1)[0].strip()


def read_dive_ci(path: Path) -> dict[str, str]:
    """The ``rules:`` of a ``.dive-ci`` file, keyed by dive's camelCase rule names.

    Args:
        path: the file.

    Returns:
        The rules it sets (others keep their defaults); empty when it sets none.

    Raises:
        CiConfigError: the file cannot be read, or ``rules`` is not a mapping.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CiConfigError(f"failed to read CI config file {path}: {exc}") from exc
    rules: dict[str, str] = {}
    in_rules = False
    indent: int | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#") or stripped in ("---", "..."):
            continue
        depth = len(line) - len(stripped)
        if depth == 0:
            key, sep, rest = stripped.partition(":")
            in_rules = key.strip() == "rules" and bool(sep)
            indent = None
            if in_rules and _scalar(rest):
                raise CiConfigError(
                    f"failed to unmarshal CI config file {path}: rules is not a mapping"
                )
            continue
        if not in_rules:
            continue
        if indent is None:
            indent = depth
        if depth != indent:
            continue  # deeper structure: nothing dive reads
        key, sep, rest = stripped.partition(":")
        if not sep:
            raise CiConfigError(f"failed to unmarshal CI config file {path}: {stripped!r}")
        key = _scalar(key)
        key = _KEBAB.get(key, key)
        if key in RULE_KEYS:
            rules[key] = _scalar(rest)
    return rules
