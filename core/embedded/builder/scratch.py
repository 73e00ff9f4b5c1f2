"""A build's scratch directory: heredoc files and ``ADD <url>`` downloads.

The preflight writes them and the build that follows reuses them, so both hash the
same bytes (a URL is downloaded once). One :class:`Scratch` spans both walks and is
the only thing that removes the directory, whatever way the build ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from lamina.core.embedded.builder.copy import download


class Scratch:
    """The scratch directory of one build, made on first use; a context manager that
    removes it on exit."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._downloads: dict[str, tuple[Path, str]] = {}

    def __enter__(self) -> Scratch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def path(self) -> Path:
        """The directory (created now if it does not exist yet)."""
        if self._path is None:
            self._path = Path(tempfile.mkdtemp(prefix="lamina-build-"))
        return self._path

    def heredoc(self, data: str) -> Path:
        """A new file holding a heredoc's text."""
        path = self.path / f"heredoc-{len(os.listdir(self.path))}"
        path.write_text(data)
        return path

    def download(self, url: str) -> tuple[Path, str]:
        """The downloaded file of ``url`` and its name (fetched on the first call only).

        Raises:
            BuildError: if the download fails.
        """
        if url not in self._downloads:
            self._downloads[url] = download(url, self.path)
        return self._downloads[url]

    def close(self) -> None:
        """Removes the directory and everything in it."""
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None
        self._downloads.clear()
