"""BuildKit builds on Docker, the parts that need no daemon: the progress stream's wire
format, vertex names, the step plan, the uploaded context, miss explanations and the
``buildx du --verbose`` fields."""

from __future__ import annotations

import base64
import io
import os
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lamina.core.accounting.usage import CacheMountUsage, CacheUsage, DiskUsage
from lamina.core.docker.context import OUTSIDE_DOCKERFILE, buildkit_context_tar
from lamina.core.docker.convert import buildkit_record
from lamina.core.docker.inputs import explain_buildkit, hit_note, plan_buildkit
from lamina.core.docker.records import BuildRecords
from lamina.core.docker.trace import TraceError, decode_aux, fields, parse_status
from lamina.core.docker.vertices import parse_name
from lamina.core.errors import UsageError
from lamina.core.model import BuildRequest
from lamina.tui.cli.disk import buildkit_record_lines, cache_records, du_summary
from lamina.tui.widgets.disk import buildkit_rows

# -- a protobuf writer, just enough to make StatusResponse messages ----------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    raw = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(raw)) + raw


def timestamp(seconds: int, nanos: int = 0) -> bytes:
    return field(1, seconds) + (field(2, nanos) if nanos else b"")


def vertex(digest: str, name: str, **kw: Any) -> bytes:
    body = field(1, digest) + field(3, name)
    for dep in kw.get("inputs", ()):
        body += field(2, dep)
    if kw.get("cached"):
        body += field(4, 1)
    if "started" in kw:
        body += field(5, timestamp(*kw["started"]))
    if "completed" in kw:
        body += field(6, timestamp(*kw["completed"]))
    if "error" in kw:
        body += field(7, kw["error"])
    return field(1, body)


def test_status_response_vertices_logs_and_timestamps() -> None:
    status_msg = field(2, field(1, "transfer") + field(4, 10) + field(5, 20))  # skipped
    raw = (
        vertex("sha256:aa", "[1/2] FROM docker.io/library/busybox", cached=True)
        + vertex(
            "sha256:bb",
            "[2/2] RUN echo hi",
            inputs=("sha256:aa",),
            started=(1_700_000_000, 250_000_000),
            completed=(1_700_000_001,),
        )
        + status_msg
        + field(3, field(1, "sha256:bb") + field(2, timestamp(1)) + field(3, 2) + field(4, b"hi\n"))
        + vertex("sha256:cc", "[3/3] RUN false", error="exit code: 1")
    )
    status = decode_aux(base64.b64encode(raw).decode())
    first, second, third = status.vertexes
    assert first.cached and first.started is None and first.name.startswith("[1/2] FROM")
    assert second.inputs == ("sha256:aa",) and not second.cached
    assert second.started == pytest.approx(1_700_000_000.25)
    assert second.completed == 1_700_000_001
    assert third.error == "exit code: 1" and third.completed is None
    (log,) = status.logs
    assert (log.vertex, log.stream, log.data) == ("sha256:bb", 2, b"hi\n")


@pytest.mark.parametrize(
    "raw",
    [b"\x0a\x05ab", b"\x0a", b"\x80", b"\x0b\x00", b"\xff" * 11],
    ids=["short field", "no length", "short varint", "group wire type", "overlong varint"],
)
def test_malformed_progress_is_a_trace_error(raw: bytes) -> None:
    with pytest.raises(TraceError):
        parse_status(raw)


def test_progress_payload_must_be_base64_text() -> None:
    with pytest.raises(TraceError):
        decode_aux({"not": "text"})
    with pytest.raises(TraceError):
        decode_aux("not base64 !")
    assert list(fields(b"")) == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("[1/4] FROM docker.io/library/busybox", ("", 1, 4, "FROM")),
        ("[build  2/12] RUN echo hi 1", ("build", 2, 12, "RUN")),
        ("[stage-1 3/3] COPY --from=build /out /out", ("stage-1", 3, 3, "COPY")),
        ("[ 7/10] workdir /w", ("", 7, 10, "WORKDIR")),
        ("[internal] load metadata for docker.io/library/busybox:latest", None),
        ("[internal] load remote build context", None),
        ("copy /context /", None),
        ("exporting to image", None),
    ],
)
def test_vertex_names(name: str, expected: tuple[str, int, int, str] | None) -> None:
    parsed = parse_name(name)
    if expected is None:
        assert parsed is None
    else:
        assert parsed is not None
        assert (parsed.label, parsed.index, parsed.total, parsed.keyword) == expected


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


