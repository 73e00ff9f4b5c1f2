"""Registry credentials from Docker's own file, ``$DOCKER_CONFIG/config.json``
(default ``~/.docker/config.json``), read and written the way the docker CLI does.

Lookup order for a registry: its entry in ``credHelpers``, then the ``credsStore``,
then ``auths`` (``"auth": base64("user:password")``, or an ``identitytoken``). A helper
is the program ``docker-credential-<name>`` speaking the credential-helpers protocol
(``get``/``store``/``erase`` with the server on stdin, JSON out). Docker Hub's key is
``https://index.docker.io/v1/``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lamina.core.errors import RegistryAuthError, RegistryError
from lamina.core.registry.reference import DOCKER_HUB, DOCKER_HUB_AUTH_KEY, normalize_domain

log = logging.getLogger(__name__)

HELPER_TIMEOUT = 30.0


@dataclass(frozen=True)
class Credentials:
    """What to authenticate with: a user and password, or an identity (refresh) token."""

    username: str = ""
    password: str = ""
    identity_token: str = ""

    def __bool__(self) -> bool:
        return bool(self.username or self.identity_token)


def config_dir() -> Path:
    """``$DOCKER_CONFIG``, else ``~/.docker``."""
    env = os.environ.get("DOCKER_CONFIG")
    return Path(env).expanduser() if env else Path.home() / ".docker"


def config_path() -> Path:
    """The config file the docker CLI reads."""
    return config_dir() / "config.json"


def auth_key(domain: str) -> str:
    """The key ``config.json`` files a registry under (Docker Hub's is a URL)."""
    domain = normalize_domain(domain)
    return DOCKER_HUB_AUTH_KEY if domain == DOCKER_HUB else domain


def _host_of_key(key: str) -> str:
    """``https://host:port/v1/`` -> ``host:port`` (docker's ConvertToHostname)."""
    host = key
    for scheme in ("https://", "http://"):
        if host.startswith(scheme):
            host = host[len(scheme) :]
    return normalize_domain(host.split("/", 1)[0])


def read_config() -> dict[str, Any]:
    """The parsed config file; empty when there is none.

    Raises:
        RegistryError: when it exists but is not a JSON object.
    """
    path = config_path()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        doc = json.loads(data) if data.strip() else {}
    except ValueError as exc:
        raise RegistryError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise RegistryError(f"{path}: not a JSON object")
    return doc


def write_config(doc: dict[str, Any]) -> None:
    """Replaces the config file atomically, readable by its owner only (like docker)."""
    path = config_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".config.json.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent="\t")
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as exc:
        raise RegistryError(f"{path}: cannot write: {exc.strerror}") from exc


def _helper_for(doc: dict[str, Any], domain: str) -> str | None:
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if _host_of_key(str(key)) == normalize_domain(domain) and name:
                return str(name)
    store = doc.get("credsStore")
    return str(store) if store else None


def _run_helper(name: str, verb: str, payload: str) -> str:
    program = f"docker-credential-{name}"
    try:
        proc = subprocess.run(
            [program, verb],
            input=payload,
            capture_output=True,
            text=True,
            timeout=HELPER_TIMEOUT,
            check=False,
        )
    except FileNotFoundError as exc:
        raise RegistryAuthError(
            f"credential helper {program} is not installed (named in {config_path()})"
        ) from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryAuthError(f"credential helper {program} failed: {exc}") from exc
    if proc.returncode != 0:
        words = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
        raise _HelperFailed(words[0] if words else f"exit status {proc.returncode}")
    return proc.stdout


class _HelperFailed(RegistryAuthError):
    pass


def lookup(domain: str) -> Credentials:
    """The stored credentials for a registry; empty Credentials when there are none.

    Raises:
        RegistryAuthError: a configured helper is missing or fails.
        RegistryError: the config file is unreadable.
    """
    doc = read_config()
    key = auth_key(domain)
    helper = _helper_for(doc, domain)
    if helper:
        try:
            out = _run_helper(helper, "get", key)
        except _HelperFailed as exc:
            if "credentials not found" in str(exc).lower():
                return Credentials()
            raise RegistryAuthError(f"credential helper {helper}: {exc}") from exc
        try:
            answer = json.loads(out)
        except ValueError as exc:
            raise RegistryAuthError(f"credential helper {helper}: answered no JSON") from exc
        user, secret = str(answer.get("Username") or ""), str(answer.get("Secret") or "")
        if user == "<token>":
            return Credentials(identity_token=secret)
        return Credentials(user, secret)
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        return Credentials()
    for entry_key, entry in auths.items():
        if _host_of_key(str(entry_key)) != normalize_domain(domain) or not isinstance(entry, dict):
            continue
        if entry.get("identitytoken"):
            return Credentials(identity_token=str(entry["identitytoken"]))
        encoded = entry.get("auth")
        if encoded:
            try:
                user, _, password = base64.b64decode(str(encoded)).decode().partition(":")
            except (ValueError, UnicodeDecodeError) as exc:
                raise RegistryError(f"{config_path()}: auths[{entry_key}] is not base64") from exc
            return Credentials(user, password)
        if entry.get("username"):
            return Credentials(str(entry["username"]), str(entry.get("password") or ""))
    return Credentials()


def store(domain: str, creds: Credentials) -> str:
    """Saves credentials where docker would: the registry's helper, else ``auths``.

    Returns:
        Where they went (the helper's name or the config file), for the message.
    """
    doc = read_config()
    key = auth_key(domain)
    helper = _helper_for(doc, domain)
    if helper:
        payload = json.dumps(
            {"ServerURL": key, "Username": creds.username, "Secret": creds.password}
        )
        _run_helper(helper, "store", payload)
        # docker leaves an empty entry so `docker info`/logout know the registry.
        auths = doc.setdefault("auths", {})
        if isinstance(auths, dict):
            auths[key] = {}
            write_config(doc)
        return f"credential helper {helper}"
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        auths = doc["auths"] = {}
    token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    auths[key] = {"auth": token}
    write_config(doc)
    return str(config_path())


def erase(domain: str) -> bool:
    """Removes a registry's credentials; returns whether there were any."""
    doc = read_config()
    key = auth_key(domain)
    found = False
    helper = _helper_for(doc, domain)
    if helper:
        try:
            _run_helper(helper, "erase", key)
            found = True
        except _HelperFailed as exc:
            log.info("credential helper %s: %s", helper, exc)
    auths = doc.get("auths")
    if isinstance(auths, dict):
        mine = [k for k in auths if _host_of_key(str(k)) == normalize_domain(domain)]
        for entry_key in mine:
            del auths[entry_key]
        if mine:
            found = True
            write_config(doc)
    return found
