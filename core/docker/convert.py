"""Docker's JSON as lamina's records: pure conversions, no daemon involved.

Times (RFC 3339 strings or unix seconds), tags (``repo[:tag]``, ``<none>:<none>``),
layer stacks (``RootFS.Layers`` diffIDs to chainIDs) and the history endpoint's rows
(which say nothing of ``empty_layer``) become the same model and accounting records
the embedded engine produces. :mod:`lamina.core.docker.inventory` reads the JSON; this
module only reads the JSON it is handed.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from lamina.core.accounting.graph import CacheRow, ContainerRow, ImageRow, LayerRow, VolumeRow
from lamina.core.digest import chain_ids
from lamina.core.errors import UsageError
from lamina.core.model import HistoryEntry, ImageSummary, LayerInfo
from lamina.core.timestamps import parse_rfc3339

log = logging.getLogger(__name__)

# BuildKit cache records stand on layer rows of their own, keyed apart from chainIDs.
BUILDKIT_PREFIX = "buildkit:"

# Metadata instructions: the classic builder writes them as "#(nop) X", BuildKit as "X";
# neither gives them a layer (WORKDIR aside, see empty_rows).
_METADATA = (
    "ENV", "LABEL", "CMD", "ENTRYPOINT", "EXPOSE", "VOLUME", "USER", "ARG", "SHELL",
    "STOPSIGNAL", "HEALTHCHECK", "ONBUILD", "MAINTAINER",
)  # fmt: skip

# One history row (oldest first), whether it made no layer, and the chainID it made.
LayerRowView = tuple[dict[str, Any], bool, str | None]


# -- scalars ---------------------------------------------------------------------------


def parse_time(value: str | float | None) -> float:
    """Docker's RFC 3339 timestamps (nanoseconds, ``Z``) or unix seconds as unix time."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return parse_rfc3339(value.strip())


def repo_tags(tags: list[str] | None) -> tuple[str, ...]:
    """An image's tags, sorted, without Docker's ``<none>:<none>`` placeholder."""
    return tuple(sorted(t for t in tags or () if t and t != "<none>:<none>"))


def split_tag(name: str) -> tuple[str, str]:
    """``repo[:tag]`` -> (repo, tag); a colon inside a registry host:port is not a tag.

    Raises:
        UsageError: an empty name or one with whitespace.
    """
    if not name or any(c.isspace() for c in name):
        raise UsageError(f"invalid tag {name!r}")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :]
    return name, "latest"


def normal_tag(name: str) -> str:
    """``repo[:tag]`` with the tag always written (``a`` -> ``a:latest``)."""
    return ":".join(split_tag(name))


# -- images and their layers -----------------------------------------------------------


def diff_ids(data: dict[str, Any]) -> list[str]:
    """An inspected image's layer diffIDs, base first."""
    return list(data.get("RootFS", {}).get("Layers") or [])


def top_layer(data: dict[str, Any]) -> str | None:
    """The chainID of an inspected image's top layer (None for an image without layers)."""
    chains = chain_ids(diff_ids(data))
    return chains[-1] if chains else None


def looks_empty(created_by: str, size: int) -> bool:
    """Whether a history row made no layer, judged from its instruction text alone."""
    if size:
        return False
    text = created_by.strip()
    if "#(nop)" in text:
        after = text.split("#(nop)", 1)[1].strip()
        return not after.startswith(("COPY", "ADD", "WORKDIR"))
    word = text.split(" ", 1)[0].upper() if text else ""
    return word in _METADATA


