"""``DockerEngine``: the engine Protocol over a real Docker Engine.

Images, tags and history come from the Engine API; the layer graph is rebuilt from each
image's ``RootFS.Layers`` (diffIDs) turned into chainIDs, so a layer shared by two
images is one node exactly as in the embedded store. Layer sizes are the per-layer
``DiffSize`` Docker reports in an image's history. A layer's file changes are read only
when asked for, from the image's saved tar stream (``docker_save``).

Builds use the classic builder (``docker_build``); disk usage and prune plans reuse
lamina's own accounting over the same records, and the differences with Docker's own
numbers are stated in ``DOCKER_DIFFERENCES``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamina.core.digest import chain_ids, is_digest
from lamina.core.docker import client as docker_client
from lamina.core.docker.client import call
from lamina.core.docker.save import ChunkReader, changes, read_layers
from lamina.core.errors import NotFound, UsageError
from lamina.core.events import BuildEvent
from lamina.core.model import (
    BuildRecord,
    BuildRequest,
    FileChange,
    HistoryEntry,
    ImageSummary,
    LayerInfo,
)

if TYPE_CHECKING:
    from lamina.core.accounting.dive import Analysis
    from lamina.core.accounting.plans import (
        PrunePlan,
        PruneRequest,
        PruneResult,
    )
    from lamina.core.accounting.usage import DiskUsage

log = logging.getLogger(__name__)

# Metadata instructions: the classic builder writes them as "#(nop) X", BuildKit as "X";
# neither gives them a layer (WORKDIR aside, see _empty_layers).
_METADATA = (
    "ENV", "LABEL", "CMD", "ENTRYPOINT", "EXPOSE", "VOLUME", "USER", "ARG", "SHELL",
    "STOPSIGNAL", "HEALTHCHECK", "ONBUILD", "MAINTAINER",
)  # fmt: skip


def parse_time(value: str | float | None) -> float:
    """Docker's RFC 3339 timestamps (nanoseconds, ``Z``) or unix seconds as unix time."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Python parses at most microseconds: trim Go's nanoseconds.
    if "." in text:
        head, _, rest = text.partition(".")
        frac = ""
        while rest and rest[0].isdigit():
            frac, rest = frac + rest[0], rest[1:]
        text = f"{head}.{frac[:6].ljust(6, '0')}{rest}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def _tags(repo_tags: list[str] | None) -> tuple[str, ...]:
    return tuple(sorted(t for t in repo_tags or () if t and t != "<none>:<none>"))


def _looks_empty(created_by: str, size: int) -> bool:
    if size:
        return False
    text = created_by.strip()
    if "#(nop)" in text:
        after = text.split("#(nop)", 1)[1].strip()
        return not after.startswith(("COPY", "ADD", "WORKDIR"))
    word = text.split(" ", 1)[0].upper() if text else ""
    return word in _METADATA


