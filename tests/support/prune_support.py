"""A small world of real images, layers and cache entries for the prune and GC tests.

Everything goes through the store API (``commit_dir``, ``put_config``, ``add_image``,
``tag``) and, for cache rows, through ``index.transaction()`` as the builder records
them. Tests import it as ``prune_support`` (``tests/support`` is on pytest's ``pythonpath``).
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lamina.core.embedded.store import Store


def layer(
    store: Store, parent: str | None, files: dict[str, bytes], created_by: str = "RUN x"
) -> str:
    """Commits a real layer holding ``files``; returns its chainID."""
    with store.tmpdir("test") as work:
        src = work / "upper"
        src.mkdir()
        for rel, data in files.items():
            path = src / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return store.layers.commit_dir(src, parent, created_by).chain_id


def stack(store: Store, sizes: list[int], seed: str, parent: str | None = None) -> list[str]:
    """A chain of layers of roughly the given sizes (distinct content); chainIDs base first."""
    out: list[str] = []
    for i, size in enumerate(sizes):
        unit = f"{seed}-{i}-".encode()
        data = (unit * (size // len(unit) + 1))[:size]
        parent = layer(store, parent, {f"data/{seed}-{i}": data}, f"RUN make {seed} {i}")
        out.append(parent)
    return out


def image(
    store: Store,
    chain: list[str],
    tag: str | None = None,
    labels: dict[str, str] | None = None,
    created: float | None = None,
    parent: str | None = None,
    nonce: str = "",
) -> str:
    """Records an image over the top of ``chain`` (a chainID list, base first)."""
    diff_ids = [store.layers.get(c).diff_id for c in store_chain(store, chain[-1])] if chain else []
    when = datetime.fromtimestamp(created if created is not None else time.time(), timezone.utc)
    config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "created": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "config": {"Labels": labels or {}, "Env": [f"NONCE={nonce}"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "RUN x"} for _ in diff_ids],
    }
    digest = store.images.put_config(config)
    store.images.add_image(digest, parent=parent)
    if tag:
        store.images.tag(digest, tag)
    return digest


def store_chain(store: Store, top: str) -> list[str]:
    return [info.chain_id for info in store.layers.chain(top)]


def cache_entry(
    store: Store,
    key: str,
    top: str | None,
    parent: str = "scratch",
    result: str | None = None,
    last_used: float | None = None,
    use_count: int = 0,
    instruction: str = "RUN x",
) -> str:
    """Records a cache row as the builder does; ``result`` defaults to a stored config."""
    if result is None:
        result = store.images.put_config(
            {"cache": key, "rootfs": {"type": "layers", "diff_ids": []}}
        )
    now = time.time() if last_used is None else last_used
    with store.index.transaction() as conn:
        conn.execute(
            "INSERT INTO cache (key, parent, instruction, inputs, result, top_layer, created,"
            " last_used, use_count, build_id) VALUES (?, ?, ?, '{}', ?, ?, ?, ?, ?, NULL)",
            (key, parent, instruction, result, top, now, now, use_count),
        )
    return key


def key(n: int | str) -> str:
    """A well-formed cache key."""
    return "sha256:" + f"{n}".encode().hex().ljust(64, "0")[:64]


def disk_bytes_of_store(home: Path) -> int:
    """A real walk of everything but the index: st_blocks * 512, each inode once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for sub in ("layers", "blobs", "tmp"):
        for dirpath, dirnames, filenames in os.walk(home / sub):
            for name in dirnames + filenames:
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def assert_tagged_intact(store: Store) -> None:
    """Every tagged image's config opens and every layer of it exists and verifies."""
    conn = store.index.connection()
    for row in conn.execute("SELECT DISTINCT image_id FROM tags"):
        config = store.images.get_config(row["image_id"])
        for chain_id in store.images.chain_of(config):
            assert store.layers.diff_path(chain_id).is_dir(), chain_id
            assert store.layers.verify(chain_id), chain_id
