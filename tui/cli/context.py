"""What every CLI handler shares: the engine, opened once on first use."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lamina.core import UsageError

if TYPE_CHECKING:
    # Engines load when a verb first asks for one: `lamina --help` never does.
    from lamina.core import Engine, LocalStore

# What the refusal says when no better advice applies.
NOT_FOR_DOCKER = "it does not apply to --engine docker"


def local_only(what: str, instead: str = NOT_FOR_DOCKER) -> UsageError:
    """The one-line refusal of a verb that needs lamina's own store.

    Args:
        what: the verb or option, as the user typed it (``lamina fsck``, ``--frees``).
        instead: what to do instead.
    """
    return UsageError(f"{what} works on lamina's own store; {instead}")


@dataclass
class CliContext:
    engine_kind: str | None = None
    _engine: Engine | None = field(default=None, repr=False)
    _archives: dict[str, Engine] = field(default_factory=dict, repr=False)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from lamina.core import open_engine

            self._engine = open_engine(self.engine_kind)
        return self._engine

    @property
    def wants_docker(self) -> bool:
        """Whether ``--engine``/``$LAMINA_ENGINE`` chose Docker (known without opening it)."""
        return (self.engine_kind or os.environ.get("LAMINA_ENGINE")) == "docker"

    def local_store(self, what: str, instead: str = NOT_FOR_DOCKER) -> LocalStore:
        """The engine, if it is lamina's own store; else a ``UsageError`` naming ``what``."""
        from lamina.core import LocalStore

        engine = self.engine
        if not isinstance(engine, LocalStore):
            raise local_only(what, instead)
        return engine

    def engine_for(self, ref: str) -> tuple[Engine, str]:
        """The engine holding ``ref`` and the image's name there: an archive source
        (``docker-archive:PATH``, ``oci-archive:PATH``, ``oci:DIR``) is opened read-only
        in place, and ``docker://REF`` fetched into a temporary layout, once per command;
        anything else is an image of the current engine."""
        from lamina.core import open_archive, open_remote, source_of

        source = source_of(ref)
        if source is None:
            return self.engine, ref
        if ref not in self._archives:
            from pathlib import Path

            kind, rest = source
            self._archives[ref] = (
                open_remote(rest) if kind == "docker" else open_archive(Path(rest), ref)
            )
        engine = self._archives[ref]
        images = engine.images()
        if len(images) != 1:
            raise UsageError(f"{ref} holds {len(images)} images; load it to pick one")
        return engine, images[0].id

    def close(self) -> None:
        for archive in self._archives.values():
            archive.close()
        self._archives.clear()
        if self._engine is not None:
            self._engine.close()
            self._engine = None
