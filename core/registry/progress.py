"""What a pull or push reports as it goes: small frozen events, in order.

Per blob: ``TransferStarted``, any number of ``TransferProgressed``, then
``TransferFinished`` saying how it ended (downloaded, resumed, copied from a layer the
store has, already there, mounted from another repository, uploaded). The last event is
``PullFinished`` or ``PushFinished``. The CLI draws them as progress lines, the app as
progress bars; cancellation comes in as a ``threading.Event``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TransferStarted:
    """A blob starts moving (``action`` is "download" or "upload")."""

    digest: str
    action: str
    total: int


@dataclass(frozen=True)
class TransferProgressed:
    """Bytes of a blob moved so far."""

    digest: str
    done: int
    total: int


@dataclass(frozen=True)
class TransferFinished:
    """A blob is done: ``outcome`` is one of ``downloaded``, ``resumed``, ``copied``,
    ``present``, ``exists``, ``mounted``, ``uploaded``; ``moved`` the bytes that crossed
    the network for it."""

    digest: str
    outcome: str
    moved: int = 0
    detail: str = ""


@dataclass(frozen=True)
class PullFinished:
    """The image is in the store (or the daemon), tagged."""

    image_id: str
    reference: str
    downloaded: int


@dataclass(frozen=True)
class PushFinished:
    """The manifest is in the registry under ``reference``."""

    reference: str
    digest: str
    size: int
    uploaded: int


TransferEvent = (
    TransferStarted | TransferProgressed | TransferFinished | PullFinished | PushFinished
)
