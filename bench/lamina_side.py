"""The lamina side: the same builds through the ``lamina`` command line.

The CLI is what users run, so its time includes interpreter start-up, reading the
Dockerfile, checksumming the context, RUN in the sandbox and layer commits. Each cache
decision is read back from the store's build records, so a "cached rebuild" that did
not hit fails the run instead of producing a flattering number.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.measure import BenchError, ChildResult, Skipped, run_child

if TYPE_CHECKING:
    from lamina.core import BuildRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaminaBuild:
    """One ``lamina build``.

    Attributes:
        result: the CLI process.
        cached: each step's decision in order (True hit, False miss, None for FROM).
    """

    result: ChildResult
    cached: tuple[bool | None, ...]

    @property
    def hits(self) -> int:
        return sum(1 for c in self.cached if c is True)

    @property
    def misses(self) -> int:
        return sum(1 for c in self.cached if c is False)


def lamina_command() -> list[str]:
    """How to run the lamina CLI of this checkout (the venv's script, else ``-m``)."""
    script = Path(sys.executable).with_name("lamina")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "lamina.tui"]


def check_builder() -> None:
    """Raises Skipped when this checkout cannot build yet (no builder, no sandbox)."""
    try:
        from lamina.core.embedded.builder import walk  # noqa: F401
    except ImportError as exc:
        raise Skipped(f"lamina's builder is not importable here ({exc})") from exc
    try:
        from lamina.core.embedded.sandbox.runner import check_available
    except ImportError as exc:
        raise Skipped(f"lamina's RUN sandbox is not importable here ({exc})") from exc
    try:
        check_available()
    except Exception as exc:
        raise Skipped(f"RUN cannot be sandboxed here: {exc}") from exc


class LaminaSide:
    """The lamina CLI over one store.

    Args:
        home: the store (``$LAMINA_HOME`` for the CLI).
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = dict(os.environ, LAMINA_HOME=str(home))
        self.env.pop("LAMINA_ENGINE", None)

    def reset(self) -> None:
        """Removes the store, so the next build is cold (no layers, no stat cache)."""
        if self.home.exists():
            shutil.rmtree(self.home)

    def import_base(self, rootfs_tar: Path, tag: str) -> str:
        """Imports a root filesystem tar as ``tag``; returns the image ID."""
        from lamina.core.embedded.archive import import_rootfs
        from lamina.core.embedded.store import Store

        store = Store(self.home)
        try:
            summary = import_rootfs(store, rootfs_tar, tag)
        finally:
            store.close()
        return summary.id

    def build(self, context: Path, tag: str, *extra: str) -> LaminaBuild:
        """``lamina build -t tag [extra...] context``; its cache decisions from the build
        record.

        Raises:
            BenchError: the build failed.
        """
        result = run_child(
            [*lamina_command(), "build", "-t", tag, *extra, str(context)], env=self.env
        ).check(f"lamina build of {context}")
        return LaminaBuild(result=result, cached=self.last_decisions())

    def last_record(self) -> BuildRecord:
        """The newest recorded build.

        Raises:
            BenchError: there is none.
        """
        from lamina.core.embedded.builder.records import list_builds
        from lamina.core.embedded.store import Store

        store = Store(self.home)
        try:
            records = list_builds(store, 1)
        finally:
            store.close()
        if not records:
            raise BenchError(f"{self.home}: lamina recorded no build")
        return records[0]

    def last_decisions(self) -> tuple[bool | None, ...]:
        """Each step's cache decision in the newest recorded build."""
        record = self.last_record()
        if record.status != "ok":
            raise BenchError(f"{self.home}: the last build is {record.status}: {record.error}")
        return tuple(step.cached for step in record.steps)
