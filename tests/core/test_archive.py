"""Loading, saving and importing archives against real fixtures and real stores."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from lamina.core.digest import chain_ids, sha256_bytes
from lamina.core.embedded.archive import host_platform, import_rootfs, load_archive, save_archive
from lamina.core.embedded.store import Store
from lamina.core.errors import ArchiveError, NotFound


def listing(home: Path) -> list[tuple[str, int, int]]:
    """Every path in the store (but SQLite's own files) with its mode and size."""
    out = []
    for dirpath, dirnames, filenames in os.walk(home):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, home)
            if rel.startswith("index.db"):
                continue
            st = os.lstat(full)
            out.append((rel, st.st_mode, st.st_size if not os.path.isdir(full) else 0))
    return sorted(out)


def index_rows(store: Store) -> dict[str, list[tuple[object, ...]]]:
    conn = store.index.connection()
    return {
        t: [tuple(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY 1")]
        for t in ("layers", "images", "tags")
    }


def layer_digest(store: Store, chain_id: str) -> str:
    buf = io.BytesIO()
    store.layers.write_tar(chain_id, buf)
    return sha256_bytes(buf.getvalue())


def check_image(store: Store, image_id: str) -> list[str]:
    config = store.images.get_config(image_id)
    diff_ids = config["rootfs"]["diff_ids"]
    summary = store.images.summary(image_id)
    assert list(summary.layers) == chain_ids(diff_ids)
    for chain_id, diff_id in zip(summary.layers, diff_ids, strict=False):
        assert store.layers.get(chain_id).diff_id == diff_id
        assert layer_digest(store, chain_id) == diff_id
    assert sha256_bytes(store.images.get_blob(image_id)) == image_id
    return list(diff_ids)


DIVE = [
    ("test-docker-image.tar", ("dive-test:latest",), 14),
    ("test-kaniko-image.tar", ("dive-test:kaniko-latest",), 14),
    ("test-oci-gzip-image.tar", (), 1),
    ("test-oci-zstd-image.tar", (), 1),
    ("test-oci-estargz-image.tar", (), 1),
    ("test-oci-uncompressed-image.tar", (), 1),
]


def test_every_dive_archive_is_covered(conformance: Path) -> None:
    names = {p.name for p in (conformance / "images" / "dive").glob("*.tar")}
    assert names == {d[0] for d in DIVE} | {"test-uncompressed-image.tar"}


@pytest.mark.parametrize(("name", "tags", "n_layers"), DIVE, ids=[d[0] for d in DIVE])
def test_load_dive_archives(
    store: Store, conformance: Path, name: str, tags: tuple[str, ...], n_layers: int
) -> None:
    loaded = load_archive(store, conformance / "images" / "dive" / name)
    assert len(loaded) == 1
    image = loaded[0]
    assert image.tags == tags
    assert len(check_image(store, image.id)) == n_layers == len(image.layers)
    assert image.size > 0
    assert store.images.list() == loaded
    # Loading again is a no-op.
    assert load_archive(store, conformance / "images" / "dive" / name) == loaded
    assert list((store.home / "tmp").iterdir()) == []


def test_oci_layer_compressions_give_the_same_image(store: Store, conformance: Path) -> None:
    ids = {
        load_archive(store, conformance / "images" / "dive" / f"test-oci-{c}-image.tar")[0].id
        for c in ("gzip", "zstd", "uncompressed")
    }
    assert len(ids) == 1


def test_plain_rootfs_tar_is_rejected(store: Store, conformance: Path) -> None:
    before = listing(store.home)
    with pytest.raises(ArchiveError, match=r"not an image archive.*lamina import"):
        load_archive(store, conformance / "images" / "dive" / "test-uncompressed-image.tar")
    assert listing(store.home) == before


def test_almostempty_docker_archive(store: Store, conformance: Path) -> None:
    path = conformance / "images" / "containers-image" / "docker-archive" / "almostempty.tar"
    (image,) = load_archive(store, path)
    assert image.tags == ("emptyimage:latest",)
    assert image.id == "sha256:9d7f147c0d0c4d4538a04c7ef385809e56eb1aac7bf800fbe976612188025b68"
    check_image(store, image.id)


def test_placeholder_oci_layouts_fail_cleanly(store: Store, conformance: Path) -> None:
    layouts = sorted((conformance / "images" / "containers-image" / "oci-layout").iterdir())
    assert layouts
    before = listing(store.home)
    for layout in layouts:
        with pytest.raises(ArchiveError) as exc:
            load_archive(store, layout)
        assert "\n" not in str(exc.value)
    assert listing(store.home) == before


def test_save_then_load_round_trips(store: Store, conformance: Path, tmp_path: Path) -> None:
    (image,) = load_archive(store, conformance / "images" / "dive" / "test-docker-image.tar")
    (oci,) = load_archive(store, conformance / "images" / "dive" / "test-oci-gzip-image.tar")
    out = tmp_path / "saved.tar"
    save_archive(store, ["dive-test", oci.id[7:19]], out)
    with tarfile.open(out) as tf:
        names = tf.getnames()
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
        # Every layer blob is the uncompressed tar, named by its diffID.
        for entry in manifest:
            for layer in entry["Layers"]:
                data = tf.extractfile(layer).read()  # type: ignore[union-attr]
                assert "blobs/sha256/" + hashlib.sha256(data).hexdigest() == layer
    assert "oci-layout" in names
    assert manifest[0]["RepoTags"] == ["dive-test:latest"]
    assert manifest[0]["Config"] == "blobs/sha256/" + image.id[7:]
    assert manifest[1]["RepoTags"] is None
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == (
        "docker.io/library/dive-test:latest"
    )
    other = Store(tmp_path / "other")
    loaded = load_archive(other, out)
    assert [i.id for i in loaded] == [image.id, oci.id]
    assert loaded[0].tags == ("dive-test:latest",)
    assert check_image(other, image.id) == store.images.get_config(image.id)["rootfs"]["diff_ids"]
    # And as an OCI layout directory (the same tar, unpacked, without manifest.json).
    layout = tmp_path / "layout"
    with tarfile.open(out) as tf:
        tf.extractall(layout, filter="data")
    (layout / "manifest.json").unlink()
    third = Store(tmp_path / "third")
    assert sorted(i.id for i in load_archive(third, layout)) == sorted([image.id, oci.id])
    assert third.images.resolve("dive-test:latest") == image.id
    other.close()
    third.close()


def test_save_unknown_ref(store: Store, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        save_archive(store, ["nope"], tmp_path / "x.tar")
    assert not list(tmp_path.glob("*x.tar*"))


def test_save_into_a_missing_directory(store: Store, conformance: Path, tmp_path: Path) -> None:
    load_archive(
        store, conformance / "images" / "containers-image" / "docker-archive" / "almostempty.tar"
    )
    with pytest.raises(ArchiveError, match=r"nodir/x\.tar: cannot write"):
        save_archive(store, ["emptyimage"], tmp_path / "nodir" / "x.tar")


def test_gzipped_docker_save_loads(store: Store, conformance: Path, tmp_path: Path) -> None:
    gz = tmp_path / "image.tar.gz"
    gz.write_bytes(
        gzip.compress(
            (
                conformance / "images" / "containers-image" / "docker-archive" / "almostempty.tar"
            ).read_bytes()
        )
    )
    (image,) = load_archive(store, gz)
    assert image.tags == ("emptyimage:latest",)


# -- building archives by hand ------------------------------------------------------------


def _ti(
    name: str, type_: bytes = tarfile.REGTYPE, size: int = 0, link: str = ""
) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.size, ti.linkname, ti.mode, ti.mtime = type_, size, link, 0o644, 1_500_000_000
    return ti


def layer_bytes(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if data else None)
    return buf.getvalue()


def docker_archive(
    path: Path, layers: list[bytes], tag: str = "evil:latest", diff_ids: list[str] | None = None
) -> None:
    diff_ids = diff_ids or [sha256_bytes(x) for x in layers]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-05-01T00:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    files = {"config.json": config}
    names = []
    for i, data in enumerate(layers):
        files[f"l{i}/layer.tar"] = data
        names.append(f"l{i}/layer.tar")
    files["manifest.json"] = json.dumps(
        [{"Config": "config.json", "RepoTags": [tag], "Layers": names}]
    ).encode()
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))


GOOD = layer_bytes([(_ti("etc", tarfile.DIRTYPE), b""), (_ti("etc/ok", size=2), b"ok")])
BAD_LAYERS = {
    "dotdot": layer_bytes([(_ti("../../escape", size=1), b"x")]),
    "symlink-escape": layer_bytes([(_ti("a", tarfile.SYMTYPE, link="../../../etc/shadow"), b"")]),
    "hardlink-escape": layer_bytes([(_ti("h", tarfile.LNKTYPE, link="../outside"), b"")]),
    "bad-type": layer_bytes([(_ti("v", b"V"), b"")]),
    "through-symlink": layer_bytes(
        [(_ti("etc", tarfile.SYMTYPE, link="/tmp"), b""), (_ti("etc/cron", size=1), b"x")]
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_LAYERS))
def test_bad_archive_leaves_store_as_it_was(
    store: Store, conformance: Path, tmp_path: Path, case: str
) -> None:
    load_archive(
        store, conformance / "images" / "containers-image" / "docker-archive" / "almostempty.tar"
    )
    before, rows = listing(store.home), index_rows(store)
    path = tmp_path / f"{case}.tar"
    docker_archive(path, [GOOD, BAD_LAYERS[case]])
    with pytest.raises(ArchiveError) as exc:
        load_archive(store, path)
    message = str(exc.value)
    assert "layer 2 (l1/layer.tar)" in message and "\n" not in message
    assert listing(store.home) == before
    assert index_rows(store) == rows


def test_diff_id_mismatch_is_rejected(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "lying.tar"
    docker_archive(path, [GOOD], diff_ids=["sha256:" + "0" * 64])
    before = listing(store.home)
    with pytest.raises(ArchiveError, match="does not match the config"):
        load_archive(store, path)
    assert listing(store.home) == before
    assert store.layers.all() == []


def test_layer_count_mismatch_is_rejected(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "short.tar"
    docker_archive(path, [GOOD], diff_ids=[sha256_bytes(GOOD), sha256_bytes(b"x")])
    with pytest.raises(ArchiveError, match="1 layers but the config lists 2"):
        load_archive(store, path)


def test_nested_oci_index_with_zstd_and_gzip_layers(store: Store, tmp_path: Path) -> None:
    import zstandard

    layout = tmp_path / "oci"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, object]:
        d = sha256_bytes(data)
        (blobs / d[7:]).write_bytes(data)
        return {"digest": d, "size": len(data)}

    second = layer_bytes([(_ti("etc/two", size=3), b"two")])
    l1 = put(gzip.compress(GOOD))
    l2 = put(zstandard.ZstdCompressor().compress(second))
    config = put(
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {
                    "type": "layers",
                    "diff_ids": [sha256_bytes(GOOD), sha256_bytes(second)],
                },
            }
        ).encode()
    )
    manifest = put(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"),
                "layers": [
                    dict(l1, mediaType="application/vnd.oci.image.layer.v1.tar+gzip"),
                    dict(l2, mediaType="application/vnd.oci.image.layer.v1.tar+zstd"),
                ],
            }
        ).encode()
    )
    os_name, arch = host_platform()
    inner = put(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [
                    dict(
                        manifest,
                        mediaType="application/vnd.oci.image.manifest.v1+json",
                        platform={"os": os_name, "architecture": arch},
                    ),
                    dict(
                        manifest,
                        mediaType="application/vnd.oci.image.manifest.v1+json",
                        platform={"os": "unknown", "architecture": "unknown"},
                    ),
                ],
            }
        ).encode()
    )
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    dict(
                        inner,
                        mediaType="application/vnd.oci.image.index.v1+json",
                        annotations={"org.opencontainers.image.ref.name": "example.com/app:v2"},
                    ),
                ],
            }
        )
    )
    (image,) = load_archive(store, layout)
    assert image.tags == ("example.com/app:v2",)
    check_image(store, image.id)
    assert (store.layers.diff_path(image.layers[1]) / "etc" / "two").read_text() == "two"


