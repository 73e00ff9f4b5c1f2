"""Opening an engine: ``open_engine()`` and where the default store lives.

Kept apart from ``engine.py`` (the Protocols), so that the engines can import the
Protocol module without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path

from lamina.core.engine import Engine
from lamina.core.errors import UsageError


def default_home() -> Path:
    """The store location: ``$LAMINA_HOME``, else ``$XDG_DATA_HOME/lamina``."""
    if os.environ.get("LAMINA_HOME"):
        return Path(os.environ["LAMINA_HOME"]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "lamina"


def open_engine(kind: str | None = None, home: Path | None = None) -> Engine:
    """Open the engine named by ``kind`` (or ``$LAMINA_ENGINE``, default ``embedded``)."""
    kind = kind or os.environ.get("LAMINA_ENGINE") or "embedded"
    if kind == "embedded":
        from lamina.core.embedded.engine import EmbeddedEngine

        return EmbeddedEngine(home or default_home())
    if kind == "docker":
        from lamina.core.docker.engine import DockerEngine

        # lamina keeps its records of Docker builds in its own home.
        return DockerEngine(home=home or default_home())
    raise UsageError(f"unknown engine {kind!r} (expected 'embedded' or 'docker')")


# The image sources ``lamina SOURCE:PATH`` opens read-only, as skopeo and dive name them.
ARCHIVE_SOURCES = ("docker-archive", "oci-archive", "oci")
REGISTRY_SOURCE = "docker"


def source_of(text: str) -> tuple[str, str] | None:
    """``(transport, rest)`` for ``docker-archive:PATH``, ``oci-archive:PATH``,
    ``oci:DIR`` and ``docker://REF``; None for a plain image reference."""
    if text.startswith("docker://"):
        return REGISTRY_SOURCE, text[len("docker://") :]
    head, sep, rest = text.partition(":")
    if sep and head in ARCHIVE_SOURCES:
        return head, rest
    return None


def open_archive(path: Path, label: str = "") -> Engine:
    """A read-only engine over an image archive or OCI layout, read where it lies.

    Raises:
        ArchiveError: not a readable image archive.
    """
    from lamina.core.archive.engine import ArchiveEngine

    return ArchiveEngine(Path(path), label)


def open_remote(reference: str, platform: str | None = None) -> Engine:
    """A read-only engine over an image fetched from a registry into a temporary layout
    (removed when the engine closes); nothing is loaded into a store.

    Raises:
        UsageError: a malformed reference.
        RegistryError: the registry failed or refused.
    """
    from lamina.core.archive.engine import ArchiveEngine
    from lamina.core.archive.remote import download_layout

    layout = download_layout(reference, platform)
    try:
        return ArchiveEngine(layout, f"docker://{reference}", cleanup=layout)
    except BaseException:
        import shutil

        shutil.rmtree(layout, ignore_errors=True)
        raise
