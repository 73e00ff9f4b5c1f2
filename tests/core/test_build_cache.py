"""The builder's cache decisions, one test per rule of cache-semantics.md.

Every test builds for real: a store on tmp_path, a busybox base image imported from a
rootfs tar, context files on disk, RUN steps in the sandbox (marked ``root``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from lamina.core.dockerfile.instructions import Instruction
from lamina.core.embedded.archive import import_rootfs
from lamina.core.embedded.builder.records import list_builds
from lamina.core.embedded.builder.rules import ClassicRules
from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.store import Store
from lamina.core.events import BuildFailed, BuildFinished, StepFinished
from lamina.core.model import BuildRequest, StepRecord

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


pytestmark = pytest.mark.usefixtures("busybox_store", "classic_builder")


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    d = tmp_path / "ctx"
    d.mkdir()
    return d


class Result:
    def __init__(self, events: list[Any]) -> None:
        self.events = events
        self.steps: list[StepRecord] = [e.step for e in events if isinstance(e, StepFinished)]
        end = events[-1]
        self.failed = end if isinstance(end, BuildFailed) else None
        self.image = end.image if isinstance(end, BuildFinished) else None

    def decisions(self) -> list[tuple[str, bool | None, str | None]]:
        return [
            (s.instruction, s.cached, s.reason["kind"] if s.reason else None) for s in self.steps
        ]

    def step(self, instruction_prefix: str) -> StepRecord:
        for s in self.steps:
            if s.instruction.startswith(instruction_prefix):
                return s
        raise AssertionError(f"no step {instruction_prefix!r} in {self.decisions()}")

    def kinds(self) -> list[str | None]:
        return [s.reason["kind"] if s.reason else None for s in self.steps]

    def cached(self) -> list[bool | None]:
        return [s.cached for s in self.steps]


def build(
    store: Store,
    context: Path,
    dockerfile: str | None = None,
    expect_failure: bool = False,
    **kw: Any,
) -> Result:
    if dockerfile is not None:
        (context / "Dockerfile").write_text(dockerfile)
    events = list(run_build(store, BuildRequest(context=str(context), **kw)))
    result = Result(events)
    if not expect_failure:
        assert result.failed is None, result.failed
    return result


def write(path: Path, text: str, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        os.chmod(path, mode)
    return path


COPY_A = "FROM busybox\nCOPY a.txt /a.txt\nLABEL after=copy\n"


# -- context files ----------------------------------------------------------------


def test_mtime_is_not_hashed(store: Store, ctx: Path) -> None:
    write(ctx / "a.txt", "hello\n")
    first = build(store, ctx, COPY_A)
    os.utime(ctx / "a.txt", (1_000_000, 1_000_000))
    second = build(store, ctx)
    assert second.cached() == [None, True, True]
    assert second.image == first.image


def test_mode_counts(store: Store, ctx: Path) -> None:
    write(ctx / "a.txt", "hello\n", 0o644)
    build(store, ctx, COPY_A)
    os.chmod(ctx / "a.txt", 0o755)
    second = build(store, ctx)
    copy = second.step("COPY")
    assert copy.cached is False
    assert copy.reason is not None and copy.reason["kind"] == "sources_changed"
    assert copy.reason["changed"] == [{"path": "a.txt", "what": ["mode"]}]
    assert second.step("LABEL").reason["kind"] == "parent_missed"


def test_owner_is_not_hashed(store: Store, ctx: Path) -> None:
    write(ctx / "a.txt", "hello\n")
    first = build(store, ctx, COPY_A)
    os.chown(ctx / "a.txt", 1234, 5678)
    second = build(store, ctx)
    assert second.cached() == [None, True, True]
    assert second.image == first.image


def test_symlink_target_counts(store: Store, ctx: Path) -> None:
    write(ctx / "d" / "x", "x")
    os.symlink("x", ctx / "d" / "link")
    build(store, ctx, "FROM busybox\nCOPY d /d\n")
    os.unlink(ctx / "d" / "link")
    os.symlink("elsewhere", ctx / "d" / "link")
    second = build(store, ctx)
    reason = second.step("COPY").reason
    assert reason is not None and reason["kind"] == "sources_changed"
    assert reason["changed"] == [{"path": "d/link", "what": ["link target"]}]


def test_empty_directory_counts(store: Store, ctx: Path) -> None:
    write(ctx / "d" / "x", "x")
    build(store, ctx, "FROM busybox\nCOPY d /d\n")
    (ctx / "d" / "empty").mkdir()
    second = build(store, ctx)
    reason = second.step("COPY").reason
    assert reason is not None and reason["kind"] == "sources_changed"
    assert reason["added"] == ["d/empty"]


def test_rename_counts(store: Store, ctx: Path) -> None:
    write(ctx / "d" / "x", "same bytes")
    build(store, ctx, "FROM busybox\nCOPY d /d\n")
    (ctx / "d" / "x").rename(ctx / "d" / "y")
    second = build(store, ctx)
    reason = second.step("COPY").reason
    assert reason is not None and reason["kind"] == "sources_changed"
    assert (reason["added"], reason["removed"]) == (["d/y"], ["d/x"])


def test_content_change_is_named(store: Store, ctx: Path) -> None:
    write(ctx / "d" / "x", "one")
    build(store, ctx, "FROM busybox\nCOPY d /d\n")
    write(ctx / "d" / "x", "two")
    reason = build(store, ctx).step("COPY").reason
    assert reason is not None
    assert reason["changed"] == [{"path": "d/x", "what": ["content"]}]


def test_dockerignored_edits_change_nothing(store: Store, ctx: Path) -> None:
    write(ctx / "app" / "main.txt", "main")
    write(ctx / "app" / "debug.log", "one")
    write(ctx / ".dockerignore", "**/*.log\nDockerfile\n.dockerignore\n")
    first = build(store, ctx, "FROM busybox\nCOPY . /src/\n")
    write(ctx / "app" / "debug.log", "two: edited")
    write(ctx / "app" / "new.log", "added")
    # The Dockerfile is matched by .dockerignore, so editing it (a comment) is invisible too.
    (ctx / "Dockerfile").write_text("FROM busybox\n# note\nCOPY . /src/\n")
    second = build(store, ctx)
    assert second.cached() == [None, True]
    assert second.image == first.image
    write(ctx / "app" / "main.txt", "changed")
    assert build(store, ctx).step("COPY").cached is False


def test_revert_hits_the_old_entry(store: Store, ctx: Path) -> None:
    write(ctx / "a.txt", "v1")
    first = build(store, ctx, COPY_A)
    write(ctx / "a.txt", "v2")
    second = build(store, ctx)
    assert second.step("COPY").cached is False
    write(ctx / "a.txt", "v1")
    third = build(store, ctx)
    assert third.cached() == [None, True, True]
    assert third.image == first.image


# -- the Dockerfile ---------------------------------------------------------------


def test_comments_blank_lines_and_directives_change_nothing(store: Store, ctx: Path) -> None:
    write(ctx / "a.txt", "a")
    first = build(store, ctx, COPY_A)
    second = build(
        store,
        ctx,
        "# syntax=docker/dockerfile:1\n# a comment\n\nFROM busybox\n\n# why\nCOPY a.txt /a.txt\n\n"
        "LABEL after=copy\n",
    )
    assert second.cached() == [None, True, True]
    assert second.image == first.image


@pytest.mark.root
def test_run_whitespace_counts(store: Store, ctx: Path) -> None:
    build(store, ctx, "FROM busybox\nRUN echo a\n")
    second = build(store, ctx, "FROM busybox\nRUN echo  a\n")
    reason = second.step("RUN").reason
    assert reason is not None and reason["kind"] == "instruction_changed"
    assert (reason["old"], reason["new"]) == ("RUN echo a", "RUN echo  a")


ARG_FILE = "FROM busybox\nARG FLAVOUR=plain\nLABEL x=y\nRUN echo unrelated\nRUN echo second\n"


@pytest.mark.root
def test_build_arg_change_misses_at_first_run_after_arg(store: Store, ctx: Path) -> None:
    build(store, ctx, ARG_FILE)
    second = build(store, ctx, build_args={"FLAVOUR": "spicy"})
    assert second.cached() == [None, True, True, False, False]
    reason = second.step("RUN echo unrelated").reason
    assert reason == {
        "kind": "build_arg_changed",
        "message": 'build arg FLAVOUR changed from "plain" to "spicy"',
        "name": "FLAVOUR",
        "old": "plain",
        "new": "spicy",
    }
    assert second.step("RUN echo second").reason["kind"] == "parent_missed"


@pytest.mark.root
def test_build_arg_equal_to_default_hits(store: Store, ctx: Path) -> None:
    first = build(store, ctx, ARG_FILE)
    second = build(store, ctx, build_args={"FLAVOUR": "plain"})
    assert second.cached() == [None, True, True, True, True]
    assert second.image == first.image


@pytest.mark.root
def test_env_overrides_arg_in_the_key(store: Store, ctx: Path) -> None:
    text = "FROM busybox\nARG V=1\nENV V=fixed\nRUN echo $V > /v\n"
    build(store, ctx, text)
    second = build(store, ctx, build_args={"V": "2"})
    assert second.cached() == [None, True, True, True]


def test_arg_default_change_misses_at_the_arg(store: Store, ctx: Path) -> None:
    build(store, ctx, "FROM busybox\nARG V=1\nLABEL l=1\n")
    second = build(store, ctx, "FROM busybox\nARG V=2\nLABEL l=1\n")
    assert second.kinds() == [None, "instruction_changed", "parent_missed"]


def test_env_and_label_changes_cascade(store: Store, ctx: Path) -> None:
    write(ctx / "a.txt", "a")
    text = 'FROM busybox\nENV MODE=dev\nLABEL team=core\nCOPY a.txt /a\nCMD ["sh"]\n'
    build(store, ctx, text)
    second = build(store, ctx, text.replace("MODE=dev", "MODE=prod"))
    assert second.kinds() == [
        None,
        "instruction_changed",
        "parent_missed",
        "parent_missed",
        "parent_missed",
    ]
    third = build(store, ctx, text.replace("team=core", "team=web"))
    assert third.cached() == [None, True, False, False, False]


def test_add_and_copy_differ(store: Store, ctx: Path) -> None:
    write(ctx / "a.txt", "a")
    build(store, ctx, "FROM busybox\nCOPY a.txt /a\n")
    second = build(store, ctx, "FROM busybox\nADD a.txt /a\n")
    assert second.kinds() == [None, "instruction_changed"]


def test_chown_counts(store: Store, ctx: Path) -> None:
    write(ctx / "a.txt", "a")
    build(store, ctx, "FROM busybox\nCOPY a.txt /a\n")
    second = build(store, ctx, "FROM busybox\nCOPY --chown=nobody a.txt /a\n")
    assert second.kinds() == [None, "instruction_changed"]
    chain = store.layers.chain(second.steps[-1].layer)
    st = os.lstat(store.layers.diff_path(chain[-1].chain_id) / "a")
    assert (st.st_uid, st.st_gid) == (65534, 65534)


def test_copy_from_hits_when_copied_bytes_are_unchanged(store: Store, ctx: Path) -> None:
    write(ctx / "lib.txt", "library")
    write(ctx / "other.txt", "one")
    text = (
        "FROM busybox AS builder\nCOPY other.txt /other.txt\nCOPY lib.txt /out/lib.txt\n"
        "FROM busybox\nCOPY --from=builder /out /app\n"
    )
    first = build(store, ctx, text)
    write(ctx / "other.txt", "two")
    second = build(store, ctx)
    assert second.decisions()[1][1] is False  # the builder stage ran again
    final = [s for s in second.steps if s.stage == 1]
    assert [s.cached for s in final] == [None, True]
    assert second.image == first.image
    write(ctx / "lib.txt", "library v2")
    third = build(store, ctx)
    reason = [s for s in third.steps if s.stage == 1][1].reason
    assert reason is not None and reason["kind"] == "sources_changed"
    assert reason["changed"] == [{"path": "out/lib.txt", "what": ["content"]}]


def test_no_cache_records_results(store: Store, ctx: Path) -> None:
    write(ctx / "a.txt", "a")
    build(store, ctx, COPY_A)
    forced = build(store, ctx, no_cache=True)
    assert forced.kinds() == [None, "no_cache", "no_cache"]
    after = build(store, ctx)
    assert after.cached() == [None, True, True]
    assert after.image == forced.image


def test_onbuild_triggers_run_after_from(store: Store, ctx: Path) -> None:
    write(ctx / "hook.txt", "from the trigger")
    build(store, ctx, "FROM busybox\nONBUILD COPY hook.txt /hook.txt\n", tags=("base-onbuild",))
    child = build(store, ctx, "FROM base-onbuild\nLABEL child=1\n")
    assert [s.instruction for s in child.steps] == [
        "FROM base-onbuild",
        "COPY hook.txt /hook.txt",
        "LABEL child=1",
    ]
    config = store.images.get_config(child.image)
    assert not config["config"].get("OnBuild")
    layer = child.step("COPY").layer
    assert layer is not None
    assert (store.layers.diff_path(layer) / "hook.txt").read_text() == "from the trigger"
    again = build(store, ctx)
    assert again.cached() == [None, True, True]


def test_target_builds_stages_up_to_it_in_order(store: Store, ctx: Path) -> None:
    text = (
        "FROM busybox AS one\nLABEL stage=one\n"
        "FROM busybox AS two\nLABEL stage=two\n"
        "FROM one AS three\nLABEL stage=three\n"
    )
    result = build(store, ctx, text, target="two", tags=("t:two",))
    assert [(s.stage, s.instruction) for s in result.steps] == [
        (0, "FROM busybox AS one"),
        (0, "LABEL stage=one"),
        (1, "FROM busybox AS two"),
        (1, "LABEL stage=two"),
    ]
    assert store.images.get_config(result.image)["config"]["Labels"] == {"stage": "two"}
    full = build(store, ctx)
    assert full.cached() == [None, True, None, True, None, False]
    assert store.images.get_config(full.image)["config"]["Labels"] == {"stage": "three"}


# -- reasons that need more than one build ------------------------------------------


def test_base_changed_when_from_resolves_elsewhere(
    store: Store, ctx: Path, busybox_tar: Path
) -> None:
    write(ctx / "a.txt", "a")
    build(store, ctx, "FROM base\nCOPY a.txt /a\n".replace("base", "busybox"))
    old = store.images.resolve("busybox")
    import_rootfs(store, busybox_tar, "busybox:latest", message="re-imported")
    new = store.images.resolve("busybox")
    assert new != old
    reason = build(store, ctx).step("COPY").reason
    assert reason is not None and reason["kind"] == "base_changed"
    assert (reason["old"], reason["new"]) == (old, new)


def test_pruned_entry_is_reported(store: Store, ctx: Path) -> None:
    from lamina.core.accounting.plans import PruneRequest
    from lamina.core.embedded.prune import (
        apply_prune,
        plan_prune,
    )

    write(ctx / "a.txt", "a")
    build(store, ctx, "FROM busybox\nCOPY a.txt /a\n")
    plan = plan_prune(store, PruneRequest(kind="builder", all=True, grace=0))
    apply_prune(store, plan)
    reason = build(store, ctx).step("COPY").reason
    assert reason is not None and reason["kind"] == "pruned"


def test_first_build_reason(store: Store, ctx: Path) -> None:
    result = build(store, ctx, "FROM busybox\nLABEL a=b\n")
    assert result.kinds() == [None, "first_build"]
    assert result.steps[1].reason["message"].startswith("first build")


SHARED_BASE = (
    "FROM busybox AS build\nARG VERSION=1.0\nLABEL stage=build\n"
    'FROM busybox\nLABEL maintainer="someone@example.com"\nCOPY --from=build /bin/sh /sh\n'
)


def test_stages_sharing_a_base_are_never_compared_with_each_other(store: Store, ctx: Path) -> None:
    # Both stages start on busybox: stage 1's first step runs on the state stage 0's
    # first step ran on, in the same build. It is still a first build.
    first = build(store, ctx, SHARED_BASE)
    assert first.kinds() == [
        None,
        "first_build",
        "parent_missed",
        None,
        "first_build",
        "parent_missed",
    ]
    # An edit in stage 1 is compared with stage 1's own history, not with stage 0's.
    second = build(store, ctx, SHARED_BASE.replace("someone@", "someone.else@"))
    assert second.cached()[:3] == [None, True, True]
    reason = second.step("LABEL maintainer").reason
    assert reason is not None and reason["kind"] == "instruction_changed"
    assert (reason["old"], reason["new"]) == (
        'LABEL maintainer="someone@example.com"',
        'LABEL maintainer="someone.else@example.com"',
    )


def test_another_dockerfile_on_the_same_base_is_a_first_build(store: Store, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    build(store, one, "FROM busybox\nLABEL project=one\n")
    other = build(store, two, "FROM busybox\nLABEL project=two\n")
    assert other.kinds() == [None, "first_build"]
    # A what-if of the first one still compares with its own history.
    (one / "Dockerfile").write_text("FROM busybox\nLABEL project=uno\n")
    predicted = build(store, one, dry_run=True)
    reason = predicted.steps[1].reason
    assert reason is not None and reason["kind"] == "instruction_changed"
    assert reason["old"] == "LABEL project=one"


# -- images, layers, records --------------------------------------------------------


@pytest.mark.root
def test_shared_layers_are_stored_once(store: Store, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    common = "FROM busybox\nRUN echo shared > /shared\n"
    one = build(store, a, common + "RUN echo one > /one\n", tags=("one",))
    layers_before = set(os.listdir(store.home / "layers"))
    two = build(store, b, common + "RUN echo two > /two\n", tags=("two",))
    assert two.cached() == [None, True, False]
    s1, s2 = store.images.summary(one.image), store.images.summary(two.image)
    assert s1.layers[:2] == s2.layers[:2]
    assert s1.layers[2] != s2.layers[2]
    new_dirs = set(os.listdir(store.home / "layers")) - layers_before
    assert new_dirs == {s2.layers[2].split(":", 1)[1]}


@pytest.mark.root
def test_hello_example_cached_then_only_copy_and_after(store: Store, tmp_path: Path) -> None:
    hello = tmp_path / "hello"
    shutil.copytree(EXAMPLES / "hello", hello)
    first = build(store, hello, tags=("hello",))
    assert first.steps[1].cached is False
    second = build(store, hello, tags=("hello",))
    assert second.cached() == [None, True, True, True, True]
    assert second.image == first.image
    write(hello / "app" / "name.txt", "someone else\n")
    third = build(store, hello, tags=("hello",))
    assert third.cached() == [None, True, True, False, False]
    assert third.kinds()[3:] == ["sources_changed", "parent_missed"]
    assert third.steps[3].reason["changed"] == [{"path": "app/name.txt", "what": ["content"]}]
    assert store.images.resolve("hello") == third.image
    history = store.images.get_config(third.image)["history"]
    assert history[-1]["created_by"] == '/bin/sh -c #(nop)  CMD ["/bin/sh" "/app/hello.sh"]'
    assert history[-1]["empty_layer"] is True
    assert history[-2]["created_by"].startswith("/bin/sh -c #(nop) COPY dir:")


@pytest.mark.root
def test_run_output_env_user_and_workdir(store: Store, ctx: Path) -> None:
    text = (
        "FROM busybox\nARG GREETING=hi\nENV WHO=world\nWORKDIR /work/dir\n"
        'RUN echo "$GREETING $WHO from $(pwd)" && id -u\nUSER nobody\nRUN id -u > /tmp/uid\n'
    )
    result = build(store, ctx, text)
    lines = [e.line for e in result.events if type(e).__name__ == "StepOutput"]
    assert lines[:2] == ["hi world from /work/dir", "0"]
    config = store.images.get_config(result.image)
    assert config["config"]["WorkingDir"] == "/work/dir"
    assert config["config"]["User"] == "nobody"
    run_history = [h for h in config["history"] if h.get("created_by", "").startswith("|")]
    assert run_history[0]["created_by"].startswith("|1 GREETING=hi /bin/sh -c echo")
    uid_layer = result.steps[-1].layer
    assert (store.layers.diff_path(uid_layer) / "tmp" / "uid").read_text() == "65534\n"


def test_builds_are_recorded(store: Store, ctx: Path) -> None:
    write(ctx / "a.txt", "a")
    build(store, ctx, COPY_A, tags=("rec",))
    build(store, ctx, tags=("rec",))
    records = list_builds(store)
    assert [r.status for r in records] == ["ok", "ok"]
    assert [s.cached for s in records[0].steps] == [None, True, True]
    assert records[1].steps[1].reason["kind"] == "first_build"
    row = (
        store.index.connection()
        .execute("SELECT use_count FROM cache WHERE instruction = 'COPY a.txt /a.txt'")
        .fetchone()
    )
    assert row[0] == 1


# -- dry run -------------------------------------------------------------------------


def _store_snapshot(store: Store) -> tuple[list[tuple[str, int]], list[str]]:
    listing = []
    for root, dirs, files in os.walk(store.home):
        for name in dirs + files:
            p = Path(root) / name
            if p.name in ("index.db-wal", "index.db-shm"):
                continue
            listing.append(
                (str(p.relative_to(store.home)), p.lstat().st_size if p.is_file() else 0)
            )
    dump = list(store.index.connection().iterdump())
    return sorted(listing), dump


def test_dry_run_predicts_the_real_decisions_and_writes_nothing(store: Store, ctx: Path) -> None:
    write(ctx / "a.txt", "a")
    write(ctx / "b.txt", "b")
    text = (
        "FROM busybox AS base\nARG V=1\nCOPY a.txt /a\nLABEL v=$V\n"
        'FROM busybox\nCOPY --from=base /a /a\nCOPY b.txt /b\nCMD ["x"]\n'
    )
    build(store, ctx, text)
    write(ctx / "b.txt", "b2")
    before = _store_snapshot(store)
    predicted = build(store, ctx, build_args={"V": "2"}, dry_run=True)
    assert _store_snapshot(store) == before
    assert predicted.image is None
    real = build(store, ctx, build_args={"V": "2"})
    assert predicted.decisions() == real.decisions()
    assert [s.reason for s in predicted.steps] == [s.reason for s in real.steps]


# -- instructions --------------------------------------------------------------------


def test_meta_args_reach_from_and_redeclared_args(store: Store, ctx: Path) -> None:
    store.images.tag(store.images.resolve("busybox"), "base:v1")
    text = "ARG TAG=v1\nARG OTHER=meta\nFROM base:$TAG\nARG OTHER\nLABEL other=$OTHER tag=${TAG:-unset}\n"
    result = build(store, ctx, text)
    labels = store.images.get_config(result.image)["config"]["Labels"]
    # TAG was not re-declared in the stage, so it is not visible there.
    assert labels == {"other": "meta", "tag": "unset"}
    missing = build(store, ctx, build_args={"TAG": "v2"}, expect_failure=True)
    assert missing.failed is not None
    assert "Dockerfile:3: FROM base:v2: no such image" in missing.failed.message


def test_metadata_instructions_shape_the_config(store: Store, ctx: Path) -> None:
    text = (
        'FROM busybox\nENV A=1 B="two words"\nLABEL org.example.x="y z"\nEXPOSE 80 53/udp\n'
        "VOLUME /data\nUSER nobody\nWORKDIR /srv\nSTOPSIGNAL SIGINT\n"
        'HEALTHCHECK --interval=5s CMD ["true"]\nSHELL ["/bin/sh", "-ec"]\n'
        'ENTRYPOINT ["/bin/echo"]\nCMD hello\nONBUILD RUN echo child\n'
    )
    result = build(store, ctx, text)
    config = store.images.get_config(result.image)["config"]
    assert config["Env"][-2:] == ["A=1", "B=two words"]
    assert config["Labels"] == {"org.example.x": "y z"}
    assert config["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert config["Volumes"] == {"/data": {}}
    assert (config["User"], config["WorkingDir"], config["StopSignal"]) == (
        "nobody",
        "/srv",
        "SIGINT",
    )
    assert config["Healthcheck"]["Test"] == ["CMD", "true"]
    assert config["Healthcheck"]["Interval"] == 5_000_000_000
    assert config["Shell"] == ["/bin/sh", "-ec"]
    assert config["Entrypoint"] == ["/bin/echo"]
    assert config["Cmd"] == ["/bin/sh", "-ec", "hello"]
    assert config["OnBuild"] == ["RUN echo child"]
    history = store.images.get_config(result.image)["history"]
    assert history[-1]["created_by"] == "/bin/sh -ec #(nop)  ONBUILD RUN echo child"
    # Docker's parser sorts EXPOSE's words (what `docker history` shows on 20.10).
    assert history[3]["created_by"] == "/bin/sh -c #(nop)  EXPOSE 53/udp 80"


@pytest.mark.root
def test_shell_and_proxy_args(store: Store, ctx: Path) -> None:
    # No heredoc: the classic builder reads a heredoc's lines as instructions.
    text = 'FROM busybox\nSHELL ["/bin/sh", "-ec"]\nRUN echo "one $HTTP_PROXY"; echo two > /two\n'
    first = build(store, ctx, text)
    lines = [e.line for e in first.events if type(e).__name__ == "StepOutput"]
    assert lines == ["one "]
    # An undeclared proxy arg reaches RUN; its value stays out of the key, but, as in
    # moby's prependEnvOnCmd, its presence adds an empty "|0" build-arg prefix.
    second = build(store, ctx, build_args={"HTTP_PROXY": "http://proxy:3128"})
    assert second.cached() == [None, True, False]
    assert second.steps[2].reason["kind"] == "build_arg_changed"
    history = store.images.get_config(second.image)["history"]
    assert history[-1]["created_by"].startswith("|0 /bin/sh -ec ")
    other_proxy = build(store, ctx, build_args={"HTTP_PROXY": "http://other:8080"})
    assert other_proxy.cached() == [None, True, True]
    third = build(
        store,
        ctx,
        text.replace("FROM busybox\n", "FROM busybox\nARG HTTP_PROXY\n"),
        build_args={"HTTP_PROXY": "http://proxy:3128"},
    )
    lines = [e.line for e in third.events if type(e).__name__ == "StepOutput"]
    assert lines == ["one http://proxy:3128"]


def test_entry_whose_result_was_removed_runs_again(store: Store, ctx: Path) -> None:
    write(ctx / "a.txt", "a")
    first = build(store, ctx, COPY_A)
    label_result = (
        store.index.connection()
        .execute("SELECT result FROM cache WHERE instruction = 'LABEL after=copy'")
        .fetchone()[0]
    )
    store.images.remove(first.image)
    (store.home / "blobs" / "sha256" / label_result.split(":", 1)[1]).unlink()
    again = build(store, ctx)
    assert again.cached() == [None, True, False]
    assert again.steps[2].reason["kind"] == "pruned"


def test_copy_from_an_image_hashes_its_real_owner(store: Store, ctx: Path) -> None:
    text = "FROM scratch\nCOPY --from=busybox /etc/passwd /etc/group /etc/\n"
    result = build(store, ctx, text)
    root = store.layers.diff_path(result.steps[1].layer)
    assert (root / "etc" / "passwd").read_text().startswith("root:x:0:0:")
    assert build(store, ctx).cached() == [None, True]


@pytest.mark.root
def test_run_after_volume_commits_the_mount_point_and_drops_writes_inside(
    store: Store, ctx: Path
) -> None:
    """As a Docker classic build does (checked on Engine 20.10+): the RUN layer holds
    the empty mount point; what the command wrote into the volume is gone."""
    text = (
        "FROM busybox\nVOLUME /data\nRUN echo z > /data/x && echo y > /y\nVOLUME /opt/v\nRUN true\n"
    )
    result = build(store, ctx, text)
    first_run = store.layers.diff_path(result.steps[2].layer)
    assert sorted(os.listdir(first_run)) == ["data", "y"]
    assert os.listdir(first_run / "data") == []
    second_run = store.layers.diff_path(result.steps[4].layer)
    assert sorted(os.listdir(second_run)) == ["opt"]
    assert os.listdir(second_run / "opt") == ["v"]


# -- the cache rules are the builder's seam ------------------------------------------


class NoCascade(ClassicRules):
    """Classic keys, but a miss does not make the rest of the stage miss."""

    def cascades(self, ins: Instruction) -> bool:
        return False


class UncachedLabels(ClassicRules):
    """Classic keys, but LABEL is no cached step (BuildKit's LABEL makes no vertex)."""

    def caches(self, ins: Instruction) -> bool:
        return ins.keyword != "LABEL"


def build_with(store: Store, ctx: Path, rules: ClassicRules) -> Result:
    result = Result(list(run_build(store, BuildRequest(context=str(ctx)), rules=rules)))
    assert result.failed is None, result.failed
    return result


def test_the_rules_say_whether_a_miss_spreads(store: Store, ctx: Path) -> None:
    write(ctx / "a.txt", "one")
    write(ctx / "b.txt", "b")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY a.txt /a\nLABEL x=1\nCOPY b.txt /b\n")
    build_with(store, ctx, ClassicRules())
    write(ctx / "a.txt", "two")
    classic = build_with(store, ctx, ClassicRules())
    assert classic.kinds() == [None, "sources_changed", "parent_missed", "parent_missed"]
    write(ctx / "a.txt", "three")
    # Without a cascade each later step is looked up and explained on its own terms.
    alone = build_with(store, ctx, NoCascade())
    assert alone.kinds() == [None, "sources_changed", "first_build", "first_build"]


def test_the_rules_say_which_instructions_are_cached_steps(store: Store, ctx: Path) -> None:
    write(ctx / "a.txt", "a")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY a.txt /a\nLABEL x=1\n")
    result = build_with(store, ctx, UncachedLabels())
    assert result.decisions() == [
        ("FROM busybox", None, None),
        ("COPY a.txt /a", False, "first_build"),
        ("LABEL x=1", None, None),
    ]
    # Applied to the image, but no cache entry of its own.
    assert store.images.get_config(result.image or "")["config"]["Labels"] == {"x": "1"}
    assert [r[0] for r in store.index.rows("SELECT instruction FROM cache")] == ["COPY a.txt /a"]
    assert build_with(store, ctx, UncachedLabels()).cached() == [None, True, None]
