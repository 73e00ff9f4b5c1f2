"""A build cache shared through a registry: ``--cache-to`` and ``--cache-from
type=registry``, for the embedded builder.

Export: after a build succeeds, the cache entries of its steps (``mode=min``: the
target stage's steps; ``mode=max``: every stage's) go to the registry as one OCI
artifact (:mod:`lamina.core.registry.cache`): the layer blobs their results stand on
(uploaded only where the registry lacks them, as a push does), the result configs and
the keys, in one manifest under the ref's tag.

Import: before the build's preflight each ``--cache-from`` ref's manifest and cache
config are read (never a layer). A ref that cannot be read (malformed, registry down,
refused, not a lamina cache) is one warning in the registry's words, and the build goes
on without it, as BuildKit does. The cache lookup consults the imported records after
the store's own entries; a remote hit carries its result config, so the build goes on
with its state and key without any layer.

**When a remote hit's layers move.** Deciding a step never fetches. A state reached by
a remote hit is *materialized* (every layer of its chain the store lacks fetched,
verified and installed, and the entries of the remote hits in it recorded in the local
cache) only when its files are needed:

* a later step of the stage misses and is executed on it (the executor works on its
  files), or reads them to prepare (``COPY --chown`` resolves names in it);
* another stage copies from it or mounts it (``COPY --from``, ``RUN --mount=from``:
  the copied content is part of the key);
* it is the build's final state (the image must have its layers).

So a run of remote hits costs nothing until its last state is used, and then only
the layers of that state's chain (which holds the earlier hits' layers beneath it); a
stage whose result no needed step reads (its consumer hit too) moves no byte, and a
hit whose stage is superseded before the end fetches nothing. Layers the store already
has under the same chain are never fetched.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lamina.core.digest import chain_ids, short
from lamina.core.embedded.builder.records import BuildLog
from lamina.core.embedded.store import Store
from lamina.core.embedded.store.cache import CacheHit
from lamina.core.errors import BuildError, LaminaError, RegistryError, UsageError
from lamina.core.events import BuildFailed, BuildFinished
from lamina.core.model import CacheExport, StepRecord
from lamina.core.registry.cache import (
    MAX_CACHE_CONFIG_BYTES,
    CacheConfig,
    CacheLayer,
    CacheRecord,
    cache_config_descriptor,
    encode_artifact,
    encode_config,
    parse_config,
)
from lamina.core.registry.manifests import MT_OCI_LAYER_GZIP, MT_OCI_MANIFEST, Descriptor
from lamina.core.registry.reference import Reference, parse_reference

if TYPE_CHECKING:
    from lamina.core.embedded.pull import WantedLayer

# The registry client (urllib3, ssl, http.client) is imported where a cache is read or
# written: a build without --cache-from/--cache-to never loads it.

log = logging.getLogger(__name__)

MODES = ("min", "max")


@dataclass(frozen=True)
class RemoteHit(CacheHit):
    """A hit in an imported cache: the entry, its result config and where it came from.

    Attributes:
        ref: the ``--cache-from`` ref as given.
        config: the result config's bytes (its digest is ``result``).
    """

    ref: str = ""
    config: bytes = b""

    def doc(self) -> dict[str, Any]:
        """The result config, parsed (a fresh copy)."""
        out: dict[str, Any] = json.loads(self.config)
        return out


@dataclass
class _Source:
    text: str
    ref: Reference
    records: dict[str, CacheRecord]
    configs: dict[str, bytes]
    layers: dict[str, Descriptor]


@dataclass
class _Pending:
    hit: RemoteHit
    parent: str | None
    instruction: str
    inputs: dict[str, Any] = field(default_factory=dict)


def load_source(text: str) -> _Source:
    """Reads one ``--cache-from`` ref's manifest and cache config (no layer).

    Raises:
        UsageError: a malformed reference.
        RegistryError: the registry failed or refused, or the ref is no lamina cache.
    """
    from lamina.core.embedded.pull import client_for

    ref = parse_reference(text)
    where = str(ref)
    with client_for(ref) as client:
        # Every manifest type: given only the OCI one, distribution rewrites a Docker
        # image's manifest to schema 1, which would hide what the ref really holds.
        fetched = client.get_manifest(ref.path, ref.ref)
        desc = cache_config_descriptor(fetched.data, where)
        if desc.size > MAX_CACHE_CONFIG_BYTES:
            raise RegistryError(f"{where}: the cache config is larger than allowed")
        config = parse_config(client.get_blob(ref.path, desc, MAX_CACHE_CONFIG_BYTES), where)
    return _Source(
        text,
        ref,
        {r.key: r for r in config.records},
        config.configs,
        {layer.diff_id: layer.blob for layer in config.layers},
    )


class RemoteCache:
    """The imported caches of one build, consulted after the store's own entries.

    Args:
        sources: the caches read, in ``--cache-from`` order (the first that has a key
            answers).
    """

    def __init__(self, sources: list[_Source]) -> None:
        self.sources = sources
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, refs: Iterable[str]) -> RemoteCache:
        """Reads every ref; one that cannot be read is a warning, never a failure."""
        sources = []
        for text in refs:
            try:
                sources.append(load_source(text))
            except LaminaError as exc:
                # The registry's own words, which name the ref already when it got that far.
                words = str(exc) if str(exc).startswith(str(_shown(text))) else f"{text}: {exc}"
                log.warning("--cache-from %s; building without it", words)
        return cls(sources)

    def lookup(self, key: str, builder: str) -> RemoteHit | None:
        """The imported record of ``key`` made under ``builder``'s rules, or None."""
        for source in self.sources:
            record = source.records.get(key)
            if record is None or record.builder != builder:
                continue
            config = source.configs.get(record.result)
            if config is None:
                continue
            return RemoteHit(record.result, record.top_layer, source.text, config)
        return None

    def note(
        self,
        hit: RemoteHit,
        key: str,
        parent: str | None,
        instruction: str,
        inputs: Mapping[str, Any],
    ) -> None:
        """Remembers what the local entry of a remote hit is, for when its layers land."""
        with self._lock:
            self._pending[key] = _Pending(hit, parent, instruction, copy.deepcopy(dict(inputs)))

    def materialize(
        self,
        store: Store,
        doc: Mapping[str, Any],
        build_id: int,
        cancel: threading.Event | None = None,
    ) -> None:
        """Makes sure the store has every layer of the state ``doc`` describes.

        The layers the store lacks are fetched from the imported caches (each blob
        verified, then installed under the store lock), and the remote hits whose
        results now stand on stored layers become local cache entries.

        Raises:
            BuildError: a layer neither the store nor any imported cache has.
            RegistryError, ArchiveError: the fetch failed (the store is as it was).
            TransferCancelled: ``cancel`` was set.
        """
        diff_ids = list((doc.get("rootfs") or {}).get("diff_ids") or [])
        chains = chain_ids(diff_ids)
        with self._lock:
            if chains and not store.layers.exists(chains[-1]):
                self._fetch(store, doc, diff_ids, chains, cancel)
            self._record(store, build_id)

    def _fetch(
        self,
        store: Store,
        doc: Mapping[str, Any],
        diff_ids: list[str],
        chains: list[str],
        cancel: threading.Event | None,
    ) -> None:
        from lamina.core.embedded.pull import (
            WantedLayer,
            client_for,
            fetch_layers,
            install_layers,
        )

        groups: dict[int, list[WantedLayer]] = {}
        for i, chain in enumerate(chains):
            if store.layers.exists(chain):
                continue
            for n, source in enumerate(self.sources):
                blob = source.layers.get(diff_ids[i])
                if blob is not None:
                    groups.setdefault(n, []).append(WantedLayer(i, blob, diff_ids[i]))
                    break
            else:
                raise BuildError(
                    f"layer {short(diff_ids[i])} is in neither the store nor the remote cache"
                )
        staged = {}
        with store.tmpdir("cache-from") as work:
            for n, wanted in groups.items():
                source = self.sources[n]
                log.info("fetching %d layer(s) from the cache %s", len(wanted), source.text)
                with client_for(source.ref) as client:
                    where = f"--cache-from {source.text}"
                    for item in fetch_layers(
                        store, client, source.ref.path, wanted, work, where, cancel
                    ):
                        if isinstance(item, dict):
                            staged.update(item)
            with store.lock():
                install_layers(store, chains, staged, _created_by(doc, len(chains)))

    def _record(self, store: Store, build_id: int) -> None:
        for key, pending in list(self._pending.items()):
            hit = pending.hit
            if pending.parent is None:
                del self._pending[key]
                continue
            if hit.top_layer is not None and not store.layers.exists(hit.top_layer):
                continue
            store.images.put_blob(hit.config)
            store.cache.record(
                key,
                pending.parent,
                pending.instruction,
                pending.inputs,
                CacheHit(hit.result, hit.top_layer),
                build_id,
            )
            del self._pending[key]


