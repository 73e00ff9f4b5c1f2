"""TLS trust, Basic auth, credential helpers and the Bearer token flow, against real
registries; credentials only ever in the test's own DOCKER_CONFIG."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from lamina.core import RegistryAuthError, RegistryError
from lamina.core.embedded.engine import EmbeddedEngine
from lamina.tui.cli import main

pytestmark = pytest.mark.slow

Engines = Callable[[str], EmbeddedEngine]
Base = Callable[[EmbeddedEngine, str], str]


def login(monkeypatch: pytest.MonkeyPatch, server: str, user: str, password: str) -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
    return main(["login", "-u", user, "--password-stdin", server])


def test_tls_registry_with_basic_auth(
    tls_registry,
    trust: Callable[[object], None],
    make_engine: Engines,
    base_image: Base,
    repo: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref = f"{tls_registry.address}/{repo('tls')}:1"
    a = make_engine("a")
    image_id = base_image(a, ref)

    with pytest.raises(RegistryError, match=r"over HTTPS: .*CERTIFICATE_VERIFY_FAILED.*ca\.crt"):
        list(a.push(ref))
    trust(tls_registry)
    with pytest.raises(RegistryAuthError, match="requires credentials"):
        list(a.push(ref))

    assert login(monkeypatch, tls_registry.address, tls_registry.username, "wrong") == 1
    assert "authentication required" in capsys.readouterr().err
    config = Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    assert not config.exists()

    assert (
        login(monkeypatch, tls_registry.address, tls_registry.username, tls_registry.password) == 0
    )
    saved = json.loads(config.read_text())
    assert list(saved["auths"]) == [tls_registry.address]
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    list(a.push(ref))
    b = make_engine("b")
    list(b.pull(b.plan_pull(ref)))
    assert b.image(ref).id == image_id

    assert main(["logout", tls_registry.address]) == 0
    assert json.loads(config.read_text())["auths"] == {}
    with pytest.raises(RegistryAuthError):
        make_engine("c").plan_pull(ref)


HELPER = """#!{python}
import json, sys
path = {store!r}
try:
    data = json.load(open(path))
except FileNotFoundError:
    data = {{}}
verb = sys.argv[1]
if verb == "store":
    doc = json.load(sys.stdin)
    data[doc["ServerURL"]] = {{"Username": doc["Username"], "Secret": doc["Secret"]}}
    json.dump(data, open(path, "w"))
elif verb == "get":
    server = sys.stdin.read().strip()
    if server not in data:
        print("credentials not found in native keychain")
        sys.exit(1)
    print(json.dumps(dict(ServerURL=server, **data[server])))
elif verb == "erase":
    data.pop(sys.stdin.read().strip(), None)
    json.dump(data, open(path, "w"))
"""


def test_credentials_go_through_a_credential_helper(
    tls_registry,
    trust: Callable[[object], None],
    make_engine: Engines,
    base_image: Base,
    repo: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    store = tmp_path / "helper-store.json"
    helper = bin_dir / "docker-credential-labtest"
    helper.write_text(HELPER.format(python=sys.executable, store=str(store)))
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    config_dir = Path(os.environ["DOCKER_CONFIG"])
    config_dir.mkdir(parents=True)
    (config_dir / "config.json").write_text(json.dumps({"credsStore": "labtest"}))
    trust(tls_registry)

    assert (
        login(monkeypatch, tls_registry.address, tls_registry.username, tls_registry.password) == 0
    )
    kept = json.loads(store.read_text())
    assert kept[tls_registry.address]["Username"] == tls_registry.username
    # The secret is in the helper's store, never in config.json.
    assert tls_registry.password not in (config_dir / "config.json").read_text()

    ref = f"{tls_registry.address}/{repo('helper')}:1"
    a = make_engine("a")
    base_image(a, ref)
    list(a.push(ref))
    assert main(["logout", tls_registry.address]) == 0
    assert json.loads(store.read_text()) == {}
    with pytest.raises(RegistryAuthError):
        list(a.push(ref))


def test_bearer_tokens_anonymous_with_credentials_and_denied(
    private_registry: Callable[[str], object],
    token_server,
    make_engine: Engines,
    base_image: Base,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reg = private_registry(token_server.registry_config())
    public = f"{reg.address}/public/bb:1"  # type: ignore[attr-defined]
    private = f"{reg.address}/private/bb:1"  # type: ignore[attr-defined]
    a = make_engine("a")
    image_id = base_image(a, public)
    a.tag(public, private)

    # Anonymous: the token server grants no push, so the registry refuses.
    with pytest.raises(RegistryAuthError, match=r"authentication required|denied"):
        list(a.push(public))
    assert token_server.seen[-1]["user"] == ""

    assert login(monkeypatch, reg.address, "alice", "wonderland") == 0  # type: ignore[attr-defined]
    list(a.push(public))
    list(a.push(private))
    assert any(
        s["user"] == "alice" and "pull,push" in " ".join(s["scope"]) for s in token_server.seen
    )

    assert main(["logout", reg.address]) == 0  # type: ignore[attr-defined]
    b = make_engine("b")
    list(b.pull(b.plan_pull(public)))  # anonymous pull of a public repository
    assert b.image(public).id == image_id
    assert token_server.seen[-1]["user"] == ""
    with pytest.raises(RegistryAuthError, match=r"authentication required|insufficient"):
        b.plan_pull(private)

    assert login(monkeypatch, reg.address, "alice", "nope") == 1  # type: ignore[attr-defined]
    assert "incorrect username or password" in capsys.readouterr().err
    # mallory's password is right, but the token server denies her (403).
    config = Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    config.write_text(
        json.dumps({"auths": {reg.address: {"auth": "bWFsbG9yeTp4"}}})  # type: ignore[attr-defined]
    )
    assert main(["pull", private]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "access to the resource is denied" in err
