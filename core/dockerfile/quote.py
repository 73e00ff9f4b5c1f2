"""Go's ``strconv.Quote``, which BuildKit's messages and AST dumps use for strings, and
how Go holds and writes strings that are not valid UTF-8.

A Dockerfile is bytes to BuildKit: bytes that are not UTF-8 stay in its strings as they
are (lamina reads them with ``errors="surrogateescape"``), reach a RUN command and its
cache key unchanged, and become U+FFFD only where Go's ``encoding/json`` writes them
(the image config, the build history).
"""

from __future__ import annotations

import re

_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    '"': '\\"',
    "\\": "\\\\",
}


def go_quote(text: str) -> str:
    """Quote ``text`` like Go's ``strconv.Quote``.

    Surrogate-escaped bytes (from ``errors="surrogateescape"``) become ``\\xHH`` as
    Go writes invalid UTF-8 bytes.
    """
    out = ['"']
    for ch in text:
        esc = _GO_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
            continue
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            # Go never holds a lone surrogate; decoding would have given U+FFFD.
            out.append("\ufffd")
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


# Surrogates that are not surrogate-escaped bytes: what JSON's "\\ud800" decodes to.
_OTHER_SURROGATES = re.compile("[\ud800-\udc7f\udd00-\udfff]")
_SURROGATES = re.compile("[\ud800-\udfff]")


def go_bytes(text: str) -> bytes:
    """The bytes of the Go string that ``text`` stands for: surrogate-escaped bytes as
    they were read, any other lone surrogate as U+FFFD (Go never holds one)."""
    return _OTHER_SURROGATES.sub("\ufffd", text).encode("utf-8", "surrogateescape")


def go_json_text(text: str) -> str:
    """``text`` as Go's ``encoding/json`` writes it: every byte that is not UTF-8 (a
    surrogate-escaped byte), and every lone surrogate, becomes U+FFFD."""
    return _SURROGATES.sub("\ufffd", text)