def _shown(text: str) -> str:
    """The ref as the registry's errors name it (``text`` itself when malformed)."""
    try:
        return str(parse_reference(text))
    except LaminaError:
        return text


def _created_by(doc: Mapping[str, Any], count: int) -> list[str]:
    history = doc.get("history")
    out = [
        str(entry.get("created_by") or "")
        for entry in (history if isinstance(history, list) else [])
        if isinstance(entry, dict) and not entry.get("empty_layer")
    ]
    return out if len(out) == count else [""] * count


# -- export -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Exported:
    stage: int
    index: int
    instruction: str
    key: str


class KeyedBuildLog(BuildLog):
    """A build's record that also keeps each cached step's key, for ``--cache-to``."""

    def __init__(self, store: Store, build_id: int = 0) -> None:
        super().__init__(store, build_id)
        self.steps: list[_Exported] = []

    def step(self, record: StepRecord, key: str | None) -> None:
        """Records the step, and keeps its key when it was looked up by one."""
        if key is not None and record.cached is not None:
            with self._lock:
                self.steps.append(_Exported(record.stage, record.index, record.instruction, key))
        super().step(record, key)


def export_cache(
    store: Store,
    spec: CacheExport,
    steps: list[_Exported],
    target: int,
    builder: str,
    cancel: threading.Event | None = None,
) -> str:
    """Writes the build cache of ``steps`` to ``spec.ref``; returns the manifest digest.

    Raises:
        UsageError: a malformed ref, a digest ref, or an unknown mode.
        RegistryError: the registry failed or refused.
    """
    if spec.mode not in MODES:
        raise UsageError(f"--cache-to mode={spec.mode}: expected min or max")
    ref = parse_reference(spec.ref)
    if ref.digest:
        raise UsageError(f"--cache-to {spec.ref}: name a tag, not a digest")
    records: list[CacheRecord] = []
    configs: dict[str, bytes] = {}
    chains: dict[str, str] = {}
    seen: set[str] = set()
    for s in steps:
        if (spec.mode == "min" and s.stage != target) or s.key in seen:
            continue
        seen.add(s.key)
        hit = store.cache.lookup(s.key)
        if hit is None or not store.images.has_blob(hit.result):
            continue
        data = store.images.get_blob(hit.result)
        diff_ids = list((json.loads(data).get("rootfs") or {}).get("diff_ids") or [])
        pairs = list(zip(diff_ids, chain_ids(diff_ids), strict=True))
        if not all(store.layers.exists(chain) for _, chain in pairs):
            continue  # pruned meanwhile: nothing another store could use
        chains.update(pairs)
        configs[hit.result] = data
        records.append(
            CacheRecord(s.key, hit.result, hit.top_layer, builder, s.stage, s.index, s.instruction)
        )
    from lamina.core.embedded.pull import client_for, upload_layers

    descriptors: dict[str, Descriptor] = {}
    with client_for(ref) as client, store.tmpdir("cache-to") as work:
        pairs_ = list(chains.items())
        for _ in upload_layers(store, client, ref, pairs_, descriptors, work, cancel):
            pass
        # The same gzip bytes, named with the OCI type an OCI manifest lists.
        layers = [
            CacheLayer(Descriptor(MT_OCI_LAYER_GZIP, d.digest, d.size), diff_id)
            for diff_id, d in descriptors.items()
        ]
        layers.sort(key=lambda layer: layer.diff_id)
        blob = encode_config(CacheConfig(tuple(records), configs, tuple(layers)))
        manifest = encode_artifact(blob, layers)
        config_digest = json.loads(manifest)["config"]["digest"]
        if not client.blob_exists(ref.path, config_digest):
            client.put_blob_bytes(ref.path, blob)
        digest = client.put_manifest(ref.path, ref.ref, manifest, MT_OCI_MANIFEST)
    log.info("exported %d cache records to %s as %s", len(records), ref, digest)
    return digest


def finish_export(
    store: Store,
    spec: CacheExport,
    build_log: BuildLog,
    target: int,
    builder: str,
    finished: BuildFinished,
    cancel: threading.Event | None = None,
) -> BuildFinished | BuildFailed:
    """Exports the finished build's cache; a failure fails the build, as BuildKit's
    does, unless ``ignore-error=true`` makes it a warning (the image is built either
    way)."""
    steps = build_log.steps if isinstance(build_log, KeyedBuildLog) else []
    try:
        export_cache(store, spec, steps, target, builder, cancel)
    except LaminaError as exc:
        if cancel is not None and cancel.is_set():
            return BuildFailed(finished.build_id, "build cancelled", cancelled=True)
        image = short(finished.image) if finished.image else "the image"
        message = f"--cache-to {spec.ref}: {exc} ({image} is built; its cache is not exported)"
        if spec.ignore_error:
            log.warning("%s", message)
            return finished
        # The record says what the user was told: failed, with the image that was built.
        store.builds.finish(finished.build_id, "failed", finished.image, message)
        return BuildFailed(finished.build_id, message)
    return finished


__all__ = [
    "KeyedBuildLog",
    "RemoteCache",
    "RemoteHit",
    "export_cache",
    "finish_export",
    "load_source",
]
