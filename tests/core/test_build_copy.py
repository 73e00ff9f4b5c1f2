"""COPY and ADD semantics, checked in the layers they produce, and the layer-chain
reader COPY relies on."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import stat
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lamina.core.embedded.builder.copy import go_match, has_wildcards
from lamina.core.embedded.builder.rootfs import RootFS, join
from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.store import Store
from lamina.core.embedded.store.layers import set_opaque
from lamina.core.events import BuildFailed, BuildFinished, StepFinished
from lamina.core.model import BuildRequest

pytestmark = pytest.mark.usefixtures("busybox_store")


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    d = tmp_path / "ctx"
    d.mkdir()
    return d


def build(store: Store, ctx: Path, text: str, **kw: Any) -> tuple[str, list[Any]]:
    (ctx / "Dockerfile").write_text(text)
    events = list(run_build(store, BuildRequest(context=str(ctx), **kw)))
    end = events[-1]
    assert isinstance(end, BuildFinished), end
    assert end.image is not None
    return end.image, [e.step for e in events if isinstance(e, StepFinished)]


def image_root(store: Store, image: str) -> RootFS:
    layers = store.images.summary(image).layers
    return RootFS([store.layers.diff_path(c) for c in reversed(layers)])


def last_layer(store: Store, steps: list[Any]) -> Path:
    layer = [s.layer for s in steps if s.layer][-1]
    return store.layers.diff_path(layer)


def tree(root: Path) -> dict[str, tuple[str, int, int, int]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            kind = "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else "f"
            out[str(p.relative_to(root))] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


def test_directory_contents_are_copied_and_parents_created(store: Store, ctx: Path) -> None:
    (ctx / "src" / "sub").mkdir(parents=True)
    (ctx / "src" / "sub" / "x.txt").write_text("x")
    os.chmod(ctx / "src" / "sub", 0o700)
    os.chown(ctx / "src" / "sub" / "x.txt", 1000, 1000)
    _, steps = build(store, ctx, "FROM busybox\nCOPY src /opt/deep/app\n")
    assert tree(last_layer(store, steps)) == {
        "opt": ("d", 0o755, 0, 0),
        "opt/deep": ("d", 0o755, 0, 0),
        "opt/deep/app": ("d", 0o755, 0, 0),
        "opt/deep/app/sub": ("d", 0o700, 0, 0),
        "opt/deep/app/sub/x.txt": ("f", 0o644, 0, 0),
    }


def test_file_destinations(store: Store, ctx: Path) -> None:
    (ctx / "a.txt").write_text("a")
    text = (
        "FROM busybox\nWORKDIR /w\nCOPY a.txt rel.txt\nCOPY a.txt sub/\nCOPY a.txt /tmp\n"
        "COPY a.txt /abs/name\n"
    )
    image, _ = build(store, ctx, text)
    root = image_root(store, image)
    for path in ("/w/rel.txt", "/w/sub/a.txt", "/tmp/a.txt", "/abs/name"):
        assert root.read_file(path) == b"a", path
    # /tmp kept its 1777 mode in the layer that recreated it as a parent.
    hit = root.stat("/tmp")
    assert hit is not None and stat.S_IMODE(hit[1].st_mode) == 0o1777


def test_wildcards_follow_go_filepath_match(store: Store, ctx: Path) -> None:
    for name in ("a1.txt", "a2.txt", "b1.txt", "notes.md"):
        (ctx / name).write_text(name)
    (ctx / "d").mkdir()
    (ctx / "d" / "a3.txt").write_text("nested")
    _, steps = build(store, ctx, "FROM busybox\nCOPY a?.txt [bc]*.txt /w/\n")
    assert sorted(os.listdir(last_layer(store, steps) / "w")) == ["a1.txt", "a2.txt", "b1.txt"]
    assert go_match("*.txt", "a.txt") and not go_match("*.txt", "d/a.txt")
    assert go_match("[^a]x", "bx") and not go_match("[^a]x", "ax")
    assert has_wildcards("a*") and not has_wildcards("a\\*")


def test_several_sources_need_a_directory_destination(store: Store, ctx: Path) -> None:
    (ctx / "a").write_text("a")
    (ctx / "b").write_text("b")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY a b /dest\n")
    end = list(run_build(store, BuildRequest(context=str(ctx))))[-1]
    assert isinstance(end, BuildFailed)
    assert (
        "Dockerfile:2: COPY: with more than one source the destination must end with '/'"
        in end.message
    )


def test_chown_and_chmod(store: Store, ctx: Path) -> None:
    (ctx / "d").mkdir()
    (ctx / "d" / "f").write_text("f")
    _, steps = build(store, ctx, "FROM busybox\nCOPY --chown=nobody:root --chmod=640 d /x/\n")
    t = tree(last_layer(store, steps))
    assert t["x"] == ("d", 0o755, 65534, 0)
    assert t["x/f"] == ("f", 0o640, 65534, 0)


def test_add_extracts_local_archives(store: Store, ctx: Path) -> None:
    for name, mode in (
        ("plain.tar", "w"),
        ("gz.tar.gz", "w:gz"),
        ("bz.tbz", "w:bz2"),
        ("xz.txz", "w:xz"),
    ):
        with tarfile.open(ctx / name, mode) as tar:
            data = name.encode()
            info = tarfile.TarInfo(f"inner/{name}.txt")
            info.size = len(data)
            info.mode = 0o4755
            tar.addfile(info, io.BytesIO(data))
    image, _ = build(
        store,
        ctx,
        "FROM busybox\nADD plain.tar gz.tar.gz bz.tbz xz.txz /unpacked/\nCOPY plain.tar /copied/\n",
    )
    root = image_root(store, image)
    for name in ("plain.tar", "gz.tar.gz", "bz.tbz", "xz.txz"):
        assert root.read_file(f"/unpacked/inner/{name}.txt") == name.encode()
    hit = root.stat("/unpacked/inner/plain.tar.txt")
    assert hit is not None and stat.S_IMODE(hit[1].st_mode) == 0o4755
    assert root.stat("/copied/plain.tar") is not None  # COPY never extracts


def test_add_refuses_an_escaping_archive(store: Store, ctx: Path) -> None:
    with tarfile.open(ctx / "evil.tar", "w") as tar:
        info = tarfile.TarInfo("../../outside")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    (ctx / "Dockerfile").write_text("FROM busybox\nADD evil.tar /x/\n")
    end = list(run_build(store, BuildRequest(context=str(ctx))))[-1]
    assert isinstance(end, BuildFailed)
    assert "Dockerfile:2: ADD: cannot extract evil.tar" in end.message


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "www"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()


def test_add_url_downloads_and_hashes_the_bytes(
    store: Store, ctx: Path, http_server: tuple[str, Path]
) -> None:
    url, served = http_server
    (served / "tool.sh").write_text("v1")
    text = f"FROM busybox\nADD {url}/tool.sh /opt/\n"
    image, _ = build(store, ctx, text)
    assert image_root(store, image).read_file("/opt/tool.sh") == b"v1"
    _, again = build(store, ctx, text)
    assert again[1].cached is True
    (served / "tool.sh").write_text("v2")
    _, changed = build(store, ctx, text)
    assert changed[1].cached is False
    assert changed[1].reason["kind"] == "sources_changed"


def store_state(home: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """Every path of the store with its size, and the index's rows."""
    import sqlite3

    listing = []
    for root, dirs, files in os.walk(home):
        for name in dirs + files:
            if name not in ("index.db-wal", "index.db-shm"):
                p = Path(root) / name
                listing.append((str(p.relative_to(home)), p.lstat().st_size if p.is_file() else 0))
    conn = sqlite3.connect(home / "index.db")
    try:
        return sorted(listing), list(conn.iterdump())
    finally:
        conn.close()


