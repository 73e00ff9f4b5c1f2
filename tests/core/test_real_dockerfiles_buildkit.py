"""The real Dockerfiles of ``../shared/conformance/real-dockerfiles`` that use ``RUN
--mount`` or ``COPY --link`` pass a dry run under BuildKit's rules.

Their bases (golang, alpine, tonistiigi/xx, ...) cannot be pulled offline, so every base
the store lacks is stood in for by busybox with ``base_substitutes={"*": ...}`` (the CLI's
``--base-substitute '*=busybox'``): an option a user can give too, recorded in the
request rather than a fake tag in the store, so nothing stays behind that looks like
the real image. A dry run reads the context and the store and runs nothing, so the
COPY sources the Dockerfiles name are stood in for by empty files.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.store import Store
from lamina.core.events import BuildFailed, BuildFinished, StepFinished
from lamina.core.model import BuildRequest

REAL = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "real-dockerfiles"


def _using_buildkit_syntax() -> list[Path]:
    if not REAL.is_dir():
        return []
    return sorted(
        p
        for p in REAL.glob("*/Dockerfile")
        if re.search(r"--mount|--link", p.read_text(encoding="utf-8", errors="replace"))
    )


FILES = _using_buildkit_syntax()


def test_the_conformance_set_has_them() -> None:
    if not REAL.is_dir():
        pytest.skip(f"{REAL} is not laid out next to this checkout")
    assert len(FILES) >= 4


@pytest.mark.usefixtures("busybox_store")
@pytest.mark.parametrize("path", FILES, ids=[p.parent.name for p in FILES])
def test_dry_run_with_a_stand_in_base(store: Store, tmp_path: Path, path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    text = path.read_text(encoding="utf-8")
    (ctx / "Dockerfile").write_text(text)
    events = list(
        run_build(
            store,
            BuildRequest(
                context=str(ctx),
                dry_run=True,
                builder="buildkit",
                base_substitutes={"*": "busybox:latest"},
            ),
        )
    )
    failed = [e for e in events if isinstance(e, BuildFailed)]
    if failed and "no such file" in failed[0].message:
        # Sources the real build would send: give each named one an empty file.
        for _ in range(50):
            match = re.search(r"(?:COPY|ADD): (\S+): no such file", failed[0].message)
            if not match:
                break
            missing = ctx / match.group(1).rstrip("/")
            missing.parent.mkdir(parents=True, exist_ok=True)
            if match.group(1).endswith("/"):
                missing.mkdir(exist_ok=True)
            else:
                missing.write_text("")
            events = list(
                run_build(
                    store,
                    BuildRequest(
                        context=str(ctx),
                        dry_run=True,
                        builder="buildkit",
                        base_substitutes={"*": "busybox:latest"},
                    ),
                )
            )
            failed = [e for e in events if isinstance(e, BuildFailed)]
            if not failed:
                break
    assert not failed, failed[0].message
    assert isinstance(events[-1], BuildFinished)
    assert any(isinstance(e, StepFinished) for e in events)
