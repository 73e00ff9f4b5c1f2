"""Identical files stored once: layers share inodes, and nothing a reader sees changes.

Every check here is on a real store under tmp_path: inodes compared with ``lstat``,
tars regenerated from the tar-split and hashed, prunes applied and the store walked
before and after, fsck run for real.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import prune_support as S
import pytest

from lamina.core.accounting.plans import PruneRequest
from lamina.core.embedded.archive import save_archive
from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.fsck import fsck
from lamina.core.embedded.prune import apply_prune, plan_prune
from lamina.core.embedded.store import Store
from lamina.core.embedded.store.dedup import file_key
from lamina.core.embedded.store.layers import dir_to_tar
from lamina.core.embedded.usage import disk_usage
from lamina.core.events import BuildFinished, StepFinished
from lamina.core.model import BuildRequest

OLD = 1_600_000_000  # an mtime nobody touched today, as a checkout's files have


def write_tree(root: Path, files: dict[str, bytes], mtime: int = OLD) -> None:
    """Files with fixed times (directories too), so two commits of them are identical."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, 0o644)
        os.utime(path, (mtime, mtime))
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        os.utime(dirpath, (mtime, mtime))


def commit(store: Store, files: dict[str, bytes], parent: str | None = None) -> str:
    with store.tmpdir("test") as work:
        src = work / "upper"
        src.mkdir()
        write_tree(src, files)
        return store.layers.commit_dir(src, parent, "RUN test").chain_id


def tar_bytes(store: Store, chain_id: str) -> bytes:
    out = io.BytesIO()
    store.layers.write_tar(chain_id, out)
    return out.getvalue()


def inode(store: Store, chain_id: str, rel: str) -> int:
    return os.lstat(store.layers.diff_path(chain_id) / rel).st_ino


def blocks(path: Path) -> int:
    return os.lstat(path).st_blocks * 512


