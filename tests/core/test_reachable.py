"""Which stages a target needs (BuildKit builds only those) and which a stage waits for."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.core.dockerfile.args import meta_values
from lamina.core.dockerfile.instructions import Dockerfile, load_dockerfile
from lamina.core.dockerfile.reachable import dependencies, needed_stages
from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.store import Store
from lamina.core.errors import UsageError
from lamina.core.events import BuildFailed, StepFinished
from lamina.core.model import BuildRequest


def _df(text: str) -> Dockerfile:
    return load_dockerfile(text, "Dockerfile")


def _needed(text: str, target: str | None = None, **args: str) -> list[int]:
    df = _df(text)
    return needed_stages(df, target, meta_values(df, args))


# Stages 0..4: base, build FROM base, test FROM build, docs alone, final copying build.
FIVE = """\
FROM busybox AS base
RUN echo base
FROM base AS build
RUN echo build
FROM build AS test
RUN echo test
FROM busybox AS docs
RUN echo docs
FROM busybox
COPY --from=build /out /out
"""


@pytest.mark.parametrize(
    ("text", "target", "needed"),
    [
        # FROM <stage> chains; a stage nothing reaches is left out.
        (FIVE, None, [0, 1, 4]),
        (FIVE, "test", [0, 1, 2]),
        (FIVE, "docs", [3]),
        (FIVE, "BASE", [0]),  # names are case-insensitive, --target too
        # COPY --from by name, by number, and a stage name written in capitals.
        ("FROM a AS one\nFROM b AS two\nFROM c\nCOPY --from=one /x /x\n", None, [0, 2]),
        ("FROM a AS one\nFROM b AS two\nFROM c\nCOPY --from=1 /x /x\n", None, [1, 2]),
        ("FROM a AS One\nFROM b\nCOPY --from=ONE /x /x\n", None, [0, 1]),
        # --from names an image, not a stage: nothing more is needed.
        ("FROM a AS one\nFROM b\nCOPY --from=busybox:latest /x /x\n", None, [1]),
        # A number is a stage only when it is an earlier one.
        ("FROM a\nCOPY --from=1 /x /x\nFROM b\n", None, [1]),
        ("FROM a AS one\nFROM b\nCOPY --from=2 /x /x\nFROM c\n", "1", None),
        # RUN --mount=from= reads a stage like COPY --from, in any of the mount's fields.
        (
            "FROM a AS tools\nFROM b AS x\nFROM c\nRUN --mount=from=tools,target=/t true\n",
            None,
            [0, 2],
        ),
        (
            "FROM a AS tools\nFROM b\nRUN --mount=type=bind,target=/t,from=tools true\n",
            None,
            [0, 1],
        ),
        (
            'FROM a AS tools\nFROM b\nRUN --mount=type=cache,"from=tools",target=/t true\n',
            None,
            [0, 1],
        ),
        ("FROM a AS tools\nFROM b\nRUN --mount=type=cache,target=/t true\n", None, [1]),
        # Through a chain of each kind.
        (
            "FROM a AS s0\nFROM s0 AS s1\nFROM b AS s2\nCOPY --from=s1 /x /x\n"
            "FROM c AS s3\nRUN --mount=from=s2,target=/m true\nFROM d\nCOPY --from=s3 /y /y\n",
            None,
            [0, 1, 2, 3, 4],
        ),
    ],
)
def test_needed_stages(text: str, target: str | None, needed: list[int] | None) -> None:
    if needed is None:
        with pytest.raises(UsageError, match="target stage '1' not found"):
            _needed(text, target)
        return
    assert _needed(text, target) == needed


def test_from_is_read_with_the_meta_args() -> None:
    text = "ARG SRC=one\nFROM a AS one\nFROM b AS two\nFROM ${SRC}\n"
    assert _needed(text) == [0, 2]
    assert _needed(text, SRC="two") == [1, 2]
    assert _needed(text, SRC="busybox") == [2]


def test_a_from_that_cannot_be_expanded_keeps_every_earlier_stage() -> None:
    assert _needed("FROM a AS one\nFROM b AS two\nFROM ${BAD:?unset}\n") == [0, 1, 2]


def test_copy_from_and_mount_from_are_taken_as_written() -> None:
    # Neither builder expands them: a variable there names no stage.
    text = (
        "ARG SRC=one\nFROM a AS one\nFROM b AS two\nFROM c\nCOPY --from=$SRC /x /x\n"
        "RUN --mount=from=${SRC},target=/m true\n"
    )
    assert _needed(text) == [2]


def test_dependencies_are_the_stages_read_directly() -> None:
    df = _df(FIVE)
    assert [dependencies(df, n, {}) for n in range(5)] == [set(), {0}, {1}, set(), {1}]


# -- in a build: a stage the target does not need is not built -----------------------


@pytest.mark.usefixtures("busybox_store")
def test_a_build_runs_only_the_needed_stages(store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("f")
    (ctx / "Dockerfile").write_text(
        "FROM busybox AS unused\nCOPY f /unused\n"
        "FROM busybox AS tools\nCOPY f /tool\n"
        "FROM tools AS final\nCOPY --from=tools /tool /copied\n"
    )
    events = list(run_build(store, BuildRequest(context=str(ctx), dry_run=True)))
    steps = [e.step for e in events if isinstance(e, StepFinished)]
    skipped = [s for s in steps if s.stage == 0]
    assert len(skipped) == 1 and skipped[0].reason is not None
    assert skipped[0].reason["kind"] == "stage_skipped"
    assert {s.stage for s in steps if s.cached is not None} == {1, 2}


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("COPY --from=$SRC /f /g", "--from=$SRC: variables are not expanded in --from"),
        ("RUN --mount=from=$SRC,target=/m true", "'from' doesn't support variable expansion"),
    ],
)
def test_a_variable_in_from_is_refused_naming_the_line(
    store: Store, tmp_path: Path, line: str, words: str
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("f")
    (ctx / "Dockerfile").write_text(
        f"ARG SRC=one\nFROM scratch AS one\nCOPY f /f\nFROM scratch\n{line}\n"
    )
    events = list(run_build(store, BuildRequest(context=str(ctx), dry_run=True)))
    failed = events[-1]
    assert isinstance(failed, BuildFailed)
    assert failed.message.startswith(f"{ctx / 'Dockerfile'}:5: "), failed.message
    assert words in failed.message and failed.message.count("Dockerfile:") == 1
