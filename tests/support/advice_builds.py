"""Real builds for the advice tests: a build context on disk, an embedded engine over a
store with the busybox base, and stand-ins for the package managers busybox lacks.

Busybox has no apt-get and no pip, so the contexts carry small shell scripts under
those names (``bin/``), copied into the image before the steps that call them. They
behave as the real tools do where the rules look: ``apt-get update`` writes package
lists that ``apt-get install`` reads, ``pip install -r FILE`` reads FILE and takes a
while (a real install does), so the commands still match each rule's pattern.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lamina.core.advice.advise import advise
from lamina.core.advice.findings import Advice, AdviceReport
from lamina.core.advice.replay import normalized
from lamina.core.embedded.engine import EmbeddedEngine
from lamina.core.events import BuildFailed, BuildFinished, StepFinished
from lamina.core.model import BuildRequest, StepRecord

# pip stands in for Python's: `pip install -r FILE` reads FILE, and takes a second, as an
# install that downloads does (so the step is slow enough for the rules to care).
PIP = """#!/bin/sh
# pip stands in for Python's (busybox has none): it reads the requirements and is slow.
while [ $# -gt 0 ]; do
    case "$1" in -r) cat "$2" >> /installed.txt; shift ;; esac
    shift
done
sleep 1
"""

# apt-get stands in for Debian's: `update` writes the package lists, `install` reads them.
APT_GET = """#!/bin/sh
# apt-get stands in for Debian's (busybox has none): update writes the lists, install reads them.
case "$1" in
    update) mkdir -p /var/lib/apt/lists && date > /var/lib/apt/lists/index ;;
    install) shift; cat /var/lib/apt/lists/index > /dev/null && echo "$@" >> /var/lib/installed ;;
esac
"""


# Makes an embedded engine over a store of its own, named by the argument.
Engines = Callable[[str], EmbeddedEngine]


class Project:
    """A build context and the engine that builds it.

    Args:
        root: the context directory (created).
        engine: the engine to build with.
        builder: the cache rules (``buildkit`` or ``classic``).
    """

    def __init__(self, root: Path, engine: EmbeddedEngine, builder: str = "buildkit") -> None:
        self.root = root
        self.engine = engine
        self.builder = builder
        root.mkdir(parents=True, exist_ok=True)

    def write(self, rel: str, text: str, mode: int | None = None) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if mode is not None:
            path.chmod(mode)
        return path

    def stand_ins(self) -> None:
        """``bin/pip`` and ``bin/apt-get``, for ``COPY bin/ /usr/local/bin/``."""
        self.write("bin/pip", PIP, 0o755)
        self.write("bin/apt-get", APT_GET, 0o755)

    def dockerfile(self, text: str) -> None:
        self.write("Dockerfile", text)

    def build(self, **kw: Any) -> list[StepRecord]:
        """Builds the context; returns its steps (fails the test if the build fails)."""
        request = BuildRequest(context=str(self.root), builder=self.builder, **kw)
        events = list(self.engine.build(request))
        end = events[-1]
        assert isinstance(end, BuildFinished), end.message if isinstance(end, BuildFailed) else end
        return [e.step for e in events if isinstance(e, StepFinished)]

    def advise(self) -> AdviceReport:
        return advise(self.engine, self.root, relative_to=self.root)

    def rules(self) -> list[str]:
        return [a.rule for a in self.advise().advice]

    def patch(self, diff: str) -> None:
        """Applies a diff as a user would: ``patch -p0`` in the context directory."""
        done = subprocess.run(
            ["patch", "-p0", "--batch"],
            input=diff,
            text=True,
            capture_output=True,
            cwd=self.root,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def copy_to(self, root: Path, engine: EmbeddedEngine) -> Project:
        """The same context (files only) at ``root``, built by ``engine``."""
        shutil.copytree(self.root, root)
        return Project(root, engine, self.builder)


def one(report: AdviceReport, rule: str) -> Advice:
    """The only piece of advice of ``rule`` in the report."""
    found = [a for a in report.advice if a.rule == rule]
    assert len(found) == 1, [a.rule for a in report.advice]
    return found[0]


def ran(steps: list[StepRecord]) -> list[str]:
    """The instructions a build executed (its misses), whitespace normalized."""
    return [normalized(s.instruction) for s in steps if s.cached is False]
