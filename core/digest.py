"""Digests as lamina writes them: always ``sha256:<hex>``.

A digest is validated with a full regex before it ever becomes part of a path, so a
malformed or hostile string (``sha256:../../x``) can never name a file outside the store.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from lamina.core.errors import StoreError

DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")


def sha256_bytes(data: bytes) -> str:
    """The digest of ``data``.

    Args:
        data: the bytes to hash.

    Returns:
        ``sha256:<hex>``.
    """
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(s: str) -> bool:
    """Whether ``s`` is a well-formed ``sha256:<64 lowercase hex>`` digest."""
    return isinstance(s, str) and DIGEST_RE.fullmatch(s) is not None


def hex_of(digest: str) -> str:
    """The hex part of a digest, after validating it.

    Args:
        digest: ``sha256:<hex>``.

    Returns:
        The 64 hex characters, safe to use as a file name.

    Raises:
        StoreError: if ``digest`` is not a well-formed sha256 digest.
    """
    if not is_digest(digest):
        raise StoreError(f"malformed digest {digest!r} (expected sha256:<64 hex>)")
    return digest[len("sha256:") :]


def chain_ids(diff_ids: Iterable[str] | None) -> list[str]:
    """The OCI chainID of every prefix of a layer stack.

    ``ChainID(L0) = DiffID(L0)`` and ``ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " +
    DiffID(Ln))``. Inputs are not validated, as in the OCI reference implementation.

    Args:
        diff_ids: diffIDs, base first (None is treated as empty).

    Returns:
        One chainID per layer, base first.
    """
    out: list[str] = []
    for diff_id in diff_ids or ():
        if not out:
            out.append(diff_id)
        else:
            out.append(sha256_bytes(f"{out[-1]} {diff_id}".encode()))
    return out


def short(digest: str) -> str:
    """The first 12 hex characters of a digest, for display."""
    return digest.split(":", 1)[-1][:12]


class Hasher:
    """Incremental sha256 producing a ``sha256:<hex>`` digest."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes) -> None:
        """Feeds more bytes."""
        self._h.update(data)
        self.size += len(data)

    def digest(self) -> str:
        """The digest of everything fed so far."""
        return "sha256:" + self._h.hexdigest()
