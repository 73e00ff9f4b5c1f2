"""The Docker backend's pure parts, without a daemon: saved-stream reading, context tar,
step inputs and miss explanations."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from lamina.core.docker.context import context_tar
from lamina.core.docker.inputs import explain, plan_inputs
from lamina.core.docker.records import BuildRecords
from lamina.core.docker.save import ChunkReader, changes, read_layers
from lamina.core.errors import ArchiveError, UsageError
from lamina.core.model import BuildRequest


def layer_tar(entries: list[tuple[str, str, bytes | str]]) -> bytes:
    """(name, kind, data-or-link) -> an uncompressed layer tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, str(data), 0o777
                tar.addfile(info)
            else:
                raw = data if isinstance(data, bytes) else data.encode()
                info.size, info.mode = len(raw), 0o644
                tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def saved_image(layers: list[bytes], oci: bool = False) -> bytes:
    """A ``docker save`` stream: legacy ``<id>/layer.tar`` folders or OCI blobs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i, data in enumerate(layers):
            digest = hashlib.sha256(data).hexdigest()
            name = f"blobs/sha256/{digest}" if oci else f"{i:064x}/layer.tar"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        config = json.dumps({"rootfs": {"diff_ids": []}}).encode()
        info = tarfile.TarInfo(
            "blobs/sha256/" + hashlib.sha256(config).hexdigest() if oci else "c.json"
        )
        info.size = len(config)
        tar.addfile(info, io.BytesIO(config))
    return buf.getvalue()


BASE = layer_tar(
    [
        ("etc/", "dir", b""),
        ("etc/group", "file", "g"),
        ("etc/passwd", "file", "p"),
        ("opt/", "dir", b""),
        ("opt/old", "file", "o"),
        (".hidden", "file", "h"),
    ]
)
TOP = layer_tar(
    [
        ("etc/", "dir", b""),
        ("etc/.wh.group", "file", b""),
        ("etc/passwd", "file", "p2"),
        ("opt/", "dir", b""),
        ("opt/.wh..wh..opq", "file", b""),
        ("opt/new", "file", "n"),
        ("app/", "dir", b""),
        ("app/link", "symlink", "/etc/passwd"),
    ]
)


def diff_id(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("oci", [False, True], ids=["legacy", "oci"])
def test_layer_changes_from_a_saved_stream(oci: bool) -> None:
    stream = saved_image([BASE, TOP], oci=oci)
    chunks = [stream[i : i + 777] for i in range(0, len(stream), 777)]
    listings = read_layers(ChunkReader(chunks), {diff_id(BASE), diff_id(TOP)})
    assert set(listings) == {diff_id(BASE), diff_id(TOP)}
    assert "/.hidden" in {e.path for e in listings[diff_id(BASE)]}
    got = {c.path: c for c in changes([listings[diff_id(BASE)]], listings[diff_id(TOP)])}
    assert got["/etc/group"].change == "deleted" and got["/etc/group"].size == 1
    assert got["/etc/passwd"].change == "modified" and got["/etc/passwd"].size == 2
    assert got["/etc"].change == "modified" and got["/etc"].kind == "dir"
    assert got["/opt/new"].change == "added"
    assert got["/app/link"].kind == "symlink" and got["/app/link"].link_target == "/etc/passwd"
    assert not any(".wh." in p for p in got)
    # Only the wanted layers are listed.
    only_top = read_layers(ChunkReader([stream]), {diff_id(TOP)})
    assert set(only_top) == {diff_id(TOP)}


def test_not_a_tar_is_one_line_archive_error() -> None:
    with pytest.raises(ArchiveError, match="not a tar"):
        read_layers(ChunkReader([b"this is not a tar stream" * 50]), {"sha256:" + "0" * 64})


def test_context_tar_zeroes_owners_and_keeps_dockerignore_rules(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "sub").mkdir(parents=True)
    (ctx / "Dockerfile").write_text("FROM x\n")
    (ctx / ".dockerignore").write_text("*.log\nDockerfile\n.dockerignore\n")
    (ctx / "keep.txt").write_text("k")
    (ctx / "drop.log").write_text("d")
    (ctx / "sub" / "a").write_text("a")
    if os.geteuid() == 0:
        os.chown(ctx / "keep.txt", 1234, 5678)
    f, name = context_tar(ctx, ctx / "Dockerfile")
    with tarfile.open(fileobj=f) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert name == "Dockerfile"
    # The Dockerfile and .dockerignore are always sent; ignored files never are.
    assert set(members) == {"Dockerfile", ".dockerignore", "keep.txt", "sub", "sub/a"}
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "" for m in members.values())


def test_context_tar_with_dockerfile_outside(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a").write_text("a")
    outside = tmp_path / "other.Dockerfile"
    outside.write_text("FROM y\n")
    f, name = context_tar(ctx, outside)
    assert name.startswith(".dockerfile.") and len(name) == len(".dockerfile.") + 20
    with tarfile.open(fileobj=f) as tar:
        member = tar.extractfile(name)
        assert member is not None and member.read() == b"FROM y\n"
        ignore = tar.extractfile(".dockerignore")
        assert ignore is not None and name in ignore.read().decode().split()


def test_plan_inputs_scopes_build_args_and_checksums_sources(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a")
    (ctx / "Dockerfile").write_text(
        "ARG G=1\nFROM base AS one\nARG G\nARG L=x\nENV L=fixed\nCOPY a.txt /a\nRUN true\n"
        "FROM base AS two\nRUN true\n"
    )
    steps = plan_inputs(BuildRequest(context=str(ctx), build_args={"G": "2"}))
    assert [(s["stage"], s["index"]) for s in steps] == [
        (0, 0),
        (0, 1),
        (0, 2),
        (0, 3),
        (0, 4),
        (0, 5),
        (1, 0),
        (1, 1),
    ]
    run = steps[5]
    assert run["args"] == {"G": "2"}  # L is overridden by ENV, G has the --build-arg value
    copy = steps[4]
    assert copy["sources"]["checksum"].startswith("file:")
    assert list(copy["sources"]["manifest"]) == ["a.txt"]
    assert steps[7]["args"] == {}  # a new stage has no ARGs in scope
    only_one = plan_inputs(BuildRequest(context=str(ctx), target="one"))
    assert {s["stage"] for s in only_one} == {0}
    with pytest.raises(UsageError):
        plan_inputs(BuildRequest(context=str(ctx), target="three"))


def test_explain_compares_with_the_previous_build() -> None:
    prev = {
        "inputs": [
            {"stage": 0, "index": 0, "instruction": "FROM b", "base": "sha256:" + "a" * 64},
            {"stage": 0, "index": 1, "instruction": "RUN x", "args": {"V": "1"}},
        ]
    }
    same = {"stage": 0, "index": 1, "instruction": "RUN x", "args": {"V": "1"}}
    assert explain(same, prev, first_miss=None, no_cache=False)["kind"] == "pruned"
    changed = dict(same, args={"V": "2"})
    assert explain(changed, prev, first_miss=None, no_cache=False)["kind"] == "build_arg_changed"
    other = dict(same, instruction="RUN y")
    assert explain(other, prev, first_miss=None, no_cache=False)["kind"] == "instruction_changed"
    moved = dict(same, _base="sha256:" + "b" * 64)
    assert explain(moved, prev, first_miss=None, no_cache=False)["kind"] == "base_changed"
    assert explain(same, None, first_miss=None, no_cache=False)["kind"] == "first_build"
    assert (
        explain(same, prev, first_miss=("0/1", "RUN x"), no_cache=False)["kind"] == "parent_missed"
    )
    assert explain(same, prev, first_miss=None, no_cache=True)["kind"] == "no_cache"


def test_build_records_round_trip(tmp_path: Path) -> None:
    records = BuildRecords(tmp_path / "builds")
    assert records.next_id() == 1
    first = {"id": 1, "tags": ["a:latest"], "status": "ok", "dockerfile": "D", "context": "C"}
    records.save(first)
    second = {"id": 2, "tags": ["a:latest"], "status": "running", "dockerfile": "D", "context": "C"}
    records.save(second)
    assert records.next_id() == 3
    assert [r["id"] for r in records.load_all()] == [2, 1]
    assert records.previous(second) == first
    (tmp_path / "builds" / "7.json").write_text("{broken")
    assert [r["id"] for r in records.load_all()] == [2, 1]  # an unreadable record is skipped