def big(seed: str, size: int = 64_000) -> bytes:
    unit = hashlib.sha256(seed.encode()).digest()
    return (unit * (size // len(unit) + 1))[:size]


def test_a_file_two_layers_hold_is_one_inode_and_each_tar_stays_byte_identical(
    store: Store, tmp_path: Path
) -> None:
    files = {"app/a.bin": big("a"), "app/b.bin": big("b"), "app/small": b"x"}
    first = commit(store, files)
    before = tar_bytes(store, first)
    # The second layer holds the same files and one more, in another image.
    second = commit(store, {**files, "app/c.bin": big("c")})
    for rel in files:
        assert inode(store, first, rel) == inode(store, second, rel), rel
    assert inode(store, second, "app/c.bin") not in {inode(store, first, r) for r in files}
    # The first layer's tar did not move a byte; the second's is what its files say.
    assert tar_bytes(store, first) == before
    assert store.layers.verify(first) and store.layers.verify(second)
    # A store that never saw the first layer makes the same layer: same diffID, same tar.
    other = Store(tmp_path / "other")
    try:
        alone = commit(other, {**files, "app/c.bin": big("c")})
        assert other.layers.get(alone).diff_id == store.layers.get(second).diff_id
        assert tar_bytes(other, alone) == tar_bytes(store, second)
    finally:
        other.close()


def test_save_output_is_the_same_with_shared_files(store: Store, tmp_path: Path) -> None:
    files = {"srv/data.bin": big("data", 200_000), "srv/conf": b"k=v\n"}
    alone_store = Store(tmp_path / "alone")
    try:
        lone = commit(alone_store, files)
        S.image(alone_store, [lone], tag="app:1", created=OLD)
        save_archive(alone_store, ["app:1"], tmp_path / "alone.tar")
    finally:
        alone_store.close()
    # Here the same image's layer shares every file with a layer committed before it.
    commit(store, {**files, "other": b"o"})
    shared = commit(store, files)
    assert (
        inode(store, shared, "srv/data.bin")
        == os.lstat(store.layers.diff_path(store.layers.all()[0].chain_id) / "srv/data.bin").st_ino
    )
    S.image(store, [shared], tag="app:1", created=OLD)
    save_archive(store, ["app:1"], tmp_path / "shared.tar")
    assert (tmp_path / "shared.tar").read_bytes() == (tmp_path / "alone.tar").read_bytes()


def test_files_differing_in_metadata_keep_their_own_inodes(store: Store) -> None:
    data = big("same")
    with store.tmpdir("test") as work:
        src = work / "upper"
        src.mkdir()
        write_tree(src, {"f": data})
        first = store.layers.commit_dir(src, None).chain_id
    for change in ("mode", "mtime", "owner"):
        with store.tmpdir("test") as work:
            src = work / "upper"
            src.mkdir()
            write_tree(src, {"f": data})
            if change == "mode":
                os.chmod(src / "f", 0o600)
            elif change == "mtime":
                os.utime(src / "f", (OLD + 1, OLD + 1))
            else:
                os.chown(src / "f", 1234, 1234)
            other = store.layers.commit_dir(src, None, change).chain_id
        assert inode(store, other, "f") != inode(store, first, "f"), change


def test_identical_files_within_one_layer_stay_two_entries(store: Store) -> None:
    chain_id = commit(store, {"one": big("dup"), "two": big("dup")})
    assert inode(store, chain_id, "one") != inode(store, chain_id, "two")
    with tarfile.open(fileobj=io.BytesIO(tar_bytes(store, chain_id))) as tar:
        kinds = {m.name: m.type for m in tar.getmembers()}
    assert kinds["one"] == kinds["two"] == tarfile.REGTYPE, "no hardlink the layer never had"
    # A later layer holding both shares one of them, never both with one inode.
    later = commit(store, {"one": big("dup"), "two": big("dup")}, parent=chain_id)
    assert inode(store, later, "one") != inode(store, later, "two")
    assert store.layers.verify(later)


def test_prune_of_one_of_two_layers_sharing_files_keeps_the_other_whole(
    store: Store,
) -> None:
    files = {"lib/big.bin": big("lib", 300_000), "lib/x": b"x" * 5000}
    keep = commit(store, files)
    drop = commit(store, {**files, "extra": big("extra", 50_000)}, parent=None)
    S.image(store, [keep], tag="keep:1")
    S.image(store, [drop], tag="drop:1")
    shared = store.layers.diff_path(keep) / "lib/big.bin"
    assert os.lstat(shared).st_nlink == 3  # both layers and the pool
    store.images.untag("drop:1")
    plan = plan_prune(store, PruneRequest("image", grace=0.0))
    assert {p.chain_id for p in plan.layers} == {drop}
    # The shared files stay: only what the dropped layer alone held is freed.
    assert plan.disk_bytes < 50_000 + 40_000
    before = S.disk_bytes_of_store(store.home)
    result = apply_prune(store, plan)
    after = S.disk_bytes_of_store(store.home)
    assert before - after == result.disk_reclaimed_bytes == plan.disk_bytes
    assert (store.layers.diff_path(keep) / "lib/big.bin").read_bytes() == files["lib/big.bin"]
    assert os.lstat(shared).st_nlink == 2  # the kept layer and the pool
    assert store.layers.verify(keep)
    report = fsck(store, deep=True)
    assert report.problems == (), report.problems
    S.assert_tagged_intact(store)


def test_prune_of_every_holder_frees_the_shared_file_once(store: Store) -> None:
    files = {"lib/big.bin": big("lib", 400_000)}
    a = commit(store, files)
    b = commit(store, {**files, "b": b"b"})
    pool_name = store.files.path(_key_of(store, a))
    assert os.path.exists(pool_name)
    plan = plan_prune(store, PruneRequest("system", all=True, grace=0.0))
    assert {p.chain_id for p in plan.layers} == {a, b}
    # The shared file counts once, and in exactly one of the two layers' figures.
    assert sum(p.shared_disk_bytes for p in plan.layers) == blocks(
        store.layers.diff_path(a) / "lib/big.bin"
    )
    before = _store_disk(store)
    result = apply_prune(store, plan)
    after = _store_disk(store)
    assert before - after == result.disk_reclaimed_bytes == plan.disk_bytes
    assert not os.path.exists(pool_name), "the pool name goes with its last holder"
    assert store.files.shared().files == 0
    assert store.index.rows("SELECT * FROM files") == []


def _key_of(store: Store, chain_id: str) -> bytes:
    row = store.index.row(
        "SELECT f.key FROM files f JOIN layer_files lf ON lf.file = f.id"
        " JOIN layer_numbers n ON n.no = lf.layer WHERE n.chain_id = ?",
        (chain_id,),
    )
    assert row is not None
    return bytes(row[0])


def _store_disk(store: Store) -> int:
    """The store's data on disk with its pool of shared files, each inode once (the
    pool's shard directories stay, and are not counted)."""
    seen: set[int] = set()
    total = 0
    for sub in ("layers", "blobs", "tmp", "files"):
        for dirpath, dirs, names in os.walk(store.home / sub):
            for name in names if sub == "files" else dirs + names:
                st = os.lstat(os.path.join(dirpath, name))
                if st.st_ino not in seen:
                    seen.add(st.st_ino)
                    total += st.st_blocks * 512
    return total


def test_disk_usage_counts_shared_storage_once_and_says_what_it_saves(store: Store) -> None:
    files = {"a.bin": big("a", 100_000), "b.bin": big("b", 100_000)}
    first = commit(store, files)
    commit(store, {**files, "b": b"b"})
    commit(store, {**files, "c": b"c"})
    usage = disk_usage(store)
    one = blocks(store.layers.diff_path(first) / "a.bin") + blocks(
        store.layers.diff_path(first) / "b.bin"
    )
    assert usage.shared_disk == one
    assert usage.dedup_saved == 2 * one, "three holders: two copies saved"
    # What the layers occupy, walked for real below their diff/ directories.
    seen: set[int] = set()
    walked = 0
    for chain_id in store.layers.chain_ids():
        for dirpath, dirs, names in os.walk(store.layers.diff_path(chain_id)):
            for name in dirs + names:
                st = os.lstat(os.path.join(dirpath, name))
                if st.st_ino not in seen:
                    seen.add(st.st_ino)
                    walked += st.st_blocks * 512
    assert usage.layers_disk == walked
    assert usage.to_json()["dedup_saved"] == 2 * one


def test_fsck_deep_passes_on_a_store_sharing_files_and_finds_a_damaged_one(
    store: Store,
) -> None:
    files = {"x/big": big("fsck", 100_000)}
    a = commit(store, files)
    b = commit(store, {**files, "other": b"o"})
    S.image(store, [a], tag="a:1")
    S.image(store, [b], tag="b:1")
    assert fsck(store, deep=True).problems == ()
    # Damage through one layer is damage to both: deep fsck says so for each.
    with open(store.layers.diff_path(b) / "x/big", "r+b") as f:
        f.write(b"!")
    corrupt = {p.subject for p in fsck(store, deep=True).problems if p.kind == "corrupt-layer"}
    assert corrupt == {a, b}


def test_the_pool_refuses_a_file_whose_metadata_changed(store: Store, tmp_path: Path) -> None:
    data = big("pool")
    a = commit(store, {"f": data})
    key = _key_of(store, a)
    st = os.lstat(store.files.path(key))
    target = str(tmp_path / "linked")
    args = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns)
    assert store.files.link_into(key, target, *args) is not None
    os.unlink(target)
    assert store.files.link_into(key, target, st.st_mode, st.st_uid, st.st_gid, 1, 0) is None
    assert not os.path.exists(target)
    missing = file_key("0" * 64, st.st_mode, 0, 0, 1, 0)
    assert store.files.link_into(missing, target, st.st_mode, 0, 0, 1, 0) is None


def test_a_commit_that_adopts_a_pool_file_keeps_its_directory_times(store: Store) -> None:
    data = big("times")
    commit(store, {"d/f": data})
    with store.tmpdir("test") as work:
        src = work / "upper"
        src.mkdir()
        write_tree(src, {"d/f": data})
        expected = io.BytesIO()
        dir_to_tar(src, expected.write)
        chain_id = store.layers.commit_dir(src, None, "again").chain_id
    assert os.lstat(store.layers.diff_path(chain_id) / "d").st_mtime == OLD
    assert tar_bytes(store, chain_id) == expected.getvalue()


# -- builds --------------------------------------------------------------------------


def build(store: Store, ctx: Path, **kw: Any) -> list[Any]:
    events = list(run_build(store, BuildRequest(context=str(ctx), **kw)))
    assert isinstance(events[-1], BuildFinished), events[-1]
    return [e.step for e in events if isinstance(e, StepFinished)]


def growth(home: Path, run: Any) -> int:
    """What ``run()`` adds to the store's layers and pool (blocks, inodes once)."""

    def walk() -> int:
        seen: set[int] = set()
        total = 0
        for sub in ("layers", "files"):
            for dirpath, dirs, names in os.walk(home / sub):
                for name in dirs + names:
                    st = os.lstat(os.path.join(dirpath, name))
                    if st.st_ino not in seen:
                        seen.add(st.st_ino)
                        total += st.st_blocks * 512
        return total

    before = walk()
    run()
    return walk() - before


@pytest.mark.usefixtures("busybox_store")
def test_a_one_file_edit_grows_the_store_by_about_one_file(store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    files = {f"d{i // 20}/f{i}.bin": big(f"ctx{i}", 20_000) for i in range(200)}
    write_tree(ctx, files)
    (ctx / "Dockerfile").write_text("FROM busybox:latest\nCOPY . /src\n")
    context_bytes = sum(len(d) for d in files.values())
    first = growth(store.home, lambda: build(store, ctx))
    assert first > context_bytes, "the first build stores the context once"
    edited = ctx / "d5/f100.bin"
    edited.write_bytes(big("edited", 20_000))
    steps: list[Any] = []
    grown = growth(store.home, lambda: steps.extend(build(store, ctx)))
    assert steps[-1].cached is False
    # The edited file, ten new directories and a tar-split: far from a second copy.
    assert grown < blocks(store.layers.diff_path(steps[-1].layer) / "src/d5/f100.bin") + 150_000
    assert grown < context_bytes / 10
    new = store.layers.diff_path(steps[-1].layer)
    old = [c for c in store.layers.chain_ids() if c != steps[-1].layer]
    old_copy = next(
        store.layers.diff_path(c) for c in old if (store.layers.diff_path(c) / "src").is_dir()
    )
    assert os.lstat(new / "src/d0/f0.bin").st_ino == os.lstat(old_copy / "src/d0/f0.bin").st_ino
    assert os.lstat(new / "src/d5/f100.bin").st_ino != os.lstat(old_copy / "src/d5/f100.bin").st_ino
    assert (new / "src/d5/f100.bin").read_bytes() == big("edited", 20_000)
    assert store.layers.verify(steps[-1].layer)
    assert fsck(store, deep=True).problems == ()


@pytest.mark.usefixtures("busybox_store")
def test_copy_with_chmod_never_shares_with_a_copy_of_another_mode(
    store: Store, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    write_tree(ctx, {"f.bin": big("chmod")})
    os.chmod(ctx / "f.bin", 0o644)
    (ctx / "Dockerfile").write_text(
        "FROM busybox:latest\nCOPY f.bin /a/\nCOPY --chmod=600 f.bin /b/\n"
    )
    steps = build(store, ctx)
    a, b = [store.layers.diff_path(s.layer) for s in steps if s.layer][-2:]
    assert os.lstat(a / "a/f.bin").st_ino != os.lstat(b / "b/f.bin").st_ino
    assert os.lstat(b / "b/f.bin").st_mode & 0o777 == 0o600
    assert os.lstat(a / "a/f.bin").st_mode & 0o777 == 0o644


@pytest.mark.root
@pytest.mark.usefixtures("busybox_store")
def test_run_changing_a_shared_file_never_touches_the_layers_below(
    store: Store, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    write_tree(ctx, {"f.txt": b"original\n" * 1000})
    (ctx / "Dockerfile").write_text("FROM busybox:latest\nCOPY f.txt /a/\nCOPY f.txt /a2/\n")
    first = build(store, ctx)
    copy_layer = store.layers.diff_path([s.layer for s in first if s.layer][-1])
    (ctx / "Dockerfile").write_text(
        "FROM busybox:latest\nCOPY f.txt /a/\nCOPY f.txt /a2/\n"
        "RUN echo changed >> /a2/f.txt && chmod 600 /a2/f.txt\n"
    )
    steps = build(store, ctx, network="none")
    run_layer = store.layers.diff_path(steps[-1].layer)
    assert (run_layer / "a2/f.txt").read_bytes().endswith(b"changed\n")
    assert (copy_layer / "a2/f.txt").read_bytes() == b"original\n" * 1000
    assert os.lstat(copy_layer / "a2/f.txt").st_mode & 0o777 == 0o644
    assert fsck(store, deep=True).problems == ()


def test_rebuilding_the_index_recovers_what_layers_share(store: Store, tmp_path: Path) -> None:
    from lamina.core.embedded.store.recover import rebuild_index

    files = {"a.bin": big("ra", 100_000)}
    a = commit(store, files)
    b = commit(store, {**files, "b": b"b"})
    S.image(store, [a], tag="a:1")
    S.image(store, [b], tag="b:1")
    before = disk_usage(store)
    assert before.shared_disk > 0
    home = store.home
    store.close()
    (home / "index.db").unlink()
    for extra in ("index.db-wal", "index.db-shm"):
        if (home / extra).exists():
            (home / extra).unlink()
    rebuild_index(home)
    again = Store(home)
    try:
        after = disk_usage(again)
        assert (after.shared_disk, after.dedup_saved) == (before.shared_disk, before.dedup_saved)
        assert fsck(again, deep=True).problems == ()
    finally:
        again.close()


@pytest.mark.usefixtures("busybox_store")
def test_a_file_copied_over_what_an_archive_extracted_replaces_it(
    store: Store, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    with tarfile.open(ctx / "a.tar", "w") as tar:
        data = b"from the archive\n"
        info = tarfile.TarInfo("b.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (ctx / "b.txt").write_text("from the context\n")
    (ctx / "Dockerfile").write_text("FROM busybox:latest\nADD a.tar b.txt /dest/\n")
    steps = build(store, ctx)
    layer = store.layers.diff_path([s.layer for s in steps if s.layer][-1])
    assert (layer / "dest/b.txt").read_text() == "from the context\n"


def test_a_stray_shared_file_is_a_leftover_that_prune_and_fsck_sweep(store: Store) -> None:
    a = commit(store, {"f": big("stray")})
    S.image(store, [a], tag="t:1")
    key = _key_of(store, a)
    # What a build killed between linking a file into the pool and recording it leaves:
    # a name, no row. One more name of a layer's inode, and one of its own.
    held = store.files.path(bytes(31) + b"\x01")
    os.makedirs(os.path.dirname(held), exist_ok=True)
    os.link(store.files.path(key), held)
    alone = store.files.path(bytes(31) + b"\x02")
    os.makedirs(os.path.dirname(alone), exist_ok=True)
    with open(alone, "wb") as f:
        f.write(big("alone", 50_000))
    names = {os.path.relpath(n, store.home): n for n in (held, alone)}
    report = fsck(store, grace=0.0)
    strays = {p.subject: p for p in report.problems if p.kind == "leftover"}
    assert set(strays) == set(names) and all(p.note for p in strays.values())
    assert report.ok, "debris of interrupted work, never damage"
    plan = plan_prune(store, PruneRequest("system", grace=0.0))
    freed = {left.path: left.bytes for left in plan.leftovers}
    # Only the name that is its inode's last frees anything.
    assert freed[os.path.relpath(alone, store.home)] > 0
    assert freed[os.path.relpath(held, store.home)] == 0
    apply_prune(store, plan)
    assert not os.path.exists(held) and not os.path.exists(alone)
    # The file the layer holds is untouched: only the stray names went.
    assert store.layers.verify(a) and os.path.exists(store.files.path(key))
    assert fsck(store, deep=True, grace=0.0).problems == ()


def test_a_pool_name_recorded_since_it_was_found_is_kept(store: Store) -> None:
    from lamina.core.accounting.plans import Leftover
    from lamina.core.embedded.store.graph import load_graph
    from lamina.core.embedded.trash import find_leftovers, sweep

    a = commit(store, {"f": big("kept")})
    name = store.files.path(_key_of(store, a))
    assert find_leftovers(store, load_graph(store), grace=0.0) == []
    # A leftover found before a commit recorded it is kept when the sweep re-checks.
    rel = os.path.relpath(name, store.home)
    assert sweep(store, [Leftover(rel, "shared-file", 0, "test")]) == []
    assert os.path.exists(name) and store.layers.verify(a)


@pytest.mark.usefixtures("busybox_store")
def test_an_image_never_holds_two_names_of_one_inode(store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    write_tree(ctx, {"f.bin": big("twice")})
    (ctx / "Dockerfile").write_text("FROM busybox:latest\nCOPY f.bin /a/\nCOPY f.bin /b/\n")
    steps = build(store, ctx)
    a, b = [store.layers.diff_path(s.layer) for s in steps if s.layer][-2:]
    # In one image the two copies stay two inodes, as in Docker's (tar, cp -a and du in
    # a RUN would take them for one hard-linked file).
    assert os.lstat(a / "a/f.bin").st_ino != os.lstat(b / "b/f.bin").st_ino
    # Another image is free to share it.
    other = tmp_path / "other"
    write_tree(other, {"f.bin": big("twice")})
    (other / "Dockerfile").write_text("FROM busybox:latest\nCOPY f.bin /b/\n")
    alone = [store.layers.diff_path(s.layer) for s in build(store, other) if s.layer][-1]
    assert os.lstat(alone / "b/f.bin").st_ino == os.lstat(a / "a/f.bin").st_ino
    assert fsck(store, deep=True).problems == ()


def test_a_commit_on_a_chain_holding_the_file_keeps_its_own_copy(store: Store) -> None:
    files = {"x/f": big("chain")}
    first = commit(store, files)
    # The same file committed on top of the layer that holds it: a copy of its own.
    second = commit(store, files, parent=first)
    assert inode(store, first, "x/f") != inode(store, second, "x/f")
    assert store.layers.verify(second)
    assert disk_usage(store).shared_disk == 0
