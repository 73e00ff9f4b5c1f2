"""RUN steps in an isolated root filesystem (overlayfs + namespaces).

The builder calls :func:`run` with a :class:`RunSpec`; see ``runner`` for how the
sandbox is built and ``child`` for the code that runs inside the new namespaces.
"""

from __future__ import annotations

from lamina.core.embedded.sandbox.runner import RunSpec, check_available, normalize_upper, run

__all__ = ["RunSpec", "check_available", "normalize_upper", "run"]
