"""Docker's config.json as lamina reads and writes it (in the test's DOCKER_CONFIG)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from lamina.core.errors import RegistryError
from lamina.core.registry.credentials import Credentials, config_path, erase, lookup, store


def write(doc: object) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_the_config_is_the_one_docker_config_names(tmp_path: Path) -> None:
    assert config_path() == Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    assert str(config_path()).startswith(str(tmp_path))


def test_auths_entries_as_docker_writes_them() -> None:
    write(
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64("hub:pw")},
                "http://127.0.0.1:5000/v2/": {"auth": b64("me:p:w")},
                "ghcr.io": {"identitytoken": "refresh"},
            }
        }
    )
    assert lookup("docker.io") == Credentials("hub", "pw")
    assert lookup("index.docker.io") == Credentials("hub", "pw")
    assert lookup("127.0.0.1:5000") == Credentials("me", "p:w")  # a password with a colon
    assert lookup("ghcr.io") == Credentials(identity_token="refresh")
    assert not lookup("quay.io")


def test_store_and_erase_keep_what_else_is_in_the_file() -> None:
    path = write({"auths": {"other.example": {"auth": b64("o:o")}}, "psFormat": "table"})
    store("docker.io", Credentials("u", "p"))
    doc = json.loads(path.read_text())
    assert doc["psFormat"] == "table"
    assert doc["auths"]["https://index.docker.io/v1/"] == {"auth": b64("u:p")}
    assert erase("docker.io") is True
    assert erase("docker.io") is False
    assert json.loads(path.read_text())["auths"] == {"other.example": {"auth": b64("o:o")}}


def test_a_broken_config_or_missing_helper_is_one_line() -> None:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON"):
        lookup("docker.io")
    write({"credsStore": "lamina-test-absent"})
    with pytest.raises(
        RegistryError, match="docker-credential-lamina-test-absent is not installed"
    ):
        lookup("docker.io")
