"""The platform args BuildKit predefines (``TARGETARCH``, ``BUILDPLATFORM`` ...): under
BuildKit's rules a stage sees them after ``ARG NAME``, FROM may use them, a
``--build-arg`` overrides them; the classic builder predefines none. The same rules on
Docker 20.10's BuildKit are the ``bk-platform-args`` parity scenario."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.store import Store
from lamina.core.events import BuildFinished, StepFinished
from lamina.core.model import BuildRequest
from lamina.core.registry.manifests import host_platform

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("busybox_store")]

DOCKERFILE = """\
ARG BASE_PLATFORM=$BUILDPLATFORM
FROM busybox
ARG TARGETPLATFORM
ARG TARGETOS
ARG TARGETARCH
ARG BUILDPLATFORM
ARG BASE_PLATFORM
RUN echo "$TARGETPLATFORM|$TARGETOS|$TARGETARCH|$BUILDPLATFORM|$BASE_PLATFORM" > /p
"""


def _built(store: Store, ctx: Path, builder: str, **args: str) -> tuple[str, list[bool | None]]:
    events = list(
        run_build(
            store,
            BuildRequest(context=str(ctx), builder=builder, network="none", build_args=args),
        )
    )
    assert isinstance(events[-1], BuildFinished), events[-1]
    steps = [e.step for e in events if isinstance(e, StepFinished)]
    run = steps[-1]
    assert run.layer is not None
    return (store.layers.diff_path(run.layer) / "p").read_text(), [s.cached for s in steps]


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    d = tmp_path / "ctx"
    d.mkdir()
    (d / "Dockerfile").write_text(DOCKERFILE)
    return d


def test_buildkit_predefines_the_host_platform(store: Store, ctx: Path) -> None:
    host = host_platform()
    plat = str(host)
    text, _ = _built(store, ctx, "buildkit")
    assert text == f"{plat}|{host.os}|{host.architecture}|{plat}|{plat}\n"
    # A --build-arg overrides one, and the RUN's key holds the value.
    text, cached = _built(store, ctx, "buildkit", TARGETARCH="riscv64")
    assert text == f"{plat}|{host.os}|riscv64|{plat}|{plat}\n"
    assert cached[-1] is False
    assert _built(store, ctx, "buildkit")[1][-1] is True


def test_the_classic_builder_predefines_none(store: Store, ctx: Path) -> None:
    text, _ = _built(store, ctx, "classic")
    assert text == "||||\n"
