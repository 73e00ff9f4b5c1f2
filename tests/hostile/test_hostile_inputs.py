"""Hostile and unlucky inputs: every one refused (or accepted) in bounded time and memory,
with one line and never a traceback, and the store left usable.

Each case is a regression test of a defect found by trying lamina as an attacker would
(docs/limits.md states the limits these tests hold lamina to).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lamina.core.accounting.plans import PruneRequest
from lamina.core.embedded.archive import import_rootfs, load_archive, save_archive
from lamina.core.embedded.fsck import fsck
from lamina.core.embedded.prune import apply_prune, plan_prune
from lamina.core.embedded.store import Store
from lamina.core.embedded.store.layers import can_make_devices
from lamina.core.embedded.store.tarsplit import MAX_EXTENDED_HEADER
from lamina.core.errors import ArchiveError, LaminaError

GIB = 1 << 30


# -- building blocks -----------------------------------------------------------------------


def _ti(name: str, type_: bytes = tarfile.REGTYPE, size: int = 0, **pax: str) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.size, ti.mode, ti.mtime = type_, size, 0o644, 1_500_000_000
    ti.pax_headers = dict(pax)
    return ti


def layer(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if data else None)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def config_for(layers: list[bytes], **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha(x) for x in layers]},
    }
    doc.update(extra)
    return doc


def docker_archive(
    path: Path,
    layers: list[bytes],
    config: Any = None,
    manifest: Any = None,
    raw_config: bytes | None = None,
) -> Path:
    cfg = (
        raw_config if raw_config is not None else json.dumps(config or config_for(layers)).encode()
    )
    files: dict[str, bytes] = {"config.json": cfg}
    names = []
    for i, data in enumerate(layers):
        files[f"l{i}/layer.tar"] = data
        names.append(f"l{i}/layer.tar")
    if manifest is None:
        manifest = [{"Config": "config.json", "RepoTags": ["hostile:1"], "Layers": names}]
    files["manifest.json"] = (
        manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    )
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def oci_layout(root: Path, index: Any, blobs: list[bytes]) -> Path:
    (root / "blobs" / "sha256").mkdir(parents=True)
    for blob in blobs:
        (root / "blobs" / "sha256" / sha(blob)[7:]).write_bytes(blob)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_text(json.dumps(index))
    return root


def desc(blob: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha(blob), "size": len(blob), **extra}


MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
GOOD = layer([(_ti("hello", size=3), b"hi\n")])


def refused(call: Callable[[], object], *words: str) -> str:
    """Runs ``call``, which must fail with a one-line ArchiveError/LaminaError."""
    with pytest.raises(LaminaError) as exc:
        call()
    message = str(exc.value)
    assert "\n" not in message and message, message
    assert not isinstance(exc.value.__cause__, RecursionError)
    for word in words:
        assert word in message, message
    return message


class Endless(io.RawIOBase):
    """``head`` then zero bytes without end: a tar that claims gigabytes."""

    def __init__(self, head: bytes, limit: int = 4 * GIB) -> None:
        self.head, self.pos, self.limit = head, 0, limit

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.limit - self.pos)
        if n <= 0:
            return 0
        start = self.pos
        chunk = self.head[start : start + n]
        chunk += bytes(n - len(chunk))
        b[:n] = chunk
        self.pos += n
        return n


def bounded(call: Callable[[], object], seconds: float = 20, megabytes: int = 64) -> None:
    """Runs ``call`` within a time and a Python-heap budget."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        call()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.monotonic() - started < seconds
    assert peak < megabytes << 20, f"{peak >> 20} MiB"


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")


# -- memory and time bombs -------------------------------------------------------------------


def test_a_huge_pax_header_is_refused_without_reading_it(store: Store, tmp_path: Path) -> None:
    head = _header(_ti("././@PaxHeader", tarfile.XHDTYPE, size=3 * GIB))
    stream = io.BufferedReader(Endless(head))

    def run() -> None:
        refused(lambda: store.layers.commit_tar(stream, None), "extended header", "1 MiB")

    bounded(run)
    assert MAX_EXTENDED_HEADER == 1 << 20


