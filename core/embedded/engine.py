"""``EmbeddedEngine``: the ``Engine`` and ``LocalStore`` Protocols over a store in ``$LAMINA_HOME``."""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lamina.core.digest import chain_ids, is_digest
from lamina.core.embedded.store import Store, normalize_tag, raise_if_damaged
from lamina.core.embedded.store.images import parse_created
from lamina.core.errors import InUse, LaminaError, NotFound, RmiError, UsageError
from lamina.core.events import BuildEvent
from lamina.core.model import (
    BuildRecord,
    BuildRequest,
    BuildSources,
    FileChange,
    FsckReport,
    HistoryEntry,
    ImageSummary,
    LayerInfo,
)

if TYPE_CHECKING:
    from lamina.core.accounting.diff import ImageFiles
    from lamina.core.accounting.dive import Analysis
    from lamina.core.accounting.plans import (
        PrunePlan,
        PruneRequest,
        PruneResult,
    )
    from lamina.core.accounting.usage import DiskUsage
    from lamina.core.registry.plan import PullPlan
    from lamina.core.registry.progress import TransferEvent

log = logging.getLogger(__name__)

__all__ = ["EmbeddedEngine", "RmiError"]


_T = TypeVar("_T")


def _damage_explained(cls: type[_T]) -> type[_T]:
    """Wraps every public method of ``cls`` so that an error no reader expected, which
    a damaged index file explains (rows of NULLs from a zeroed page), is reported as the
    one-line damage error naming the file and ``lamina fsck --rebuild-index``."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(member):
            setattr(cls, name, _explaining(member))
    return cls


def _explaining(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: EmbeddedEngine, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            raise_if_damaged(self.store.index, exc)
            raise

    return call


@_damage_explained
class EmbeddedEngine:
    """The engine over ``Store(home)``.

    Args:
        home: the store directory (created if missing).
    """

    name = "embedded"

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.store = Store(self.home)

    # -- images ------------------------------------------------------------------------

    def images(self) -> list[ImageSummary]:
        """Every image, tagged and dangling, newest first."""
        return self.store.images.list()

    def image(self, ref: str) -> ImageSummary:
        """One image by tag, full ID or unique ID prefix; raises NotFound."""
        return self.store.images.summary(self.store.images.resolve(ref))

    def inspect(self, ref: str) -> dict[str, Any]:
        """The image config plus ``Id``, ``RepoTags``, ``DiffIDs``, ``ChainIDs``, ``Size``."""
        image_id = self.store.images.resolve(ref)
        summary = self.store.images.summary(image_id)
        config = self.store.images.get_config(image_id)
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        out: dict[str, Any] = {
            "Id": image_id,
            "RepoTags": list(summary.tags),
            "Parent": self.store.images.parent(image_id) or "",
            "Created": config.get("created", ""),
            "Size": summary.size,
            "DiffIDs": diff_ids,
            "ChainIDs": chain_ids(diff_ids),
        }
        for key, value in config.items():
            out.setdefault(key, value)
        return out

    def history(self, ref: str) -> list[HistoryEntry]:
        """One entry per instruction, newest first (like ``docker history``).

        Entries that made a layer take its size and chainID, in order; an image whose
        history lists fewer layers than it has (some importers omit history) gets one
        entry per remaining layer.
        """
        image_id = self.store.images.resolve(ref)
        config = self.store.images.get_config(image_id)
        summary = self.store.images.summary(image_id)
        layers = [self.store.layers.get(c) for c in summary.layers]
        entries: list[HistoryEntry] = []
        n = 0
        for item in config.get("history") or []:
            if not isinstance(item, dict):
                continue
            empty = bool(item.get("empty_layer", False))
            layer = None
            if not empty and n < len(layers):
                layer = layers[n]
                n += 1
            entries.append(
                HistoryEntry(
                    created=parse_created(item.get("created")),
                    created_by=str(item.get("created_by", "")),
                    size=layer.size if layer else 0,
                    empty_layer=empty,
                    chain_id=layer.chain_id if layer else None,
                    comment=str(item.get("comment", "")),
                )
            )
        for layer in layers[n:]:
            entries.append(
                HistoryEntry(layer.created, layer.created_by, layer.size, False, layer.chain_id)
            )
        entries.reverse()
        return entries

    def layers(self) -> list[LayerInfo]:
        """Every layer in the store."""
        return self.store.layers.all()

    def layer_changes(self, chain_id: str) -> list[FileChange]:
        """What the layer adds, modifies and deletes relative to its parent chain.

        Args:
            chain_id: a full chainID or a unique prefix of one.
        """
        return self.store.layers.changes(self._layer(chain_id))

    def _layer(self, ref: str) -> str:
        if is_digest(ref):
            return ref
        prefix = ref.removeprefix("sha256:")
        matches = [
            info.chain_id
            for info in self.store.layers.all()
            if info.chain_id[7:].startswith(prefix)
        ]
        if len(matches) == 1 and prefix:
            return matches[0]
        raise NotFound(
            f"no such layer: {ref}" if not matches else f"{ref!r} matches {len(matches)} layers"
        )

    def analyze(self, ref: str) -> Analysis:
        """dive's analysis over the layer tars regenerated from the store."""
        from lamina.core.embedded.analysis import analyze

        return analyze(self.store, ref)

    def image_files(self, ref: str) -> ImageFiles:
        """Every layer's files with content digests, from the regenerated layer tars."""
        from lamina.core.embedded.files import image_files

        return image_files(self.store, ref, self.history(ref))

    def tag(self, ref: str, new_tag: str) -> None:
        """Points ``new_tag`` at the image ``ref`` names."""
        image_id = self.store.images.resolve(ref)
        self.store.images.tag(image_id, new_tag)

    def rmi(self, refs: list[str], force: bool = False) -> list[str]:
        """Untags or deletes images with Docker's rules.

        * A tag of an image that has other tags: the tag goes (``Untagged: x``).
        * The last tag, or an ID: the image's tags go and the image row is deleted
          (``Deleted: sha256:…``), unless another image was built FROM it (then it is
          only untagged when named by tag, and refused by ID unless ``force``).
        * An ID of an image with several tags needs ``force``.

        Layers are left to GC. A reference that names no image is refused before anything
        is removed; past that, stops at the first failure with ``RmiError`` carrying the
        lines done so far.
        """
        for ref in refs:
            self.store.images.resolve(ref)  # NotFound: nothing removed yet
        done: list[str] = []
        for ref in refs:
            try:
                done.extend(self._rmi_one(ref, force))
            except LaminaError as exc:
                if not done:
                    raise
                raise RmiError(str(exc), done, exc) from exc
        return done

    def _rmi_one(self, ref: str, force: bool) -> list[str]:
        images = self.store.images
        image_id = images.resolve(ref)
        tags = images.tags_of(image_id)
        by_tag = self._ref_is_tag(ref, tags)
        children = images.children(image_id)
        lines: list[str] = []
        with self.store.lock():
            if by_tag is not None:
                images.untag(by_tag)
                lines.append(f"Untagged: {by_tag}")
                if len(tags) > 1 or children:
                    return lines
            else:
                if children and not force:
                    raise InUse(
                        f"unable to delete {image_id[7:19]} (must be forced) - image has "
                        f"dependent child images"
                    )
                if len(tags) > 1 and not force:
                    raise InUse(
                        f"unable to delete {image_id[7:19]} (must be forced) - image is "
                        f"referenced in multiple repositories"
                    )
                for tag in tags:
                    images.untag(tag)
                    lines.append(f"Untagged: {tag}")
            images.remove(image_id)
            lines.append(f"Deleted: {image_id}")
        return lines

    @staticmethod
    def _ref_is_tag(ref: str, tags: list[str]) -> str | None:
        if is_digest(ref):
            return None
        try:
            tag = normalize_tag(ref)
        except UsageError:
            return None
        return tag if tag in tags else None

    # -- delegated to the builder, disk accounting and prune ---------------------------

    def build(
        self, request: BuildRequest, cancel: threading.Event | None = None
    ) -> Iterator[BuildEvent]:
        """Builds (or predicts, with ``request.dry_run``) and yields progress events."""
        from lamina.core.embedded.builder.walk import run_build

        return run_build(self.store, request, cancel)

    def builds(self, limit: int = 50) -> list[BuildRecord]:
        """Recorded builds, newest first."""
        from lamina.core.embedded.builder.records import list_builds

        return list_builds(self.store, limit)

    # -- registries ------------------------------------------------------------------

    def plan_pull(self, ref: str, platform: str | None = None) -> PullPlan:
        """What pulling ``ref`` would download into this store (nothing is changed)."""
        from lamina.core.embedded.pull import plan_pull

        return plan_pull(self.store, ref, platform)

    def pull(
        self, plan: PullPlan, cancel: threading.Event | None = None
    ) -> Iterator[TransferEvent]:
        """Downloads what the plan lacks, verifies it, then records the image."""
        from lamina.core.embedded.pull import pull

        return pull(self.store, plan, cancel)

    def push(self, ref: str, cancel: threading.Event | None = None) -> Iterator[TransferEvent]:
        """Pushes a local image, uploading only what the registry lacks."""
        from lamina.core.embedded.pull import push

        return push(self.store, ref, cancel)

    def disk_usage(self) -> DiskUsage:
        """Sizes, sharing and what is reclaimable."""
        from lamina.core.embedded.usage import disk_usage

        return disk_usage(self.store)

    def plan_prune(self, request: PruneRequest) -> PrunePlan:
        """What a prune would remove (nothing is changed)."""
        from lamina.core.embedded.prune import plan_prune

        return plan_prune(self.store, request)

    def apply_prune(self, plan: PrunePlan) -> PruneResult:
        """Carries out a prune plan."""
        from lamina.core.embedded.prune import apply_prune

        return apply_prune(self.store, plan)

    @property
    def differences(self) -> tuple[str, ...]:
        """None: lamina's own numbers are the store's."""
        return ()

    def close(self) -> None:
        """Closes the store."""
        self.store.close()

    # -- what only a local store does (the LocalStore Protocol) -------------------------

    def tmpdir(self, prefix: str) -> AbstractContextManager[Path]:
        """A fresh ``home/tmp/<prefix>-<random>/``, removed on exit (GC leaves it alone)."""
        return self.store.tmpdir(prefix)

    def import_rootfs(self, tar: Path, ref: str = "", message: str = "") -> ImageSummary:
        """A one-layer image from a root filesystem tar, tagged ``ref`` if given."""
        from lamina.core.embedded.archive import import_rootfs

        return import_rootfs(self.store, tar, ref, message)

    def load_archive(self, path: Path) -> list[ImageSummary]:
        """Images from a ``docker save`` tar or an OCI layout (directory or tar)."""
        from lamina.core.embedded.archive import load_archive

        return load_archive(self.store, path)

    def save_archive(self, refs: list[str], out: Path) -> None:
        """Writes the images ``refs`` name to a tar that ``docker load`` accepts."""
        from lamina.core.embedded.archive import save_archive

        save_archive(self.store, refs, out)

    def fsck(self, *, deep: bool = False, repair: bool = False) -> FsckReport:
        """Checks the store's consistency; with ``repair``, fixes what is safe."""
        from lamina.core.embedded.fsck import fsck

        return fsck(self.store, deep=deep, repair=repair)

    def frees(self, ref: str) -> int:
        """Bytes removing this image, tag or cache entry alone would free now."""
        from lamina.core.embedded.usage import frees

        return frees(self.store, ref)

    def parent_images(self) -> set[str]:
        """IDs of the images another image was built FROM."""
        return self.store.images.parents()

    def build_sources(self, build_ids: list[int]) -> dict[int, BuildSources]:
        """What each build's COPY/ADD steps read from the context, path by path."""
        return self.store.builds.sources(build_ids)


if TYPE_CHECKING:
    from lamina.core.engine import LocalStore

    # mypy proves here that the class implements the Protocol it is checked against.
    _IMPLEMENTS: type[LocalStore] = EmbeddedEngine
