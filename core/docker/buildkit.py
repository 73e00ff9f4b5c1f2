"""Which image layers BuildKit's cache records hold, from Docker's own numbers.

On a Docker Engine, BuildKit's cache records are snapshots over the daemon's layer
store: a record made by a build step holds the image layer that step produced (and so
every layer below it), and a record for a ``FROM`` holds the base image's top layer. Seen
from ``/system/df`` and a prune on the daemon (20.10.24, checked):

* ``Shared`` is true for a record whose layer stack *is* some image's whole stack (moby's
  ``imagerefchecker``), and for every record below it (BuildKit marks the parents);
* ``image prune`` does not free a layer a record holds: after a BuildKit build,
  ``image prune -a`` removes the image and reports ``SpaceReclaimed: 0``, and the
  records then read ``Shared: false``;
* ``builder prune`` reports each removed record's own ``Size``, whether an image still
  uses that layer or not.

The API never names the layer a record holds, so lamina matches records to image layers:
a record's chain of parents (base record first) must have the sizes and the steps of an
image's topmost layers (a ``mount / from exec /bin/sh -c X`` record is a ``RUN /bin/sh -c
X`` row; BuildKit's rows carry the ``buildkit.dockerfile.v0`` comment), and the layer
must not be older than the record. Records that match no image hold nothing lamina can
name; where two images still match, both are counted as held, which errs on freeing
less.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lamina.core.docker.convert import BuildKitRecord

# The comment BuildKit's Dockerfile frontend writes into every history row it makes.
BUILDKIT_COMMENT = "buildkit.dockerfile.v0"
_EXEC_PREFIX = "mount / from exec "
_BASE_PREFIXES = ("from local", "pulled from")

# An image's layers, base first: (history row, chainID).
ImageLayers = list[tuple[dict[str, Any], str]]


@dataclass(frozen=True)
class Holds:
    """What BuildKit's records hold.

    Attributes:
        layers: record ID -> the chainIDs of the image layers it may hold (only records
            lamina could place; more than one where images look alike).
        children: record ID -> IDs of the records standing on it.
    """

    layers: dict[str, set[str]]
    children: dict[str, list[str]]

    def held_tops(self) -> set[str]:
        """Every image layer some record holds (each keeps the layers below it too)."""
        return {chain for chains in self.layers.values() for chain in chains}

    def shared_after(
        self, records: Iterable[BuildKitRecord], image_tops: set[str]
    ) -> dict[str, bool]:
        """Which records BuildKit will call shared once only ``image_tops`` remain.

        Args:
            records: the records.
            image_tops: the top layer of every image that will still exist.

        Returns:
            Record ID -> shared. A record lamina could not place keeps Docker's flag.
        """
        records = list(records)
        direct = {
            r.id: bool(self.layers[r.id] & image_tops) if r.id in self.layers else r.shared
            for r in records
        }
        shared: dict[str, bool] = {}

        def walk(record_id: str) -> bool:
            if record_id in shared:
                return shared[record_id]
            shared[record_id] = False  # a loop in Parent links shares nothing
            value = direct.get(record_id, False) or any(
                walk(c) for c in self.children.get(record_id, ())
            )
            shared[record_id] = value
            return value

        for r in records:
            walk(r.id)
        return shared


def _chain(record: BuildKitRecord, by_id: dict[str, BuildKitRecord]) -> list[BuildKitRecord]:
    """The record and those below it, base first."""
    out: list[BuildKitRecord] = []
    seen: set[str] = set()
    cur: BuildKitRecord | None = record
    while cur is not None and cur.id not in seen:
        seen.add(cur.id)
        out.append(cur)
        cur = by_id.get(cur.parent) if cur.parent else None
    return list(reversed(out))


def _is_base(record: BuildKitRecord) -> bool:
    """A record for a FROM: it holds the base image, and its own size says nothing."""
    return not record.parent and record.description.startswith(_BASE_PREFIXES)


def _step_matches(record: BuildKitRecord, row: dict[str, Any]) -> bool:
    """Whether a layer record can be the step that made this history row."""
    if str(row.get("Comment") or "") != BUILDKIT_COMMENT:
        return False
    if record.size != int(row.get("Size") or 0):
        return False
    # A record cannot hold a layer made before it: that one came from an earlier build
    # whose records are gone (history times are whole seconds).
    if float(row.get("Created") or 0) < record.created - 1.0:
        return False
    created_by = str(row.get("CreatedBy") or "").removesuffix(" # buildkit").strip()
    if record.description.startswith(_EXEC_PREFIX):
        return created_by == "RUN " + record.description[len(_EXEC_PREFIX) :].strip()
    # COPY and ADD are file operations ("fileop target", "copy ..."); RUN never is.
    return not created_by.startswith("RUN ")


def _places(chain: list[BuildKitRecord], layers: ImageLayers) -> list[int]:
    """The indexes in ``layers`` the chain's top record can hold (its steps match the
    topmost layers up to there, and a base record sits on at least one base layer)."""
    steps = chain[1:] if _is_base(chain[0]) else chain
    based = len(steps) < len(chain)
    out = []
    for top in range(len(layers) - 1, -1, -1):
        start = top - len(steps) + 1
        if start < (1 if based else 0):
            continue
        if not based and start != 0:
            continue  # FROM scratch: the chain is the whole image
        window = layers[start : top + 1]
        if all(_step_matches(r, row) for r, (row, _c) in zip(steps, window, strict=True)):
            out.append(top)
    return out


def holds(records: list[BuildKitRecord], image_layers: dict[str, ImageLayers]) -> Holds:
    """Places every record it can on the image layer it holds.

    Args:
        records: BuildKit's records (``/system/df``'s ``BuildCache``).
        image_layers: per image, its history rows that made layers with their chainIDs.

    Returns:
        The :class:`Holds`.
    """
    by_id = {r.id: r for r in records}
    children: dict[str, list[str]] = {}
    for r in records:
        if r.parent:
            children.setdefault(r.parent, []).append(r.id)
    placed: dict[str, set[str]] = {}
    for record in records:
        if record.type != "regular":
            continue  # context, Dockerfile and cache-mount snapshots hold no image layer
        chain = _chain(record, by_id)
        for layers in image_layers.values():
            if not layers:
                continue
            if _is_base(record):
                # A base record alone: it holds a base image's top, but which one only
                # its children can tell (placed below).
                continue
            for top in _places(chain, layers):
                placed.setdefault(record.id, set()).add(layers[top][1])
                base = chain[0]
                if _is_base(base):
                    placed.setdefault(base.id, set()).add(layers[top - len(chain) + 1][1])
    return Holds(placed, children)
