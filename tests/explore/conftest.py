"""Gates for the exploration tests: Graphviz and Chromium are Debian packages that
``.ci/run`` installs; a laptop without them skips, CI fails."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = "/usr/bin/chromium"


def gate(reason: str | None, what: str) -> None:
    """Skip with the reason on a laptop; fail in CI, where it must be provided."""
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"CI must provide {what}: {reason}")
    pytest.skip(reason)


@pytest.fixture
def graphviz() -> str:
    """Graphviz's dot (Debian's graphviz)."""
    dot = shutil.which("dot")
    gate(None if dot else "Graphviz is not installed (apt-get install graphviz)", "Graphviz")
    assert dot is not None
    return dot


@pytest.fixture
def chromium() -> str:
    """Debian's headless-capable Chromium."""
    ok = os.access(CHROMIUM, os.X_OK)
    gate(None if ok else f"{CHROMIUM} is not installed (apt-get install chromium)", "Chromium")
    return CHROMIUM