def test_oci_blob_digest_is_checked(store: Store, tmp_path: Path, conformance: Path) -> None:
    layout = tmp_path / "oci"
    with tarfile.open(conformance / "images" / "dive" / "test-oci-gzip-image.tar") as tf:
        tf.extractall(layout, filter="data")
    index = json.loads((layout / "index.json").read_text())
    manifest = layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]
    manifest.chmod(0o644)
    manifest.write_bytes(manifest.read_bytes() + b" ")
    with pytest.raises(ArchiveError, match="does not match its digest"):
        load_archive(store, layout)


# -- import ------------------------------------------------------------------------------


def test_import_rootfs(store: Store, tmp_path: Path) -> None:
    rootfs = layer_bytes(
        [
            (_ti("bin", tarfile.DIRTYPE), b""),
            (_ti("bin/sh", tarfile.SYMTYPE, link="/bin/busybox"), b""),
            (_ti("etc/hostname", size=5), b"host\n"),
        ]
    )
    path = tmp_path / "rootfs.tar.gz"
    path.write_bytes(gzip.compress(rootfs))
    image = import_rootfs(store, path, "imported:v1", message="from a test")
    assert image.tags == ("imported:v1",)
    config = store.images.get_config(image.id)
    assert config["rootfs"]["diff_ids"] == [sha256_bytes(rootfs)]
    assert (config["os"], config["architecture"]) == host_platform()
    assert config["history"][0]["comment"] == "from a test"
    assert layer_digest(store, image.layers[0]) == sha256_bytes(rootfs)
    untagged = import_rootfs(store, path, "")
    assert untagged.dangling and untagged.layers == image.layers


def test_import_refuses_unsafe_rootfs(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "bad.tar"
    path.write_bytes(BAD_LAYERS["dotdot"])
    before = listing(store.home)
    with pytest.raises(ArchiveError, match=r"bad.tar: \.\./\.\./escape: path climbs out"):
        import_rootfs(store, path, "bad")
    assert listing(store.home) == before


def test_loaded_layers_carry_the_instruction_from_the_history(
    store: Store, conformance: Path
) -> None:
    from lamina.core.embedded.archive import load_archive

    (image,) = load_archive(store, conformance / "images/dive/test-docker-image.tar")
    config = store.images.get_config(image.id)
    expected = [h["created_by"] for h in config["history"] if not h.get("empty_layer")]
    got = [store.layers.get(c).created_by for c in image.layers]
    assert got == expected
    assert any("ADD" in g or "COPY" in g or "RUN" in g or "/bin/sh" in g for g in got)
