"""How the front ends show things: sizes, times, digests, instructions and miss reasons.

Each is said once here, for the app and the command line alike. Where the two differ
they follow their models: the app's tables read like dive's (``1.4 MB``, ``an hour
ago``), the command line's like Docker's (``1.43MB``, ``About an hour ago``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from lamina.core import short_digest

if TYPE_CHECKING:
    from textual.app import App

    from lamina.core import Advice, PrunePlan, PruneResult, StepRecord

Clock = Callable[[], float]


def size(n: float | None, *, docker: bool = False, precision: int = 3) -> str:
    """Bytes in decimal units.

    Args:
        n: a byte count; None shows as ``-``.
        docker: significant digits and no space, as Docker's tables show sizes
            (``1.43MB``, ``512B``), instead of dive's one decimal (``1.4 MB``).
        precision: Docker's significant digits: 3 in its per-object tables
            (``HumanSizeWithPrecision(n, 3)``), 4 in ``system df``'s summary rows
            (go-units ``HumanSize``: ``1.986MB``).
    """
    if n is None:
        return "-"
    n = int(n)
    if not docker:
        import humanize  # only when a size is shown: not for `lamina --help`

        return str(humanize.naturalsize(n, binary=False, format="%.1f"))
    value, unit = float(n), 0
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
    while value >= 1000 and unit < len(units) - 1:
        value /= 1000
        unit += 1
    return f"{value:.{precision}g}{units[unit]}"


def duration(seconds: float) -> str:
    """A duration in the words of Docker's ``units.HumanDuration`` (``About an hour``)."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def ago(when: float | None, clock: Clock = time.time, *, docker: bool = False) -> str:
    """How long before ``clock()`` (fixed in tests and screenshots) ``when`` was.

    Args:
        when: a unix time; 0 or None is unknown (``-``, or Docker's ``N/A``).
        clock: returns "now".
        docker: Docker's words (``2 weeks ago``) instead of humanize's (``a month ago``).
    """
    if not when:
        return "N/A" if docker else "-"
    elapsed = max(0.0, clock() - when)
    if docker:
        return duration(elapsed) + " ago"
    import humanize

    return str(humanize.naturaltime(elapsed))


def digest(value: str | None) -> str:
    """``sha256:<hex>`` shortened to 12 hex characters for tables (``-`` when absent)."""
    if not value:
        return "-"
    return short_digest(value)


def seconds(value: float) -> str:
    """A step's run time: ``120ms`` or ``1.5s``."""
    if value < 1:
        return f"{value * 1000:.0f}ms"
    return f"{value:.1f}s"


def verdict(step: StepRecord) -> str:
    """HIT / MISS / ? (a what-if that cannot say) / (FROM) in theme colours."""
    if step.cached is None:
        return "[b $warning]?[/]" if step.reason else "[dim]—[/]"
    return "[b $success]HIT[/]" if step.cached else "[b $error]MISS[/]"


_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


def plan_lines(plan: PrunePlan) -> tuple[list[str], int]:
    """Every item a prune plan removes, one line each (digests shortened), and the bytes freed."""
    lines = [
        _DIGEST.sub(lambda m: "sha256:" + short_digest(m.group(0)), line)
        for line in plan.describe()
    ]
    return lines, plan.reclaimable_bytes


def _count(n: int, one: str, many: str = "") -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def plan_summary(plan: PrunePlan) -> str:
    """What a prune plan removes and frees, on one line: the Disk view and the
    confirmation say it in the same words, from the same plan.

    Sizes are Docker's (what ``system df`` calls reclaimable); what the filesystem gets
    back follows, labelled, where the engine knows it.
    """
    parts = [
        _count(n, one, many)
        for n, one, many in (
            (len(plan.containers), "container", ""),
            (len(plan.volumes), "volume", ""),
            (len(plan.images), "image", ""),
            (len(plan.cache), "cache entry", "cache entries"),
            (len(plan.cache_mounts), "cache mount", ""),
            (len(plan.layers), "layer", ""),
            (len(plan.blobs), "config", ""),
            (len(plan.leftovers), "leftover", ""),
        )
        if n
    ]
    disk = plan.disk_bytes
    return f"{', '.join(parts) or 'nothing'}: frees {size(plan.reclaimable_bytes)}" + (
        f" ({size(disk)} on disk)" if disk else ""
    )


def prune_result(result: PruneResult) -> str:
    """What an applied prune removed and reclaimed, on one line."""
    removed = []
    if result.containers:
        removed.append(f"{len(result.containers)} container(s)")
    if result.volumes:
        removed.append(f"{len(result.volumes)} volume(s)")
    removed.append(f"{len(result.images)} image(s)")
    if result.cache:
        removed.append(f"{len(result.cache)} cache entr{'y' if len(result.cache) == 1 else 'ies'}")
    removed.append(f"{len(result.layers)} layer(s)")
    return f"removed {', '.join(removed)}; reclaimed {size(result.reclaimed_bytes)}"


