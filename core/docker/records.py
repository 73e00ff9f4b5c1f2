"""lamina's own records of the builds it ran on a Docker daemon.

Docker keeps no record of a build's inputs, so lamina writes one JSON file per build
under ``<home>/docker/<daemon>/builds/`` (builds on different daemons never explain
each other): the request, the builder (``classic`` or ``buildkit``), the steps with hit or miss and
reason, and the inputs each step had (:mod:`lamina.core.docker.inputs`), which the next
build of the same tag with the same builder is compared with (the two builders keep
separate caches).

``<daemon>`` names one daemon: its ``ID`` from ``docker info`` alone is not enough,
because dockerd 20.10 derives it from ``/etc/docker/key.json``, which every daemon on a
host shares; together with the daemon's data root (``DockerRootDir``), which two daemons
on one host cannot share, it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from lamina.core.model import BuildRecord, StepRecord

log = logging.getLogger(__name__)

_SAFE_RE = re.compile(r"[^A-Za-z0-9_.-]+")


def records_dir(home: Path, daemon_info: dict[str, Any]) -> Path:
    """Where one daemon's build records live under the lamina ``home``.

    Args:
        home: the lamina home.
        daemon_info: Docker's ``info``: its ``ID`` and ``DockerRootDir`` name the daemon.
    """
    return Path(home) / "docker" / daemon_key(daemon_info) / "builds"


def daemon_key(daemon_info: dict[str, Any]) -> str:
    """A directory name that differs between any two daemons, even on one host.

    The daemon's ID (readable, shortened) and a hash of ID and data root together.
    """
    daemon_id = str(daemon_info.get("ID") or daemon_info.get("Name") or "default")
    root = str(daemon_info.get("DockerRootDir") or "")
    digest = hashlib.sha256(f"{daemon_id}\0{root}".encode()).hexdigest()[:16]
    return f"{_SAFE_RE.sub('_', daemon_id)[:24]}-{digest}"


class BuildRecords:
    """lamina's own record of the builds it ran on one Docker daemon.

    Args:
        root: the directory holding ``<id>.json`` files; None keeps no records (an
            engine opened without a home: builds run, but none is remembered).
    """

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def _files(self) -> list[Path]:
        if self.root is None or not self.root.is_dir():
            return []
        files = [p for p in self.root.glob("*.json") if p.stem.isdigit()]
        return sorted(files, key=lambda p: int(p.stem), reverse=True)

    def next_id(self) -> int:
        """A build ID one above every recorded build."""
        files = self._files()
        return int(files[0].stem) + 1 if files else 1

    def save(self, record: dict[str, Any]) -> None:
        """Writes one build atomically (temp file, then rename)."""
        if self.root is None:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".{record['id']}.json.{os.getpid()}"
            tmp.write_text(json.dumps(record, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.root / f"{record['id']}.json")
        except OSError as exc:
            log.warning("could not record Docker build %s in %s: %s", record["id"], self.root, exc)

    def load_all(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Recorded builds, newest first."""
        out = []
        for path in self._files():
            try:
                out.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                log.warning("skipping unreadable Docker build record %s", path)
                continue
            if limit is not None and len(out) >= limit:
                break
        return out

    def previous(self, record: dict[str, Any], builder: str | None = None) -> dict[str, Any] | None:
        """The latest finished build of one of the same tags (or the same Dockerfile).

        Args:
            record: the build being made (its ``tags``, ``dockerfile`` and ``context``).
            builder: only builds by this builder (``classic`` or ``buildkit``; a record
                without one is from before BuildKit builds, so classic); None for any.
        """
        for old in self.load_all():
            if old["id"] == record["id"] or old.get("status") not in ("ok", "failed"):
                continue
            if builder is not None and builder_of(old) != builder:
                continue
            if record["tags"]:
                if set(old.get("tags", ())) & set(record["tags"]):
                    return old
            elif (
                old.get("dockerfile") == record["dockerfile"]
                and old.get("context") == record["context"]
            ):
                return old
        return None


def builder_of(data: dict[str, Any]) -> str:
    """The builder a recorded build ran with (records from before BuildKit builds have
    none: they were classic)."""
    return str(data.get("builder") or "classic")


def build_record(data: dict[str, Any]) -> BuildRecord:
    """A recorded build (its JSON) as the engine-neutral ``BuildRecord``."""
    return BuildRecord(
        id=int(data["id"]),
        started=float(data["started"]),
        finished=data.get("finished"),
        dockerfile=data["dockerfile"],
        context=data["context"],
        tags=tuple(data.get("tags", ())),
        build_args=dict(data.get("build_args", {})),
        target=data.get("target"),
        image=data.get("image"),
        status=data["status"],
        error=data.get("error"),
        steps=tuple(StepRecord(**s) for s in data.get("steps", ())),
        builder=builder_of(data),
    )
