"""A build cache as an OCI artifact: what ``--cache-to type=registry`` writes and
``--cache-from type=registry`` reads.

The shape follows BuildKit's registry cache (``--cache-to type=registry,
image-manifest=true``): one OCI image manifest whose config blob is the cache config
and whose layers are the layer blobs the records need, each annotated with its
uncompressed digest (``containerd.io/uncompressed``). BuildKit's config
(``application/vnd.buildkit.cacheconfig.v0``) links records through their inputs to
layer indexes; lamina's records carry what its own store keeps for an entry instead:

* ``records``: cache key → the resulting image config (``result``, its digest) and the
  chainID of that state's top layer (``topLayer``), with the stage and step it came
  from and the rules (``builder``) that made the key;
* ``configs``: each result config, base64, byte for byte (its digest is the state's
  ID, so a hit in another store makes the same image ID);
* ``layers``: every layer blob the results stand on, by diffID.

A record's layers are its result config's ``rootfs.diff_ids``, each found in ``layers``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from lamina.core.digest import is_digest, sha256_bytes
from lamina.core.errors import RegistryError
from lamina.core.registry.manifests import MT_OCI_MANIFEST, Descriptor

MT_CACHE_CONFIG = "application/vnd.lamina.cache.config.v1+json"
ARTIFACT_TYPE = "application/vnd.lamina.cache.v1"
# BuildKit's own cache config, named when a ref holds one (lamina cannot read it).
MT_BUILDKIT_CACHE = "application/vnd.buildkit.cacheconfig.v0"
ANNOTATION_UNCOMPRESSED = "containerd.io/uncompressed"
VERSION = 1
MAX_CACHE_CONFIG_BYTES = 64 << 20


@dataclass(frozen=True)
class CacheRecord:
    """One exported cache entry.

    Attributes:
        key: the step's cache key.
        result: the digest of the resulting image config.
        top_layer: the chainID that state stands on (None for an empty rootfs).
        builder: the rules that made the key (``buildkit``, ``classic``).
        stage: the stage the step belonged to in the exporting build.
        index: its index in the stage.
        instruction: the instruction as written.
    """

    key: str
    result: str
    top_layer: str | None
    builder: str
    stage: int = 0
    index: int = 0
    instruction: str = ""


@dataclass(frozen=True)
class CacheLayer:
    """A layer blob of the artifact: the compressed blob and the diffID it holds."""

    blob: Descriptor
    diff_id: str


@dataclass(frozen=True)
class CacheConfig:
    """The decoded cache config: records, the result configs, the layers."""

    records: tuple[CacheRecord, ...]
    configs: dict[str, bytes]
    layers: tuple[CacheLayer, ...]


def encode_config(config: CacheConfig) -> bytes:
    """The cache config blob (canonical JSON, so the same cache has the same digest)."""
    doc = {
        "version": VERSION,
        "records": [
            {
                "key": r.key,
                "result": r.result,
                "topLayer": r.top_layer,
                "builder": r.builder,
                "stage": r.stage,
                "index": r.index,
                "instruction": r.instruction,
            }
            for r in config.records
        ],
        "configs": [
            {"digest": d, "data": base64.b64encode(data).decode("ascii")}
            for d, data in sorted(config.configs.items())
        ],
        "layers": [
            {
                "blob": layer.blob.digest,
                "mediaType": layer.blob.media_type,
                "size": layer.blob.size,
                "diffID": layer.diff_id,
            }
            for layer in config.layers
        ],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def encode_artifact(config_blob: bytes, layers: list[CacheLayer]) -> bytes:
    """The OCI image manifest naming the cache config and the layer blobs."""
    doc = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": MT_CACHE_CONFIG,
            "digest": sha256_bytes(config_blob),
            "size": len(config_blob),
        },
        "layers": [
            {
                "mediaType": layer.blob.media_type,
                "digest": layer.blob.digest,
                "size": layer.blob.size,
                "annotations": {ANNOTATION_UNCOMPRESSED: layer.diff_id},
            }
            for layer in layers
        ],
    }
    return json.dumps(doc, indent=3).encode()


def cache_config_descriptor(manifest: bytes, where: str) -> Descriptor:
    """The cache config's descriptor in an artifact manifest.

    Raises:
        RegistryError: the manifest is not a lamina build cache (naming what it is).
    """
    try:
        doc = json.loads(manifest)
    except ValueError as exc:
        raise RegistryError(f"{where}: the manifest is not valid JSON ({exc})") from exc
    config = doc.get("config") if isinstance(doc, dict) else None
    media_type = config.get("mediaType") if isinstance(config, dict) else None
    if media_type == MT_BUILDKIT_CACHE:
        raise RegistryError(f"{where}: a BuildKit cache, not a lamina build cache")
    if media_type != MT_CACHE_CONFIG or not isinstance(config, dict):
        what = (doc.get("mediaType") if isinstance(doc, dict) else None) or "not a manifest"
        shown = f"config {media_type}" if media_type else str(what)
        raise RegistryError(f"{where}: not a lamina build cache ({shown})")
    digest, size = config.get("digest"), config.get("size")
    if not isinstance(digest, str) or not is_digest(digest) or not isinstance(size, int):
        raise RegistryError(f"{where}: the cache config descriptor is malformed")
    return Descriptor(MT_CACHE_CONFIG, digest, size)


def _text(item: dict[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not is_digest(value):
        raise RegistryError(f"{where}: cache config: {name} {value!r} is not a digest")
    return value


def parse_config(data: bytes, where: str) -> CacheConfig:
    """Reads a cache config blob, checking every digest (a config's bytes against its).

    Raises:
        RegistryError: malformed, another version, or a config not matching its digest.
    """
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise RegistryError(f"{where}: the cache config is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        version = doc.get("version") if isinstance(doc, dict) else None
        raise RegistryError(f"{where}: cache config version {version!r} (lamina reads {VERSION})")
    records = []
    for item in doc.get("records") or []:
        if not isinstance(item, dict):
            raise RegistryError(f"{where}: cache config: a record is not an object")
        top = item.get("topLayer")
        records.append(
            CacheRecord(
                _text(item, "key", where),
                _text(item, "result", where),
                _text(item, "topLayer", where) if top is not None else None,
                str(item.get("builder") or ""),
                int(item.get("stage") or 0),
                int(item.get("index") or 0),
                str(item.get("instruction") or ""),
            )
        )
    configs: dict[str, bytes] = {}
    for item in doc.get("configs") or []:
        digest = _text(item, "digest", where) if isinstance(item, dict) else ""
        try:
            data_ = base64.b64decode(str(item.get("data") or ""), validate=True)
        except ValueError as exc:
            raise RegistryError(f"{where}: cache config: config {digest} is not base64") from exc
        if sha256_bytes(data_) != digest:
            raise RegistryError(f"{where}: cache config: config {digest} does not match its digest")
        configs[digest] = data_
    layers = []
    for item in doc.get("layers") or []:
        if not isinstance(item, dict) or not isinstance(item.get("size"), int):
            raise RegistryError(f"{where}: cache config: a layer is malformed")
        blob = Descriptor(
            str(item.get("mediaType") or ""), _text(item, "blob", where), item["size"]
        )
        layers.append(CacheLayer(blob, _text(item, "diffID", where)))
    return CacheConfig(tuple(records), configs, tuple(layers))
