"""BuildKit's progress as a Docker Engine streams it: ``moby.buildkit.trace`` messages.

A BuildKit build through ``POST /build?version=2`` streams JSON messages like the
classic builder's, but its progress comes as ``{"id": "moby.buildkit.trace", "aux":
"<base64>"}``: each payload is one protobuf ``StatusResponse`` of BuildKit's control API
(moby/buildkit ``api/services/control/control.proto``, vendored in moby 20.10):

* ``vertexes`` (1): ``digest`` (1), ``inputs`` (2), ``name`` (3), ``cached`` (4),
  ``started`` (5) and ``completed`` (6) timestamps, ``error`` (7);
* ``statuses`` (2): byte counts of transfers (lamina shows none of them);
* ``logs`` (3): ``vertex`` (1), ``timestamp`` (2), ``stream`` (3), ``msg`` (4).

A vertex is sent again whenever it changes, whole, so the last copy of it is its state.
Only these few fields are read, so the protobuf wire format is decoded here (varints
and length-delimited fields; the fixed-width kinds are skipped) rather than pulling in
a protobuf runtime and generated code.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass

# The aux message id of BuildKit's progress, and of the image a build produced.
TRACE_ID = "moby.buildkit.trace"
IMAGE_ID = "moby.image.id"

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


class TraceError(ValueError):
    """A progress message that is not a ``StatusResponse`` (never shown to a user: the
    build skips it, as the docker CLI skips what it cannot decode)."""


@dataclass(frozen=True)
class Vertex:
    """One LLB vertex's state.

    Attributes:
        digest: the vertex digest (``sha256:...``): unique within one build.
        name: what BuildKit prints for it (``[2/4] COPY src/ /app/``).
        inputs: digests of the vertices it stands on.
        cached: its result came from the cache.
        started, completed: unix times, None until it did.
        error: why it failed ("" when it did not).
    """

    digest: str
    name: str
    inputs: tuple[str, ...] = ()
    cached: bool = False
    started: float | None = None
    completed: float | None = None
    error: str = ""


@dataclass(frozen=True)
class VertexLog:
    """Output a vertex printed: a chunk, not necessarily whole lines.

    Attributes:
        vertex: the vertex digest.
        stream: 1 stdout, 2 stderr.
        data: the bytes.
    """

    vertex: str
    stream: int
    data: bytes


@dataclass(frozen=True)
class Status:
    """One ``StatusResponse``: the vertices that changed and the output they printed."""

    vertexes: tuple[Vertex, ...] = ()
    logs: tuple[VertexLog, ...] = ()


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise TraceError("BuildKit progress message ends inside a number")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise TraceError("BuildKit progress message has an overlong number")


def fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """The ``(field number, value)`` pairs of one protobuf message, in order.

    Varints come as ints, length-delimited fields as bytes; fixed-width ones as their
    raw bytes (none of the fields lamina reads is fixed-width).

    Raises:
        TraceError: the bytes are not a protobuf message.
    """
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, kind = key >> 3, key & 7
        value: int | bytes
        if kind == _VARINT:
            value, pos = _varint(buf, pos)
        elif kind == _BYTES:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise TraceError("BuildKit progress message ends inside a field")
            value, pos = buf[pos : pos + length], pos + length
        elif kind == _FIXED64:
            value, pos = buf[pos : pos + 8], pos + 8
        elif kind == _FIXED32:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise TraceError(f"BuildKit progress message has a field of wire type {kind}")
        if pos > len(buf):
            raise TraceError("BuildKit progress message ends inside a field")
        yield number, value


def _text(value: int | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _timestamp(value: int | bytes) -> float | None:
    """A ``google.protobuf.Timestamp`` (seconds 1, nanos 2) as unix time."""
    if not isinstance(value, bytes):
        return None
    seconds = nanos = 0
    for number, part in fields(value):
        if number == 1 and isinstance(part, int):
            seconds = part
        elif number == 2 and isinstance(part, int):
            nanos = part
    return seconds + nanos / 1e9


def _vertex(buf: bytes) -> Vertex:
    digest = name = error = ""
    inputs: list[str] = []
    cached = False
    started = completed = None
    for number, value in fields(buf):
        if number == 1:
            digest = _text(value)
        elif number == 2:
            inputs.append(_text(value))
        elif number == 3:
            name = _text(value)
        elif number == 4:
            cached = bool(value)
        elif number == 5:
            started = _timestamp(value)
        elif number == 6:
            completed = _timestamp(value)
        elif number == 7:
            error = _text(value)
    return Vertex(digest, name, tuple(inputs), cached, started, completed, error)


def _log(buf: bytes) -> VertexLog:
    vertex, stream, data = "", 1, b""
    for number, value in fields(buf):
        if number == 1:
            vertex = _text(value)
        elif number == 3 and isinstance(value, int):
            stream = value
        elif number == 4 and isinstance(value, bytes):
            data = value
    return VertexLog(vertex, stream, data)


def parse_status(buf: bytes) -> Status:
    """One ``StatusResponse`` message.

    Raises:
        TraceError: the bytes are not one.
    """
    vertexes: list[Vertex] = []
    logs: list[VertexLog] = []
    for number, value in fields(buf):
        if not isinstance(value, bytes):
            continue
        if number == 1:
            vertexes.append(_vertex(value))
        elif number == 3:
            logs.append(_log(value))
    return Status(tuple(vertexes), tuple(logs))


def decode_aux(aux: object) -> Status:
    """The ``aux`` of a ``moby.buildkit.trace`` message (base64 of a ``StatusResponse``).

    Raises:
        TraceError: it is not base64 of one.
    """
    if not isinstance(aux, str):
        raise TraceError("BuildKit progress message is not base64 text")
    try:
        raw = base64.b64decode(aux, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TraceError(f"BuildKit progress message is not base64: {exc}") from exc
    return parse_status(raw)


__all__ = [
    "IMAGE_ID",
    "TRACE_ID",
    "Status",
    "TraceError",
    "Vertex",
    "VertexLog",
    "decode_aux",
    "fields",
    "parse_status",
]
