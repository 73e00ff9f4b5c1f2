"""Where a stage of a build stands, and what one instruction contributes to its step.

A *state* is an OCI image config (``rootfs.diff_ids``, ``history``, ``config``) stored
as a blob; its digest is the parent id the next step's cache key chains on. A *step* is
what an instruction's handler makes of it before any cache decision: the command line
Docker records (``created_by``), the resulting config, and for COPY/ADD its sources.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any

from lamina.core.dockerfile.mounts import Mount
from lamina.core.embedded.builder.copy import Source
from lamina.core.embedded.builder.rootfs import RootFS

SCRATCH = "scratch"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}


@dataclass
class State:
    """Where a stage stands.

    Attributes:
        id: the config digest (``"scratch"`` for an empty base; None when a dry run
            cannot know it because an earlier step would run).
        doc: the config document.
        chain: the top layer's chainID (None for an empty rootfs).
        chain_known: whether a dry run knows the layers (a metadata miss keeps them).
        key: the cache key the state's filesystem was reached by (the base's ID at a
            stage's start), for rules whose keys chain on the parent's key rather than
            on its config (BuildKit's).
    """

    id: str | None
    doc: dict[str, Any]
    chain: str | None
    chain_known: bool = True
    key: str | None = None

    @property
    def config(self) -> dict[str, Any]:
        """The document's ``config`` (created empty when missing)."""
        cfg: dict[str, Any] = self.doc.setdefault("config", {})
        return cfg

    @classmethod
    def scratch(cls) -> State:
        """The state of ``FROM scratch``: no layers, an empty config for this machine."""
        doc = {
            "architecture": _ARCH.get(platform.machine(), platform.machine()),
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [],
        }
        return cls(SCRATCH, doc, None, key=SCRATCH)


@dataclass
class Step:
    """What one instruction contributes to its key, before the decision.

    Attributes:
        created_by: the command line as ``docker history`` shows it.
        cmd: the same as a list (what the classic builder's key compares).
        new_config: the image config after the instruction.
        sources: COPY/ADD: what is copied.
        source_checksum: COPY/ADD: the checksum of the sources (``file:``, ``dir:``,
            ``multi:``).
        layer: whether the step makes a layer (RUN, COPY, ADD; a WORKDIR that creates
            its directory, once executed).
        dest: COPY/ADD: the destination, joined with the working directory.
        from_root: ``COPY --from``: the root filesystem copied from.
        unknown_sources: ``COPY --from`` a stage a dry run cannot know yet: its name.
        unfetched: ``ADD <git ref>``: the repository, whose files lamina does not fetch.
        argv: RUN: the command as executed (without the classic ``|N`` prefix).
        env: RUN: the process environment (the config's Env and the active build args).
        mounts: RUN: its ``--mount`` specs, variables expanded.
        network: RUN: its ``--network`` (None: the build's).
        content_checksums: COPY/ADD under BuildKit's rules: each source's content
            checksum by base name.
    """

    created_by: str
    cmd: list[str]
    new_config: dict[str, Any]
    sources: list[Source] = field(default_factory=list)
    source_checksum: str | None = None
    layer: bool = False
    dest: str = ""
    from_root: RootFS | None = None
    unknown_sources: str | None = None
    unfetched: str | None = None
    argv: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    mounts: tuple[Mount, ...] = ()
    network: str | None = None
    content_checksums: list[str] = field(default_factory=list)
