"""``ADD <git ref>`` (Dockerfile 1.6): lamina recognises a git source as BuildKit's
frontend does, but does not fetch repositories. A dry run reports the step as unknown,
with the reason; a build stops in its preflight, in one line naming the file and line,
and leaves the store as it was. Stand-in images (``--base-substitute``) serve
``COPY --from=<image>`` as they serve FROM."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.core.embedded.builder.copy import is_git_ref
from lamina.core.embedded.builder.records import list_builds
from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.store import Store
from lamina.core.events import BuildFailed, BuildFinished, StepFinished
from lamina.core.model import BuildRequest

GIT = "https://github.com/opencontainers/runc.git#v1.1.0"


@pytest.mark.parametrize(
    ("src", "git"),
    [
        ("https://github.com/moby/buildkit.git", True),
        ("https://github.com/moby/buildkit.git#v0.10.1", True),
        ("https://github.com/moby/buildkit.git#main:frontend/dockerfile", True),
        ("http://example.com/repo.git?x=1", True),
        ("git://example.com/repo", True),
        ("git@github.com:moby/buildkit.git", True),
        ("ssh://git@github.com/moby/buildkit", True),
        ("github.com/moby/buildkit", True),
        ("https://example.com/archive.tar.gz", False),
        ("https://example.com/a.git/file.txt", False),
        ("repo.git", False),
        ("./github.com/x", False),
    ],
)
def test_git_sources_are_told_apart_from_urls_and_files(src: str, git: bool) -> None:
    assert is_git_ref(src) is git


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    d = tmp_path / "ctx"
    d.mkdir()
    (d / "Dockerfile").write_text(
        f'FROM busybox\nARG V=v1.1.0\nADD --keep-git-dir=true "{GIT.split("#")[0]}#$V" /src\n'
        "RUN true\n"
    )
    return d


@pytest.mark.usefixtures("busybox_store")
def test_a_dry_run_reports_a_git_source_as_unknown(store: Store, ctx: Path) -> None:
    events = list(run_build(store, BuildRequest(context=str(ctx), dry_run=True)))
    assert isinstance(events[-1], BuildFinished), events[-1]
    steps = [e.step for e in events if isinstance(e, StepFinished) and e.step.cached is not None]
    add, run = steps
    assert add.cached is False and add.reason is not None and add.reason["unknown"] is True
    assert add.reason["message"] == (
        f"adds the git repository {GIT}, which lamina does not fetch: its files are not known"
    )
    assert run.cached is False


@pytest.mark.usefixtures("busybox_store")
def test_a_build_with_a_git_source_stops_before_it_starts(store: Store, ctx: Path) -> None:
    before = sorted(str(p.relative_to(store.home)) for p in store.home.rglob("*"))
    builds = len(list_builds(store))
    events = list(run_build(store, BuildRequest(context=str(ctx))))
    assert isinstance(events[-1], BuildFailed), events[-1]
    assert events[-1].message == (
        f"{ctx / 'Dockerfile'}:3: ADD: {GIT}: lamina does not fetch git repositories"
        " (ADD <git ref>); clone it into the build context instead"
    )
    assert not [e for e in events if isinstance(e, StepFinished)]
    after = sorted(str(p.relative_to(store.home)) for p in store.home.rglob("*"))
    assert [p for p in after if not p.startswith("index.db")] == [
        p for p in before if not p.startswith("index.db")
    ]
    assert len(list_builds(store)) == builds


@pytest.mark.usefixtures("busybox_store")
def test_a_stand_in_serves_copy_from_an_image_the_store_lacks(store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM scratch\nCOPY --from=example.com/tools:1 /bin/busybox /busybox\n"
    )
    request = BuildRequest(context=str(ctx), dry_run=True)
    events = list(run_build(store, request))
    assert isinstance(events[-1], BuildFailed)
    assert "--from=example.com/tools:1: no such stage or image" in events[-1].message
    request = BuildRequest(context=str(ctx), dry_run=True, base_substitutes={"*": "busybox:latest"})
    events = list(run_build(store, request))
    assert isinstance(events[-1], BuildFinished), events[-1]