def empty_rows(
    image_id: str, rows: list[dict[str, Any]], counts: list[int | None], n_layers: int
) -> list[bool]:
    """Which history rows (oldest first) made no layer.

    The history endpoint does not return ``empty_layer``. Where a row names a local
    image (the classic builder's intermediates) its layer count says it exactly;
    elsewhere the instruction text decides, and the result is reconciled with the
    number of diffIDs the image really has.

    Args:
        image_id: the image (for the log).
        rows: its history, oldest first.
        counts: per row, the layer count of the image the row names (None if unknown).
        n_layers: how many diffIDs the image has.
    """
    empty: list[bool | None] = []
    previous: int | None = 0  # layers up to the row before; None when unknown
    for count in counts:
        empty.append(None if count is None or previous is None else count == previous)
        previous = count
    guess = [
        e if e is not None else looks_empty(str(r.get("CreatedBy") or ""), int(r.get("Size") or 0))
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


def layer_rows(
    data: dict[str, Any], rows: list[dict[str, Any]], empties: list[bool]
) -> list[LayerRowView]:
    """History rows oldest first, each with whether it is empty and the chainID it made."""
    chains = chain_ids(diff_ids(data))
    out: list[LayerRowView] = []
    layer = 0
    for row, empty in zip(rows, empties, strict=False):
        chain: str | None = None
        if not empty and layer < len(chains):
            chain = chains[layer]
            layer += 1
        out.append((row, empty, chain))
    return out


def layer_infos(data: dict[str, Any], rows: list[LayerRowView]) -> list[LayerInfo]:
    """The image's layers, base first, sized from its history rows (``DiffSize``)."""
    ids = diff_ids(data)
    chains = chain_ids(ids)
    by_chain: dict[str, tuple[int, float, str]] = {}
    for row, _empty, chain in rows:
        if chain is not None:
            by_chain[chain] = (
                int(row.get("Size") or 0),
                float(row.get("Created") or 0),
                str(row.get("CreatedBy") or ""),
            )
    infos = []
    for i, (diff_id, chain) in enumerate(zip(ids, chains, strict=False)):
        size, created, created_by = by_chain.get(chain, (0, parse_time(data.get("Created")), ""))
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


def summary(data: dict[str, Any], tags: tuple[str, ...] | None = None) -> ImageSummary:
    """An inspected image as an ``ImageSummary`` (``tags`` from a listing, if given)."""
    labels = (data.get("Config") or {}).get("Labels") or {}
    return ImageSummary(
        id=data["Id"],
        tags=tags if tags is not None else repo_tags(data.get("RepoTags")),
        created=parse_time(data.get("Created")),
        size=int(data.get("Size") or 0),
        layers=tuple(chain_ids(diff_ids(data))),
        labels=dict(labels),
    )


def oci_inspect(data: dict[str, Any], rows: list[LayerRowView]) -> dict[str, Any]:
    """Docker's inspect output plus the OCI fields lamina's views use.

    Adds ``DiffIDs``, ``ChainIDs``, and OCI-style ``config``, ``rootfs`` and
    ``history`` (oldest first, with ``empty_layer``), so a Docker image reads exactly
    as an embedded one does.
    """
    out = dict(data)
    ids = diff_ids(data)
    out["RepoTags"] = list(repo_tags(data.get("RepoTags")))
    out["DiffIDs"] = ids
    out["ChainIDs"] = chain_ids(ids)
    out["config"] = data.get("Config") or {}
    out["rootfs"] = {"type": "layers", "diff_ids": ids}
    history = []
    for row, empty, _chain in rows:
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
    out["history"] = history
    return out


def history_entries(rows: list[LayerRowView]) -> list[HistoryEntry]:
    """One entry per instruction, newest first (like ``docker history``)."""
    out = [
        HistoryEntry(
            created=float(row.get("Created") or 0),
            created_by=str(row.get("CreatedBy") or ""),
            size=int(row.get("Size") or 0),
            empty_layer=empty,
            chain_id=chain,
            comment=str(row.get("Comment") or ""),
        )
        for row, empty, chain in rows
    ]
    return list(reversed(out))


# -- accounting records ----------------------------------------------------------------


def image_row(data: dict[str, Any]) -> ImageRow:
    """An inspected image as an accounting ``ImageRow`` (its parent is the FROM image)."""
    created = parse_time(data.get("Created"))
    return ImageRow(
        id=data["Id"],
        top_layer=top_layer(data),
        created=created,
        added=created,
        parent=data.get("Parent") or None,
        tags=tuple(sorted(data.get("RepoTags") or ())),
    )


def intermediate_row(data: dict[str, Any], history: list[dict[str, Any]]) -> CacheRow:
    """A classic-builder intermediate image as the build cache entry it is.

    Args:
        data: its inspect output.
        history: its history rows, oldest first (the last names the step it cached).
    """
    created = parse_time(data.get("Created"))
    instruction = str(history[-1].get("CreatedBy") or "") if history else ""
    return CacheRow(
        key=data["Id"],
        parent=data.get("Parent") or "scratch",
        instruction=instruction,
        result=data["Id"],
        top_layer=top_layer(data),
        created=created,
        last_used=created,
        use_count=0,
    )


# moby's stringid.GenerateRandomID: the name Docker gives a volume nobody named.
_RANDOM_ID_RE = re.compile(r"^[0-9a-f]{64}$")
# Docker 23+ labels the volumes it creates for VOLUME and `-v /path`; 20.10 does not.
ANONYMOUS_LABEL = "com.docker.volume.anonymous"


def container_row(ctr: dict[str, Any]) -> ContainerRow:
    """A ``Containers`` entry of ``/system/df`` (or ``/containers/json?size=1``)."""
    names = [str(n).lstrip("/") for n in ctr.get("Names") or []]
    volumes = tuple(
        str(m["Name"])
        for m in ctr.get("Mounts") or []
        if m.get("Type") == "volume" and m.get("Name")
    )
    return ContainerRow(
        id=str(ctr["Id"]),
        name=names[0] if names else "",
        image_id=str(ctr.get("ImageID") or ""),
        image=str(ctr.get("Image") or ""),
        state=str(ctr.get("State") or ""),
        size=int(ctr.get("SizeRw") or 0),
        created=parse_time(ctr.get("Created")),
        labels=dict(ctr.get("Labels") or {}),
        volumes=volumes,
    )


def volume_row(vol: dict[str, Any], users: tuple[str, ...]) -> VolumeRow:
    """A ``Volumes`` entry of ``/system/df``, with the IDs of the containers mounting it.

    A volume is anonymous when Docker labelled it so (23+), or, on a daemon that does not
    label them (20.10), when its name is the random 64-hex ID Docker generates.
    """
    usage = vol.get("UsageData") or {}
    labels = dict(vol.get("Labels") or {})
    name = str(vol["Name"])
    return VolumeRow(
        name=name,
        driver=str(vol.get("Driver") or ""),
        size=int(usage.get("Size", -1)),
        links=int(usage.get("RefCount", 0)),
        created=parse_time(vol.get("CreatedAt")),
        labels=labels,
        anonymous=ANONYMOUS_LABEL in labels or bool(_RANDOM_ID_RE.match(name)),
        options=bool(vol.get("Options")),
        containers=users,
    )


@dataclass(frozen=True)
class BuildKitRecord:
    """One BuildKit cache record from ``system df``.

    Attributes:
        id: Docker's record ID.
        size: its bytes, as Docker measures them.
        created, last_used: unix times.
        use_count: how often it was used.
        in_use: a running build holds it (Docker never prunes it).
        shared: it shares storage with image layers.
        description: what made it.
        type: BuildKit's record type.
        parent: the record it stands on ("" for none).
        parents: every record it stands on (API 1.42+ lists them as ``Parents``;
            before, ``Parent`` is the only one).
    """

    id: str
    size: int
    created: float
    last_used: float
    use_count: int
    in_use: bool
    shared: bool
    description: str
    type: str
    parent: str = ""
    parents: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Its key among layers and cache entries (apart from every chainID)."""
        return BUILDKIT_PREFIX + self.id

    def layer_row(self) -> LayerRow:
        """A layer row of its own size, for accounting and planning."""
        return LayerRow(self.key, None, self.size, self.created, self.description)

    def cache_row(self) -> CacheRow:
        """The cache entry standing on :meth:`layer_row`."""
        return CacheRow(
            key=self.key,
            parent="buildkit",
            instruction=self.description or self.type,
            result=self.key,
            top_layer=self.key,
            created=self.created,
            last_used=self.last_used,
            use_count=self.use_count,
        )


def buildkit_record(rec: dict[str, Any]) -> BuildKitRecord:
    """A ``BuildCache`` entry of ``system df`` as a :class:`BuildKitRecord`."""
    listed = rec.get("Parents") or ([rec["Parent"]] if rec.get("Parent") else [])
    parents = tuple(str(p) for p in listed if p)
    return BuildKitRecord(
        id=str(rec["ID"]),
        size=int(rec.get("Size") or 0),
        created=parse_time(rec.get("CreatedAt")),
        last_used=parse_time(rec.get("LastUsedAt")),
        use_count=int(rec.get("UsageCount") or 0),
        in_use=bool(rec.get("InUse")),
        shared=bool(rec.get("Shared")),
        description=str(rec.get("Description") or ""),
        type=str(rec.get("Type") or ""),
        parent=str(rec.get("Parent") or "") or next(iter(parents), ""),
        parents=parents,
    )
