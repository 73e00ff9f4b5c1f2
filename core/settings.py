"""lamina's settings file, ``$XDG_CONFIG_HOME/lamina/config.toml``.

The build cache retention policy, the builder whose cache rules builds follow, and
the app's keys::

    [cache]
    keep_storage = "5GB"      # prune least recently used cache until it fits
    max_unused_age = "30d"    # prune cache entries unused for longer than this

    [build]
    builder = "buildkit"      # or "classic": the cache rules `lamina build` decides by

    [keymap]                  # binding id = keys (comma-separated), as Textual names them
    "images.sort" = "o"
    "view.builds" = "3,b"

The cache policy is off when absent; a missing file means every default. The keymap
names bindings by their stable ids (the help screen lists them); the app checks that
each id exists.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina.core.errors import UsageError
from lamina.core.filters import parse_duration, parse_size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class CachePolicy:
    """Build cache retention, applied after every build when any field is set.

    Attributes:
        keep_storage: bytes the build cache may use; None for no limit.
        max_unused_age: seconds an entry may go unused; None for no limit.
    """

    keep_storage: int | None = None
    max_unused_age: float | None = None

    @property
    def enabled(self) -> bool:
        return self.keep_storage is not None or self.max_unused_age is not None


# The builders whose cache rules a build can follow; the first is the default.
BUILDERS = ("buildkit", "classic")


@dataclass(frozen=True)
class BuildSettings:
    """How ``lamina build`` builds.

    Attributes:
        builder: the cache rules builds follow when ``--builder`` does not say:
            ``buildkit`` (BuildKit's, the default) or ``classic`` (Docker's classic
            builder's).
    """

    builder: str = BUILDERS[0]


@dataclass(frozen=True)
class Config:
    """Everything ``config.toml`` can set.

    Attributes:
        cache: the build cache retention policy.
        build: how builds build.
        keymap: binding id -> keys (``"ctrl+o,o"``) for the app.
        path: the file it was read from (None when there was none).
    """

    cache: CachePolicy = field(default_factory=CachePolicy)
    keymap: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    build: BuildSettings = field(default_factory=BuildSettings)


def config_path() -> Path:
    """``$XDG_CONFIG_HOME/lamina/config.toml`` (``~/.config`` when unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "lamina" / "config.toml"


def load_config(path: Path | None = None) -> Config:
    """Reads the settings file.

    Args:
        path: the file to read; defaults to ``config_path()``.

    Returns:
        The settings; every default when the file does not exist.

    Raises:
        UsageError: a file that is not TOML, an unknown key, or a bad size or duration
            (the message names the file and the key).
    """
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: {exc}") from exc
    unknown = set(data) - {"cache", "build", "keymap"}
    if unknown:
        raise UsageError(f"{path}: unknown section or key {min(unknown)!r}")
    return Config(
        cache=_cache_policy(path, data.get("cache", {})),
        keymap=_keymap(path, data.get("keymap", {})),
        path=path,
        build=_build_settings(path, data.get("build", {})),
    )


def _build_settings(path: Path, table: Any) -> BuildSettings:
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [build] must be a table")
    unknown = set(table) - {"builder"}
    if unknown:
        raise UsageError(f"{path}: unknown key build.{min(unknown)}")
    builder = table.get("builder", BUILDERS[0])
    if builder not in BUILDERS:
        raise UsageError(f"{path}: build.builder must be one of {', '.join(BUILDERS)}")
    return BuildSettings(builder=str(builder))


def default_builder() -> str:
    """The builder ``config.toml`` names (``buildkit`` when it names none).

    Raises:
        UsageError: the settings file is malformed.
    """
    return load_config().build.builder


def _keymap(path: Path, table: Any) -> dict[str, str]:
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [keymap] must be a table of binding id = keys")
    out: dict[str, str] = {}
    for binding_id, keys in table.items():
        if isinstance(keys, dict):
            # An unquoted dotted id (images.sort = "o") is a nested table in TOML.
            for sub, value in _keymap(path, keys).items():
                out[f"{binding_id}.{sub}"] = value
            continue
        if isinstance(keys, list) and keys and all(isinstance(k, str) for k in keys):
            keys = ",".join(keys)
        if not isinstance(keys, str) or not keys.strip():
            raise UsageError(f'{path}: keymap.{binding_id} must be keys such as "ctrl+o"')
        out[binding_id] = ",".join(k.strip() for k in keys.split(",") if k.strip())
    return out


def _cache_policy(path: Path, table: Any) -> CachePolicy:
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [cache] must be a table")
    unknown = set(table) - {"keep_storage", "max_unused_age"}
    if unknown:
        raise UsageError(f"{path}: unknown key cache.{min(unknown)}")
    keep: int | None = None
    age: float | None = None
    if "keep_storage" in table:
        keep = int(_parse(path, "keep_storage", table["keep_storage"], parse_size))
    if "max_unused_age" in table:
        age = float(_parse(path, "max_unused_age", table["max_unused_age"], parse_duration))
    return CachePolicy(keep_storage=keep, max_unused_age=age)


def _parse(path: Path, key: str, value: Any, parse: Callable[[str], float]) -> float:
    # A bare number is bytes or seconds; TOML integers are the natural way to say "0".
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise UsageError(f'{path}: cache.{key} must be a string such as "5GB" or "30d"')
    if isinstance(value, (int, float)):
        if value < 0:
            raise UsageError(f"{path}: cache.{key} must not be negative")
        return float(value)
    try:
        return parse(value)
    except UsageError as exc:
        raise UsageError(f"{path}: cache.{key}: {exc}") from None
