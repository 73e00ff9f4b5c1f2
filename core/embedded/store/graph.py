"""Reading the reference graph (``accounting.graph.RefGraph``) out of the index."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from lamina.core.accounting.graph import CacheRow, ImageRow, LayerRow, RefGraph
from lamina.core.embedded.store.process import pid_alive

if TYPE_CHECKING:
    from lamina.core.embedded.store import Store


def load_graph(store: Store) -> RefGraph:
    """Reads every reference from the index in a few queries (no filesystem access).

    The queries share one snapshot, so a commit landing between two of them cannot make
    the graph disagree with itself. Call inside ``store.index.transaction()`` for a view
    that cannot change until the caller's write commits.

    Raises:
        StoreError: if the index cannot be read.
    """
    with store.index.snapshot() as conn:
        return _load_graph(conn, store.files.shared_by_layer(conn))


def _load_graph(conn: sqlite3.Connection, shared: dict[str, int]) -> RefGraph:
    layers = {
        r["chain_id"]: LayerRow(
            r["chain_id"],
            r["parent"],
            int(r["size"]),
            float(r["created"]),
            r["created_by"],
            # What the layer alone occupies: the files it shares with other layers
            # (dedup) are counted once, apart (``FilePool.shared``).
            int(r["disk_size"] or 0) - shared.get(r["chain_id"], 0),
        )
        for r in conn.execute(
            "SELECT chain_id, parent, size, created, created_by, disk_size FROM layers"
        )
    }
    tags: dict[str, list[str]] = {}
    for r in conn.execute("SELECT name, image_id FROM tags ORDER BY name"):
        tags.setdefault(r["image_id"], []).append(r["name"])
    images = {
        r["id"]: ImageRow(
            r["id"],
            r["top_layer"],
            float(r["created"]),
            float(r["added"]),
            r["parent"],
            tuple(tags.get(r["id"], ())),
        )
        for r in conn.execute("SELECT id, top_layer, created, added, parent FROM images")
    }
    cache = {
        r["key"]: CacheRow(
            r["key"],
            r["parent"],
            r["instruction"],
            r["result"],
            r["top_layer"],
            float(r["created"]),
            float(r["last_used"]),
            int(r["use_count"]),
        )
        for r in conn.execute(
            "SELECT key, parent, instruction, result, top_layer, created, last_used,"
            " use_count FROM cache"
        )
    }
    live_builds = {
        int(r["id"]): float(r["started"])
        for r in conn.execute("SELECT id, started, pid FROM builds WHERE status = 'running'")
        if r["pid"] is not None and pid_alive(int(r["pid"]))
    }
    busy_layers: set[str] = set()
    busy_cache: set[str] = set()
    unknown_base = False
    for build_id in live_builds:
        steps = conn.execute(
            "SELECT layer, cache_key FROM build_steps WHERE build_id = ?", (build_id,)
        ).fetchall()
        keys = [r["cache_key"] for r in steps if r["cache_key"]]
        if not keys:
            unknown_base = True
        busy_cache.update(keys)
        busy_layers.update(r["layer"] for r in steps if r["layer"])
    busy_images: set[str] = set()
    for key in busy_cache:
        entry = cache.get(key)
        if entry is not None:
            busy_images.add(entry.parent)
            if entry.top_layer:
                busy_layers.add(entry.top_layer)
    return RefGraph(
        layers,
        images,
        cache,
        min(live_builds.values()) if live_builds else None,
        frozenset(busy_layers),
        frozenset(busy_cache),
        frozenset(busy_images & set(images)),
        unknown_base,
    )