class DockerEngine:
    """The engine Protocol over a Docker Engine (``DOCKER_HOST`` and TLS variables).

    Args:
        client: an already connected ``docker.DockerClient`` (tests, the app); by default
            one is made from the environment by :func:`docker_client.connect`.
        min_api: the oldest API version accepted.
        home: where lamina keeps its own records of Docker builds (default:
            ``$LAMINA_HOME/docker``).

    Raises:
        EngineUnavailable: Docker cannot be reached or used (one line, says why).
    """

    name = "docker"

    def __init__(
        self,
        client: Any | None = None,
        min_api: str = docker_client.MIN_API_VERSION,
        home: Path | None = None,
    ) -> None:
        self._client = client if client is not None else docker_client.connect(min_api=min_api)
        self._lock = threading.Lock()
        # Image IDs are content addresses, so what was read about one never changes.
        self._history_cache: dict[str, list[dict[str, Any]]] = {}
        self._inspect_cache: dict[str, dict[str, Any]] = {}
        self._changes_cache: dict[str, list[FileChange]] = {}
        self._home = home

    @property
    def client(self) -> Any:
        """The ``docker.DockerClient`` in use."""
        return self._client

    @property
    def api(self) -> Any:
        """The low-level ``docker.APIClient``."""
        return self._client.api

    # -- reading ---------------------------------------------------------------------

    def _inspect_id(self, image_id: str) -> dict[str, Any]:
        with self._lock:
            cached = self._inspect_cache.get(image_id)
        if cached is not None:
            return cached
        data: dict[str, Any] = call(
            f"inspecting image {image_id}", self.api.inspect_image, image_id
        )
        with self._lock:
            self._inspect_cache[data["Id"]] = data
        return data

    def _resolve(self, ref: str) -> dict[str, Any]:
        if not ref:
            raise UsageError("an image reference is required")
        try:
            data: dict[str, Any] = call(f"image {ref}", self.api.inspect_image, ref)
        except NotFound as exc:
            raise NotFound(f"no such image: {ref}") from exc
        return data

    def _raw_history(self, image_id: str) -> list[dict[str, Any]]:
        """Docker's history for an image, oldest first."""
        with self._lock:
            cached = self._history_cache.get(image_id)
        if cached is not None:
            return cached
        rows: list[dict[str, Any]] = call(f"history of {image_id}", self.api.history, image_id)
        rows = list(reversed(rows))
        with self._lock:
            self._history_cache[image_id] = rows
        return rows

    def _empty_layers(self, image_id: str, rows: list[dict[str, Any]], n_layers: int) -> list[bool]:
        """Which history rows (oldest first) made no layer.

        The history endpoint does not return ``empty_layer``. Where a row names a local
        image (the classic builder's intermediates) its layer count says it exactly;
        elsewhere the instruction text decides, and the result is reconciled with the
        number of diffIDs the image really has.
        """
        empty: list[bool | None] = []
        previous: int | None = 0  # layers up to the row before; None when unknown
        for row in rows:
            row_id = row.get("Id") or ""
            count: int | None = None
            if is_digest(row_id):
                try:
                    count = len(self._inspect_id(row_id).get("RootFS", {}).get("Layers") or [])
                except NotFound:
                    count = None
            empty.append(None if count is None or previous is None else count == previous)
            previous = count
        guess = [
            e
            if e is not None
            else _looks_empty(str(r.get("CreatedBy") or ""), int(r.get("Size") or 0))
            for e, r in zip(empty, rows, strict=False)
        ]
        non_empty = guess.count(False)
        if non_empty != n_layers:
            unknown = [i for i, e in enumerate(empty) if e is None]
            if non_empty < n_layers:
                # Too few: zero-sized rows we guessed empty must hold layers, newest first.
                for i in reversed(unknown):
                    if non_empty == n_layers:
                        break
                    if guess[i]:
                        guess[i] = False
                        non_empty += 1
            else:
                for i in unknown:
                    if non_empty == n_layers:
                        break
                    if not guess[i] and not int(rows[i].get("Size") or 0):
                        guess[i] = True
                        non_empty -= 1
            if non_empty != n_layers:
                log.warning(
                    "history of %s has %d layer rows for %d layers", image_id, non_empty, n_layers
                )
        return guess

    def _layer_rows(self, data: dict[str, Any]) -> list[tuple[dict[str, Any], bool, str | None]]:
        """History rows oldest first, each with empty_layer and its chainID."""
        diff_ids: list[str] = list(data.get("RootFS", {}).get("Layers") or [])
        chains = chain_ids(diff_ids)
        rows = self._raw_history(data["Id"])
        empties = self._empty_layers(data["Id"], rows, len(diff_ids))
        out: list[tuple[dict[str, Any], bool, str | None]] = []
        layer = 0
        for row, empty in zip(rows, empties, strict=False):
            chain: str | None = None
            if not empty and layer < len(chains):
                chain = chains[layer]
                layer += 1
            out.append((row, empty, chain))
        return out

    def _layer_infos(self, data: dict[str, Any]) -> list[LayerInfo]:
        """The image's layers, base first, with sizes from its history."""
        diff_ids: list[str] = list(data.get("RootFS", {}).get("Layers") or [])
        chains = chain_ids(diff_ids)
        by_chain: dict[str, tuple[int, float, str]] = {}
        for row, _empty, chain in self._layer_rows(data):
            if chain is not None:
                by_chain[chain] = (
                    int(row.get("Size") or 0),
                    float(row.get("Created") or 0),
                    str(row.get("CreatedBy") or ""),
                )
        infos = []
        for i, (diff_id, chain) in enumerate(zip(diff_ids, chains, strict=False)):
            size, created, created_by = by_chain.get(
                chain, (0, parse_time(data.get("Created")), "")
            )
            infos.append(
                LayerInfo(
                    chain_id=chain,
                    diff_id=diff_id,
                    parent=chains[i - 1] if i else None,
                    size=size,
                    created=created,
                    created_by=created_by,
                )
            )
        return infos

    def _summary(self, data: dict[str, Any], tags: tuple[str, ...] | None = None) -> ImageSummary:
        diff_ids = list(data.get("RootFS", {}).get("Layers") or [])
        labels = (data.get("Config") or {}).get("Labels") or {}
        return ImageSummary(
            id=data["Id"],
            tags=tags if tags is not None else _tags(data.get("RepoTags")),
            created=parse_time(data.get("Created")),
            size=int(data.get("Size") or 0),
            layers=tuple(chain_ids(diff_ids)),
            labels=dict(labels),
        )

    def images(self) -> list[ImageSummary]:
        """Every image ``docker images`` lists (tagged and dangling), newest first."""
        rows: list[dict[str, Any]] = call("listing images", self.api.images)
        out = []
        for row in rows:
            data = self._inspect_id(row["Id"])
            out.append(self._summary(data, _tags(row.get("RepoTags"))))
        out.sort(key=lambda s: (s.created, s.id), reverse=True)
        return out

    def _all_image_ids(self) -> list[str]:
        """Every image including the classic builder's intermediates (its build cache)."""
        rows: list[dict[str, Any]] = call("listing images", self.api.images, all=True)
        return [row["Id"] for row in rows]

    def image(self, ref: str) -> ImageSummary:
        """One image by tag, full ID or unique ID prefix; raises NotFound."""
        data = self._resolve(ref)
        with self._lock:
            self._inspect_cache[data["Id"]] = data
        return self._summary(data)

    def inspect(self, ref: str) -> dict[str, Any]:
        """Docker's inspect output plus the OCI fields lamina's views use.

        Adds ``DiffIDs``, ``ChainIDs``, and OCI-style ``config``, ``rootfs`` and
        ``history`` (oldest first, with ``empty_layer``) so the app can show a Docker
        image exactly as it shows an embedded one.
        """
        data = dict(self._resolve(ref))
        diff_ids = list(data.get("RootFS", {}).get("Layers") or [])
        data["RepoTags"] = list(_tags(data.get("RepoTags")))
        data["DiffIDs"] = diff_ids
        data["ChainIDs"] = chain_ids(diff_ids)
        data["config"] = data.get("Config") or {}
        data["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
        history = []
        for row, empty, _chain in self._layer_rows(data):
            created = datetime.fromtimestamp(float(row.get("Created") or 0), timezone.utc)
            entry: dict[str, Any] = {
                "created": created.isoformat().replace("+00:00", "Z"),
                "created_by": str(row.get("CreatedBy") or ""),
            }
            if row.get("Comment"):
                entry["comment"] = row["Comment"]
            if empty:
                entry["empty_layer"] = True
            history.append(entry)
        data["history"] = history
        return data

    def history(self, ref: str) -> list[HistoryEntry]:
        """One entry per instruction, newest first (like ``docker history``)."""
        data = self._resolve(ref)
        out = [
            HistoryEntry(
                created=float(row.get("Created") or 0),
                created_by=str(row.get("CreatedBy") or ""),
                size=int(row.get("Size") or 0),
                empty_layer=empty,
                chain_id=chain,
                comment=str(row.get("Comment") or ""),
            )
            for row, empty, chain in self._layer_rows(data)
        ]
        return list(reversed(out))

    def layers(self) -> list[LayerInfo]:
        """Every layer of every image (intermediates included), each chainID once."""
        seen: dict[str, LayerInfo] = {}
        for image_id in self._all_image_ids():
            try:
                data = self._inspect_id(image_id)
            except NotFound:
                continue  # removed while we listed
            for info in self._layer_infos(data):
                seen.setdefault(info.chain_id, info)
        return sorted(seen.values(), key=lambda layer: (layer.created, layer.chain_id))

    def image_layers(self, ref: str) -> list[LayerInfo]:
        """One image's layers, base first, with sizes."""
        return self._layer_infos(self._resolve(ref))

    def layer_changes(self, chain_id: str) -> list[FileChange]:
        """What a layer adds, modifies and deletes, read from a saved image stream.

        Docker has no API to list a layer's files, so the smallest image holding the
        layer is streamed (``docker save``) once; nothing is written to disk.
        """
        with self._lock:
            cached = self._changes_cache.get(chain_id)
        if cached is not None:
            return cached
        holder: dict[str, Any] | None = None
        for image_id in self._all_image_ids():
            try:
                data = self._inspect_id(image_id)
            except NotFound:
                continue
            chains = chain_ids(data.get("RootFS", {}).get("Layers") or [])
            if chain_id in chains and (
                holder is None or len(chains) < len(holder.get("RootFS", {}).get("Layers") or [])
            ):
                holder = data
        if holder is None:
            raise NotFound(f"no such layer: {chain_id}")
        diff_ids = list(holder["RootFS"]["Layers"])
        index = chain_ids(diff_ids).index(chain_id)
        wanted = set(diff_ids[: index + 1])
        stream = call(f"saving image {holder['Id']}", self.api.get_image, holder["Id"])
        listings = call(f"reading image {holder['Id']}", read_layers, ChunkReader(stream), wanted)
        missing = wanted - set(listings)
        if missing:
            raise NotFound(f"layer {chain_id}: Docker's saved image lacks {min(missing)}")
        lower = [listings[d] for d in diff_ids[:index]]
        result = changes(lower, listings[diff_ids[index]])
        with self._lock:
            self._changes_cache[chain_id] = result
        return result

    def analyze(self, ref: str) -> Analysis:
        """dive's analysis of an image, from one pass over Docker's saved stream."""
        from lamina.core.accounting.dive import analyze_entries

        data = self._resolve(ref)
        diff_ids = list(data.get("RootFS", {}).get("Layers") or [])
        stream = call(f"saving image {data['Id']}", self.api.get_image, data["Id"])
        listings = call(
            f"reading image {data['Id']}", read_layers, ChunkReader(stream), set(diff_ids)
        )
        missing = set(diff_ids) - set(listings)
        if missing:
            raise NotFound(f"{ref}: Docker's saved image lacks layer {min(missing)}")
        return analyze_entries(
            ([(e.path, e.size, e.kind == "dir") for e in listings[d]] for d in diff_ids), ref
        )

    # -- tags and removal ------------------------------------------------------------

    def tag(self, ref: str, new_tag: str) -> None:
        """Point ``new_tag`` (``repo[:tag]``) at the image ``ref``."""
        image_id = self._resolve(ref)["Id"]
        repo, tag = _split_tag(new_tag)
        call(f"tagging {ref} as {new_tag}", self.api.tag, image_id, repo, tag)

    def rmi(self, refs: list[str], force: bool = False) -> list[str]:
        """Untag or delete images; returns ``Untagged: x`` / ``Deleted: sha256:…`` lines."""
        lines: list[str] = []
        for ref in refs:
            rows: list[dict[str, str]] = call(
                f"removing image {ref}", self.api.remove_image, ref, force=force
            )
            for row in rows or []:
                for key, value in row.items():
                    lines.append(f"{key}: {value}")
        return lines

    # -- builds ----------------------------------------------------------------------

    def build(
        self, request: BuildRequest, cancel: threading.Event | None = None
    ) -> Iterator[BuildEvent]:
        """Build with Docker's classic builder, yielding the same events as the embedded engine."""
        from lamina.core.docker.build import DockerBuilder

        return DockerBuilder(self, self._home).build(request, cancel)

    def builds(self, limit: int = 50) -> list[BuildRecord]:
        """Builds lamina ran on this Docker Engine, newest first."""
        from lamina.core.docker.build import DockerBuilder

        return DockerBuilder(self, self._home).list_builds(limit)

    # -- disk usage and prune --------------------------------------------------------

    @property
    def differences(self) -> tuple[str, ...]:
        """Where Docker's own disk and prune numbers differ from lamina's, and why."""
        from lamina.core.docker.prune import DIFFERENCES

        return DIFFERENCES

    def disk_usage(self) -> DiskUsage:
        """``system df`` through lamina's accounting (see ``docker_prune``)."""
        from lamina.core.docker.prune import disk_usage

        return disk_usage(self)

    def plan_prune(self, request: PruneRequest) -> PrunePlan:
        """What Docker's prune will remove and the bytes it frees (a dry run)."""
        from lamina.core.docker.prune import plan_prune

        return plan_prune(self, request)

    def apply_prune(self, plan: PrunePlan) -> PruneResult:
        """Runs Docker's prune endpoint for the plan's request."""
        from lamina.core.docker.prune import apply_prune

        return apply_prune(self, plan)

    def close(self) -> None:
        """Closes the connection."""
        try:
            self._client.close()
        except Exception:
            log.debug("closing the Docker client failed", exc_info=True)


def _split_tag(name: str) -> tuple[str, str]:
    """``repo[:tag]`` -> (repo, tag); a colon inside a registry host:port is not a tag."""
    if not name or any(c.isspace() for c in name):
        raise UsageError(f"invalid tag {name!r}")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :]
    return name, "latest"
