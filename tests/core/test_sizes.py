"""Layer and image sizes as Docker defines them, and the store's own blocks beside them.

Docker 20.10 (overlay2) sizes a layer with moby's ``directory.Size`` of its diff
directory: the ``st_size`` of every entry that is not a directory (a symlink its
target's length, a whiteout 0), each inode once. lamina keeps layers in the same format,
so the same walk gives the same number; what the directory occupies on disk (blocks) is
a second figure, ``disk_size``. Measured on a real dockerd: ``COPY f15 /f15`` of a
15-byte file is 15B, ``RUN ln -s /f15 /l && mkdir -p /d/e && echo hi > /d/e/x && ln
/d/e/x /d/e/y`` 7B, ``RUN rm /f15`` 0B, and the image the sum of its layers.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.engine import EmbeddedEngine
from lamina.core.embedded.store import Store
from lamina.core.embedded.store.index import SCHEMA_V1, SCHEMA_VERSION
from lamina.core.embedded.store.layers import measure
from lamina.core.events import BuildFinished
from lamina.core.model import BuildRequest


def _commit(store: Store, files: dict[str, bytes], parent: str | None = None) -> str:
    with store.tmpdir("test") as work:
        src = work / "upper"
        src.mkdir()
        for rel, data in files.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        return store.layers.commit_dir(src, parent, "test").chain_id


def test_a_file_counts_its_bytes_and_its_blocks_apart(store: Store) -> None:
    chain_id = _commit(store, {"f15": b"fifteen bytes!\n"})
    info = store.layers.get(chain_id)
    assert info.size == 15
    # The blocks of the file and of nothing else (directories count 0 in Docker's size,
    # and their blocks are not files' either): one filesystem block at least.
    assert info.disk_size >= 512 and info.disk_size % 512 == 0


def test_symlinks_count_their_target_hardlinks_once_directories_nothing(store: Store) -> None:
    with store.tmpdir("test") as work:
        src = work / "upper"
        (src / "d" / "e").mkdir(parents=True)
        os.symlink("/f15", src / "l")
        (src / "d" / "e" / "x").write_bytes(b"hi\n")
        os.link(src / "d" / "e" / "x", src / "d" / "e" / "y")
        (src / "empty").write_bytes(b"")
        chain_id = store.layers.commit_dir(src, None, "RUN links").chain_id
    assert store.layers.get(chain_id).size == len("/f15") + len("hi\n") == 7


def test_a_whiteout_counts_nothing(store: Store) -> None:
    base = _commit(store, {"f15": b"fifteen bytes!\n"})
    with store.tmpdir("test") as work:
        src = work / "upper"
        src.mkdir()
        os.mknod(src / "f15", 0o020000, os.makedev(0, 0))  # an overlay whiteout
        chain_id = store.layers.commit_dir(src, base, "RUN rm /f15").chain_id
    assert store.layers.get(chain_id).size == 0
    assert measure(store.layers.diff_path(chain_id)).size == 0


@pytest.mark.root
def test_built_layers_and_the_image_have_dockers_sizes(
    busybox_store: Store, tmp_path: Path
) -> None:
    store = busybox_store
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f15").write_bytes(b"fifteen bytes!\n")
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        "COPY f15 /f15\n"
        "RUN ln -s /f15 /l && mkdir -p /d/e && echo hi > /d/e/x && ln /d/e/x /d/e/y\n"
        "RUN rm /f15\n"
    )
    events = list(run_build(store, BuildRequest(context=str(ctx), tags=("sizes:1",))))
    assert isinstance(events[-1], BuildFinished), events[-1]
    engine = EmbeddedEngine(store.home)
    try:
        history = engine.history("sizes:1")
        image = engine.image("sizes:1")
    finally:
        engine.close()
    made = [h.size for h in history if not h.empty_layer][:3]  # newest first
    assert made == [0, 7, 15]
    base = store.layers.chain(image.layers[0])[0].size
    assert image.size == base + 15 + 7 + 0 == sum(h.size for h in history)


def _v1_store(home: Path, layer_dir: Path, chain_id: str, diff_id: str, old_size: int) -> None:
    """A store as lamina wrote it before index version 2: ``size`` held the blocks."""
    (home / "layers").mkdir(parents=True)
    os.rename(layer_dir, home / "layers" / chain_id[7:])
    db = sqlite3.connect(home / "index.db", isolation_level=None)
    db.execute("BEGIN")
    for statement in SCHEMA_V1.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(
        "INSERT INTO layers (chain_id, diff_id, parent, size, tar_size, created, created_by)"
        " VALUES (?, ?, NULL, ?, 2048, 1.0, 'COPY f15 /f15')",
        (chain_id, diff_id, old_size),
    )
    db.execute(
        "INSERT INTO builds (id, started, dockerfile, context, tags, build_args, status)"
        " VALUES (1, 1.0, 'Dockerfile', '.', '[]', '{}', 'ok')"
    )
    db.execute(
        "INSERT INTO build_steps (build_id, seq, stage, idx, instruction, cached, layer, size)"
        " VALUES (1, 1, 0, 1, 'COPY f15 /f15', 0, ?, ?)",
        (chain_id, old_size),
    )
    db.execute("PRAGMA user_version = 1")
    db.execute("COMMIT")
    db.close()


def test_a_version_1_store_is_measured_again_when_it_opens(tmp_path: Path) -> None:
    # A real layer, committed by this lamina, then moved into a store of the old schema.
    donor = Store(tmp_path / "donor")
    chain_id = _commit(donor, {"f15": b"fifteen bytes!\n"})
    info = donor.layers.get(chain_id)
    donor.close()
    home = tmp_path / "old"
    _v1_store(home, tmp_path / "donor" / "layers" / chain_id[7:], chain_id, info.diff_id, 8192)

    store = Store(home)
    try:
        assert store.index.schema_version() == SCHEMA_VERSION
        migrated = store.layers.get(chain_id)
        assert (migrated.size, migrated.disk_size) == (15, info.disk_size)
        steps = store.builds.recent()[0].steps
        assert [s.size for s in steps] == [15]
        assert store.layers.verify(chain_id)
        # Measured once: opening again walks nothing.
        assert store.layers.measure_unmeasured() == 0
    finally:
        store.close()


def test_a_version_1_layer_whose_directory_is_gone_keeps_its_old_figure(tmp_path: Path) -> None:
    donor = Store(tmp_path / "donor")
    chain_id = _commit(donor, {"f15": b"fifteen bytes!\n"})
    info = donor.layers.get(chain_id)
    donor.close()
    home = tmp_path / "old"
    _v1_store(home, tmp_path / "donor" / "layers" / chain_id[7:], chain_id, info.diff_id, 8192)
    (home / "layers" / chain_id[7:] / "diff" / "f15").unlink()
    (home / "layers" / chain_id[7:] / "diff").rmdir()

    store = Store(home)
    try:
        migrated = store.layers.get(chain_id)
        # Nothing to measure: the old blocks stay as what it occupied; fsck reports it.
        assert (migrated.size, migrated.disk_size) == (8192, 8192)
        assert store.layers.measure_unmeasured() == 0
    finally:
        store.close()
