"""The store: index, layer commits, tar-split regeneration, images and tags.

Everything runs on real directories and real SQLite files under tmp_path.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from lamina.core.digest import chain_ids, sha256_bytes
from lamina.core.embedded.store import Store, normalize_tag
from lamina.core.embedded.store.index import SCHEMA_VERSION
from lamina.core.errors import NotFound, StoreError, UsageError


def make_tree(root: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "a").write_text("hello")
    os.link(root / "etc" / "a", root / "etc" / "b")
    os.symlink("/bin/busybox", root / "sh")
    os.mknod(root / "gone", stat.S_IFCHR, os.makedev(0, 0))
    (root / "opq").mkdir()
    os.setxattr(root / "opq", "trusted.overlay.opaque", b"y")
    os.chown(root / "etc" / "a", 1000, 1001)
    freeze(root)
    os.utime(root / "etc" / "a", (1_600_000_000.7, 1_600_000_000.7))


def freeze(root: Path, when: float = 1_500_000_000) -> None:
    """Fixed mtimes everywhere, so two trees built seconds apart hash alike."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)


def commit_tree(store: Store, build, parent: str | None = None):  # type: ignore[no-untyped-def]
    with store.tmpdir("test") as work:
        src = work / "upper"
        src.mkdir()
        build(src)
        return store.layers.commit_dir(src, parent, "RUN test")


def layer_tar(store: Store, chain_id: str) -> bytes:
    buf = io.BytesIO()
    store.layers.write_tar(chain_id, buf)
    return buf.getvalue()


def store_listing(home: Path) -> list[tuple[str, int]]:
    """Every path under the store except the SQLite files and tmp work dirs."""
    out = []
    for dirpath, dirnames, filenames in os.walk(home):
        rel = os.path.relpath(dirpath, home)
        if rel.startswith("tmp"):
            continue
        for name in sorted(dirnames + filenames):
            p = os.path.join(rel, name)
            if p.startswith("index.db") or p == "tmp":
                continue
            out.append((p, os.lstat(os.path.join(dirpath, name)).st_mode))
    return sorted(out)


# -- index -----------------------------------------------------------------------------


def test_index_is_wal_with_foreign_keys_and_versioned(store: Store) -> None:
    conn = store.index.connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.index.schema_version() == SCHEMA_VERSION == 5
    with pytest.raises(Exception, match="FOREIGN KEY"), store.index.transaction() as tx:
        tx.execute("INSERT INTO tags (name, image_id) VALUES ('x:latest', 'sha256:nope')")
    assert conn.execute("SELECT count(*) FROM tags").fetchone()[0] == 0


def test_index_reopens_without_migrating_again(tmp_path: Path) -> None:
    s = Store(tmp_path / "h")
    with s.index.transaction() as tx:
        tx.execute("INSERT INTO stat_cache (path, checksum) VALUES ('a', 'b')")
    s.close()
    s2 = Store(tmp_path / "h")
    assert s2.index.connection().execute("SELECT checksum FROM stat_cache").fetchone()[0] == "b"
    s2.close()


def test_index_refuses_a_newer_schema(tmp_path: Path) -> None:
    s = Store(tmp_path / "h")
    s.index.connection().execute("PRAGMA user_version = 99")
    s.close()
    with pytest.raises(StoreError, match="newer than this lamina"):
        Store(tmp_path / "h")
    # The refusal leaves no connection open: SQLite's side files are gone with it.
    assert not (tmp_path / "h" / "index.db-wal").exists()