MULTI = """\
ARG BASE=busybox
FROM ${BASE} AS Build
COPY a /a
LABEL x=1
ENV E=1
ARG V=2
RUN echo $V
WORKDIR /
WORKDIR w
FROM busybox AS unused
RUN echo never
FROM scratch AS extra
COPY b /b
FROM build AS test
USER 1000
RUN --mount=type=bind,from=extra,target=/m true
FROM busybox
COPY --from=0 /a /a
RUN echo done
"""


def test_plan_has_the_vertex_steps_of_the_stages_the_target_needs(tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": MULTI, "a": "a", "b": "b"})
    plan = plan_buildkit(BuildRequest(context=str(ctx), build_args={"V": "3"}))
    # `unused` is not reachable from the last stage, nor `extra` and `test`.
    assert sorted(plan.stages) == [0, 4]
    assert plan.target == 4 and not plan.single
    build = plan.stages[0]
    assert build.label == "build"
    # FROM, COPY, RUN, WORKDIR w (`WORKDIR /` makes no vertex); image settings none.
    assert [(s["index"], s["cmd"], s["instruction"].split()[0]) for s in build.steps] == [
        (0, 1, "FROM"),
        (1, 2, "COPY"),
        (5, 3, "RUN"),
        (7, 4, "WORKDIR"),
    ]
    assert build.steps[0]["from"] == "busybox"  # meta ARG expanded
    run = build.steps[2]
    assert run["args"] == {"V": "3"}
    assert run["config"]["Env"] == ["E=1"] and run["step"]["network"] == "host"
    assert "args" not in build.steps[1]  # a COPY's key holds no build arg
    assert build.steps[3]["config"] == {"User": "", "WorkingDir": "/"}
    final = plan.stages[4]
    assert final.label == "stage-4"
    assert final.steps[1]["from_stage"] == 0
    # The stages up to the target it does not need: their FROM counts as a step.
    assert plan.skipped == {
        1: ("unused", "FROM busybox AS unused"),
        2: ("extra", "FROM scratch AS extra"),
        3: ("test", "FROM build AS test"),
    }
    assert plan.total == 4 + 3 + 3
    # A target pulls in its base stage and the stage it mounts from.
    plan = plan_buildkit(BuildRequest(context=str(ctx), target="test"))
    assert sorted(plan.stages) == [0, 2, 3]
    assert plan.stages[3].base_stage == 0 and plan.stages[3].steps[0]["index"] == 2
    assert plan.stages[3].steps[0]["config"]["User"] == "1000"
    assert plan.stages[2].steps[0]["cmd"] == 1  # FROM scratch makes no vertex
    with pytest.raises(UsageError, match="target stage 'nope' not found"):
        plan_buildkit(BuildRequest(context=str(ctx), target="nope"))


def test_vertex_names_find_their_steps(tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Dockerfile": MULTI, "a": "a", "b": "b"})
    plan = plan_buildkit(BuildRequest(context=str(ctx)))

    def found(name: str) -> tuple[int, int] | None:
        parsed = parse_name(name)
        assert parsed is not None
        step = plan.step_for(parsed)
        return None if step is None else (step["stage"], step["index"])

    assert found("[build 3/5] RUN echo 2") == (0, 5)
    assert found("[stage-4 2/3] COPY --from=0 /a /a") == (4, 1)
    assert found("[build 3/5] COPY a /a") is None  # the keyword must agree
    assert found("[unused 2/2] RUN echo never") is None
    single = write(tmp_path / "one", {"Dockerfile": "FROM busybox\nCOPY a /a\n", "a": "a"})
    plan = plan_buildkit(BuildRequest(context=str(single)))
    assert found("[2/2] COPY a /a") == (0, 1)
    assert found("[stage-0 2/2] COPY a /a") == (0, 1)


def test_upload_is_the_context_buildkit_gets_from_the_cli(tmp_path: Path) -> None:
    ctx = write(
        tmp_path / "ctx",
        {
            "Dockerfile": "FROM busybox\n",
            "Dockerfile.dockerignore": "secret\nDockerfile\n",
            ".dockerignore": "kept\n",
            "kept": "k",
            "secret": "s",
            "sub/f": "f",
        },
    )
    os.utime(ctx / "sub" / "f", (1_700_000_000.5, 1_700_000_000.5))
    os.chown(ctx / "kept", 1000, 1000)
    upload, name = buildkit_context_tar(ctx, ctx / "Dockerfile")
    with upload:
        raw = upload.read()
    assert name == "Dockerfile"
    # BuildKit decides "is this a tar" from one header in the first 1024 bytes.
    first = tarfile.TarInfo.frombuf(raw[:512], tarfile.ENCODING, "surrogateescape")
    assert first.name == "Dockerfile" and first.type == tarfile.REGTYPE
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    # <Dockerfile>.dockerignore wins; the Dockerfile it excludes is still sent (BuildKit
    # reads it from the upload); nothing is put back otherwise.
    assert set(members) == {
        "Dockerfile",
        "Dockerfile.dockerignore",
        ".dockerignore",
        "kept",
        "sub",
        "sub/f",
    }
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "" for m in members.values())
    assert members["sub/f"].mtime == 1_700_000_000
    assert not any(m.pax_headers for m in members.values())


def test_upload_of_an_outside_dockerfile(tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {".dockerignore": "*.log\n", "a.log": "x", "f": "f"})
    dockerfile = write(tmp_path / "elsewhere", {"build.Dockerfile": "FROM busybox\n"})
    upload, name = buildkit_context_tar(ctx, dockerfile / "build.Dockerfile")
    with upload, tarfile.open(fileobj=upload) as tar:
        names = tar.getnames()
    assert name == OUTSIDE_DOCKERFILE and names[0] == OUTSIDE_DOCKERFILE
    assert sorted(names) == sorted([OUTSIDE_DOCKERFILE, ".dockerignore", "f"])


def step(**kw: Any) -> dict[str, Any]:
    return {"stage": 0, "index": 1, "label": "stage-0", "cmd": 2, **kw}


FROM_STEP = {"stage": 0, "index": 0, "label": "stage-0", "cmd": 1, "from": "busybox"}


def test_explain_buildkit_compares_only_what_the_key_holds() -> None:
    copy_prev = step(instruction="COPY f /f", sources={"checksum": "a", "manifest": {}})
    run_prev = step(instruction="RUN echo $V", args={"V": "1"}, config={"Env": []}, cmd=3)
    prev = {"inputs": [{**FROM_STEP, "base": "sha256:" + "1" * 64}, copy_prev, run_prev]}
    # Nothing the key holds changed (the place of the step in the file may have):
    # BuildKit would have hit, so the miss is its cache gone.
    copy_now = {**copy_prev, "index": 4}
    reason = explain_buildkit(copy_now, prev, first_miss=None, no_cache=False)
    assert reason["kind"] == "pruned"
    changed = {**copy_prev, "sources": {"checksum": "b", "manifest": {}}}
    reason = explain_buildkit(changed, prev, first_miss=None, no_cache=False)
    assert reason["kind"] == "sources_changed"
    run_now = {**run_prev, "args": {"V": "2"}}
    reason = explain_buildkit(run_now, prev, first_miss=None, no_cache=False)
    assert reason["kind"] == "build_arg_changed" and reason["new"] == "2"
    base_now = {**FROM_STEP, "base": "sha256:" + "2" * 64}
    reason = explain_buildkit(copy_prev, prev, first_miss=None, no_cache=False, base_step=base_now)
    assert reason["kind"] == "base_changed"
    reason = explain_buildkit(
        copy_prev, prev, first_miss=None, no_cache=False, source_miss=("build", "0/2", "RUN x")
    )
    assert reason["kind"] == "sources_changed" and "stage build" in reason["message"]
    reason = explain_buildkit(copy_prev, None, first_miss=None, no_cache=False, classic_before=True)
    assert reason["kind"] == "first_build" and "classic builder" in reason["message"]
    reason = explain_buildkit(run_now, prev, first_miss=("0/1", "COPY f /f"), no_cache=False)
    assert reason["kind"] == "parent_missed" and reason["step"] == "0/1"
    assert explain_buildkit(run_now, prev, first_miss=None, no_cache=True)["kind"] == "no_cache"


def test_previous_build_of_the_same_builder(tmp_path: Path) -> None:
    records = BuildRecords(tmp_path)
    base = {"tags": ["t:1"], "dockerfile": "D", "context": "C", "status": "ok"}
    records.save({**base, "id": 1})  # before BuildKit builds: classic
    records.save({**base, "id": 2, "builder": "buildkit"})
    probe = {**base, "id": 3}
    assert records.previous(probe)["id"] == 2
    assert records.previous(probe, builder="classic")["id"] == 1
    assert records.previous(probe, builder="buildkit")["id"] == 2


def test_buildkit_records_as_buildx_du_verbose_shows_them() -> None:
    record = buildkit_record(
        {
            "ID": "wau4wtkxavpbgorcsx7lt87ht",
            "Parent": "zgu3u4rutsyv8apouw3vvykll",
            "Type": "regular",
            "Description": "mount / from exec /bin/sh -c echo hi",
            "InUse": False,
            "Shared": True,
            "Size": 1234,
            "CreatedAt": "2024-05-01T10:00:00.5Z",
            "LastUsedAt": "2024-05-01T10:00:01Z",
            "UsageCount": 2,
        }
    )
    assert record.parents == ("zgu3u4rutsyv8apouw3vvykll",)
    newer = buildkit_record({"ID": "x", "Parents": ["p1", "p2"], "Type": "regular"})
    assert newer.parents == ("p1", "p2") and newer.parent == "p1"
    usage = CacheUsage(
        key=record.key,
        instruction=record.description,
        size=record.size,
        created=record.created,
        last_used=record.last_used,
        use_count=record.use_count,
        shared=record.shared,
        frees=0,
        top_layer=None,
        record_type=record.type,
        description=record.description,
        parents=record.parents,
        in_use=record.in_use,
    )
    (listed,) = cache_records(DiskUsage((), (), (usage,), (), (), (), 0, 0, 0, 0, 0, "home"))
    lines = buildkit_record_lines(listed).splitlines()
    assert [line.split(":", 1)[0] for line in lines] == [
        "ID",
        "Parent",
        "Created at",
        "Reclaimable",
        "Shared",
        "Size",
        "Description",
        "Usage count",
        "Last used",
        "Type",
    ]
    assert lines[0] == "ID:             wau4wtkxavpbgorcsx7lt87ht"
    # Go prints a time's fraction without trailing zeros.
    assert lines[2] == "Created at:     2024-05-01 10:00:00.5 +0000 UTC"
    assert lines[3].split()[-1] == "true" and lines[5].split()[-1] == "1.234kB"
    assert lines[6] == "Description:    mount / from exec /bin/sh -c echo hi"


def test_builder_du_lists_lamina_entries_and_cache_mounts_as_records() -> None:
    own = CacheUsage("sha256:" + "a" * 64, "RUN x", 10, 1.0, 0.0, 0, False, 10, None)
    shared = CacheUsage(
        "buildkit:rec", "regular", 2000, 3.0, 4.0, 5, True, 0, None,
        record_type="regular", in_use=True,
    )  # fmt: skip
    mount = CacheMountUsage("m" * 64, "pip", "shared", 30, 5.0, 6.0, 2, False)
    usage = DiskUsage(
        (), (), (own, shared), (), (), (), 0, 0, 0, 0, 0, "home", cache_mounts=(mount,)
    )
    records = cache_records(usage)
    assert [(r.id, r.type, r.description) for r in records] == [
        ("sha256:" + "a" * 64, "", "RUN x"),
        ("rec", "regular", ""),  # BuildKit said nothing: no description, not its type
        ("m" * 64, "exec.cachemount", "cached mount pip"),
    ]
    own_lines = buildkit_record_lines(records[0]).splitlines()
    # Never used: no "Last used"; no type: no "Type", as buildx leaves them out.
    assert [line.split(":", 1)[0] for line in own_lines] == [
        "ID", "Created at", "Reclaimable", "Shared", "Size", "Description", "Usage count",
    ]  # fmt: skip
    assert own_lines[1] == "Created at:     1970-01-01 00:00:01 +0000 UTC"
    # buildx du's totals: the shared record is in use, so not reclaimable.
    assert du_summary(records) == [
        ("Shared", "2kB"),
        ("Private", "40B"),
        ("Reclaimable", "40B"),
        ("Total", "2.04kB"),
    ]
    assert du_summary(records[:1]) == [("Reclaimable", "10B"), ("Total", "10B")]


def test_disk_view_rows_are_only_buildkits_records() -> None:
    own = CacheUsage("sha256:" + "a" * 64, "RUN x", 10, 1.0, 2.0, 1, False, 10, None)
    record = CacheUsage(
        "buildkit:abcdefghijklmnop", "fileop target", 7, 1.0, 90.0, 3, True, 0, None,
        record_type="regular", description="fileop target", parents=("p" * 25,), in_use=True,
    )  # fmt: skip
    usage = DiskUsage((), (), (own, record), (), (), (), 0, 0, 0, 0, 0, "home")
    assert buildkit_rows(usage, clock=lambda: 100.0) == [
        (
            "abcdefghijkl",
            "regular",
            "fileop target",
            "p" * 12,
            "yes",
            "yes",
            "7 Bytes",
            "10 seconds ago",
            "3",
        )
    ]
    assert buildkit_rows(replace(usage, cache=(own,))) == []


def test_plan_knows_buildkits_platform_args(tmp_path: Path) -> None:
    # Measured on 20.10's BuildKit: FROM base-$TARGETOS names the stage base-linux; a
    # stage sees TARGETARCH once declared; a meta default may use one; --build-arg
    # overrides one; a meta ARG of the same name without a default empties it.
    text = (
        "ARG A=$TARGETARCH\n"
        "FROM scratch AS base-linux\nCOPY a /a\n"
        "FROM scratch AS base-\nCOPY b /b\n"
        "FROM scratch AS base-foo\nCOPY b /b\n"
        "FROM base-$TARGETOS\nARG TARGETARCH\nARG A\nRUN true\n"
    )
    ctx = write(tmp_path / "ctx", {"Dockerfile": text, "a": "a", "b": "b"})
    plan = plan_buildkit(BuildRequest(context=str(ctx)), "linux/arm64")
    assert sorted(plan.stages) == [0, 3] and plan.stages[3].base_stage == 0
    (run,) = plan.stages[3].steps
    assert run["args"] == {"A": "arm64", "TARGETARCH": "arm64"}
    plan = plan_buildkit(BuildRequest(context=str(ctx), build_args={"TARGETOS": "foo"}))
    assert sorted(plan.stages) == [2, 3] and plan.stages[3].base_stage == 2
    ctx.joinpath("Dockerfile").write_text("ARG TARGETOS\n" + text)
    assert sorted(plan_buildkit(BuildRequest(context=str(ctx))).stages) == [1, 3]


def test_a_hit_notes_the_image_settings_its_key_does_not_hold(tmp_path: Path) -> None:
    text = "FROM scratch AS base\nLABEL v=1\nFROM base\nENV E=1\nCOPY a /a\n"
    ctx = write(tmp_path / "ctx", {"Dockerfile": text, "a": "a"})
    (copy,) = plan_buildkit(BuildRequest(context=str(ctx))).stages[1].steps
    # The stage's own settings and those of the stage it stands on, by config field.
    assert copy["settings"] == {"Env": ["ENV E=1"], "Labels": ["LABEL v=1"]}
    previous = {"inputs": [copy]}
    assert hit_note(copy, previous) is None  # nothing changed: no note
    ctx.joinpath("Dockerfile").write_text(text.replace("v=1", "v=2"))
    (edited,) = plan_buildkit(BuildRequest(context=str(ctx))).stages[1].steps
    note = hit_note(edited, previous)
    assert note is not None and note["kind"] == "settings_not_keyed"
    assert note["message"] == (
        "hit: the LABEL above changed, but under BuildKit image settings don't enter a COPY's key"
    )
    assert (note["old"], note["new"]) == (["LABEL v=1"], ["LABEL v=2"])
    # A record from before lamina kept the settings says nothing.
    old = {k: v for k, v in copy.items() if k != "settings"}
    assert hit_note(edited, {"inputs": [old]}) is None
