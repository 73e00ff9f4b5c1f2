"""Which compressed blobs a layer is known as, and where: Docker's v2 metadata.

The store keeps layers uncompressed (their digest is the diffID), while registries
serve compressed blobs. Each pull records, per diffID, the blob it came from and its
repository; each push the deterministic gzip lamina made and where it went. A later
push then asks the registry for a blob it already knows (HEAD), mounts it from another
repository of the same registry, or recompresses only when neither works.

Like dockerd's ``image/<driver>/distribution/v2metadata-by-diffid/``, the records are
small JSON files, one per diffID, outside the index: they are hints, checked against
the registry before use, so a lost or stale one costs a recompression, never data.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from lamina.core.digest import hex_of, is_digest

log = logging.getLogger(__name__)

# Docker keeps at most this many per diffID; so does lamina.
MAX_RECORDS = 50
# The repository field of a blob lamina compressed itself (not seen in any registry yet).
LOCAL = ""


@dataclass(frozen=True)
class BlobRecord:
    """One compressed form of a layer.

    Attributes:
        digest: the compressed blob's digest.
        media_type: its media type.
        size: its size in bytes.
        repository: ``registry/path`` it was pulled from or pushed to ("" when lamina
            made it and it is in no registry yet).
    """

    digest: str
    media_type: str
    size: int
    repository: str = LOCAL


class DistributionMetadata:
    """The records of one store, under ``home/distribution/v2metadata-by-diffid/``.

    Args:
        home: the store directory.
    """

    def __init__(self, home: Path) -> None:
        self.root = Path(home) / "distribution" / "v2metadata-by-diffid" / "sha256"
        self._lock = threading.Lock()

    def records(self, diff_id: str) -> list[BlobRecord]:
        """What the layer ``diff_id`` is known as, most recent first."""
        try:
            doc = json.loads((self.root / hex_of(diff_id)).read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.info("distribution record for %s unreadable: %s", diff_id, exc)
            return []
        out = []
        for item in doc if isinstance(doc, list) else []:
            if not isinstance(item, dict) or not is_digest(item.get("Digest", "")):
                continue
            out.append(
                BlobRecord(
                    str(item["Digest"]),
                    str(item.get("MediaType") or ""),
                    int(item.get("Size") or 0),
                    str(item.get("SourceRepository") or LOCAL),
                )
            )
        return out

    def add(self, diff_id: str, record: BlobRecord) -> None:
        """Records (or refreshes to the front) one compressed form of ``diff_id``."""
        with self._lock:
            kept = [
                r
                for r in self.records(diff_id)
                if (r.digest, r.repository) != (record.digest, record.repository)
            ]
            rows = [record, *kept][:MAX_RECORDS]
            doc = [
                {
                    "Digest": r.digest,
                    "MediaType": r.media_type,
                    "Size": r.size,
                    "SourceRepository": r.repository,
                }
                for r in rows
            ]
            self._write(diff_id, json.dumps(doc, separators=(",", ":")).encode())

    def _write(self, diff_id: str, data: bytes) -> None:
        path = self.root / hex_of(diff_id)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.root)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            # A lost hint costs a recompression on the next push, nothing more.
            log.warning("cannot record distribution metadata for %s: %s", diff_id, exc)