def test_a_corrupt_index_is_a_store_error(tmp_path: Path) -> None:
    home = tmp_path / "h"
    Store(home).close()
    for name in ("index.db-wal", "index.db-shm"):
        (home / name).unlink(missing_ok=True)
    (home / "index.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"index\.db"):
        Store(home)


def test_commit_dir_of_a_missing_directory_is_a_store_error(store: Store, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="missing: cannot move into the store"):
        store.layers.commit_dir(tmp_path / "missing", None)
    assert store.layers.all() == []


def test_connection_is_per_thread(store: Store) -> None:
    import threading

    seen = []
    t = threading.Thread(target=lambda: seen.append(store.index.connection()))
    t.start()
    t.join()
    assert seen[0] is not store.index.connection()


def test_connections_of_finished_threads_are_closed(store: Store) -> None:
    import sqlite3
    import threading

    seen: list[sqlite3.Connection] = []
    for _ in range(5):
        t = threading.Thread(target=lambda: seen.append(store.index.connection()))
        t.start()
        t.join()
    store.index.connection()  # a new connection sweeps the dead threads' ones
    for conn in seen[:-1]:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")
    assert len(store.index._all) <= 2


def test_transaction_rolls_back_on_error(store: Store) -> None:
    def failing_write() -> None:
        with store.index.transaction() as tx:
            tx.execute("INSERT INTO stat_cache (path, checksum) VALUES ('a', 'b')")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        failing_write()
    assert store.index.connection().execute("SELECT count(*) FROM stat_cache").fetchone()[0] == 0


def test_a_failing_statement_rolls_back_as_one_line_naming_the_write(store: Store) -> None:
    def failing_write() -> None:
        with store.index.transaction("prune") as tx:
            tx.execute("INSERT INTO stat_cache (path, checksum) VALUES ('a', 'b')")
            tx.execute("SELECT * FROM no_such_table")

    with pytest.raises(StoreError) as caught:
        failing_write()
    message = str(caught.value)
    assert message == f"{store.index.path}: prune rolled back: no such table: no_such_table"
    assert store.index.rows("SELECT * FROM stat_cache") == []
    # The index is usable afterwards: the failed transaction is gone.
    with store.index.transaction() as tx:
        tx.execute("INSERT INTO stat_cache (path, checksum) VALUES ('a', 'b')")
    assert len(store.index.rows("SELECT * FROM stat_cache")) == 1


def test_a_failing_statement_in_a_nested_write_is_named_by_the_outer_one(store: Store) -> None:
    def failing_write() -> None:
        with store.index.transaction("repair"):
            with store.index.transaction() as tx:
                tx.execute("SELECT * FROM no_such_table")

    with pytest.raises(StoreError, match=r": repair rolled back: no such table"):
        failing_write()


@pytest.mark.parametrize("read", ["row", "rows", "snapshot"])
def test_a_failing_read_is_a_one_line_store_error(store: Store, read: str) -> None:
    def failing_read() -> None:
        if read == "snapshot":
            with store.index.snapshot() as conn:
                conn.execute("SELECT * FROM no_such_table")
        else:
            getattr(store.index, read)("SELECT * FROM no_such_table")

    with pytest.raises(StoreError) as caught:
        failing_read()
    assert str(caught.value) == (
        f"{store.index.path}: cannot read the index: no such table: no_such_table"
    )
    assert not store.index.connection().in_transaction


_WORKER = r"""
import os, sys
from pathlib import Path
from lamina.core.embedded.store import Store
home, tag, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = Store(home)
for i in range(n):
    with s.tmpdir("w") as work:
        src = work / "u"
        src.mkdir()
        (src / "shared").write_text("same in every process")
        os.utime(src / "shared", (1, 1))  # same mtime, so the same diffID everywhere
        shared = s.layers.commit_dir(src, None)
        src = work / "v"
        src.mkdir()
        (src / f"{tag}-{i}").write_text(f"{tag} {i}")
        mine = s.layers.commit_dir(src, shared.chain_id)
    with s.index.transaction() as tx:
        tx.execute("INSERT INTO stat_cache (path, checksum) VALUES (?, ?)", (f"{tag}-{i}", mine.chain_id))
s.close()
"""


def test_two_processes_commit_concurrently(tmp_path: Path) -> None:
    home = tmp_path / "h"
    n = 15
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(home), tag, str(n)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("p1", "p2")
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    s = Store(home)
    rows = s.index.connection().execute("SELECT checksum FROM stat_cache").fetchall()
    assert len(rows) == 2 * n
    layers = s.layers.all()
    assert len(layers) == 2 * n + 1  # the shared base once
    for info in layers:
        assert s.layers.verify(info.chain_id)
    assert s.index.connection().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    s.close()


def test_processes_opening_a_fresh_store_at_once_migrate_once(tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    code = (
        "import sys; from pathlib import Path; from lamina.core.embedded.store import Store\n"
        "s = Store(Path(sys.argv[1]))\n"
        "with s.index.transaction() as tx:\n"
        "    tx.execute('INSERT INTO stat_cache (path, checksum) VALUES (?, ?)', (sys.argv[2], 'x'))\n"
        "print(s.index.schema_version())\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(home), f"p{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.strip() == str(SCHEMA_VERSION)
    s = Store(home)
    paths = [r[0] for r in s.index.connection().execute("SELECT path FROM stat_cache ORDER BY 1")]
    assert paths == ["p0", "p1", "p2", "p3"]
    s.close()


# -- layers ----------------------------------------------------------------------------


def test_commit_dir_writes_docker_shaped_tar(store: Store) -> None:
    info = commit_tree(store, make_tree)
    data = layer_tar(store, info.chain_id)
    assert info.diff_id == sha256_bytes(data) == info.chain_id
    assert info.parent is None and info.created_by == "RUN test"
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names == ["etc", "etc/a", "etc/b", ".wh.gone", "opq", "opq/.wh..wh..opq", "sh"]
    by = {m.name: m for m in members}
    assert by["etc/a"].uid == 1000 and by["etc/a"].gid == 1001
    assert by["etc/a"].mtime == 1_600_000_000
    assert by["etc/a"].uname == "" and by["etc/a"].gname == ""
    assert by["etc/b"].islnk() and by["etc/b"].linkname == "etc/a"
    assert by["sh"].issym() and by["sh"].linkname == "/bin/busybox"
    assert by[".wh.gone"].isfile() and by[".wh.gone"].size == 0
    assert data.endswith(bytes(1024))
    # The diff is in the store, the row points at it, the tar-split regenerates it.
    diff = store.layers.diff_path(info.chain_id)
    assert (diff / "etc" / "a").read_text() == "hello"
    assert store.layers.get(info.chain_id) == info
    assert store.layers.verify(info.chain_id)
    assert info.size > 0


def test_commit_dir_is_deterministic_and_idempotent(store: Store) -> None:
    a = commit_tree(store, make_tree)
    b = commit_tree(store, make_tree)
    assert a == b
    assert len(store.layers.all()) == 1
    assert not list((store.home / "tmp").iterdir())


def test_parent_chain_and_changes(store: Store) -> None:
    base = commit_tree(store, make_tree)

    def upper(root: Path) -> None:
        (root / "etc").mkdir()
        (root / "etc" / "a").write_text("changed")
        (root / "new").write_text("x")
        os.mknod(root / "sh", stat.S_IFCHR, os.makedev(0, 0))

    top = commit_tree(store, upper, base.chain_id)
    assert top.chain_id == chain_ids([base.diff_id, top.diff_id])[-1]
    assert [i.chain_id for i in store.layers.chain(top.chain_id)] == [base.chain_id, top.chain_id]
    changes = {c.path: c for c in store.layers.changes(top.chain_id)}
    assert {p: c.change for p, c in changes.items()} == {
        "/etc": "modified",
        "/etc/a": "modified",
        "/new": "added",
        "/sh": "deleted",
    }
    assert changes["/etc/a"].size == 7 and changes["/etc/a"].kind == "file"
    base_changes = {c.path: (c.change, c.kind) for c in store.layers.changes(base.chain_id)}
    assert base_changes["/etc/b"] == ("added", "hardlink")
    assert base_changes["/sh"] == ("added", "symlink")
    assert base_changes["/gone"] == ("deleted", "other")


def test_opaque_dir_deletes_lower_children(store: Store) -> None:
    def lower(root: Path) -> None:
        (root / "d").mkdir()
        (root / "d" / "old").write_text("1")
        (root / "d" / "keep").write_text("1")

    def upper(root: Path) -> None:
        (root / "d").mkdir()
        os.setxattr(root / "d", "trusted.overlay.opaque", b"y")
        (root / "d" / "keep").write_text("2")

    base = commit_tree(store, lower)
    top = commit_tree(store, upper, base.chain_id)
    got = {c.path: c.change for c in store.layers.changes(top.chain_id)}
    assert got == {"/d": "modified", "/d/keep": "modified", "/d/old": "deleted"}


def test_commit_tar_round_trips_into_another_store(store: Store, tmp_path: Path) -> None:
    base = commit_tree(store, make_tree)
    other = Store(tmp_path / "other")
    data = layer_tar(store, base.chain_id)
    got = other.layers.commit_tar(io.BytesIO(data), None)
    assert got.chain_id == base.chain_id
    diff = other.layers.diff_path(got.chain_id)
    assert stat.S_ISCHR(os.lstat(diff / "gone").st_mode)
    assert os.getxattr(diff / "opq", "trusted.overlay.opaque") == b"y"
    assert os.readlink(diff / "sh") == "/bin/busybox"
    assert os.stat(diff / "etc" / "a").st_ino == os.stat(diff / "etc" / "b").st_ino
    assert os.stat(diff / "etc" / "a").st_uid == 1000
    assert layer_tar(other, got.chain_id) == data
    other.close()


def _tar(
    entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]], fmt: int = tarfile.GNU_FORMAT
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for e in entries:
            if isinstance(e, tuple):
                tf.addfile(e[0], io.BytesIO(e[1]))
            else:
                tf.addfile(e)
    return buf.getvalue()


def _ti(
    name: str, type_: bytes = tarfile.REGTYPE, size: int = 0, link: str = "", mode: int = 0o644
) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.size, ti.linkname, ti.mode, ti.mtime = type_, size, link, mode, 1_500_000_000
    return ti


def test_commit_tar_preserves_foreign_tar_bytes(store: Store) -> None:
    # Python's tarfile pads to 10 KiB records and writes GNU headers with unames: none of
    # that is how lamina writes, yet the bytes (and so the diffID) must survive.
    ti = _ti("dir/file", size=5)
    ti.uname, ti.uid = "someone", 42
    xt = _ti("x", size=3)
    xt.pax_headers = {"SCHILY.xattr.user.note": "hi"}
    data = _tar(
        [
            _ti("dir", tarfile.DIRTYPE, mode=0o755),
            (ti, b"12345"),
            _ti("dir/.wh.old"),
            _ti("other/.wh..wh..opq"),
            (xt, b"abc"),
        ],
        fmt=tarfile.PAX_FORMAT,
    )
    info = store.layers.commit_tar(io.BytesIO(data), None)
    assert info.diff_id == sha256_bytes(data)
    assert layer_tar(store, info.chain_id) == data
    diff = store.layers.diff_path(info.chain_id)
    assert os.stat(diff / "dir" / "file").st_uid == 42
    assert os.stat(diff / "dir").st_mtime == 1_500_000_000
    assert os.getxattr(diff / "x", "user.note") == b"hi"
    assert os.getxattr(diff / "other", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(diff / "other", "user.overlay.opaque") == b"y"


def test_commit_tar_ignores_overlay_xattrs_from_the_archive(store: Store) -> None:
    ti = _ti("d", tarfile.DIRTYPE)
    ti.pax_headers = {
        "SCHILY.xattr.trusted.overlay.redirect": "/etc",
        "SCHILY.xattr.user.kept": "1",
    }
    data = _tar([ti], fmt=tarfile.PAX_FORMAT)
    info = store.layers.commit_tar(io.BytesIO(data), None)
    d = store.layers.diff_path(info.chain_id) / "d"
    assert os.listxattr(d) == ["user.kept"]
    assert layer_tar(store, info.chain_id) == data


def test_commit_tar_skips_aufs_metadata(store: Store) -> None:
    data = _tar(
        [
            _ti(".wh..wh.plnk", tarfile.DIRTYPE),
            (_ti(".wh..wh.plnk/123.45", size=1), b"x"),
            _ti(".wh..wh.aufs"),
            (_ti("kept", size=1), b"k"),
        ]
    )
    info = store.layers.commit_tar(io.BytesIO(data), None)
    assert os.listdir(store.layers.diff_path(info.chain_id)) == ["kept"]
    assert layer_tar(store, info.chain_id) == data


def test_commit_tar_keeps_overwritten_payloads(store: Store) -> None:
    data = _tar([(_ti("f", size=3), b"one"), (_ti("f", size=3), b"two")])
    info = store.layers.commit_tar(io.BytesIO(data), None)
    assert (store.layers.diff_path(info.chain_id) / "f").read_bytes() == b"two"
    assert layer_tar(store, info.chain_id) == data


UNSAFE = [
    ("dotdot", [(_ti("../evil", size=1), b"x")], "../evil: path climbs out"),
    ("absolute", [(_ti("/etc/evil", size=1), b"x")], "/etc/evil: absolute path"),
    ("hardlink-abs", [_ti("l", tarfile.LNKTYPE, link="/etc/passwd")], "l: hardlink to an absolute"),
    (
        "hardlink-out",
        [_ti("l", tarfile.LNKTYPE, link="../x")],
        "l: hardlink target '../x' is outside",
    ),
    (
        "through-symlink",
        [_ti("s", tarfile.SYMTYPE, link="/etc"), (_ti("s/passwd", size=1), b"x")],
        "s/passwd: would be written through a symlink",
    ),
    (
        "symlink-escape",
        [_ti("a", tarfile.DIRTYPE), _ti("a/s", tarfile.SYMTYPE, link="../../x")],
        "a/s: symlink target '../../x' escapes the root",
    ),
    ("bad-type", [_ti("v", b"V")], "v: unsupported tar entry type"),
]


@pytest.mark.parametrize(("case", "entries", "message"), UNSAFE, ids=[u[0] for u in UNSAFE])
def test_commit_tar_refuses_unsafe_members(
    store: Store, case: str, entries: list, message: str
) -> None:
    from lamina.core.errors import ArchiveError

    good = commit_tree(store, make_tree)
    before = store_listing(store.home)
    rows = store.layers.all()
    with pytest.raises(ArchiveError) as exc:
        store.layers.commit_tar(io.BytesIO(_tar(entries)), good.chain_id, where="t.tar")
    assert message in str(exc.value)
    assert str(exc.value).startswith("t.tar: ")
    assert "\n" not in str(exc.value)
    assert store_listing(store.home) == before
    assert store.layers.all() == rows
    assert list((store.home / "tmp").iterdir()) == []


def test_commit_tar_allows_absolute_and_inner_relative_symlinks(store: Store) -> None:
    data = _tar(
        [
            _ti("bin", tarfile.DIRTYPE),
            _ti("bin/sh", tarfile.SYMTYPE, link="/bin/busybox"),
            _ti("bin/up", tarfile.SYMTYPE, link="../etc/x"),
        ]
    )
    info = store.layers.commit_tar(io.BytesIO(data), None)
    assert os.readlink(store.layers.diff_path(info.chain_id) / "bin" / "up") == "../etc/x"


def test_commit_tar_unknown_parent(store: Store) -> None:
    with pytest.raises(NotFound):
        store.layers.commit_tar(io.BytesIO(_tar([])), "sha256:" + "0" * 64)


def test_truncated_tar_is_an_archive_error(store: Store) -> None:
    from lamina.core.errors import ArchiveError

    data = _tar([(_ti("f", size=2000), b"x" * 2000)])
    with pytest.raises(ArchiveError, match="truncated"):
        store.layers.commit_tar(io.BytesIO(data[:1000]), None)


def test_leftover_layer_dir_without_row_is_not_a_layer(store: Store) -> None:
    info = commit_tree(store, make_tree)
    # Simulate a crash between rename and commit: directory present, row absent.
    with store.index.transaction() as tx:
        tx.execute("DELETE FROM layers WHERE chain_id = ?", (info.chain_id,))
    (store.layers.diff_path(info.chain_id) / "etc" / "a").unlink()  # and incomplete
    with pytest.raises(NotFound):
        store.layers.get(info.chain_id)
    assert store.layers.all() == []
    again = commit_tree(store, make_tree)
    assert again.chain_id == info.chain_id
    assert (store.layers.diff_path(info.chain_id) / "etc" / "a").read_text() == "hello"
    assert store.layers.verify(info.chain_id)


def test_verify_detects_damage(store: Store) -> None:
    info = commit_tree(store, make_tree)
    (store.layers.diff_path(info.chain_id) / "etc" / "a").write_text("HELLO")
    assert not store.layers.verify(info.chain_id)


def test_diff_path_validates_digest(store: Store) -> None:
    with pytest.raises(StoreError, match="malformed digest"):
        store.layers.diff_path("sha256:../../etc")


# -- images ----------------------------------------------------------------------------


def test_put_blob_is_atomic_and_refreshes_mtime(store: Store) -> None:
    d = store.images.put_blob(b"{}")
    path = store.home / "blobs" / "sha256" / d.split(":")[1]
    assert path.read_bytes() == b"{}"
    os.utime(path, (1, 1))
    assert store.images.put_blob(b"{}") == d
    assert path.stat().st_mtime > 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    with pytest.raises(NotFound):
        store.images.get_blob("sha256:" + "1" * 64)


def _image(
    store: Store, diff_ids: list[str], created: str = "2024-01-02T03:04:05.123456789Z"
) -> str:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {"Labels": {"a": "b"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [],
    }
    return store.images.put_config(config)


def test_add_image_checks_layers_and_summarises(store: Store) -> None:
    info = commit_tree(store, make_tree)
    missing = _image(store, [info.diff_id, "sha256:" + "2" * 64])
    with pytest.raises(NotFound, match="is not in the store"):
        store.images.add_image(missing)
    image_id = _image(store, [info.diff_id])
    assert image_id == sha256_bytes(store.images.get_blob(image_id))
    summary = store.images.add_image(image_id)
    assert summary.id == image_id and summary.layers == (info.chain_id,)
    assert summary.size == info.size and summary.dangling
    assert summary.labels == {"a": "b"}
    assert summary.created == pytest.approx(1704164645.123457)
    store.images.tag(image_id, "Busybox".lower())
    store.images.tag(image_id, "docker.io/library/busybox:1.36")
    assert store.images.summary(image_id).tags == ("busybox:1.36", "busybox:latest")
    assert store.images.resolve("busybox") == image_id
    assert store.images.resolve(image_id[7:19]) == image_id
    assert store.images.resolve("sha256:" + image_id[7:12]) == image_id
    with pytest.raises(NotFound):
        store.images.resolve("nothere")
    store.images.untag("busybox")
    assert store.images.summary(image_id).tags == ("busybox:1.36",)
    store.images.remove(image_id)
    assert store.images.list() == []
    assert store.layers.get(info.chain_id) == info  # layers are left to GC


def test_tag_moves_and_leaves_old_image_dangling(store: Store) -> None:
    info = commit_tree(store, make_tree)
    a = store.images.add_image(_image(store, [info.diff_id], "2024-01-01T00:00:00Z")).id
    b = store.images.add_image(_image(store, [info.diff_id], "2024-02-01T00:00:00Z")).id
    store.images.tag(a, "app")
    store.images.tag(b, "app:latest")
    listed = store.images.list()
    assert [i.id for i in listed] == [b, a]  # newest first
    assert listed[0].tags == ("app:latest",) and listed[1].dangling


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("busybox", "busybox:latest"),
        ("busybox:1.36", "busybox:1.36"),
        ("library/busybox", "library/busybox:latest"),
        ("docker.io/library/busybox", "busybox:latest"),
        ("docker.io/me/app:v1", "me/app:v1"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("ghcr.io/owner/app:1.0-rc.1", "ghcr.io/owner/app:1.0-rc.1"),
        ("Registry.Example.com/app", "Registry.Example.com/app:latest"),
        ("a__b/c-d.e", "a__b/c-d.e:latest"),
    ],
)
def test_normalize_tag(name: str, expected: str) -> None:
    assert normalize_tag(name) == expected


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("busybox@sha256:" + "a" * 64, "digest reference"),
        ("BusyBox", "must be lowercase"),
        ("app:bad/tag", "invalid reference format"),
        ("app:-x", "invalid tag"),
        ("", "empty"),
        ("a//b", "invalid reference format"),
        ("x" * 256, "longer than"),
    ],
)
def test_normalize_tag_rejects(name: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        normalize_tag(name)


def test_tag_requires_existing_image(store: Store) -> None:
    with pytest.raises(NotFound):
        store.images.tag("sha256:" + "3" * 64, "x")


_COMMITTER = r"""
import os, sys
from pathlib import Path
from lamina.core.embedded.store import Store
s = Store(Path(sys.argv[1]))
i = 0
while True:
    with s.tmpdir("crash") as work:
        src = work / "u"
        for d in range(5):
            (src / f"d{d}").mkdir(parents=True)
            for f in range(10):
                (src / f"d{d}" / f"f{f}").write_bytes(os.urandom(64) * (f + 1))
        s.layers.commit_dir(src, None, f"round {i}")
    i += 1
"""


@pytest.mark.parametrize("seed", range(4))
def test_kill_during_commits_never_leaves_a_broken_row(tmp_path: Path, seed: int) -> None:
    import random
    import time

    rng = random.Random(seed)
    home = tmp_path / "h"
    Store(home).close()
    proc = subprocess.Popen([sys.executable, "-c", _COMMITTER, str(home)])
    watcher = Store(home)
    deadline = time.monotonic() + 60
    while not watcher.layers.all() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    watcher.close()
    # Kill at a random point of a later commit (walk, tar-split, fsync, rename or insert).
    time.sleep(rng.random() * 0.5)
    proc.kill()
    proc.wait()
    s = Store(home)
    layers = s.layers.all()
    assert layers, "the committer made no layer within 60 seconds"
    for info in layers:
        assert s.layers.verify(info.chain_id), info
    recorded = {info.chain_id[7:] for info in layers}
    leftovers = {p.name for p in (home / "layers").iterdir()} - recorded
    assert len(leftovers) <= 1  # at most the one being renamed when the kill came
    # A new commit still works on the same store.
    with s.tmpdir("after") as work:
        (work / "u").mkdir()
        (work / "u" / "x").write_text("x")
        assert s.layers.verify(s.layers.commit_dir(work / "u", None).chain_id)
    s.close()
