"""The files a build reads: its Dockerfile, and its context with ``.dockerignore`` applied.

Both engines find them the same way: the Dockerfile is ``<context>/Dockerfile`` unless
``-f`` names another (relative to the working directory, as the ``docker`` CLI reads
it), and the ignore patterns come from :func:`~lamina.core.context.dockerignore.
load_ignore_patterns`. Only where the ignore file may sit differs: the embedded builder
also honours ``<Dockerfile>.dockerignore`` next to the Dockerfile, while the classic
builder's client reads ``<context>/.dockerignore`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lamina.core.context.checksum import Context, StatCache
from lamina.core.context.dockerignore import PatternMatcher, load_ignore_patterns
from lamina.core.errors import ContextError


def dockerfile_path(context_dir: str | Path, dockerfile: str | Path | None) -> Path:
    """The Dockerfile of a build: ``dockerfile`` as given, else ``<context>/Dockerfile``."""
    if dockerfile is None:
        return Path(context_dir) / "Dockerfile"
    return Path(dockerfile)


def read_dockerfile(path: Path) -> str:
    """The Dockerfile's text, bytes that are not UTF-8 kept (``surrogateescape``).

    Raises:
        ContextError: the file cannot be read.
    """
    try:
        return path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise ContextError(f"cannot read Dockerfile {path}: {exc.strerror or exc}") from exc


def ignoring_context(
    context_dir: str | Path, patterns: list[str], stat_cache: StatCache | None = None
) -> Context:
    """The context directory with ``patterns`` (``.dockerignore`` lines) left out."""
    if not patterns:
        return Context(Path(context_dir), None, stat_cache)
    matcher = PatternMatcher(patterns)

    def excluded(rel: str, is_dir: bool) -> tuple[bool, bool]:
        if matcher.included(rel, is_dir):
            return False, True
        # An excluded directory is still walked when a later `!pattern` may reach into it.
        return True, is_dir and not matcher.can_skip_dir(rel)

    return Context(Path(context_dir), excluded, stat_cache)


@dataclass(frozen=True)
class BuildFiles:
    """What a build reads from disk before it starts.

    Attributes:
        dockerfile: the Dockerfile's path, as :func:`dockerfile_path` gives it.
        text: its content.
        context: the context, ``.dockerignore`` applied.
    """

    dockerfile: Path
    text: str
    context: Context


def load_build_files(
    context_dir: str | Path,
    dockerfile: str | Path | None,
    *,
    dockerfile_ignore: bool = True,
) -> BuildFiles:
    """Finds and reads a build's Dockerfile, and opens its context.

    Args:
        context_dir: the build context.
        dockerfile: ``-f``, or None for ``<context>/Dockerfile``.
        dockerfile_ignore: whether ``<Dockerfile>.dockerignore`` wins over
            ``<context>/.dockerignore`` (BuildKit's rule, which the embedded builder
            follows; the classic builder's client reads the context's file only).

    Raises:
        ContextError: the context is not a directory, or the Dockerfile or the ignore
            file cannot be read.
    """
    root = Path(context_dir)
    if not root.is_dir():
        raise ContextError(f"build context {root} is not a directory")
    path = dockerfile_path(root, dockerfile)
    text = read_dockerfile(path)
    patterns = load_ignore_patterns(root, path if dockerfile_ignore else None)
    return BuildFiles(path, text, ignoring_context(root, patterns))
