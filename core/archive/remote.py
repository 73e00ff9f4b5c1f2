"""``docker://REF``: an image fetched from a registry into a temporary OCI layout, to be
opened read-only like any archive, without loading it into a store.

The registry client resolves the reference for this host's platform, checks it is a
container image, and downloads the config and every layer blob (each verified against
its digest as it streams). The layout is written under a fresh temporary folder the
archive engine removes when it closes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from pathlib import Path

from lamina.core.digest import hex_of, sha256_bytes
from lamina.core.registry.client import RegistryClient
from lamina.core.registry.credentials import lookup
from lamina.core.registry.manifests import MAX_CONFIG_BYTES, host_platform, parse_platform
from lamina.core.registry.plan import check_image, resolve
from lamina.core.registry.reference import parse_reference

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def download_layout(
    text: str, platform: str | None = None, cancel: threading.Event | None = None
) -> Path:
    """Fetches ``text`` (``[registry/]repo[:tag|@digest]``) into a temporary OCI layout.

    Returns:
        The layout folder (the caller removes it).

    Raises:
        UsageError: a malformed reference or platform.
        RegistryError: the registry failed, refused, or sent something that is not an image.
    """
    ref = parse_reference(text)
    want = parse_platform(platform) if platform else host_platform()
    root = Path(tempfile.mkdtemp(prefix="lamina-remote-"))
    try:
        blobs = root / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        with RegistryClient(ref.endpoint, lookup(ref.domain)) as client:
            resolved = resolve(client, ref, want)
            check_image(resolved)
            manifest = resolved.manifest
            config = client.get_blob(ref.path, manifest.config, MAX_CONFIG_BYTES)
            (blobs / hex_of(manifest.config.digest)).write_bytes(config)
            for layer in manifest.layers:
                target = blobs / hex_of(layer.digest)
                if not target.exists():
                    client.download_blob(ref.path, layer, target, None, cancel)
        doc = {
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": manifest.config.to_json(),
            "layers": [layer.to_json() for layer in manifest.layers],
        }
        data = json.dumps(doc, separators=(",", ":")).encode()
        digest = sha256_bytes(data)
        (blobs / hex_of(digest)).write_bytes(data)
        index = {
            "schemaVersion": 2,
            "mediaType": MT_OCI_INDEX,
            "manifests": [
                {
                    "mediaType": MT_OCI_MANIFEST,
                    "digest": digest,
                    "size": len(data),
                    "annotations": (
                        {"io.containerd.image.name": ref.familiar_tag} if ref.familiar_tag else {}
                    ),
                }
            ],
        }
        (root / "index.json").write_text(json.dumps(index))
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        return root
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
