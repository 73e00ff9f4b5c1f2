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