def test_a_small_gzip_holding_a_huge_pax_header_is_refused(store: Store, tmp_path: Path) -> None:
    # 3 GiB of zeros compress to ~3 MB; here 64 MiB claimed as 3 GiB keeps the test fast.
    path = tmp_path / "bomb.tar.gz"
    with gzip.open(path, "wb", compresslevel=1) as gz:
        gz.write(_header(_ti("././@PaxHeader", tarfile.XHDTYPE, size=3 * GIB)))
        gz.write(bytes(64 << 20))
    bounded(lambda: refused(lambda: import_rootfs(store, path, "bomb:1"), "extended header"))
    assert store.images.list() == []


def test_a_huge_payload_on_a_directory_entry_is_not_read(store: Store) -> None:
    # Go and Python read no payload for a directory; the zeros that follow are the end.
    head = _header(_ti("d", tarfile.DIRTYPE, size=3 * GIB))
    stream = io.BufferedReader(Endless(head, limit=len(head) + 1024))
    info = bounded_result(lambda: store.layers.commit_tar(stream, None))
    assert (store.layers.diff_path(info.chain_id) / "d").is_dir()


def bounded_result(call: Callable[[], Any]) -> Any:
    out: list[Any] = []
    bounded(lambda: out.append(call()))
    return out[0]


def test_gigabytes_after_the_end_of_archive_are_refused(store: Store) -> None:
    stream = io.BufferedReader(Endless(GOOD[: len(GOOD) - 1024 * 9]))
    bounded(lambda: refused(lambda: store.layers.commit_tar(stream, None), "after the end"))


def test_a_few_blocks_after_the_end_are_kept_byte_for_byte(store: Store) -> None:
    data = GOOD + bytes(4096) + b"trailing bytes\n"
    info = store.layers.commit_tar(io.BytesIO(data), None)
    out = io.BytesIO()
    store.layers.write_tar(info.chain_id, out)
    assert out.getvalue() == data


def test_a_replaced_file_keeps_its_bytes_on_disk_not_in_memory(store: Store) -> None:
    big = os.urandom(1 << 20)
    data = layer([(_ti("f", size=len(big)), big), (_ti("f", size=2), b"ok")])
    info = store.layers.commit_tar(io.BytesIO(data), None)
    layer_dir = store.layers.dir_path(info.chain_id)
    assert (layer_dir / "diff" / "f").read_bytes() == b"ok"
    assert [p.read_bytes() for p in (layer_dir / "shadow").iterdir()] == [big]
    out = io.BytesIO()
    store.layers.write_tar(info.chain_id, out)
    assert out.getvalue() == data
    assert store.layers.verify(info.chain_id)


def fanning_out(root: Path) -> Path:
    """An OCI layout whose index nests 8 levels of 10 descriptors without a platform,
    all naming the next level: 10⁸ paths to one manifest."""
    cfg = json.dumps(config_for([GOOD])).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": desc(cfg, MT_CONFIG),
            "layers": [desc(GOOD, MT_LAYER)],
        }
    ).encode()
    blobs = [cfg, manifest, GOOD]
    child = desc(manifest, MT_MANIFEST)
    for _level in range(8):
        # Ten descriptors without a platform, all naming the next level.
        doc = json.dumps({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [child] * 10})
        blob = doc.encode()
        blobs.append(blob)
        child = desc(blob, MT_INDEX)
    index = {"schemaVersion": 2, "manifests": [child]}
    return oci_layout(root, index, blobs)


def test_an_index_fanning_out_is_walked_once_per_blob(store: Store, tmp_path: Path) -> None:
    layout = fanning_out(tmp_path / "fan")
    started = time.monotonic()
    loaded = load_archive(store, layout)
    assert time.monotonic() - started < 10
    assert len(loaded) == 1


