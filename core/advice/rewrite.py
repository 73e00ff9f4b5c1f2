"""Rewrites of a Dockerfile as line edits, and the unified diffs ``patch -p0`` applies.

A rewrite replaces whole lines: an :class:`Edit` swaps lines ``start..end`` (1-based,
inclusive) of the original for new ones, so a move is one edit spanning both places.
Lines outside the edits (comments, blank lines, other instructions) stay byte for byte.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from lamina.core.dockerfile.instructions import Instruction


@dataclass(frozen=True)
class Edit:
    """Lines ``start..end`` of the original replaced by ``lines`` (each ending in a
    newline; none to delete them)."""

    start: int
    end: int
    lines: tuple[str, ...]

    def overlaps(self, other: Edit) -> bool:
        return self.start <= other.end and other.start <= self.end


def source_lines(text: str) -> list[str]:
    """The Dockerfile's lines, each with its line ending (the last may have none)."""
    return text.splitlines(keepends=True)


def instruction_text(lines: list[str], ins: Instruction) -> list[str]:
    """The lines an instruction spans, as written."""
    return lines[ins.line - 1 : ins.end_line]


def lines_of(text: str) -> tuple[str, ...]:
    """``text`` (one or more lines) as edit lines, each ending in a newline."""
    return tuple(line + "\n" for line in text.split("\n"))


def apply(text: str, edits: Iterable[Edit]) -> str:
    """``text`` with the edits made; an edit overlapping an earlier one is skipped."""
    lines = source_lines(text)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
        trailing = False
    else:
        trailing = True
    taken: list[Edit] = []
    for edit in sorted(edits, key=lambda e: (e.start, e.end)):
        if any(edit.overlaps(t) for t in taken):
            continue
        taken.append(edit)
    out: list[str] = []
    line = 1
    for edit in taken:
        out.extend(lines[line - 1 : edit.start - 1])
        out.extend(edit.lines)
        line = edit.end + 1
    out.extend(lines[line - 1 :])
    joined = "".join(out)
    if not trailing and joined.endswith("\n"):
        joined = joined[:-1]
    return joined


def compatible(edits: Iterable[Edit]) -> list[Edit]:
    """The edits that can be made together: each that overlaps no earlier one."""
    taken: list[Edit] = []
    for edit in edits:
        if not any(edit.overlaps(t) for t in taken):
            taken.append(edit)
    return taken


def unified_diff(old: str, new: str, name: str, *, new_file: bool = False) -> str:
    """A unified diff from ``old`` to ``new`` that ``patch -p0`` applies to ``name``
    (``new_file``: ``name`` does not exist yet). Empty when nothing changes."""
    if old == new:
        return ""
    a, b = source_lines(old), source_lines(new)
    out = []
    for line in difflib.unified_diff(
        a, b, "/dev/null" if new_file else name, name, n=3, lineterm="\n"
    ):
        if line.endswith("\n"):
            out.append(line)
        else:
            # The last line had no newline: patch needs to be told so.
            out.append(line + "\n\\ No newline at end of file\n")
    return "".join(out)