def test_add_checksum_verifies_the_download(
    store: Store, ctx: Path, http_server: tuple[str, Path]
) -> None:
    url, served = http_server
    (served / "tool.sh").write_text("v1")
    right = "sha256:" + hashlib.sha256(b"v1").hexdigest()
    text = f"FROM busybox\nADD --checksum={right} {url}/tool.sh /opt/\n"
    image, _ = build(store, ctx, text, builder="buildkit")
    assert image_root(store, image).read_file("/opt/tool.sh") == b"v1"
    # Another digest: one line naming the step, before anything is written.
    before = store_state(store.home)
    wrong = "sha256:" + hashlib.sha256(b"v2").hexdigest()
    (ctx / "Dockerfile").write_text(text.replace(right, wrong))
    events = list(run_build(store, BuildRequest(context=str(ctx), builder="buildkit")))
    end = events[-1]
    assert isinstance(end, BuildFailed)
    assert end.message == (
        f"{ctx / 'Dockerfile'}:2: ADD: checksum mismatch: expected {wrong}, got {right}"
    )
    assert store_state(store.home) == before
    # A malformed digest and a checksum on a local file are refused the same way.
    for bad, words in (
        (f"--checksum=sha256:abc {url}/tool.sh", "invalid checksum 'sha256:abc'"),
        (f"--checksum={right} a.txt", "--checksum needs exactly one HTTP source"),
    ):
        (ctx / "a.txt").write_text("v1")
        (ctx / "Dockerfile").write_text(f"FROM busybox\nADD {bad} /opt/\n")
        end = list(run_build(store, BuildRequest(context=str(ctx), builder="buildkit")))[-1]
        assert isinstance(end, BuildFailed)
        assert f"Dockerfile:2: ADD: {words}" in end.message, end.message
        assert "\n" not in end.message
    assert store_state(store.home) == before