def test_an_archive_opened_in_place_walks_a_fan_out_once(tmp_path: Path) -> None:
    # `lamina app oci:DIR`, `lamina diff oci:DIR …` read the layout where it lies.
    from lamina.core.archive.layout import open_archive, read_images

    opened = open_archive(fanning_out(tmp_path / "fan"))
    try:
        started = time.monotonic()
        images = read_images(opened.source)
        assert time.monotonic() - started < 10
        assert len(images) == 1
    finally:
        opened.close()


def test_an_archive_opened_in_place_is_held_to_the_descriptor_budget(tmp_path: Path) -> None:
    from lamina.core.archive.layout import open_archive, read_images

    cfg = json.dumps(config_for([GOOD])).encode()
    manifest = json.dumps(
        {"schemaVersion": 2, "config": desc(cfg, MT_CONFIG), "layers": [desc(GOOD, MT_LAYER)]}
    ).encode()
    index = {"schemaVersion": 2, "manifests": [{"digest": sha(manifest)}] * 55_000}
    opened = open_archive(oci_layout(tmp_path / "rep", index, [cfg, manifest, GOOD]))
    try:
        bounded(
            lambda: refused(lambda: read_images(opened.source), "more than 50000"), megabytes=200
        )
    finally:
        opened.close()


def test_an_index_repeating_one_manifest_is_refused_quickly(store: Store, tmp_path: Path) -> None:
    cfg = json.dumps(config_for([GOOD])).encode()
    manifest = json.dumps(
        {"schemaVersion": 2, "config": desc(cfg, MT_CONFIG), "layers": [desc(GOOD, MT_LAYER)]}
    ).encode()
    index = {"schemaVersion": 2, "manifests": [desc(manifest, MT_MANIFEST)] * 100_000}
    layout = oci_layout(tmp_path / "rep", index, [cfg, manifest, GOOD])
    # 100,000 descriptors do not fit the 8 MiB a JSON document may have...
    bounded(lambda: refused(lambda: load_archive(store, layout), "the limit is 8 MiB"))
    # ...and 55,000 short ones that do fit are more than an archive may list.
    index = {"schemaVersion": 2, "manifests": [{"digest": sha(manifest)}] * 55_000}
    (layout / "index.json").write_text(json.dumps(index))
    bounded(lambda: refused(lambda: load_archive(store, layout), "more than"), megabytes=200)
    # Repeats within the budget load once, with every tag.
    tagged = [desc(manifest, MT_MANIFEST, annotations={"io.containerd.image.name": "r:0"})]
    index = {"schemaVersion": 2, "manifests": tagged * 1 + [desc(manifest, MT_MANIFEST)] * 50}
    (layout / "index.json").write_text(json.dumps(index))
    (loaded,) = load_archive(store, layout)
    assert loaded.tags == ("r:0",)


def test_json_nested_deeply_is_refused(store: Store, tmp_path: Path) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    path = docker_archive(tmp_path / "deep.tar", [GOOD], manifest=deep)
    refused(lambda: load_archive(store, path), "nested more than")
    cfg = b'{"rootfs":{"type":"layers","diff_ids":[]},"x":' + b"[" * 200 + b"]" * 200 + b"}"
    path = docker_archive(tmp_path / "deep2.tar", [], raw_config=cfg)
    refused(lambda: load_archive(store, path), "nested more than")


