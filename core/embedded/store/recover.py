"""Rebuilding a lost or damaged index from what the store holds on disk.

``lamina fsck --rebuild-index`` calls ``rebuild_index``. It never deletes anything: the
old index files are kept next to the new one (``index.db.lost-<time>``), and what cannot
be placed stays on disk, reported.

What can be recovered, and how:

* **layers**: each ``layers/<hex>/`` regenerates its tar from its tar-split, whose
  sha256 is the layer's diffID. Its parent comes from the image configs in
  ``blobs/`` (``rootfs.diff_ids`` give every prefix chain), else from the chainID rule
  itself (``sha256(parent + " " + diffID)``) tried against the layers already placed.
* **images**: every config whose whole chain was recovered, except those whose chain
  is a strict prefix of another recovered config's chain (intermediate build states,
  which the build cache held, not images). Tags come back from ``repositories.json``.
* **not recovered**: build cache records and build history (the next build re-runs
  and re-records what it needs).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina.core.digest import chain_ids, hex_of, is_digest, sha256_bytes
from lamina.core.embedded.store import Store
from lamina.core.embedded.store.images import parse_created, read_tag_file
from lamina.core.embedded.store.layers import measure, regenerated_digest
from lamina.core.embedded.store.lock import StoreLock
from lamina.core.errors import StoreError

log = logging.getLogger(__name__)

# Blobs larger than this are not image configs (real configs are a few kB).
MAX_CONFIG_BYTES = 16 << 20


@dataclass
class RebuildReport:
    """What ``rebuild_index`` recovered and what it could not.

    Attributes:
        kept_index: where the previous index files were moved (None if there was none).
        layers: layers recovered into the new index.
        images: images recovered.
        tags: tags restored from ``repositories.json``.
        unplaced: layer directories left on disk without a row, with the reason.
    """

    kept_index: str | None = None
    layers: int = 0
    images: int = 0
    tags: int = 0
    unplaced: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "kept_index": self.kept_index,
            "layers": self.layers,
            "images": self.images,
            "tags": self.tags,
            "unplaced": [{"path": p, "reason": r} for p, r in self.unplaced],
        }


@dataclass(frozen=True)
class _Layer:
    chain_id: str
    diff_id: str
    tar_size: int
    size: int
    disk: int
    mtime: float


@dataclass(frozen=True)
class _Config:
    digest: str
    chain: tuple[str, ...]
    created: float
    created_by: tuple[str, ...]
    mtime: float


def rebuild_index(home: Path) -> RebuildReport:
    """Moves the current index aside and builds a new one from layers and blobs on disk.

    Args:
        home: the store directory.

    Returns:
        What was recovered.

    Raises:
        StoreError: if the store cannot be read or the new index cannot be written.
    """
    home = Path(home)
    if not (home / "layers").is_dir():
        raise StoreError(f"{home}: not a lamina store (no layers/ directory)")
    report = RebuildReport()
    lock = StoreLock(home / "lock")
    with lock.hold(timeout=30):
        report.kept_index = _move_aside(home)
        layers = _read_layers(home, report)
        configs = _read_configs(home)
        store = Store(home, adopt_unindexed=True, lock=lock)
        try:
            placed = _place_layers(layers, configs, report)
            _record(store, layers, placed, configs, report)
        finally:
            store.close()
    return report


def _move_aside(home: Path) -> str | None:
    db = home / "index.db"
    if not db.exists():
        for suffix in ("-wal", "-shm"):
            (home / f"index.db{suffix}").unlink(missing_ok=True)
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    kept = home / f"index.db.lost-{stamp}"
    n = 1
    while kept.exists():
        n += 1
        kept = home / f"index.db.lost-{stamp}.{n}"
    for suffix in ("", "-wal", "-shm"):
        src = home / f"index.db{suffix}"
        if src.exists():
            os.replace(src, Path(f"{kept}{suffix}"))
    return str(kept)


def _read_layers(home: Path, report: RebuildReport) -> dict[str, _Layer]:
    """Every layer directory whose tar still regenerates, by chainID."""
    out: dict[str, _Layer] = {}
    with os.scandir(home / "layers") as entries:
        names = sorted(e.name for e in entries)
    for name in names:
        rel = f"layers/{name}"
        chain_id = "sha256:" + name
        if not is_digest(chain_id):
            report.unplaced.append((rel, "not a layer directory name"))
            continue
        root = home / "layers" / name
        try:
            diff_id, tar_size = regenerated_digest(root)
            sizes = measure(root / "diff")
            mtime = os.lstat(root).st_mtime
        except (StoreError, OSError) as exc:
            report.unplaced.append((rel, f"unreadable: {exc}"))
            continue
        out[chain_id] = _Layer(chain_id, diff_id, tar_size, sizes.size, sizes.disk, mtime)
    return out


def _read_configs(home: Path) -> list[_Config]:
    """Every blob that is an image config with a well-formed ``rootfs.diff_ids``."""
    out = []
    blobs = home / "blobs" / "sha256"
    try:
        with os.scandir(blobs) as entries:
            files = sorted((e.name, e.path) for e in entries if e.is_file(follow_symlinks=False))
    except FileNotFoundError:
        return []
    for name, path in files:
        digest = "sha256:" + name
        if not is_digest(digest):
            continue
        try:
            st = os.stat(path)
            if st.st_size > MAX_CONFIG_BYTES:
                continue
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            log.warning("%s: unreadable: %s", path, exc.strerror)
            continue
        if sha256_bytes(data) != digest:
            log.warning("%s: content does not match its name; ignored", path)
            continue
        try:
            doc = json.loads(data)
        except ValueError:
            continue
        config = _as_config(digest, doc, st.st_mtime)
        if config is not None:
            out.append(config)
    return out


def chains_named_by_configs(home: Path) -> set[str]:
    """Every chainID that some image config in ``blobs/`` stands on."""
    return {chain_id for config in _read_configs(home) for chain_id in config.chain}


def _as_config(digest: str, doc: Any, mtime: float) -> _Config | None:
    if not isinstance(doc, dict) or not isinstance(doc.get("rootfs"), dict):
        return None
    diff_ids = doc["rootfs"].get("diff_ids")
    if not isinstance(diff_ids, list) or not all(
        isinstance(d, str) and is_digest(d) for d in diff_ids
    ):
        return None
    history = doc.get("history")
    if not isinstance(history, list):
        history = []
    created_by = [
        str(h.get("created_by", ""))
        for h in history
        if isinstance(h, dict) and not h.get("empty_layer")
    ]
    created_by += [""] * (len(diff_ids) - len(created_by))
    return _Config(
        digest=digest,
        chain=tuple(chain_ids(diff_ids)),
        created=parse_created(doc.get("created")) or mtime,
        created_by=tuple(created_by[: len(diff_ids)]),
        mtime=mtime,
    )


def _place_layers(
    layers: dict[str, _Layer], configs: list[_Config], report: RebuildReport
) -> dict[str, tuple[str | None, str]]:
    """Parent and instruction of every layer that can be placed, by chainID."""
    placed: dict[str, tuple[str | None, str]] = {}
    for config in configs:
        for i, chain_id in enumerate(config.chain):
            if chain_id not in layers or chain_id in placed:
                continue
            parent = config.chain[i - 1] if i else None
            placed[chain_id] = (parent, config.created_by[i])
    # Layers no config names: a base layer is its own diffID; otherwise try the chainID
    # rule against what is placed, until nothing more can be placed.
    pending = [c for c in layers if c not in placed]
    progress = True
    while pending and progress:
        progress = False
        rest = []
        for chain_id in pending:
            layer = layers[chain_id]
            if layer.diff_id == chain_id:
                placed[chain_id] = (None, "")
                progress = True
                continue
            parent = next(
                (p for p in placed if chain_ids([p, layer.diff_id])[-1] == chain_id), None
            )
            if parent is None:
                rest.append(chain_id)
            else:
                placed[chain_id] = (parent, "")
                progress = True
        pending = rest
    for chain_id in pending:
        report.unplaced.append((f"layers/{hex_of(chain_id)}", "its parent layer is not on disk"))
    # A parent that is not on disk leaves its children unusable: drop them as well.
    usable: dict[str, tuple[str | None, str]] = {}
    for chain_id in sorted(placed, key=lambda c: _depth(c, placed)):
        parent = placed[chain_id][0]
        if parent is None or parent in usable:
            usable[chain_id] = placed[chain_id]
        else:
            report.unplaced.append(
                (f"layers/{hex_of(chain_id)}", f"its parent {parent} is not on disk")
            )
    return usable


def _depth(chain_id: str, placed: dict[str, tuple[str | None, str]]) -> int:
    depth = 0
    cur: str | None = chain_id
    seen: set[str] = set()
    while cur is not None and cur in placed and cur not in seen:
        seen.add(cur)
        cur = placed[cur][0]
        depth += 1
    return depth


def _record(
    store: Store,
    layers: dict[str, _Layer],
    placed: dict[str, tuple[str | None, str]],
    configs: list[_Config],
    report: RebuildReport,
) -> None:
    now = time.time()
    complete = [c for c in configs if all(x in placed for x in c.chain)]
    prefixes = {c.chain[:i] for c in complete for i in range(len(c.chain))}
    images = {c.digest: c for c in complete if c.chain not in prefixes}
    by_digest = {c.digest: c for c in complete}
    tags = {t: i for t, i in read_tag_file(store.home).items() if i in by_digest}
    # A tagged image is an image even when its chain is a prefix of another's (or empty).
    for image_id in tags.values():
        images[image_id] = by_digest[image_id]
    with store.index.transaction() as conn:
        for chain_id in sorted(placed, key=lambda c: _depth(c, placed)):
            layer = layers[chain_id]
            parent, created_by = placed[chain_id]
            conn.execute(
                "INSERT INTO layers (chain_id, diff_id, parent, size, tar_size, created,"
                " created_by, disk_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    chain_id,
                    layer.diff_id,
                    parent,
                    layer.size,
                    layer.tar_size,
                    layer.mtime,
                    created_by,
                    layer.disk,
                ),
            )
        for digest, config in sorted(images.items()):
            conn.execute(
                "INSERT INTO images (id, top_layer, created, added, parent)"
                " VALUES (?, ?, ?, ?, NULL)",
                (digest, config.chain[-1] if config.chain else None, config.created, now),
            )
        for name, image_id in sorted(tags.items()):
            conn.execute("INSERT INTO tags (name, image_id) VALUES (?, ?)", (name, image_id))
        # The files the recovered layers share, as their inodes say.
        store.files.rebuild(conn, {c: store.layers.diff_path(c) for c in placed})
    store.images.save_tag_file()
    report.layers = len(placed)
    report.images = len(images)
    report.tags = len(tags)
    log.info(
        "rebuilt the index: %d layers, %d images, %d tags", len(placed), len(images), len(tags)
    )
