"""Build arguments with Docker's scoping rules (see :mod:`lamina.core.dockerfile.args`)."""

from __future__ import annotations

from lamina.core.dockerfile.args import BUILTIN_ARGS, BuildArgs

__all__ = ["BUILTIN_ARGS", "BuildArgs"]