def test_add_url_under_buildkit_rules_is_keyed_on_the_bytes(
    store: Store, ctx: Path, http_server: tuple[str, Path]
) -> None:
    url, served = http_server
    tool = served / "tool.sh"
    tool.write_text("v1")
    text = f"FROM busybox\nADD {url}/tool.sh /opt/\nCOPY a.txt /a\n"
    (ctx / "a.txt").write_text("a")

    def decided(dockerfile: str = text) -> list[bool | None]:
        _, steps = build(store, ctx, dockerfile, builder="buildkit")
        return [s.cached for s in steps[1:]]

    assert decided() == [False, False]
    assert decided() == [True, True]
    # A new Last-Modified alone: the same bytes, a hit.
    os.utime(tool, (2_000_000_000, 2_000_000_000))
    assert decided() == [True, True]
    tool.write_text("v2")
    assert decided() == [False, False]
    tool.write_text("v1")
    assert decided() == [True, True]
    # The checksum is one of the op's options: adding it is another key.
    right = "sha256:" + hashlib.sha256(b"v1").hexdigest()
    assert decided(text.replace("ADD ", f"ADD --checksum={right} ")) == [False, False]


def test_copy_heredoc(store: Store, ctx: Path) -> None:
    text = "FROM busybox\nARG WHO=world\nCOPY <<EOF /greeting.txt\nhello $WHO\nEOF\n"
    image, _ = build(store, ctx, text)
    assert image_root(store, image).read_file("/greeting.txt") == b"hello world\n"
    _, again = build(store, ctx, text, build_args={"WHO": "lamina"})
    assert again[-1].cached is False
    assert again[-1].reason["kind"] == "sources_changed"


def test_workdir_creates_the_directory(store: Store, ctx: Path) -> None:
    image, _ = build(store, ctx, "FROM busybox\nWORKDIR /srv/app\nWORKDIR /tmp\n")
    root = image_root(store, image)
    assert root.is_dir("/srv/app")
    history = store.images.get_config(image)["history"]
    assert [h.get("empty_layer", False) for h in history[-2:]] == [False, True]
    # As `docker history` shows it for the classic builder (one space after #(nop)).
    assert history[-2]["created_by"] == "/bin/sh -c #(nop) WORKDIR /srv/app"


