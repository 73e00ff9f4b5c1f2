"""What every CLI handler shares: the engine, opened once on first use."""

from __future__ import annotations

from dataclasses import dataclass, field

from lamina.core.engine import Engine
from lamina.core.open import open_engine


@dataclass
class CliContext:
    engine_kind: str | None = None
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = open_engine(self.engine_kind)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
