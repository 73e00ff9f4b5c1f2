"""Image references as Docker reads them: ``[registry[:port]/]path[:tag][@digest]``.

``busybox`` is ``docker.io/library/busybox:latest``; a first component with a dot, a
colon or ``localhost`` names a registry (``127.0.0.1:5000/x``, ``ghcr.io/a/b``). The
grammar is distribution/reference's, so what Docker refuses is refused here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lamina.core.digest import is_digest
from lamina.core.errors import UsageError

DOCKER_HUB = "docker.io"
# Docker Hub's API lives on another host than its name; its credentials key is this URL.
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$"
)
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class Reference:
    """One parsed image reference.

    Attributes:
        domain: the registry as named (``docker.io``, ``127.0.0.1:5000``).
        path: the repository inside it (``library/busybox``).
        tag: the tag, or None when only a digest was given.
        digest: ``sha256:<hex>`` when the reference pins one.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def endpoint(self) -> str:
        """The host (and port) to send API requests to."""
        return DOCKER_HUB_ENDPOINT if self.domain == DOCKER_HUB else self.domain

    @property
    def name(self) -> str:
        """``domain/path``, in full (``docker.io/library/busybox``)."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository as Docker prints it (``busybox``, ``127.0.0.1:5000/x``)."""
        if self.domain == DOCKER_HUB:
            return self.path.removeprefix("library/")
        return self.name

    @property
    def ref(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def familiar_tag(self) -> str | None:
        """``name:tag`` as the store keeps tags, or None for a digest-only reference."""
        return f"{self.familiar_name}:{self.tag}" if self.tag else None

    def with_digest(self, digest: str) -> Reference:
        """The same repository pinned to ``digest``."""
        return Reference(self.domain, self.path, self.tag, digest)

    def __str__(self) -> str:
        out = self.familiar_name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def normalize_domain(domain: str) -> str:
    """Docker Hub's aliases as ``docker.io``; other registries as given."""
    return DOCKER_HUB if domain.lower() in _HUB_ALIASES else domain


def parse_reference(text: str) -> Reference:
    """Parses an image reference the way ``docker pull`` does.

    Args:
        text: ``[registry[:port]/]path[:tag][@sha256:<hex>]``.

    Returns:
        The reference, with Docker Hub's ``library/`` and the ``latest`` tag filled in.

    Raises:
        UsageError: for anything Docker calls an invalid reference format.
    """
    raw = text.strip()
    if not raw:
        raise UsageError("no image reference given")
    digest: str | None = None
    if "@" in raw:
        raw, digest = raw.split("@", 1)
        if not is_digest(digest):
            raise UsageError(f"invalid reference format: {text!r} (bad digest)")
    domain = DOCKER_HUB
    rest = raw
    first, sep, remainder = raw.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        if not _DOMAIN_RE.match(first):
            raise UsageError(f"invalid reference format: {text!r} (bad registry {first!r})")
        domain, rest = normalize_domain(first), remainder
    tag: str | None = None
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise UsageError(f"invalid reference format: {text!r} (bad tag {tag!r})")
    if domain == DOCKER_HUB and "/" not in rest:
        rest = f"library/{rest}"
    if not _PATH_RE.match(rest):
        what = "repository names must be lowercase" if rest.lower() != rest else "bad repository"
        raise UsageError(f"invalid reference format: {text!r} ({what})")
    if len(f"{domain}/{rest}") > MAX_NAME_LENGTH:
        raise UsageError(f"invalid reference format: {text!r} (name longer than 255)")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(domain, rest, tag, digest)
