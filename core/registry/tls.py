"""How to reach a registry: TLS trust as Docker reads it, and when plain HTTP is allowed.

Trust is the system's CA bundle plus, per registry, every ``*.crt`` in
``/etc/docker/certs.d/<host[:port]>/`` (a client certificate is a ``*.cert`` with its
``*.key``), exactly where dockerd looks. ``$LAMINA_CERTS_D`` moves that root (tests use
it so nothing writes to ``/etc``).

Plain HTTP is used only for a loopback registry (Docker allows 127.0.0.0/8 the same way)
or one named in ``$LAMINA_INSECURE_REGISTRIES`` (comma-separated ``host[:port]``, like
the daemon's ``insecure-registries``); even then HTTPS is tried first.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from pathlib import Path

from lamina.core.errors import RegistryError

DEFAULT_CERTS_D = Path("/etc/docker/certs.d")


def certs_root() -> Path:
    """``$LAMINA_CERTS_D``, else ``/etc/docker/certs.d``."""
    env = os.environ.get("LAMINA_CERTS_D")
    return Path(env) if env else DEFAULT_CERTS_D


def host_of(domain: str) -> str:
    """The host part of ``host[:port]`` (brackets of an IPv6 literal removed)."""
    if domain.startswith("["):
        return domain[1:].split("]", 1)[0]
    return domain.rsplit(":", 1)[0] if domain.count(":") == 1 else domain


def is_loopback(domain: str) -> bool:
    """Whether ``domain`` names this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    host = host_of(domain)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_registries() -> set[str]:
    """The registries the user allows plain HTTP or unverified TLS for."""
    raw = os.environ.get("LAMINA_INSECURE_REGISTRIES", "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def allows_http(domain: str) -> bool:
    """Whether plain HTTP may be tried for ``domain``."""
    return is_loopback(domain) or domain in insecure_registries()


def ssl_context(domain: str) -> ssl.SSLContext:
    """The TLS context for ``domain``: system CAs plus its ``certs.d`` directory.

    Raises:
        RegistryError: when a certificate file there cannot be read.
    """
    ctx = ssl.create_default_context()
    folder = certs_root() / domain
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        names = []
    except OSError as exc:
        raise RegistryError(f"{folder}: cannot list: {exc.strerror}") from exc
    for name in names:
        path = folder / name
        try:
            if name.endswith(".crt"):
                ctx.load_verify_locations(cafile=str(path))
            elif name.endswith(".cert"):
                key = folder / (name[: -len(".cert")] + ".key")
                ctx.load_cert_chain(str(path), str(key))
        except (OSError, ssl.SSLError) as exc:
            raise RegistryError(f"{path}: cannot load: {exc}") from exc
    if domain in insecure_registries():
        # The user said so for this registry only, like dockerd's insecure-registries.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
