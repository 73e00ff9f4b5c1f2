"""The build cache artifact's format: what ``--cache-to`` writes, what ``--cache-from``
accepts and the one line it refuses with."""

from __future__ import annotations

import base64
import json

import pytest

from lamina.core.digest import sha256_bytes
from lamina.core.errors import RegistryError
from lamina.core.registry.cache import (
    ANNOTATION_UNCOMPRESSED,
    ARTIFACT_TYPE,
    MT_BUILDKIT_CACHE,
    MT_CACHE_CONFIG,
    CacheConfig,
    CacheLayer,
    CacheRecord,
    cache_config_descriptor,
    encode_artifact,
    encode_config,
    parse_config,
)
from lamina.core.registry.manifests import MT_OCI_LAYER_GZIP, MT_OCI_MANIFEST, Descriptor

CONFIG = b'{"rootfs":{"type":"layers","diff_ids":["sha256:' + b"1" * 64 + b'"]}}'
RESULT = sha256_bytes(CONFIG)
LAYER = CacheLayer(Descriptor(MT_OCI_LAYER_GZIP, "sha256:" + "2" * 64, 42), "sha256:" + "1" * 64)
RECORD = CacheRecord("sha256:" + "3" * 64, RESULT, "sha256:" + "1" * 64, "buildkit", 0, 1, "RUN a")


def test_a_cache_config_reads_back_as_written_and_names_its_layers() -> None:
    config = CacheConfig((RECORD,), {RESULT: CONFIG}, (LAYER,))
    blob = encode_config(config)
    assert encode_config(config) == blob  # the same cache, the same digest
    assert parse_config(blob, "r") == config
    manifest = json.loads(encode_artifact(blob, [LAYER]))
    assert manifest["mediaType"] == MT_OCI_MANIFEST
    assert manifest["artifactType"] == ARTIFACT_TYPE
    assert manifest["config"] == {
        "mediaType": MT_CACHE_CONFIG,
        "digest": sha256_bytes(blob),
        "size": len(blob),
    }
    assert manifest["layers"][0]["annotations"] == {ANNOTATION_UNCOMPRESSED: LAYER.diff_id}
    desc = cache_config_descriptor(encode_artifact(blob, [LAYER]), "r")
    assert (desc.digest, desc.size) == (sha256_bytes(blob), len(blob))


def test_a_result_config_that_does_not_match_its_digest_is_refused() -> None:
    doc = json.loads(encode_config(CacheConfig((RECORD,), {RESULT: CONFIG}, (LAYER,))))
    doc["configs"][0]["data"] = base64.b64encode(CONFIG + b" ").decode()
    with pytest.raises(RegistryError, match="does not match its digest"):
        parse_config(json.dumps(doc).encode(), "r")


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        (
            {"mediaType": MT_OCI_MANIFEST, "config": {"mediaType": MT_BUILDKIT_CACHE}},
            "r: a BuildKit cache, not a lamina build cache",
        ),
        (
            {
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json"},
            },
            "r: not a lamina build cache (config application/vnd.docker.container.image.v1+json)",
        ),
        (
            {"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []},
            "r: not a lamina build cache (application/vnd.oci.image.index.v1+json)",
        ),
    ],
)
def test_what_is_not_a_lamina_cache_says_what_it_is(
    manifest: dict[str, object], words: str
) -> None:
    with pytest.raises(RegistryError) as info:
        cache_config_descriptor(json.dumps(manifest).encode(), "r")
    assert str(info.value) == words


def test_another_version_is_refused_in_one_line() -> None:
    with pytest.raises(RegistryError, match=r"^r: cache config version 2 \(lamina reads 1\)$"):
        parse_config(b'{"version": 2}', "r")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "type=registry,ref=reg.example/team/cache:main",
            ("reg.example/team/cache:main", "min", False),
        ),
        ("ref=reg.example/c:1,mode=max", ("reg.example/c:1", "max", False)),
        ("type=registry,ref=r/c:1,mode=MAX,ignore-error=true", ("r/c:1", "max", True)),
    ],
)
def test_cache_to_reads_like_buildx(text: str, expected: tuple[str, str, bool]) -> None:
    from lamina.tui.cli.build import parse_cache_to

    spec = parse_cache_to(text)
    assert spec is not None and (spec.ref, spec.mode, spec.ignore_error) == expected


def test_cache_from_takes_a_bare_ref_and_keeps_the_order() -> None:
    from lamina.tui.cli.build import parse_cache_from

    assert parse_cache_from(["r/a:1", "type=registry,ref=r/b:2"]) == ("r/a:1", "r/b:2")
