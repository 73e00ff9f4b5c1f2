"""Plain data the engine hands to its front ends.

Every record is a frozen dataclass with no behaviour beyond formatting helpers, so the
app and the CLI can render the embedded store and a Docker Engine alike. Digests are
always full ``sha256:<hex>`` strings; shorten them only for display.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypedDict


@dataclass(frozen=True)
class LayerInfo:
    """One layer in its stack.

    Attributes:
        chain_id: identity of the layer in its stack (OCI chainID).
        diff_id: sha256 of the layer's uncompressed tar.
        parent: chainID of the layer below, or None for a base layer.
        size: Docker's size of the layer: the bytes of its files (``st_size`` of every
            entry but directories, a symlink its target's length, hard links once), what
            ``docker history`` shows for it.
        created: unix time the layer was committed.
        created_by: the instruction that produced it, as written ("" if unknown).
        disk_size: bytes its files occupy on disk (blocks, hard links once); 0 where
            the engine does not say (a Docker Engine).
    """

    chain_id: str
    diff_id: str
    parent: str | None
    size: int
    created: float
    created_by: str = ""
    disk_size: int = 0


@dataclass(frozen=True)
class ImageSummary:
    """One image as `lamina images` lists it.

    Attributes:
        id: image ID (sha256 of the config JSON).
        tags: every tag pointing at it (empty for a dangling image).
        created: unix time from the config's ``created`` field.
        size: total bytes of its layers (Docker's sizes, as ``docker images`` shows).
        layers: its chainIDs, base first.
        labels: the config's labels.
    """

    id: str
    tags: tuple[str, ...]
    created: float
    size: int
    layers: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def dangling(self) -> bool:
        return not self.tags


@dataclass(frozen=True)
class HistoryEntry:
    """One row of an image's history (one instruction)."""

    created: float
    created_by: str
    size: int
    empty_layer: bool
    chain_id: str | None = None
    comment: str = ""


@dataclass(frozen=True)
class FileChange:
    """One path a layer adds, modifies or deletes (like dive's file tree)."""

    path: str
    change: str  # "added" | "modified" | "deleted"
    kind: str  # "file" | "dir" | "symlink" | "hardlink" | "other"
    size: int
    mode: int
    uid: int = 0
    gid: int = 0
    link_target: str = ""


ReasonKind = Literal[
    "first_build",
    "parent_missed",
    "instruction_changed",
    "sources_changed",
    "build_arg_changed",
    "config_changed",
    "no_cache",
    "pruned",
    "base_changed",
    "stage_skipped",
    "merged",
    "settings_not_keyed",
    "stale_reuse",
    "other_builder",
    "unpredictable",
    "remote_cache",
]


class SourceChange(TypedDict):
    """One copied path that differs from the cached entry's.

    Attributes:
        path: the path, relative to the source.
        what: what differs: ``content``, ``mode``, ``type``, ``link target``, ``owner``.
    """

    path: str
    what: list[str]


class _ReasonCore(TypedDict):
    kind: ReasonKind
    message: str


class Reason(_ReasonCore, total=False):
    """Why a build step missed the cache: JSON-ready, so the index and ``--progress json``
    carry it as is. Built only by ``lamina.core.accounting.reasons``.

    Attributes:
        kind: what kind of miss it was (front ends word their advice on it).
        message: one line in plain words.
        step: ``parent_missed``: ``"<stage>/<index>"`` of the step that missed first.
        instruction: ``parent_missed``: that step's instruction as written.
        old: ``instruction_changed``, ``build_arg_changed``, ``config_changed``,
            ``base_changed``: the value the cached entry had (None when unset).
        new: the same fields: the value this build has.
        name: ``build_arg_changed``: the build arg.
        field: ``config_changed``: the config field (or the step's field).
        added: ``sources_changed``: copied paths that are new.
        removed: ``sources_changed``: copied paths that are gone.
        changed: ``sources_changed``: copied paths that differ, with what differs.
        unknown: ``sources_changed``: the sources are not known before an earlier
            stage runs (a dry run over a stage that runs again).
        stage: ``stage_skipped``: the stage's name (or number).
        builder: ``other_builder``: the builder the note is about; ``settings_not_keyed``
            and ``stale_reuse``: the builder that decides differently.
        cached: ``other_builder``: what that builder would have decided (None: it has
            no step here).
        stale: ``stale_reuse``: the paths BuildKit's context transfer would not have
            sent again (so it would have reused the old layer).
        ref: ``remote_cache``: the ``--cache-from`` ref the step hit in.
    """

    step: str
    instruction: str
    old: Any
    new: Any
    name: str
    field: str
    added: list[str]
    removed: list[str]
    changed: list[SourceChange]
    unknown: bool
    stage: str
    builder: str
    cached: bool | None
    stale: list[str]
    ref: str


@dataclass(frozen=True)
class StepRecord:
    """One instruction of a recorded build, with its cache decision.

    Attributes:
        stage: 0-based stage number.
        index: 0-based instruction number within the stage (FROM is 0).
        instruction: the instruction as written, continuation lines joined.
        cached: True on a hit, False on a miss, None for FROM and for a step the
            builder's rules do not cache (BuildKit's image settings).
        reason: on a miss, why (see :class:`Reason`); on a hit, None or a note where
            the hit is worth explaining (``merged``, ``settings_not_keyed``); for FROM,
            ``stage_skipped`` when the stage was not built.
        duration: seconds the step took.
        layer: chainID of the layer it produced, if it changed the filesystem.
        size: bytes of that layer.
        other: what the other builder would have decided here and why
            (``other_builder``), when the build knows it.
    """

    stage: int
    index: int
    instruction: str
    cached: bool | None
    reason: Reason | None
    duration: float = 0.0
    layer: str | None = None
    size: int = 0
    other: Reason | None = None


@dataclass(frozen=True)
class BuildRecord:
    """One build as the index remembers it (``builder``: the cache rules it decided by,
    None when the engine does not say)."""

    id: int
    started: float
    finished: float | None
    dockerfile: str
    context: str
    tags: tuple[str, ...]
    build_args: dict[str, str]
    target: str | None
    image: str | None
    status: str  # "running" | "ok" | "failed" | "cancelled"
    error: str | None
    steps: tuple[StepRecord, ...] = ()
    builder: str | None = None


@dataclass(frozen=True)
class CacheExport:
    """``--cache-to type=registry,ref=REF[,mode=min|max][,ignore-error=true]``.

    Attributes:
        ref: where the cache goes (``registry/repository:tag``).
        mode: ``min``: the target stage's steps; ``max``: every stage's.
        ignore_error: a failed export is a warning, not a failed build.
    """

    ref: str
    mode: str = "min"
    ignore_error: bool = False


@dataclass(frozen=True)
class BuildSources:
    """What one build's COPY/ADD steps read from its context, path by path: the data a
    replay of the build through another Dockerfile needs.

    Attributes:
        build_id: the build.
        paths: context path to a short hash of its entry (name, mode, size, content,
            link target); a key ending in ``/`` stands for everything below that
            directory (deep paths are folded so that a record stays bounded).
        bases: stage number to the image ID the stage started from.
        complete: False when the context was too large to record (``paths`` is empty).
        folded: some paths were folded into their directories.
    """

    build_id: int
    paths: dict[str, str]
    bases: dict[int, str] = field(default_factory=dict)
    complete: bool = True
    folded: bool = False


@dataclass(frozen=True)
class BuildRequest:
    """What to build.

    Attributes:
        context: the build context directory.
        dockerfile: the Dockerfile path (absolute, or relative to the current directory
            like ``docker build -f``); None means ``<context>/Dockerfile``.
        tags: tags to point at the result.
        build_args: ``--build-arg`` values.
        target: the stage to stop at (``--target``), or None for the last stage.
        no_cache: skip cache lookups (results are still recorded).
        dry_run: predict every step's hit or miss without executing anything.
        network: "host" or "none" for RUN steps (``RUN --network`` may choose per step
            under BuildKit).
        builder: the cache rules: ``buildkit`` or ``classic``; None for the configured
            default (``[build] builder`` in config.toml, else ``buildkit``).
        no_cache_filter: ``--no-cache-filter``: stages (by name, case-insensitive) whose
            steps skip cache lookups (BuildKit only).
        secrets: ``--secret``: secret id to the file holding it (``RUN
            --mount=type=secret``; never stored in a layer or a key).
        ssh: ``--ssh``: ssh id to an agent socket (``RUN --mount=type=ssh``).
        base_substitutes: FROM and ``--from`` image references to stand-in images of the
            store (``*`` for any image the store lacks), so a Dockerfile whose bases are
            not available can still be checked with a dry run.
        cache_to: ``--cache-to type=registry``: export the build's cache there.
        cache_from: ``--cache-from type=registry``: caches (refs) consulted after the
            store's own, in order.
    """

    context: str
    dockerfile: str | None = None
    tags: tuple[str, ...] = ()
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    dry_run: bool = False
    network: str = "host"
    builder: str | None = None
    no_cache_filter: tuple[str, ...] = ()
    secrets: dict[str, str] = field(default_factory=dict)
    ssh: dict[str, str] = field(default_factory=dict)
    base_substitutes: dict[str, str] = field(default_factory=dict)
    cache_to: CacheExport | None = None
    cache_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class FsckProblem:
    """One inconsistency ``fsck`` found in a local store.

    Attributes:
        kind: a stable word (``missing-layer-dir``, ``corrupt-layer``, ``missing-config``,
            ``bad-config``, ``chain-mismatch``, ``missing-layer``, ``broken-parent``,
            ``cache-missing-layer``, ``cache-missing-config``, ``leftover``,
            ``unindexed-layer``, ``interrupted-build``).
        subject: the image ID, chainID, cache key, path or build ID concerned.
        message: one line for a user.
        repairable: whether ``--repair`` may fix it.
        repaired: whether this run fixed it.
        note: information, not damage (leftovers of interrupted work that the next
            prune sweeps, a build recorded as interrupted): it never fails ``fsck``.
    """

    kind: str
    subject: str
    message: str
    repairable: bool
    repaired: bool = False
    note: bool = False


@dataclass(frozen=True)
class FsckReport:
    """What ``fsck`` found and fixed."""

    problems: tuple[FsckProblem, ...]
    layers: int
    images: int
    cache: int
    deep: bool
    repaired: bool

    @property
    def remaining(self) -> tuple[FsckProblem, ...]:
        """Problems not fixed by this run (notes do not count)."""
        return tuple(p for p in self.problems if not p.repaired and not p.note)

    @property
    def ok(self) -> bool:
        """True when nothing remains to fix (the exit status is 0)."""
        return not self.remaining

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "ok": self.ok,
            "deep": self.deep,
            "repair": self.repaired,
            "checked": {"layers": self.layers, "images": self.images, "cache": self.cache},
            "problems": [asdict(p) for p in self.problems],
        }