def test_import_and_load_are_linear_in_the_number_of_files(store: Store, tmp_path: Path) -> None:
    def tar_of(n: int) -> Path:
        path = tmp_path / f"{n}.tar"
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
            for d in range(n // 1000):
                tf.addfile(_ti(f"d{d}", tarfile.DIRTYPE))
                for i in range(1000):
                    tf.addfile(_ti(f"d{d}/f{i}"))
        return path

    small, large = tar_of(4_000), tar_of(20_000)

    def timed(path: Path) -> float:
        started = time.process_time()
        import_rootfs(store, path, "")
        return time.process_time() - started

    t_small, t_large = timed(small), timed(large)
    # Five times the files: about five times the work (it was twenty-five).
    assert t_large < 10 * max(t_small, 0.05), (t_small, t_large)


# -- wrong shapes in the archive's JSON -------------------------------------------------------

BAD_CONFIGS: dict[str, Any] = {
    "rootfs-string": {"rootfs": "x"},
    "diff-ids-number": {"rootfs": {"type": "layers", "diff_ids": 5}},
    "config-string": {"config": "x"},
    "env-wrong-items": {"config": {"Env": [1, None]}},
    "labels-list": {"config": {"Labels": ["a"]}},
    "cmd-string": {"config": {"Cmd": "sh"}},
    "history-items": {"history": [1]},
    "created-number": {"created": 5},
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_configs_of_the_wrong_shape_are_refused(store: Store, tmp_path: Path, case: str) -> None:
    doc = config_for([GOOD])
    doc.update(BAD_CONFIGS[case])
    path = docker_archive(tmp_path / "c.tar", [GOOD], config=doc)
    refused(lambda: load_archive(store, path), "expected")
    assert store.images.list() == [] and store.layers.all() == []


BAD_MANIFESTS: dict[str, Any] = {
    "repotags-number": [{"Config": "config.json", "RepoTags": 5, "Layers": ["l0/layer.tar"]}],
    "layers-number": [{"Config": "config.json", "Layers": 5}],
    "config-missing": [{"Layers": ["l0/layer.tar"]}],
    "not-a-list": {"Config": "config.json"},
    "entry-string": ["x"],
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_docker_manifests_of_the_wrong_shape_are_refused(
    store: Store, tmp_path: Path, case: str
) -> None:
    path = docker_archive(tmp_path / "m.tar", [GOOD], manifest=BAD_MANIFESTS[case])
    refused(lambda: load_archive(store, path), "manifest.json")


def _oci_with(tmp_path: Path, index_desc: dict[str, Any], manifest_doc: dict[str, Any]) -> Path:
    cfg = json.dumps(config_for([GOOD])).encode()
    doc = {"schemaVersion": 2, "config": desc(cfg, MT_CONFIG), "layers": [desc(GOOD, MT_LAYER)]}
    doc.update(manifest_doc)
    manifest = json.dumps(doc).encode()
    entry = desc(manifest, MT_MANIFEST)
    entry.update(index_desc)
    index = {"schemaVersion": 2, "manifests": [entry, desc(manifest, MT_MANIFEST)]}
    return oci_layout(tmp_path / "oci", index, [cfg, manifest, GOOD])


BAD_OCI: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "platform-string": ({"platform": "x"}, {}),
    "annotations-list": ({"annotations": ["a"]}, {}),
    "manifest-layers-number": ({}, {"layers": 5}),
    "manifest-config-string": ({}, {"config": "x"}),
    "size-negative": ({"size": -1}, {}),
}


@pytest.mark.parametrize("case", sorted(BAD_OCI))
def test_oci_documents_of_the_wrong_shape_are_refused(
    store: Store, tmp_path: Path, case: str
) -> None:
    layout = _oci_with(tmp_path, *BAD_OCI[case])
    refused(lambda: load_archive(store, layout))


def test_a_stored_config_of_the_wrong_shape_breaks_no_reader(store: Store) -> None:
    # As a store written before the checks could hold: the image lists, inspects and
    # sizes, and fsck names what is wrong.
    from lamina.core.embedded.engine import EmbeddedEngine

    info = store.layers.commit_tar(io.BytesIO(GOOD), None)
    doc = config_for([GOOD], config="x", history=[1, {"created_by": "ok"}])
    image_id = store.images.put_config(doc)
    store.images.add_image(image_id)
    store.images.tag(image_id, "odd:1")
    assert [s.tags for s in store.images.list()] == [("odd:1",)]
    engine = EmbeddedEngine(store.home)
    try:
        assert engine.inspect("odd:1")["Id"] == image_id
        assert [h.created_by for h in engine.history("odd:1")] == ["ok"]
    finally:
        engine.close()
    report = fsck(store)
    assert not report.ok
    assert [p.kind for p in report.remaining] == ["bad-config"]
    assert "config.config: expected an object" in report.remaining[0].message
    assert store.layers.exists(info.chain_id)


def test_a_from_of_a_stored_config_with_wrong_env_builds(store: Store, tmp_path: Path) -> None:
    from lamina.core.embedded.builder.walk import run_build
    from lamina.core.events import BuildFinished
    from lamina.core.model import BuildRequest

    store.layers.commit_tar(io.BytesIO(GOOD), None)
    image_id = store.images.put_config(config_for([GOOD], config={"Env": [1, None, "A=b"]}))
    store.images.add_image(image_id)
    store.images.tag(image_id, "envy:1")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM envy:1\nLABEL a=b\n")
    end = list(run_build(store, BuildRequest(context=str(ctx))))[-1]
    assert isinstance(end, BuildFinished), end


# -- tar values that used to raise tracebacks ------------------------------------------------

BAD_MEMBERS: dict[str, tuple[tarfile.TarInfo, str]] = {
    "mtime-nan": (_ti("f", mtime="nan"), "malformed PAX mtime"),
    "mtime-huge": (_ti("f", mtime="1e400"), "malformed PAX mtime"),
    "mtime-out-of-range": (_ti("f", mtime="99999999999999999999"), "out of range"),
    "uid-negative": (_ti("f", uid="-5"), "uid -5 is out of range"),
    "gid-huge": (_ti("f", gid="4294967296"), "gid 4294967296 is out of range"),
    "nul-in-name": (_ti("f", path="a\0b"), "NUL"),
    "nul-in-link": (_ti("l", tarfile.SYMTYPE, linkpath="a\0b"), "NUL"),
    "size-words": (_ti("f", **{"SCHILY.xattr.user.x": "1"}), "malformed PAX size"),
}
BAD_MEMBERS["size-words"][0].pax_headers["size"] = "12a"


@pytest.mark.parametrize("case", sorted(BAD_MEMBERS))
def test_bad_tar_values_are_refused_in_one_line(store: Store, case: str) -> None:
    info, words = BAD_MEMBERS[case]
    data = layer([(info, b"")])
    refused(lambda: store.layers.commit_tar(io.BytesIO(data), None, where="t.tar"), words)
    assert list((store.home / "tmp").iterdir()) == []


def test_control_bytes_in_names_are_escaped_in_messages(store: Store) -> None:
    data = layer([(_ti("\x1b[2J/../x", size=0), b"")])
    message = refused(lambda: store.layers.commit_tar(io.BytesIO(data), None))
    assert "\x1b" not in message and "\\x1b" in message


def test_import_of_an_empty_input_makes_no_image(store: Store) -> None:
    refused(lambda: import_rootfs(store, Path("/dev/null"), "nothing:1"), "empty input")
    assert store.images.list() == []


def test_load_of_a_layout_with_a_fifo_blob_does_not_hang(store: Store, tmp_path: Path) -> None:
    cfg = json.dumps(config_for([GOOD])).encode()
    manifest = json.dumps(
        {"schemaVersion": 2, "config": desc(cfg, MT_CONFIG), "layers": [desc(GOOD, MT_LAYER)]}
    ).encode()
    layout = oci_layout(
        tmp_path / "fifo", {"schemaVersion": 2, "manifests": [desc(manifest, MT_MANIFEST)]}, [cfg]
    )
    (layout / "blobs" / "sha256" / sha(manifest)[7:]).write_bytes(manifest)
    os.mkfifo(layout / "blobs" / "sha256" / sha(GOOD)[7:])
    errors: list[BaseException] = []

    def run() -> None:
        try:
            load_archive(store, layout)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), "load waited on a FIFO"
    assert len(errors) == 1 and isinstance(errors[0], ArchiveError), errors
    assert "not a regular file" in str(errors[0])


# -- FIFOs and device nodes: what Docker accepts ---------------------------------------------


def _node(name: str, type_: bytes, major: int = 0, minor: int = 0) -> tarfile.TarInfo:
    ti = _ti(name, type_)
    ti.devmajor, ti.devminor = major, minor
    return ti


def test_fifos_and_devices_in_layers_load_and_save_back(store: Store, tmp_path: Path) -> None:
    data = layer(
        [
            (_node("ff", tarfile.FIFOTYPE), b""),
            (_node("dev/null", tarfile.CHRTYPE, 1, 3), b""),
            (_node("dev/loop9", tarfile.BLKTYPE, 7, 9), b""),
        ]
    )
    path = docker_archive(tmp_path / "nodes.tar", [data])
    (loaded,) = load_archive(store, path)
    diff = store.layers.diff_path(loaded.layers[0])
    assert stat.S_ISFIFO(os.lstat(diff / "ff").st_mode)
    if can_make_devices():
        assert stat.S_ISCHR(os.lstat(diff / "dev" / "null").st_mode)
        assert os.lstat(diff / "dev" / "loop9").st_rdev == os.makedev(7, 9)
    # Only the store's owner can reach them.
    assert stat.S_IMODE(os.stat(store.home / "layers").st_mode) == 0o700
    out = tmp_path / "again.tar"
    save_archive(store, ["hostile:1"], out)
    other = Store(tmp_path / "other")
    try:
        (again,) = load_archive(other, out)
        assert again.id == loaded.id
    finally:
        other.close()


# -- save -o never replaces what is not a regular file ---------------------------------------


@pytest.fixture
def saved_image(store: Store) -> str:
    store.layers.commit_tar(io.BytesIO(GOOD), None)
    image_id = store.images.put_config(config_for([GOOD]))
    store.images.add_image(image_id)
    store.images.tag(image_id, "s:1")
    return image_id


def test_save_to_a_fifo_streams_into_it(store: Store, tmp_path: Path, saved_image: str) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    save_archive(store, ["s:1"], fifo)
    reader.join(20)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    with tarfile.open(fileobj=io.BytesIO(got[0])) as tf:
        assert "manifest.json" in tf.getnames()


@pytest.mark.root
def test_save_to_a_device_leaves_the_device(store: Store, tmp_path: Path, saved_image: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mknod of a device needs root")
    null, full = tmp_path / "null", tmp_path / "full"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    save_archive(store, ["s:1"], null)
    assert stat.S_ISCHR(os.lstat(null).st_mode) and os.lstat(null).st_rdev == os.makedev(1, 3)
    refused(lambda: save_archive(store, ["s:1"], full), "No space left")
    assert stat.S_ISCHR(os.lstat(full).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "null", "store"]


def test_save_to_a_directory_is_refused(store: Store, tmp_path: Path, saved_image: str) -> None:
    refused(lambda: save_archive(store, ["s:1"], tmp_path), "is a directory")


# -- depth: nothing recurses on what an archive controls -------------------------------------


def test_a_very_deep_tree_imports_prunes_and_checks(store: Store, tmp_path: Path) -> None:
    depth = 1_500
    path = tmp_path / "deep.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        name = ""
        for _ in range(depth):
            name = f"{name}/d" if name else "d"
            tf.addfile(_ti(name, tarfile.DIRTYPE))
        tf.addfile(_ti(f"{name}/leaf", size=1), io.BytesIO(b"x"))
    summary = import_rootfs(store, path, "deep:1")
    from lamina.core.embedded.analysis import analyze

    analyze(store, "deep:1")
    store.images.untag("deep:1")
    result = apply_prune(store, plan_prune(store, PruneRequest("system", grace=0.0)))
    assert summary.layers[0] in result.layers
    assert fsck(store, repair=True).ok
    assert store.layers.all() == [] and list((store.home / "layers").iterdir()) == []


def test_a_deep_leftover_in_tmp_is_swept(store: Store) -> None:
    top = store.home / "tmp" / "work-x"
    fd = os.open(store.home / "tmp", os.O_RDONLY)
    os.mkdir("work-x", dir_fd=fd)
    cur = os.open("work-x", os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    for _ in range(3_000):  # deeper than PATH_MAX allows by path
        os.mkdir("dddd", dir_fd=cur)
        nxt = os.open("dddd", os.O_RDONLY, dir_fd=cur)
        os.close(cur)
        cur = nxt
    os.close(cur)
    os.utime(top, (1, 1))
    assert fsck(store, repair=True, grace=0.0).ok
    assert not top.exists()