# -- the layer-chain reader ----------------------------------------------------------


def test_rootfs_honours_whiteouts_opaque_dirs_and_symlinks(tmp_path: Path) -> None:
    low, mid, top = (tmp_path / n for n in ("low", "mid", "top"))
    for layer in (low, mid, top):
        layer.mkdir()
    (low / "etc").mkdir()
    (low / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nme:x:7:8::/:/bin/sh\n")
    (low / "etc" / "gone").write_text("x")
    (low / "opt").mkdir()
    (low / "opt" / "old").write_text("old")
    (low / "usr" / "lib").mkdir(parents=True)
    (low / "usr" / "lib" / "libc").write_text("c")
    os.symlink("usr/lib", low / "lib")
    (mid / "etc").mkdir()
    os.mknod(mid / "etc" / "gone", stat.S_IFCHR | 0o000, 0)
    (mid / "opt").mkdir()
    set_opaque(mid / "opt")
    (mid / "opt" / "new").write_text("new")
    (top / "etc").mkdir()
    (top / "etc" / "group").write_text("root:x:0:\n")
    root = RootFS([top, mid, low])
    assert root.listdir("/etc") == ["group", "passwd"]
    assert not root.exists("/etc/gone")
    assert root.listdir("/opt") == ["new"]
    assert root.read_file("/lib/libc") == b"c"
    assert root.is_dir("/lib") and root.lstat("/lib") is not None
    from lamina.core.embedded.builder.rootfs import lookup_group, lookup_user

    assert lookup_user(root, "me") == (7, 8)
    assert lookup_group(root, "root") == 0
    assert [p for p, _, _ in root.walk("/opt")] == ["new"]


def test_join_resolves_against_workdir() -> None:
    assert join("/app", "x") == "/app/x"
    assert join("/app", "x/") == "/app/x/"
    assert join("/app", ".") == "/app/"
    assert join("/app", "/abs/../y") == "/y"


def test_copy_history_names_the_checksum_and_destination_as_written(
    store: Store, ctx: Path
) -> None:
    (ctx / "a.txt").write_text("a")
    (ctx / "b.txt").write_text("b")
    image, _ = build(
        store, ctx, "FROM busybox\nWORKDIR /w\nCOPY --chown=nobody a.txt rel\nCOPY *.txt ./\n"
    )
    created = [h["created_by"] for h in store.images.get_config(image)["history"][-2:]]
    assert created[0].startswith("/bin/sh -c #(nop) COPY --chown=nobodyfile:")
    assert created[0].endswith(" in rel ")
    assert created[1].startswith("/bin/sh -c #(nop) COPY multi:")
    assert created[1].endswith(" in ./ ")


def test_symlinked_sources_are_followed_at_the_top_and_kept_inside(store: Store, ctx: Path) -> None:
    (ctx / "real.txt").write_text("real")
    os.symlink("real.txt", ctx / "top")
    (ctx / "d").mkdir()
    os.symlink("../real.txt", ctx / "d" / "inner")
    image, _ = build(store, ctx, "FROM busybox\nCOPY top /top\nCOPY d /d\n")
    root = image_root(store, image)
    hit = root.lstat("/top")
    assert hit is not None and stat.S_ISREG(hit[1].st_mode)
    assert root.read_file("/top") == b"real"
    inner = root.lstat("/d/inner")
    assert inner is not None and stat.S_ISLNK(inner[1].st_mode)
    # The link's target changed content: Docker's hash of d follows the link.
    (ctx / "real.txt").write_text("new!")
    _, steps = build(store, ctx, "FROM busybox\nCOPY top /top\nCOPY d /d\n")
    assert steps[1].reason["changed"] == [{"path": "real.txt", "what": ["content"]}]
    assert steps[2].reason["kind"] == "parent_missed"
