"""``lamina login`` / ``logout``: check credentials against a registry, then keep them
where docker keeps them (``config.json`` or its credential helper)."""

from __future__ import annotations

from lamina.core.errors import UsageError
from lamina.core.registry import credentials
from lamina.core.registry.client import RegistryClient
from lamina.core.registry.reference import DOCKER_HUB, DOCKER_HUB_ENDPOINT, normalize_domain


def server_domain(server: str | None) -> str:
    """``https://host:port/v1/`` or ``host:port`` as ``host:port``; Docker Hub by default."""
    if not server:
        return DOCKER_HUB
    host = server.strip()
    for scheme in ("https://", "http://"):
        host = host.removeprefix(scheme)
    host = host.split("/", 1)[0]
    if not host:
        raise UsageError(f"invalid registry {server!r}")
    return normalize_domain(host)


def login(server: str | None, username: str, password: str) -> str:
    """Logs in to a registry (``GET /v2/`` with the credentials) and saves them.

    Returns:
        Where the credentials were saved.

    Raises:
        UsageError: no user name or password.
        RegistryAuthError: the registry refused them.
        RegistryError: it could not be reached.
    """
    if not username or not password:
        raise UsageError("login needs a username and a password")
    domain = server_domain(server)
    endpoint = DOCKER_HUB_ENDPOINT if domain == DOCKER_HUB else domain
    creds = credentials.Credentials(username, password)
    with RegistryClient(endpoint, creds) as client:
        client.ping()
    return credentials.store(domain, creds)


def logout(server: str | None) -> tuple[str, bool]:
    """Forgets a registry's credentials; returns (the registry, whether any were kept)."""
    domain = server_domain(server)
    return domain, credentials.erase(domain)
