"""Image configs (``blobs/sha256/<hex>``), images, tags and reference resolution.

An image is its config: its ID is the sha256 of the config JSON, and its layers are the
chainIDs of ``config.rootfs.diff_ids``. Tags are stored in Docker's familiar form
(``busybox:latest``, ``ghcr.io/a/b:1``), so ``busybox``, ``busybox:latest`` and
``docker.io/library/busybox`` name the same tag.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lamina.core.digest import chain_ids, hex_of, is_digest, sha256_bytes
from lamina.core.dockerfile.quote import go_json_text
from lamina.core.embedded.store import schema
from lamina.core.embedded.store.index import Index
from lamina.core.embedded.store.layers import LayerStore
from lamina.core.embedded.store.lock import StoreLock
from lamina.core.errors import NotFound, StoreError, UsageError
from lamina.core.model import ImageSummary
from lamina.core.timestamps import parse_rfc3339

log = logging.getLogger(__name__)

# distribution/reference grammar.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_HEX_PREFIX_RE = re.compile(r"^[a-f0-9]{1,64}$")
MAX_NAME_LENGTH = 255
# A copy of the tags outside the index (``ImageStore.save_tag_file``).
TAG_FILE = "repositories.json"
StrList = list[str]  # ImageStore.list shadows the builtin inside the class body
DEFAULT_DOMAINS = ("docker.io", "index.docker.io")


def normalize_tag(name: str) -> str:
    """A tag in Docker's familiar form: ``busybox`` -> ``busybox:latest``.

    Args:
        name: ``[registry[:port]/]repo[:tag]``.

    Returns:
        ``repo:tag`` with Docker Hub's ``docker.io/library/`` prefix removed.

    Raises:
        UsageError: for a digest reference or anything Docker calls an invalid
            reference format (uppercase repository, bad characters, bad tag).
    """
    if "@" in name:
        raise UsageError(f"{name!r}: a digest reference cannot be used as a tag")
    if not name:
        raise UsageError("invalid reference format: empty name")
    repo, tag = name, "latest"
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        repo, tag = name[:colon], name[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise UsageError(f"{name!r}: invalid reference format: invalid tag {tag!r}")
    domain, _, rest = repo.partition("/")
    if rest and (
        "." in domain or ":" in domain or domain == "localhost" or domain != domain.lower()
    ):
        if not _DOMAIN_RE.fullmatch(domain):
            raise UsageError(f"{name!r}: invalid reference format: invalid registry {domain!r}")
        path = rest
    else:
        domain, path = "", repo
    if path != path.lower():
        raise UsageError(f"{name!r}: invalid reference format: repository name must be lowercase")
    if not _PATH_RE.fullmatch(path):
        raise UsageError(f"{name!r}: invalid reference format")
    if domain in DEFAULT_DOMAINS:
        domain = ""
        if path.startswith("library/") and path.count("/") == 1:
            path = path[len("library/") :]
    full = f"{domain}/{path}" if domain else path
    if len(full) > MAX_NAME_LENGTH:
        raise UsageError(f"{name!r}: repository name longer than {MAX_NAME_LENGTH} characters")
    return f"{full}:{tag}"


# A config's RFC 3339 ``created`` as unix time (0 when absent or unreadable).
parse_created = parse_rfc3339


def format_created(ts: float) -> str:
    """Unix time as RFC 3339 in UTC with nanoseconds trimmed, like Docker writes it."""
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        text += f".{dt.microsecond:06d}".rstrip("0")
    return text + "Z"


class ImageStore:
    """Configs, images and tags of one store.

    Args:
        home: the store directory.
        index: its index.
        lock: its store lock.
        layers: its layers (to check that an image's chain exists).
    """

    def __init__(self, home: Path, index: Index, lock: StoreLock, layers: LayerStore) -> None:
        self.home = home
        self.blobs = home / "blobs" / "sha256"
        self.index = index
        self._lock = lock
        self._layers = layers

    # -- blobs -------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """``blobs/sha256/<hex>`` (the digest is validated first)."""
        return self.blobs / hex_of(digest)

    def put_blob(self, data: bytes) -> str:
        """Stores ``data`` content-addressed; returns ``sha256:<hex>``.

        Written to a temp file in the same directory, fsynced and renamed, so a reader
        never sees a partial blob. Re-adding an existing blob refreshes its mtime so a
        concurrent GC sees it as fresh.
        """
        digest = sha256_bytes(data)
        path = self.blob_path(digest)
        try:
            if path.exists():
                os.utime(path)
                return digest
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.blobs)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            dir_fd = os.open(self.blobs, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StoreError(f"{path}: cannot write blob: {exc.strerror}") from exc
        return digest

    def get_blob(self, digest: str) -> bytes:
        """The blob's bytes.

        Raises:
            NotFound: if there is no such blob.
        """
        path = self.blob_path(digest)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no such blob: {digest}") from None
        except OSError as exc:
            raise StoreError(f"{path}: cannot read blob: {exc.strerror}") from exc

    def has_blob(self, digest: str) -> bool:
        """Whether the blob is stored."""
        return self.blob_path(digest).exists()

    def put_config(self, config: dict[str, Any]) -> str:
        """Stores an image config as compact JSON; returns its digest (the image ID).

        Text that is not UTF-8 (a Dockerfile's bytes) is written as Go's JSON writes
        it, U+FFFD for each such byte, as Docker's configs have it.
        """
        text = json.dumps(config, separators=(",", ":"), ensure_ascii=False)
        data = go_json_text(text).encode()
        return self.put_blob(data)

    def get_config(self, digest: str) -> dict[str, Any]:
        """The config ``digest`` as a dict, normalised (``schema.normalized_config``): a
        field of the wrong type is left out, so no reader meets one.

        Raises:
            NotFound: if it is not stored.
            StoreError: if it is not a JSON object.
        """
        return schema.normalized_config(self._config_doc(digest))

    def config_problem(self, digest: str) -> str | None:
        """What is wrong with the stored config ``digest`` (one line), or None.

        Raises:
            NotFound: if it is not stored.
            StoreError: if it is not a JSON object.
        """
        return schema.config_problem(self._config_doc(digest))

    def _config_doc(self, digest: str) -> dict[str, Any]:
        data = self.get_blob(digest)
        try:
            doc = schema.parse(data)
        except schema.Invalid as exc:
            raise StoreError(f"{self.blob_path(digest)}: {exc}") from None
        if not isinstance(doc, dict):
            raise StoreError(f"{self.blob_path(digest)}: not a JSON object")
        return doc

    # -- images ------------------------------------------------------------------------

    def chain_of(self, config: dict[str, Any]) -> list[str]:
        """The chainIDs of a config's ``rootfs.diff_ids``, base first."""
        rootfs = config.get("rootfs") or {}
        diff_ids = rootfs.get("diff_ids") or []
        if not isinstance(diff_ids, list) or not all(is_digest(d) for d in diff_ids):
            raise StoreError("image config has malformed rootfs.diff_ids")
        return chain_ids(diff_ids)

    def add_image(self, config_digest: str, parent: str | None = None) -> ImageSummary:
        """Records the image whose config is ``config_digest`` (already stored).

        Args:
            config_digest: the config blob's digest (the image ID).
            parent: the image it was built FROM, if any.

        Raises:
            NotFound: if the config or one of its layers is missing.
        """
        config = self.get_config(config_digest)
        chain = self.chain_of(config)
        for chain_id in chain:
            if not self._layers.exists(chain_id):
                raise NotFound(f"image {config_digest}: layer {chain_id} is not in the store")
        created = parse_created(config.get("created"))
        with self._lock.hold(), self.index.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO images (id, top_layer, created, added, parent)"
                " VALUES (?, ?, ?, ?, ?)",
                (config_digest, chain[-1] if chain else None, created, time.time(), parent),
            )
        return self.summary(config_digest)

    def exists(self, image_id: str) -> bool:
        """Whether the image is recorded."""
        return self.index.row("SELECT 1 FROM images WHERE id = ?", (image_id,)) is not None

    def parent(self, image_id: str) -> str | None:
        """The image ``image_id`` was built FROM, when recorded."""
        row = self.index.row("SELECT parent FROM images WHERE id = ?", (image_id,))
        return None if row is None else row["parent"]

    def parents(self) -> set[str]:
        """Every image another image was recorded as built FROM."""
        rows = self.index.rows("SELECT DISTINCT parent FROM images WHERE parent IS NOT NULL")
        return {str(r[0]) for r in rows}

    def tag(self, image_id: str, name: str) -> None:
        """Points tag ``name`` at ``image_id`` (moving it if it pointed elsewhere).

        Raises:
            UsageError: if ``name`` is not a valid tag.
            NotFound: if the image does not exist.
        """
        tag = normalize_tag(name)
        with self._lock.hold(), self.index.transaction() as conn:
            if conn.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
                raise NotFound(f"no such image: {image_id}")
            conn.execute(
                "INSERT INTO tags (name, image_id) VALUES (?, ?)"
                " ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id",
                (tag, image_id),
            )
        self.save_tag_file()

    def untag(self, name: str) -> None:
        """Removes tag ``name``.

        Raises:
            NotFound: if there is no such tag.
        """
        tag = normalize_tag(name)
        with self._lock.hold(), self.index.transaction() as conn:
            cur = conn.execute("DELETE FROM tags WHERE name = ?", (tag,))
            if cur.rowcount == 0:
                raise NotFound(f"no such tag: {tag}")
        self.save_tag_file()

    def tags_of(self, image_id: str) -> list[str]:
        """The image's tags, sorted."""
        rows = self.index.rows(
            "SELECT name FROM tags WHERE image_id = ? ORDER BY name", (image_id,)
        )
        return [r[0] for r in rows]

    def resolve(self, ref: str) -> str:
        """The image ID a reference names: a tag, a full ID, or a unique ID prefix.

        Raises:
            NotFound: if nothing (or more than one image) matches.
        """
        if is_digest(ref):
            if self.exists(ref):
                return ref
            raise NotFound(f"no such image: {ref}")
        if "@" not in ref:
            try:
                tag = normalize_tag(ref)
            except UsageError:
                tag = None
            if tag is not None:
                row = self.index.row("SELECT image_id FROM tags WHERE name = ?", (tag,))
                if row is not None:
                    return str(row[0])
        prefix = ref.removeprefix("sha256:")
        if _HEX_PREFIX_RE.fullmatch(prefix):
            rows = self.index.rows(
                "SELECT id FROM images WHERE substr(id, 8, ?) = ?", (len(prefix), prefix)
            )
            if len(rows) == 1:
                return str(rows[0][0])
            if len(rows) > 1:
                raise NotFound(f"{ref!r} matches {len(rows)} images; give more of the ID")
        raise NotFound(f"no such image: {ref}")

    def summary(self, image_id: str) -> ImageSummary:
        """The image as ``lamina images`` lists it.

        Raises:
            NotFound: if there is no such image.
        """
        row = self.index.row("SELECT * FROM images WHERE id = ?", (image_id,))
        if row is None:
            raise NotFound(f"no such image: {image_id}")
        return self._summary(row)

    def _summary(
        self,
        row: sqlite3.Row,
        chain: list[tuple[str, int]] | None = None,
        tags: list[str] | None = None,
    ) -> ImageSummary:
        """One image's summary; ``chain`` ((chainID, size), base first) and ``tags`` may
        be given by a caller that loaded them in bulk."""
        image_id = row["id"]
        if chain is None:
            infos = self._layers.chain(row["top_layer"]) if row["top_layer"] else []
            chain = [(info.chain_id, info.size) for info in infos]
        labels: dict[str, str] = {}
        try:
            cfg = (self.get_config(image_id).get("config") or {}).get("Labels") or {}
            if isinstance(cfg, dict):
                labels = {str(k): str(v) for k, v in cfg.items()}
        except NotFound:
            log.warning("image %s: config blob is missing", image_id)
        return ImageSummary(
            id=image_id,
            tags=tuple(self.tags_of(image_id) if tags is None else tags),
            created=float(row["created"]),
            size=sum(size for _, size in chain),
            layers=tuple(chain_id for chain_id, _ in chain),
            labels=labels,
        )

    def list(self) -> list[ImageSummary]:
        """Every image, tagged and dangling, newest first.

        Layers and tags are read in one query each and chains are shared between images
        with a common prefix, so listing costs O(images + layers), not a query per layer.
        """
        with self.index.snapshot() as conn:
            rows = conn.execute(
                "SELECT * FROM images ORDER BY created DESC, added DESC, id"
            ).fetchall()
            layers = {
                r[0]: (r[1], int(r[2]))
                for r in conn.execute("SELECT chain_id, parent, size FROM layers").fetchall()
            }
            tags: dict[str, list[str]] = {}
            for name, image_id in conn.execute(
                "SELECT name, image_id FROM tags ORDER BY name"
            ).fetchall():
                tags.setdefault(image_id, []).append(name)
        chains: dict[str, list[tuple[str, int]]] = {}

        def chain_of(top: str) -> list[tuple[str, int]]:
            # Walk down to a chain already known (or the base), then build upwards.
            pending: list[str] = []
            cur: str | None = top
            while cur is not None and cur not in chains:
                if cur not in layers:
                    raise NotFound(f"layer {cur} of an image is not in the store")
                pending.append(cur)
                cur = layers[cur][0]
            base = chains[cur] if cur is not None else []
            for chain_id in reversed(pending):
                base = [*base, (chain_id, layers[chain_id][1])]
                chains[chain_id] = base
            return chains[top]

        return [
            self._summary(
                r, chain_of(r["top_layer"]) if r["top_layer"] else [], tags.get(r["id"], [])
            )
            for r in rows
        ]

    def children(self, image_id: str) -> StrList:
        """Images recorded as built FROM ``image_id``."""
        rows = self.index.rows("SELECT id FROM images WHERE parent = ? ORDER BY id", (image_id,))
        return [r[0] for r in rows]

    def remove(self, image_id: str) -> None:
        """Deletes the image row and its tags (its layers and config stay for GC).

        Raises:
            NotFound: if there is no such image.
        """
        with self._lock.hold(), self.index.transaction() as conn:
            conn.execute("DELETE FROM tags WHERE image_id = ?", (image_id,))
            cur = conn.execute("DELETE FROM images WHERE id = ?", (image_id,))
            if cur.rowcount == 0:
                raise NotFound(f"no such image: {image_id}")
        self.save_tag_file()

    def forget(self, image_ids: StrList) -> None:
        """Deletes image rows and their tags in one transaction (or the caller's).

        Unlike :meth:`remove` this takes no lock and leaves ``repositories.json`` to the
        caller: prune deletes many images under its own lock, then saves the tags once.
        """
        with self.index.transaction() as conn:
            for image_id in image_ids:
                conn.execute("DELETE FROM tags WHERE image_id = ?", (image_id,))
                conn.execute("DELETE FROM images WHERE id = ?", (image_id,))

    def save_tag_file(self) -> None:
        """Writes every tag to ``repositories.json`` (atomically), for index recovery.

        The index is the truth; this copy, like Docker's ``repositories.json``, is what
        lets ``fsck --rebuild-index`` give recovered images their names back. A failure
        to write it is logged, never fatal: the next tag change writes it again.
        """
        with self._lock.hold():
            rows = self.index.rows("SELECT name, image_id FROM tags ORDER BY name")
            doc = {"version": 1, "tags": {r[0]: r[1] for r in rows}}
            path = self.home / TAG_FILE
            tmp = path.with_name(f".{TAG_FILE}.tmp")
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(doc, f, indent=1, sort_keys=True)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except OSError as exc:
                log.warning("%s: cannot write the tag file: %s", path, exc.strerror)


def read_tag_file(home: Path) -> dict[str, str]:
    """The tags saved by ``save_tag_file`` (empty when absent or unreadable)."""
    try:
        doc = json.loads((home / TAG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    tags = doc.get("tags") if isinstance(doc, dict) else None
    if not isinstance(tags, dict):
        return {}
    return {
        str(name): image_id
        for name, image_id in tags.items()
        if isinstance(image_id, str) and is_digest(image_id)
    }
