"""Consistency check and safe repair of a store (``lamina fsck``).

What is checked:

* every indexed layer has its directory (``diff/`` and the tar-split), and its parent
  chain resolves without a loop; with ``deep``, its regenerated tar still hashes to its
  diffID (``store.layers.verify``);
* every tag names an image; every image's config exists, parses, and its
  ``rootfs.diff_ids`` give exactly the chain its ``top_layer`` stands on;
* every cache entry's layer and configs (``result``, and ``parent`` when it is a config
  digest, not the key of the step before as under BuildKit's rules) exist;
* leftovers of interrupted work (``gc.find_leftovers``) and builds recorded as running
  whose process is gone, and cache mounts such a build left marked in use (which no
  prune would ever remove).

``repair`` fixes only what is safe: it sweeps leftovers, drops cache rows whose layers
or configs are gone (with a ``pruned_cache`` tombstone), drops layer rows whose
directory is gone when no image needs them, marks interrupted builds failed and clears
the in-use marks they left on cache mounts. It never
deletes an image's data; such problems stay reported and make the exit status 1.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from lamina.core.accounting.graph import (
    Liveness,
    RefGraph,
)
from lamina.core.accounting.plans import (
    DEFAULT_GRACE,
    Leftover,
)
from lamina.core.digest import chain_ids, hex_of, is_digest
from lamina.core.embedded.store.graph import load_graph
from lamina.core.embedded.trash import (
    find_leftovers,
    remove_tree,
    sweep,
    to_trash,
    unindexed_layer_dirs,
)
from lamina.core.errors import LaminaError, StoreError
from lamina.core.model import FsckProblem as Problem
from lamina.core.model import FsckReport

if TYPE_CHECKING:
    from lamina.core.embedded.store import Store
    from lamina.core.embedded.store.dedup import Released

log = logging.getLogger(__name__)


def fsck(
    store: Store, deep: bool = False, repair: bool = False, grace: float = DEFAULT_GRACE
) -> FsckReport:
    """Checks the store and, with ``repair``, fixes what is safe to fix.

    Args:
        store: the store.
        deep: also rehash every layer (reads all layer data).
        repair: sweep leftovers and drop index rows that point at nothing.
        grace: seconds during which unreferenced fresh data is not called a leftover.

    Returns:
        The report; ``report.ok`` is False when problems remain.

    Raises:
        StoreError: the index file is damaged (nothing is checked or repaired: a
            damaged index would make live layers look unreferenced).
    """
    damaged = store.index.damaged()
    if damaged is not None:
        raise damaged
    graph = load_graph(store)
    problems: list[Problem] = []
    bad_layers = _check_layers(store, graph, deep, problems)
    _check_images(store, graph, bad_layers, problems)
    broken_cache = _check_cache(store, graph, bad_layers, problems)
    leftovers = find_leftovers(store, graph, grace)
    for left in leftovers:
        # Debris of interrupted work (a kill, a crash) that the next prune sweeps: worth
        # knowing, never damage.
        problems.append(
            Problem(
                "leftover",
                left.path,
                f"{left.path}: {left.reason} ({left.bytes} bytes)",
                True,
                note=True,
            )
        )
    for name in unindexed_layer_dirs(store)[1]:
        problems.append(
            Problem(
                "unindexed-layer",
                f"layers/{name}",
                f"layers/{name} has no index row but an image config stands on it "
                "(`lamina fsck --rebuild-index` recovers it)",
                False,
            )
        )
    # What opening the store recovered is told once, by the first check that follows.
    recovered, store.recovered_builds = store.recovered_builds, []
    for build_id, pid in recovered:
        problems.append(
            Problem(
                "interrupted-build",
                str(build_id),
                f"build {build_id} was interrupted (process {pid} is gone); recorded as failed",
                True,
                repaired=True,
                note=True,
            )
        )
    builds = store.builds.interrupted()
    for build_id, pid in builds:
        problems.append(
            Problem(
                "interrupted-build",
                str(build_id),
                f"build {build_id} is recorded as running but process {pid} is gone",
                True,
                note=True,
            )
        )
    for mount in store.cache_mounts.stuck():
        problems.append(
            Problem(
                "stuck-cache-mount",
                mount.id,
                f"cache mount {mount.mount_id} is marked in use, but no running build uses it"
                " (a build was interrupted); `lamina fsck --repair` clears the mark",
                True,
                note=True,
            )
        )
    if repair:
        problems = _repair(store, problems, broken_cache, bad_layers, leftovers, builds)
    return FsckReport(
        problems=tuple(problems),
        layers=len(graph.layers),
        images=len(graph.images),
        cache=len(graph.cache),
        deep=deep,
        repaired=repair,
    )


def _check_layers(store: Store, graph: RefGraph, deep: bool, problems: list[Problem]) -> set[str]:
    """Layers whose data is missing or damaged (their users are reported separately)."""
    bad: set[str] = set()
    for chain_id, row in sorted(graph.layers.items()):
        if row.parent is not None and row.parent not in graph.layers:
            problems.append(
                Problem(
                    "broken-parent",
                    chain_id,
                    f"layer {chain_id}: parent {row.parent} is not in the index",
                    False,
                )
            )
            bad.add(chain_id)
        try:
            graph.chain(chain_id)
        except StoreError as exc:
            problems.append(Problem("broken-parent", chain_id, str(exc), False))
            bad.add(chain_id)
            continue
        root = store.layers.dir_path(chain_id)
        if not (root / "diff").is_dir() or not (root / "tar-split.json.gz").is_file():
            problems.append(
                Problem(
                    "missing-layer-dir",
                    chain_id,
                    f"layer {chain_id}: layers/{hex_of(chain_id)} is missing or incomplete",
                    False,
                )
            )
            bad.add(chain_id)
            continue
        if deep and not store.layers.verify(chain_id):
            problems.append(
                Problem(
                    "corrupt-layer",
                    chain_id,
                    f"layer {chain_id}: contents no longer match its diffID",
                    False,
                )
            )
            bad.add(chain_id)
    # A layer is unusable when anything below it is.
    unusable = set(bad)
    for chain_id in graph.layers:
        try:
            if any(c in bad for c in graph.chain(chain_id)):
                unusable.add(chain_id)
        except StoreError:
            unusable.add(chain_id)
    return unusable


def _check_images(
    store: Store, graph: RefGraph, bad_layers: set[str], problems: list[Problem]
) -> None:
    for image_id, image in sorted(graph.images.items()):
        try:
            config = store.images.get_config(image_id)
        except LaminaError as exc:
            kind = "missing-config" if "no such blob" in str(exc) else "bad-config"
            problems.append(Problem(kind, image_id, f"image {image_id}: config: {exc}", False))
            continue
        problem = store.images.config_problem(image_id)
        if problem is not None:
            # Readers get a normalised view, but Docker could not load this config, and
            # the fields left out of that view are lost to inspect and FROM.
            problems.append(
                Problem("bad-config", image_id, f"image {image_id}: config: {problem}", False)
            )
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if not isinstance(diff_ids, list) or not all(is_digest(d) for d in diff_ids):
            if problem is None:
                problems.append(
                    Problem(
                        "bad-config",
                        image_id,
                        f"image {image_id}: malformed rootfs.diff_ids",
                        False,
                    )
                )
            continue
        expected = chain_ids(diff_ids)
        if image.top_layer is not None and image.top_layer not in graph.layers:
            problems.append(
                Problem(
                    "missing-layer",
                    image_id,
                    f"image {image_id}: layer {image.top_layer} is not in the index",
                    False,
                )
            )
            continue
        try:
            actual = list(reversed(graph.chain(image.top_layer)))
        except StoreError:
            continue  # reported with the layer
        if actual != expected:
            problems.append(
                Problem(
                    "chain-mismatch",
                    image_id,
                    f"image {image_id}: its layers do not match its config's diff_ids",
                    False,
                )
            )
            continue
        broken = [c for c in actual if c in bad_layers]
        if broken:
            problems.append(
                Problem(
                    "missing-layer",
                    image_id,
                    f"image {image_id}: layer {broken[0]} is missing or damaged",
                    False,
                )
            )


def _check_cache(
    store: Store, graph: RefGraph, bad_layers: set[str], problems: list[Problem]
) -> set[str]:
    """Cache keys whose layer or configs are gone (safe to drop: a miss rebuilds them)."""
    broken: set[str] = set()
    on_keys = store.cache.chained_on_keys()
    for key, entry in sorted(graph.cache.items()):
        if entry.top_layer is not None and (
            entry.top_layer not in graph.layers or entry.top_layer in bad_layers
        ):
            problems.append(
                Problem(
                    "cache-missing-layer",
                    key,
                    f"cache entry {key}: layer {entry.top_layer} is missing or damaged",
                    True,
                )
            )
            broken.add(key)
            continue
        # Under BuildKit's rules a parent is mostly the step before's key, no config.
        configs = (entry.result,) if key in on_keys else (entry.result, entry.parent)
        for digest in configs:
            if is_digest(digest) and not store.images.has_blob(digest):
                problems.append(
                    Problem(
                        "cache-missing-config",
                        key,
                        f"cache entry {key}: config {digest} is missing",
                        True,
                    )
                )
                broken.add(key)
                break
    return broken


def _repair(
    store: Store,
    problems: list[Problem],
    broken_cache: set[str],
    bad_layers: set[str],
    leftovers: list[Leftover],
    builds: list[tuple[int, int | None]],
) -> list[Problem]:
    fixed: set[tuple[str, str]] = set()
    now = time.time()
    trash = []
    with store.lock():
        dropped, freed = _repair_rows(store, problems, broken_cache, bad_layers, builds, fixed, now)
        # Committed: the files only the dropped layers held lose their pool names.
        store.files.unlink(freed)
        stuck = [p.subject for p in problems if p.kind == "stuck-cache-mount"]
        store.cache_mounts.reset_in_use(stuck)
        fixed.update(("stuck-cache-mount", ident) for ident in stuck)
        # Unused layers that stood on a missing one lost their rows too; their
        # directories go the way prune removes them.
        for chain_id in sorted(dropped):
            moved = to_trash(store, store.layers.dir_path(chain_id))
            if moved is not None:
                trash.append(moved)
    for path in trash:
        remove_tree(path)
    for left in sweep(store, leftovers):
        fixed.add(("leftover", left.path))
    out: list[Problem] = []
    for p in problems:
        if (p.kind, p.subject) in fixed:
            out.append(dataclasses.replace(p, repaired=True))
        else:
            out.append(p)
    log.info("fsck repaired %d of %d problems", sum(p.repaired for p in out), len(out))
    return out


def _repair_rows(
    store: Store,
    problems: list[Problem],
    broken_cache: set[str],
    bad_layers: set[str],
    builds: list[tuple[int, int | None]],
    fixed: set[tuple[str, str]],
    now: float,
) -> tuple[set[str], Released]:
    """Drops the rows that point at nothing, in one transaction; returns dropped layers
    and the shared files no layer holds any more."""
    with store.index.transaction("repair"):
        graph = load_graph(store)
        entries = [graph.cache[k] for k in sorted(broken_cache) if k in graph.cache]
        store.cache.drop(entries, now)
        for entry in entries:
            fixed.add(("cache-missing-layer", entry.key))
            fixed.add(("cache-missing-config", entry.key))
        # Layer rows whose directory is gone go too once nothing needs them; a row with
        # no data is not a layer anyone can use, and dropping it is what lets the next
        # build recreate the layer.
        remaining_cache = [k for k in graph.cache if k not in broken_cache]
        live = Liveness(graph, cache=remaining_cache)
        missing = [
            p.subject
            for p in problems
            if p.kind == "missing-layer-dir" and not live.live(p.subject)
        ]
        children: dict[str, int] = {}
        for row in graph.layers.values():
            if row.parent is not None:
                children[row.parent] = children.get(row.parent, 0) + 1
        dropped: list[str] = []  # children before parents, as the rows reference them
        for chain_id in _top_down(graph, missing, bad_layers, live):
            if children.get(chain_id, 0) > 0:
                continue
            dropped.append(chain_id)
            parent = graph.layers[chain_id].parent
            if parent is not None:
                children[parent] -= 1
        freed = store.layers.forget(dropped)
        for chain_id in dropped:
            fixed.add(("missing-layer-dir", chain_id))
        store.builds.mark_interrupted([build_id for build_id, _pid in builds], now)
        for build_id, _pid in builds:
            fixed.add(("interrupted-build", str(build_id)))
    return set(dropped), freed


def _top_down(graph: RefGraph, chain_ids_: list[str], bad: set[str], live: Liveness) -> list[str]:
    """Missing layers plus unused layers above them, children before parents."""
    targets = set(chain_ids_)
    # Unused layers standing on a missing one are unusable too; include them.
    for chain_id in graph.layers:
        if chain_id in bad and not live.live(chain_id):
            targets.add(chain_id)
    depth = {c: len(graph.chain(c)) for c in targets}
    return sorted(targets, key=lambda c: (-depth[c], c))
