"""The pull plan: what a pull would move, worked out before any layer byte moves.

``resolve`` follows a tag to one image manifest (choosing the platform in an index).
``make_plan`` then needs the image config (from the store when it has it, else the one
small blob fetched for planning) and asks the engine, per layer, whether it has the
layer already: by chainID (the same layer on the same parents), or by diffID (the same
tar under other parents, which the store copies without downloading). What remains is
the download, and its total against the image's size.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from lamina.core.digest import chain_ids, is_digest
from lamina.core.errors import RegistryError
from lamina.core.registry.client import RegistryClient
from lamina.core.registry.manifests import (
    FOREIGN_TYPES,
    LAYER_TYPES,
    MAX_CONFIG_BYTES,
    MAX_INDEX_DEPTH,
    MT_DOCKER_CONFIG,
    MT_OCI_CONFIG,
    ImageIndex,
    ImageManifest,
    Platform,
    parse_manifest,
    select_platform,
)
from lamina.core.registry.reference import Reference

# How a layer of the plan is had: already in the store, copied from a layer with the
# same diffID, or downloaded.
HAVE_LAYER = "layer"
HAVE_DIFF = "diff"
HAVE_NONE = ""


@dataclass(frozen=True)
class Resolved:
    """A reference followed to one image manifest."""

    reference: Reference
    manifest: ImageManifest
    digest: str  # the image manifest's digest
    index_digest: str | None  # the index it was chosen from, if any
    platform: str


@dataclass(frozen=True)
class PlannedPullLayer:
    """One layer of the image and what pulling it costs.

    Attributes:
        digest: the compressed blob's digest (what the registry serves).
        media_type: its media type (gzip, zstd or uncompressed tar).
        size: its compressed size, the bytes a download moves.
        diff_id: the uncompressed tar's digest, from the config.
        chain_id: the layer's chainID (diffIDs of it and everything below).
        have: ``layer`` (in the store), ``diff`` (same tar elsewhere: copied, not
            downloaded) or "" (downloaded).
        shared_with: tags (or short IDs) of the images that already have the layer.
    """

    digest: str
    media_type: str
    size: int
    diff_id: str
    chain_id: str
    have: str = HAVE_NONE
    shared_with: tuple[str, ...] = ()

    @property
    def present(self) -> bool:
        """Whether no byte of this layer needs downloading."""
        return self.have != HAVE_NONE


@dataclass(frozen=True)
class PullPlan:
    """Everything a pull would do, before it does it.

    ``download_bytes`` is what moves (the config when the store lacks it, plus each
    missing layer's compressed blob, once per digest); ``image_bytes`` what the whole
    image is at the registry.
    """

    reference: str
    registry: str
    repository: str
    tag: str | None
    digest: str
    index_digest: str | None
    platform: str
    image_id: str
    image_present: bool
    config_size: int
    config_present: bool
    layers: tuple[PlannedPullLayer, ...]
    engine: str = "embedded"
    config_bytes: bytes = field(default=b"", repr=False, compare=False)

    @property
    def fetches(self) -> list[str]:
        """Digests of the blobs the pull downloads, in order, each once."""
        out: list[str] = []
        if not self.config_present:
            out.append(self.image_id)
        for layer in self.layers:
            if not layer.present and layer.digest not in out:
                out.append(layer.digest)
        return out

    @property
    def download_bytes(self) -> int:
        """Bytes the pull downloads."""
        sizes = {layer.digest: layer.size for layer in self.layers}
        sizes[self.image_id] = self.config_size
        return sum(sizes[d] for d in self.fetches)

    @property
    def image_bytes(self) -> int:
        """The image's size at the registry (config and compressed layers)."""
        return self.config_size + sum(layer.size for layer in self.layers)

    def to_json(self) -> dict[str, Any]:
        """The plan as ``--format json`` prints it."""
        return {
            "Reference": self.reference,
            "Registry": self.registry,
            "Repository": self.repository,
            "Tag": self.tag,
            "Digest": self.digest,
            "IndexDigest": self.index_digest,
            "Platform": self.platform,
            "Engine": self.engine,
            "ImageID": self.image_id,
            "ImagePresent": self.image_present,
            "Config": {
                "Digest": self.image_id,
                "Size": self.config_size,
                "Present": self.config_present,
            },
            "Layers": [
                {
                    "Digest": layer.digest,
                    "MediaType": layer.media_type,
                    "Size": layer.size,
                    "DiffID": layer.diff_id,
                    "ChainID": layer.chain_id,
                    "Present": layer.present,
                    "Have": layer.have,
                    "SharedWith": list(layer.shared_with),
                }
                for layer in self.layers
            ],
            "Fetches": self.fetches,
            "DownloadBytes": self.download_bytes,
            "ImageBytes": self.image_bytes,
        }


def resolve(client: RegistryClient, ref: Reference, want: Platform) -> Resolved:
    """Follows ``ref`` to one image manifest, choosing ``want`` in an index.

    Raises:
        RegistryError: unknown manifest, no image for the platform, nesting too deep, or
            anything that is not a container image.
    """
    where = str(ref)
    fetched = client.get_manifest(ref.path, ref.ref)
    doc = parse_manifest(fetched.data, fetched.media_type, where)
    index_digest: str | None = None
    platform = str(want)
    depth = 0
    while isinstance(doc, ImageIndex):
        depth += 1
        if depth > MAX_INDEX_DEPTH:
            raise RegistryError(f"{where}: indexes nested more than {MAX_INDEX_DEPTH} deep")
        if index_digest is None:
            index_digest = fetched.digest
        desc = select_platform(doc, want, where)
        if desc.platform is not None:
            platform = str(desc.platform)
        fetched = client.get_manifest(ref.path, desc.digest)
        doc = parse_manifest(fetched.data, fetched.media_type, f"{where}@{desc.digest}")
    return Resolved(ref, doc, fetched.digest, index_digest, platform)


def check_image(resolved: Resolved) -> None:
    """Refuses manifests that are not container images lamina can store.

    Raises:
        RegistryError: an artifact (other config or layer types) or foreign layers.
    """
    where = str(resolved.reference)
    manifest = resolved.manifest
    if manifest.config.media_type not in ("", MT_DOCKER_CONFIG, MT_OCI_CONFIG):
        raise RegistryError(
            f"{where}: not a container image (config type {manifest.config.media_type})"
        )
    if manifest.config.size > MAX_CONFIG_BYTES:
        raise RegistryError(f"{where}: config of {manifest.config.size} bytes is too large")
    for layer in manifest.layers:
        if layer.media_type in FOREIGN_TYPES:
            raise RegistryError(f"{where}: foreign (non-distributable) layers are not supported")
        if layer.media_type and layer.media_type not in LAYER_TYPES:
            raise RegistryError(f"{where}: not a container image (layer type {layer.media_type})")


def diff_ids_of(config_bytes: bytes, manifest: ImageManifest, where: str) -> list[str]:
    """The config's ``rootfs.diff_ids``, checked against the manifest's layers.

    Raises:
        RegistryError: a config that is not JSON or does not match the manifest.
    """
    try:
        config = json.loads(config_bytes)
    except ValueError as exc:
        raise RegistryError(f"{where}: the image config is not valid JSON ({exc})") from exc
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(is_digest(d) for d in diff_ids):
        raise RegistryError(f"{where}: the image config has malformed rootfs.diff_ids")
    if len(diff_ids) != len(manifest.layers):
        raise RegistryError(
            f"{where}: {len(manifest.layers)} layers but the config lists {len(diff_ids)} diff_ids"
        )
    return list(diff_ids)


def make_plan(
    resolved: Resolved,
    config_bytes: bytes,
    *,
    image_present: bool,
    config_present: bool,
    have: Callable[[str, str], str],
    shared_with: Callable[[str], tuple[str, ...]],
    engine: str,
) -> PullPlan:
    """The plan for one resolved image.

    Args:
        resolved: the image manifest.
        config_bytes: its config (verified against its digest).
        image_present: whether the engine has this image ID already.
        config_present: whether the config was had without fetching it.
        have: ``have(chain_id, diff_id)`` -> ``layer``, ``diff`` or "".
        shared_with: images that have a chainID already.
        engine: "embedded" or "docker".
    """
    ref = resolved.reference
    where = str(ref)
    manifest = resolved.manifest
    diff_ids = diff_ids_of(config_bytes, manifest, where)
    chains = chain_ids(diff_ids)
    layers = []
    for desc, diff_id, chain_id in zip(manifest.layers, diff_ids, chains, strict=True):
        how = have(chain_id, diff_id)
        layers.append(
            PlannedPullLayer(
                desc.digest,
                desc.media_type,
                desc.size,
                diff_id,
                chain_id,
                how,
                shared_with(chain_id) if how == HAVE_LAYER else (),
            )
        )
    return PullPlan(
        reference=str(ref),
        registry=ref.domain,
        repository=ref.path,
        tag=ref.tag,
        digest=resolved.digest,
        index_digest=resolved.index_digest,
        platform=resolved.platform,
        image_id=manifest.config.digest,
        image_present=image_present,
        config_size=manifest.config.size,
        config_present=config_present,
        layers=tuple(layers),
        engine=engine,
        config_bytes=config_bytes,
    )


def plan_summary(plan: PullPlan) -> dict[str, Any]:
    """A flat dict of the plan's numbers (for logs)."""
    return {k: v for k, v in asdict(plan).items() if k not in ("config_bytes", "layers")}
