"""Registry authentication: the ``WWW-Authenticate`` challenge, Basic, and Bearer tokens.

A registry answers 401 with a challenge. ``Basic realm=...`` wants the user and
password on every request. ``Bearer realm=...,service=...,scope=...`` sends the client
to a token server: ``GET realm?service=S&scope=repository:NAME:pull,push`` (with Basic
credentials when there are some, anonymously otherwise; an identity token is exchanged
with a ``POST`` of ``grant_type=refresh_token``), which answers ``{"token": ...}``; the
token then goes in ``Authorization: Bearer``. Docker's token spec, as distribution and
every hosted registry implement it.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from lamina.core.errors import RegistryAuthError, RegistryError
from lamina.core.registry.credentials import Credentials

if TYPE_CHECKING:
    import urllib3

# A token answer is a few KiB; anything bigger is not a token server.
MAX_TOKEN_RESPONSE = 1 << 20
_PARAM_RE = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


@dataclass(frozen=True)
class Challenge:
    """One parsed ``WWW-Authenticate`` header."""

    scheme: str  # "basic" or "bearer", lowercased
    params: dict[str, str] = field(default_factory=dict)


def parse_challenge(header: str) -> Challenge:
    """Parses ``Bearer realm="...",service="...",scope="..."`` (or Basic).

    Args:
        header: the header's value.
    """
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3) or "").replace(
            '\\"', '"'
        )
        for m in _PARAM_RE.finditer(rest)
    }
    return Challenge(scheme.lower(), params)


def basic_header(creds: Credentials) -> str:
    """``Basic base64(user:password)``."""
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def registry_words(body: bytes) -> str:
    """The registry's own error words from an error body, '' when it gave none.

    Distribution answers ``{"errors": [{"code": "...", "message": "..."}]}``; token
    servers often ``{"details": "..."}`` or ``{"error": "..."}``.
    """
    try:
        doc: Any = json.loads(body[:65536])
    except ValueError:
        text = body[:200].decode("utf-8", "replace").strip()
        return text.splitlines()[0] if text and not text.startswith("<") else ""
    if not isinstance(doc, dict):
        return ""
    errors = doc.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        message = str(first.get("message") or "").strip()
        code = str(first.get("code") or "").strip()
        detail = first.get("detail")
        if isinstance(detail, str) and detail and detail not in message:
            message = f"{message}: {detail}" if message else detail
        return f"{message} ({code})" if code and message else (message or code)
    for key in ("details", "error_description", "error", "message"):
        if isinstance(doc.get(key), str) and doc[key]:
            return str(doc[key])
    return ""


@dataclass
class _Token:
    value: str
    expires: float


class TokenCache:
    """Bearer tokens by (realm, service, scope), reused until they expire."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str], _Token] = {}

    def get(self, key: tuple[str, str, str]) -> str | None:
        token = self._tokens.get(key)
        if token is None or token.expires <= time.monotonic():
            return None
        return token.value

    def put(self, key: tuple[str, str, str], value: str, lifetime: float) -> None:
        # Renew a little early: a token expiring in flight fails the request.
        self._tokens[key] = _Token(value, time.monotonic() + max(lifetime - 10.0, 1.0))


def fetch_token(
    pool: urllib3.PoolManager,
    challenge: Challenge,
    scopes: list[str],
    creds: Credentials,
    timeout: float,
) -> tuple[str, float]:
    """Asks the challenge's token server for a token covering ``scopes``.

    Returns:
        (the token, its lifetime in seconds).

    Raises:
        RegistryAuthError: the token server refused (its words), or answered no token.
        RegistryError: it could not be reached.
    """
    import urllib3

    realm = challenge.params.get("realm", "")
    parts = urlsplit(realm)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise RegistryAuthError(f"the registry's token realm {realm!r} is not a URL")
    service = challenge.params.get("service", "")
    headers = {"User-Agent": "lamina"}
    try:
        if creds.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "service": service,
                "scope": " ".join(scopes),
                "client_id": "lamina",
            }
            resp = pool.request(
                "POST",
                realm,
                body=urlencode(form),
                headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
                timeout=timeout,
                preload_content=False,
                redirect=False,
            )
        else:
            query = [("service", service)] if service else []
            query += [("scope", s) for s in scopes]
            if creds:
                headers["Authorization"] = basic_header(creds)
            sep = "&" if "?" in realm else "?"
            url = realm + (sep + urlencode(query) if query else "")
            resp = pool.request(
                "GET", url, headers=headers, timeout=timeout, preload_content=False, redirect=False
            )
        try:
            body = resp.read(MAX_TOKEN_RESPONSE + 1, decode_content=True)
        finally:
            if resp.length_remaining is None or resp.length_remaining > 0:
                resp.close()  # unread bytes would be the next request's garbage
            resp.release_conn()
    except urllib3.exceptions.HTTPError as exc:
        raise RegistryError(f"cannot reach the token server {parts.netloc}: {exc}") from exc
    if resp.status in (401, 403):
        words = registry_words(body) or ("unauthorized" if resp.status == 401 else "denied")
        what = "with the stored credentials" if creds else "anonymously"
        raise RegistryAuthError(f"the token server {parts.netloc} refused {what}: {words}")
    if resp.status != 200:
        words = registry_words(body) or f"HTTP {resp.status}"
        raise RegistryAuthError(f"the token server {parts.netloc} answered {words}")
    if len(body) > MAX_TOKEN_RESPONSE:
        raise RegistryAuthError(f"the token server {parts.netloc} answered too much")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise RegistryAuthError(f"the token server {parts.netloc} answered no JSON") from exc
    token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token:
        raise RegistryAuthError(f"the token server {parts.netloc} answered no token")
    lifetime = doc.get("expires_in") if isinstance(doc, dict) else None
    # The spec's default lifetime is 60 seconds.
    return token, float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else 60.0
