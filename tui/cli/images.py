"""CLI verbs: placeholder module, filled in by its owner."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds this module's verbs (none yet)."""
