"""``DockerEngine``: the engine Protocol over a real Docker Engine.

Images, tags and history come from the Engine API; the layer graph is rebuilt from each
image's ``RootFS.Layers`` (diffIDs) turned into chainIDs, so a layer shared by two
images is one node exactly as in the embedded store. Layer sizes are the per-layer
``DiffSize`` Docker reports in an image's history. A layer's file changes are read only
when asked for, from the image's saved tar stream.

This class only routes: reading is :mod:`~lamina.core.docker.inventory` (with the pure
conversions of :mod:`~lamina.core.docker.convert`), builds are
:mod:`~lamina.core.docker.build` (BuildKit by default, or the classic builder), disk
usage and prune plans are :mod:`~lamina.core.docker.prune` (lamina's own accounting
over the same records; the differences with Docker's own numbers are in
``DIFFERENCES``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lamina.core.accounting.diff import ImageFiles, layer_instructions
from lamina.core.accounting.dive import Analysis, analyze_entries
from lamina.core.accounting.plans import PrunePlan, PruneRequest, PruneResult
from lamina.core.accounting.usage import DiskUsage
from lamina.core.docker import client as docker_client
from lamina.core.docker import convert, prune, usage
from lamina.core.docker import pull as registry
from lamina.core.docker.build import DockerBuilder
from lamina.core.docker.inventory import Inventory
from lamina.core.docker.save import saved_layers
from lamina.core.errors import NotFound
from lamina.core.events import BuildEvent
from lamina.core.model import (
    BuildRecord,
    BuildRequest,
    FileChange,
    HistoryEntry,
    ImageSummary,
    LayerInfo,
)
from lamina.core.registry.plan import PullPlan
from lamina.core.registry.progress import TransferEvent

log = logging.getLogger(__name__)


class DockerEngine:
    """The engine Protocol over a Docker Engine (``DOCKER_HOST`` and TLS variables).

    Args:
        client: an already connected ``docker.DockerClient`` (tests, the app); by default
            one is made from the environment by :func:`docker_client.connect`.
        min_api: the oldest API version accepted.
        home: the lamina home, where lamina keeps its own records of Docker builds
            (under ``home/docker``); ``open_engine`` passes the default home. Without
            one, builds run but are not recorded, so no miss can be explained.

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
        self._inventory = Inventory(self._client.api)
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

    def images(self) -> list[ImageSummary]:
        """Every image ``docker images`` lists (tagged and dangling), newest first."""
        out = [
            convert.summary(
                self._inventory.inspect_id(row["Id"]), convert.repo_tags(row.get("RepoTags"))
            )
            for row in self._inventory.listed()
        ]
        out.sort(key=lambda s: (s.created, s.id), reverse=True)
        return out

    def image(self, ref: str) -> ImageSummary:
        """One image by tag, full ID or unique ID prefix; raises NotFound."""
        data = self._inventory.resolve(ref)
        self._inventory.remember(data)
        return convert.summary(data)

    def inspect(self, ref: str) -> dict[str, Any]:
        """Docker's inspect output plus the OCI fields lamina's views use.

        Adds ``DiffIDs``, ``ChainIDs``, and OCI-style ``config``, ``rootfs`` and
        ``history`` (oldest first, with ``empty_layer``) so the app can show a Docker
        image exactly as it shows an embedded one.
        """
        data = self._inventory.resolve(ref)
        return convert.oci_inspect(data, self._inventory.layer_rows(data))

    def history(self, ref: str) -> list[HistoryEntry]:
        """One entry per instruction, newest first (like ``docker history``)."""
        data = self._inventory.resolve(ref)
        return convert.history_entries(self._inventory.layer_rows(data))

    def layers(self) -> list[LayerInfo]:
        """Every layer of every image (intermediates included), each chainID once."""
        return self._inventory.layers()

    def image_layers(self, ref: str) -> list[LayerInfo]:
        """One image's layers, base first, with sizes."""
        return self._inventory.layer_infos(self._inventory.resolve(ref))

    def layer_changes(self, chain_id: str) -> list[FileChange]:
        """What a layer adds, modifies and deletes, read from a saved image stream.

        Docker has no API to list a layer's files, so the smallest image holding the
        layer is streamed (``docker save``) once; nothing is written to disk.
        """
        return self._inventory.layer_changes(chain_id)

    def analyze(self, ref: str) -> Analysis:
        """dive's analysis of an image, from one pass over Docker's saved stream."""
        data = self._inventory.resolve(ref)
        diff_ids = convert.diff_ids(data)
        listings = saved_layers(self.api, data["Id"], set(diff_ids))
        missing = set(diff_ids) - set(listings)
        if missing:
            raise NotFound(f"{ref}: Docker's saved image lacks layer {min(missing)}")
        return analyze_entries(
            ([(e.path, e.size, e.kind == "dir") for e in listings[d]] for d in diff_ids), ref
        )

    def image_files(self, ref: str) -> ImageFiles:
        """Every layer's files with content digests, from one pass over the saved stream."""
        from lamina.core.digest import chain_ids
        from lamina.core.docker.files import image_files

        data = self._inventory.resolve(ref)
        diff_ids = convert.diff_ids(data)
        lines = layer_instructions(self.history(ref), chain_ids(diff_ids))
        return image_files(self.api, ref, data["Id"], diff_ids, lines)

    # -- tags and removal ------------------------------------------------------------

    def tag(self, ref: str, new_tag: str) -> None:
        """Point ``new_tag`` (``repo[:tag]``) at the image ``ref``."""
        self._inventory.tag(ref, new_tag)

    def rmi(self, refs: list[str], force: bool = False) -> list[str]:
        """Untag or delete images; returns ``Untagged: x`` / ``Deleted: sha256:…`` lines."""
        return self._inventory.remove(refs, force=force)

    # -- builds ----------------------------------------------------------------------

    def build(
        self, request: BuildRequest, cancel: threading.Event | None = None
    ) -> Iterator[BuildEvent]:
        """Build with BuildKit (or ``builder="classic"``: Docker's classic builder), yielding
        the same events as the embedded engine."""
        return DockerBuilder(self._inventory, self._home).build(request, cancel)

    def builds(self, limit: int = 50) -> list[BuildRecord]:
        """Builds lamina ran on this Docker Engine, newest first."""
        return DockerBuilder(self._inventory, self._home).list_builds(limit)

    # -- registries (lamina.core.docker.pull) -----------------------------------------

    def plan_pull(self, ref: str, platform: str | None = None) -> PullPlan:
        """What the daemon would download for ``ref``, from the registry's manifest."""
        return registry.plan_pull(self.images(), self.layers(), ref, platform)

    def pull(
        self, plan: PullPlan, cancel: threading.Event | None = None
    ) -> Iterator[TransferEvent]:
        """Has the daemon pull the plan's image, streaming its progress."""
        self._inventory.forget()
        return registry.pull(self.api, plan, cancel)

    def push(self, ref: str, cancel: threading.Event | None = None) -> Iterator[TransferEvent]:
        """Has the daemon push a tag it has."""
        return registry.push(self.api, self.images(), ref, cancel)

    # -- disk usage and prune --------------------------------------------------------

    @property
    def differences(self) -> tuple[str, ...]:
        """Where Docker's own disk and prune numbers differ from lamina's, and why."""
        return prune.DIFFERENCES

    def disk_usage(self) -> DiskUsage:
        """``system df`` as Docker counts it, with lamina's plans (:mod:`~lamina.core.docker.usage`)."""
        return usage.disk_usage(self._inventory)

    def plan_prune(self, request: PruneRequest) -> PrunePlan:
        """What Docker's prune will remove and the bytes it frees (a dry run)."""
        return prune.plan_prune(self._inventory, request)

    def apply_prune(self, plan: PrunePlan) -> PruneResult:
        """Runs Docker's prune endpoint for the plan's request."""
        return prune.apply_prune(self._inventory, plan)

    def close(self) -> None:
        """Closes the connection."""
        try:
            self._client.close()
        except Exception:
            log.debug("closing the Docker client failed", exc_info=True)
