"""Manifests and indexes: Docker v2 schema 2, OCI image manifests, manifest lists and
OCI indexes, read with limits so a hostile registry cannot make lamina hold or walk
more than a real image ever needs.

Everything here is pure: bytes in, frozen records out. The client fetches; the pull
plan and the push decide.
"""

from __future__ import annotations

import json
import platform as _platform
from dataclasses import dataclass, field
from typing import Any

from lamina.core.digest import is_digest
from lamina.core.errors import RegistryError, UsageError

MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_OCI_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"

MANIFEST_TYPES = (MT_DOCKER_MANIFEST, MT_OCI_MANIFEST)
INDEX_TYPES = (MT_DOCKER_LIST, MT_OCI_INDEX)
LAYER_TYPES = (MT_DOCKER_LAYER, MT_OCI_LAYER, MT_OCI_LAYER_GZIP, MT_OCI_LAYER_ZSTD)
FOREIGN_TYPES = (MT_DOCKER_FOREIGN, MT_OCI_NONDIST_GZIP)
# What a pull asks for, best first (a registry that knows none sends schema 1, refused).
ACCEPT = ", ".join((MT_OCI_INDEX, MT_DOCKER_LIST, MT_OCI_MANIFEST, MT_DOCKER_MANIFEST))

# distribution itself refuses manifests over 4 MiB; no config of a real image comes
# close to 16 MiB. An index fanning out wider than this, or an image with more layers,
# is not one anybody built.
MAX_MANIFEST_BYTES = 4 << 20
MAX_CONFIG_BYTES = 16 << 20
MAX_INDEX_ENTRIES = 1024
MAX_LAYERS = 1000
MAX_INDEX_DEPTH = 4


@dataclass(frozen=True)
class Platform:
    """``os/architecture[/variant]`` in Go's naming."""

    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        out = f"{self.os}/{self.architecture}"
        return f"{out}/{self.variant}" if self.variant else out

    def matches(self, other: Platform) -> bool:
        """Whether an index entry for ``other`` runs here (``self`` is what is wanted).

        An unspecified variant accepts any; ``arm64`` without a variant is ``v8``.
        """
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        if not self.variant:
            return True
        theirs = other.variant or ("v8" if other.architecture == "arm64" else "")
        return theirs == self.variant


def parse_platform(text: str) -> Platform:
    """``linux/amd64`` or ``linux/arm/v7`` as a Platform.

    Raises:
        UsageError: for anything else.
    """
    parts = text.strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UsageError(f"invalid platform {text!r} (expected os/arch[/variant])")
    return Platform(*parts)


def host_platform() -> Platform:
    """The host's platform in Go's naming (``linux/amd64``, ``linux/arm64``)."""
    machine = _platform.machine().lower()
    arch, variant = {
        "x86_64": ("amd64", ""),
        "amd64": ("amd64", ""),
        "aarch64": ("arm64", ""),
        "arm64": ("arm64", ""),
        "armv7l": ("arm", "v7"),
        "armv6l": ("arm", "v6"),
        "i386": ("386", ""),
        "i686": ("386", ""),
    }.get(machine, (machine, ""))
    return Platform("linux", arch, variant)


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a manifest says about one blob or manifest."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: tuple[tuple[str, str], ...] = ()
    urls: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The descriptor as a manifest writes it."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "size": self.size,
            "digest": self.digest,
        }
        if self.urls:
            out["urls"] = list(self.urls)
        return out