def describe_reason(reason: Mapping[str, Any] | None) -> str:
    """A miss reason in plain words: the builder's ``message`` (``core/accounting/reasons.py``).

    Falls back to the reason's ``kind`` so a record without wording still says something.
    """
    if not reason:
        return ""
    message = reason.get("message")
    if isinstance(message, str) and message:
        return message
    return str(reason.get("kind") or "changed").replace("_", " ")


def explain_reason(reason: Mapping[str, Any] | None) -> str:
    """What would have made a missed step hit, from its structured reason."""
    kind = (reason or {}).get("kind", "")
    return {
        "first_build": "Nothing had run at this step of this stage before; the next build "
        "with the same Dockerfile and context will hit here.",
        "parent_missed": "An earlier step in this stage missed, so this one ran on a new parent "
        "state. Make that earlier step hit (or move this step above it) and this one hits too.",
        "instruction_changed": "The instruction text differs from the cached one. Revert the "
        "line (even whitespace counts) to hit the old entry again.",
        "sources_changed": "The files this step copies differ in content, mode, type or name. "
        "Timestamps and owners do not count; revert the change, or list the file in "
        ".dockerignore if the image does not need it.",
        "build_arg_changed": "A build argument in scope has another value. Pass the old value "
        "(or the default) to hit; declare the ARG later to keep earlier steps cached.",
        "config_changed": "The accumulated image config (ENV, LABEL, USER, WORKDIR, ...) differs. "
        "Put rarely-changing metadata above the steps you want to keep cached.",
        "no_cache": "--no-cache skipped the lookup; the result was still recorded, so the next "
        "build without it hits.",
        "pruned": "The step was cached once but its entry was pruned; it is cached again now.",
        "base_changed": "FROM resolved to another image than last time; pin the base by digest "
        "to keep the cache.",
    }.get(
        kind,
        "Make the step's inputs (parent state, instruction, files, args) match a cached "
        "run to hit.",
    )


_VAR = re.compile(r"\$([a-z][a-z0-9-]*)")
_THEME_CACHE: dict[tuple[int, str], dict[str, str]] = {}


def themed(app: App[Any], markup: str) -> str:
    """Rich markup with ``$variable`` colours replaced by the current theme's values.

    DataTable cells and Tree labels are Rich markup, which knows no theme variables;
    resolving them here keeps every colour coming from the theme.
    """
    key = (id(app), app.theme)
    variables = _THEME_CACHE.get(key)
    if variables is None:
        variables = app.get_css_variables()
        _THEME_CACHE[key] = variables

    def swap(match: re.Match[str]) -> str:
        value = variables.get(match.group(1))
        return value.split()[0] if value else "default"

    return _VAR.sub(swap, markup)


_LONG_HEX = re.compile(r"\b([a-f0-9]{12})[a-f0-9]{52}\b")


def instruction(created_by: str) -> str:
    """An instruction as Docker history records it, made readable on one line.

    ``/bin/sh -c #(nop) `` prefixes go, ``/bin/sh -c`` becomes ``RUN``, whitespace runs
    collapse and 64-hex checksums (``COPY file:<hex> in /app``) shrink to 12 characters.
    """
    text = " ".join(created_by.split())
    if text.startswith("/bin/sh -c #(nop) "):
        text = text[len("/bin/sh -c #(nop) ") :]
    elif text.startswith("/bin/sh -c "):
        text = "RUN " + text[len("/bin/sh -c ") :]
    return _LONG_HEX.sub(r"\1…", text)


def saving(advice: Advice) -> str:
    """What following a piece of advice would save, in words ("" when not measured)."""
    s = advice.saving
    parts = []
    if s.reruns_now is not None and s.reruns_after is not None:
        parts.append(f"reruns {s.reruns_now} → {s.reruns_after} over {s.builds} builds")
    elif s.reruns_now is not None:
        parts.append(f"reran {s.reruns_now} times")
    if s.seconds_now is not None and s.seconds_after is not None:
        parts.append(f"{seconds(s.seconds_now)} → {seconds(s.seconds_after)} of steps")
    elif s.seconds_now:
        parts.append(f"{seconds(s.seconds_now)} spent")
    if s.bytes:
        parts.append(size(s.bytes))
    if s.layers_now is not None and s.layers_after is not None:
        parts.append(f"layers {s.layers_now} → {s.layers_after}")
    return "; ".join(parts)
