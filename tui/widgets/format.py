"""Display helpers shared by the views: sizes, times, digests, miss reasons."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import humanize

from lamina.core.digest import short

if TYPE_CHECKING:
    from textual.app import App

Clock = Callable[[], float]


def size(n: float | None) -> str:
    """Bytes as dive and docker show them (decimal units)."""
    if n is None:
        return "-"
    return str(humanize.naturalsize(int(n), binary=False, format="%.1f"))


def ago(when: float | None, clock: Clock = time.time) -> str:
    """``3 minutes ago`` relative to ``clock`` (fixed in tests and screenshots)."""
    if not when:
        return "-"
    return str(humanize.naturaltime(max(0.0, clock() - when)))


def digest(value: str | None) -> str:
    """``sha256:<hex>`` shortened to 12 hex chars for tables."""
    if not value:
        return "-"
    try:
        return short(value)
    except Exception:  # noqa: BLE001 - a malformed id is shown as is
        return value[:19]


def seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f}ms"
    return f"{value:.1f}s"


def describe_reason(reason: dict[str, Any] | None) -> str:
    """A miss reason in plain words: the builder's ``message`` (see ``core.build.reasons``).

    Falls back to the reason's ``kind`` so a record without wording still says something.
    """
    if not reason:
        return ""
    message = reason.get("message")
    if isinstance(message, str) and message:
        return message
    return str(reason.get("kind") or "changed").replace("_", " ")


def explain_reason(reason: dict[str, Any] | None) -> str:
    """What would have made a missed step hit, from its structured reason."""
    kind = (reason or {}).get("kind", "")
    return {
        "first_build": "Nothing had run on this parent state before; the next build with the "
        "same Dockerfile and context will hit here.",
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