@dataclass(frozen=True)
class ImageManifest:
    """One image: its config and layers, base first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageIndex:
    """A manifest list or OCI index: one manifest per platform (and attestations)."""

    media_type: str
    manifests: tuple[Descriptor, ...] = field(default_factory=tuple)


def _descriptor(doc: Any, where: str) -> Descriptor:
    if not isinstance(doc, dict):
        raise RegistryError(f"{where}: a descriptor is not a JSON object")
    digest, size, media_type = doc.get("digest"), doc.get("size"), doc.get("mediaType")
    if not isinstance(digest, str) or not is_digest(digest):
        raise RegistryError(f"{where}: unsupported or malformed digest {digest!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError(f"{where}: descriptor {digest} has no valid size")
    plat = None
    raw_plat = doc.get("platform")
    if isinstance(raw_plat, dict):
        plat = Platform(
            str(raw_plat.get("os") or ""),
            str(raw_plat.get("architecture") or ""),
            str(raw_plat.get("variant") or ""),
        )
    ann = doc.get("annotations")
    annotations = tuple(
        sorted((str(k), str(v)) for k, v in ann.items()) if isinstance(ann, dict) else ()
    )
    urls = doc.get("urls")
    return Descriptor(
        str(media_type or ""),
        digest,
        size,
        plat,
        annotations,
        tuple(str(u) for u in urls) if isinstance(urls, list) else (),
    )


def parse_manifest(data: bytes, content_type: str, where: str) -> ImageManifest | ImageIndex:
    """Reads a manifest or index, whichever ``data`` is.

    Args:
        data: the manifest bytes (at most ``MAX_MANIFEST_BYTES``).
        content_type: the registry's Content-Type (the document's own ``mediaType``
            wins when present).
        where: names the manifest in errors.

    Raises:
        RegistryError: for schema 1, unknown types, malformed JSON or limits passed.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise RegistryError(f"{where}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise RegistryError(f"{where}: the manifest is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise RegistryError(f"{where}: the manifest is not a JSON object")
    media_type = str(doc.get("mediaType") or content_type.split(";")[0].strip())
    if doc.get("schemaVersion") == 1 or "signed" in media_type or "v1+prettyjws" in media_type:
        raise RegistryError(f"{where}: schema 1 manifests are not supported (push it again)")
    if media_type in INDEX_TYPES or (media_type not in MANIFEST_TYPES and "manifests" in doc):
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise RegistryError(f"{where}: the index has no manifests list")
        if len(entries) > MAX_INDEX_ENTRIES:
            raise RegistryError(
                f"{where}: the index lists {len(entries)} manifests (limit {MAX_INDEX_ENTRIES})"
            )
        return ImageIndex(media_type, tuple(_descriptor(e, where) for e in entries))
    if media_type in MANIFEST_TYPES or "config" in doc:
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise RegistryError(f"{where}: the manifest has no layers list")
        if len(layers) > MAX_LAYERS:
            raise RegistryError(f"{where}: {len(layers)} layers (limit {MAX_LAYERS})")
        return ImageManifest(
            media_type or MT_OCI_MANIFEST,
            _descriptor(doc.get("config"), f"{where} config"),
            tuple(_descriptor(layer, where) for layer in layers),
        )
    raise RegistryError(f"{where}: unsupported manifest type {media_type!r}")


def is_attestation(desc: Descriptor) -> bool:
    """Whether an index entry is a BuildKit attestation rather than an image."""
    ann = dict(desc.annotations)
    if ann.get("vnd.docker.reference.type") == "attestation-manifest":
        return True
    return desc.platform is not None and desc.platform.os == "unknown"


def select_platform(index: ImageIndex, want: Platform, where: str) -> Descriptor:
    """The index entry for ``want`` (the first match, as Docker picks).

    Raises:
        RegistryError: when no entry matches, naming what the index offers.
    """
    images = [d for d in index.manifests if not is_attestation(d)]
    for desc in images:
        if desc.platform is not None and want.matches(desc.platform):
            return desc
    # An index without platforms (some OCI layouts) has one image for everyone.
    if len(images) == 1 and images[0].platform is None:
        return images[0]
    offered = ", ".join(sorted({str(d.platform) for d in images if d.platform})) or "nothing"
    raise RegistryError(f"{where}: no image for {want} in the index (it has {offered})")


def encode_manifest(
    config: Descriptor, layers: list[Descriptor], media_type: str = MT_DOCKER_MANIFEST
) -> bytes:
    """A manifest as Docker writes one (indented JSON, key order as Docker's)."""
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    return json.dumps(doc, indent=3).encode()
