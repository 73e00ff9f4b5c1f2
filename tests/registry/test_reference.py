"""References, manifests and platforms: the pure parts of the registry layer."""

from __future__ import annotations

import json

import pytest

from lamina.core.errors import RegistryError, UsageError
from lamina.core.registry.auth import parse_challenge, registry_words
from lamina.core.registry.manifests import (
    MAX_INDEX_ENTRIES,
    MAX_MANIFEST_BYTES,
    ImageIndex,
    ImageManifest,
    Platform,
    parse_manifest,
    parse_platform,
    select_platform,
)
from lamina.core.registry.reference import parse_reference
from lamina.core.registry.tls import allows_http, is_loopback

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "domain", "path", "tag", "digest", "familiar"),
    [
        ("busybox", "docker.io", "library/busybox", "latest", None, "busybox:latest"),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None, "busybox:1.36"),
        (
            "docker.io/library/busybox",
            "docker.io",
            "library/busybox",
            "latest",
            None,
            "busybox:latest",
        ),
        ("index.docker.io/foo/bar:x", "docker.io", "foo/bar", "x", None, "foo/bar:x"),
        ("127.0.0.1:5000/a/b:c", "127.0.0.1:5000", "a/b", "c", None, "127.0.0.1:5000/a/b:c"),
        ("localhost/x", "localhost", "x", "latest", None, "localhost/x:latest"),
        ("ghcr.io/o/r@" + D, "ghcr.io", "o/r", None, D, None),
        ("ghcr.io/o/r:t@" + D, "ghcr.io", "o/r", "t", D, "ghcr.io/o/r:t"),
    ],
)
def test_references_parse_like_docker(
    text: str, domain: str, path: str, tag: str | None, digest: str | None, familiar: str | None
) -> None:
    ref = parse_reference(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert ref.familiar_tag == familiar


def test_docker_hub_is_reached_on_its_api_host() -> None:
    assert parse_reference("busybox").endpoint == "registry-1.docker.io"
    assert parse_reference("127.0.0.1:5000/x").endpoint == "127.0.0.1:5000"


@pytest.mark.parametrize("bad", ["", "Busybox", "a//b", "x:", "x@sha256:12", "x:-bad", "a/../b"])
def test_invalid_references_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError, match="reference"):
        parse_reference(bad)


def test_plain_http_only_for_loopback_or_insecure(monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost:1") and is_loopback("[::1]:5")
    assert not allows_http("registry.example:5000")
    monkeypatch.setenv("LAMINA_INSECURE_REGISTRIES", "registry.example:5000")
    assert allows_http("registry.example:5000")
    assert not allows_http("other.example")


def _desc(os_: str, arch: str, variant: str = "", **extra: object) -> dict[str, object]:
    plat = {"os": os_, "architecture": arch} | ({"variant": variant} if variant else {})
    return {"mediaType": "x", "digest": D, "size": 1, "platform": plat} | extra


def test_platform_selection_picks_the_wanted_image_and_skips_attestations() -> None:
    index = {
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            _desc("unknown", "unknown"),
            _desc("linux", "arm", "v6"),
            _desc("linux", "arm", "v7") | {"digest": "sha256:" + "b" * 64},
            _desc("linux", "amd64") | {"digest": "sha256:" + "c" * 64},
        ],
    }
    doc = parse_manifest(json.dumps(index).encode(), "", "x")
    assert isinstance(doc, ImageIndex)
    assert select_platform(doc, parse_platform("linux/arm/v7"), "x").digest.startswith("sha256:b")
    assert select_platform(doc, Platform("linux", "amd64"), "x").digest.startswith("sha256:c")
    with pytest.raises(RegistryError, match=r"no image for linux/s390x .*linux/amd64"):
        select_platform(doc, Platform("linux", "s390x"), "x")


def test_hostile_manifests_are_refused_before_they_are_walked() -> None:
    wide = {"manifests": [_desc("linux", "amd64")] * (MAX_INDEX_ENTRIES + 1)}
    with pytest.raises(RegistryError, match="limit"):
        parse_manifest(json.dumps(wide).encode(), "application/vnd.oci.image.index.v1+json", "x")
    with pytest.raises(RegistryError, match="larger than"):
        parse_manifest(b" " * (MAX_MANIFEST_BYTES + 1), "", "x")
    with pytest.raises(RegistryError, match="schema 1"):
        parse_manifest(b'{"schemaVersion": 1, "fsLayers": []}', "", "x")
    with pytest.raises(RegistryError, match="malformed digest"):
        parse_manifest(
            b'{"schemaVersion":2,"config":{"digest":"sha256:../x","size":1},"layers":[]}', "", "x"
        )
    ok = parse_manifest(
        json.dumps({"schemaVersion": 2, "config": {"digest": D, "size": 2}, "layers": []}).encode(),
        "application/vnd.docker.distribution.manifest.v2+json",
        "x",
    )
    assert isinstance(ok, ImageManifest) and ok.config.size == 2


def test_challenges_and_error_bodies_are_read_as_registries_write_them() -> None:
    c = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:a/b:pull,push"'
    )
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull,push",
    }
    assert parse_challenge('Basic realm="x"').scheme == "basic"
    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}'
    assert registry_words(body) == "manifest unknown (MANIFEST_UNKNOWN)"
    assert registry_words(b'{"details":"incorrect username or password"}').startswith("incorrect")
