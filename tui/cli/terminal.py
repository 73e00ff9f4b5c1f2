"""What the command line writes to a terminal: text, never control sequences from data.

Names and messages come from archives, image configs and Dockerfiles, which anyone may
have written: an escape sequence among them could clear the screen, retitle the terminal
or hide text behind a carriage return. Everything the command line prints goes through
:class:`EscapingStream`, which writes such characters as visible escapes (``\\x1b``);
lamina's own progress drawing writes its cursor moves to :attr:`EscapingStream.unescaped`.
"""

from __future__ import annotations

import re
from typing import Any, TextIO

# C0 controls (but tab and newline, which tables and lines need), DEL and C1 controls,
# surrogate-escaped bytes that are not UTF-8, and the format characters that reorder or
# hide text (bidirectional overrides and isolates, line and paragraph separators).
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]"
)
_UNSAFE_IN_LINE = re.compile(_UNSAFE.pattern[:-1] + "\t\n]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"  # a byte that is not UTF-8, shown as Go shows it
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` as one line with every control character escaped (for one-line messages:
    newlines and tabs are escaped too)."""
    return _UNSAFE_IN_LINE.sub(_escape, text)


def escaped(text: str) -> str:
    """``text`` with control characters escaped, newlines and tabs kept."""
    return _UNSAFE.sub(_escape, text)


class EscapingStream:
    """A text stream that writes control characters as escapes.

    Everything else (``buffer``, ``fileno``, ``isatty``, ``flush``, ...) is the wrapped
    stream's, so binary output through ``.buffer`` passes untouched.

    Args:
        stream: the stream to write to (``sys.stdout``, ``sys.stderr``).
    """

    def __init__(self, stream: TextIO) -> None:
        self.unescaped = stream

    def write(self, text: str) -> int:
        """Writes ``text`` with its control characters escaped; returns ``len(text)``."""
        self.unescaped.write(escaped(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        """Writes each of ``lines`` as :meth:`write` does."""
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.unescaped, name)
