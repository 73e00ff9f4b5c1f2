"""A store on a full disk and a read-only store, on real filesystems: a small
loop-mounted ext4 (a size-limited tmpfs where loop devices are not available) and a
read-only bind mount.

* A load that runs out of space leaves nothing behind: no layer, no row, no work dir.
* With 0 bytes free, ``images``, ``inspect``, ``fsck`` work, and so do ``rmi`` and
  ``prune``, the verbs that free space (the store's reserve gives the index room).
* A read-only store can be listed, inspected and checked; writes fail in one line.

Mounting needs root: elsewhere these tests skip and say why; in CI (``CI=true``) they
fail instead.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.core.accounting.plans import PruneRequest
from lamina.core.embedded.prune import apply_prune, plan_prune
from lamina.core.embedded.store import Store
from lamina.core.embedded.store.reserve import RESERVE_NAME
from lamina.tui.cli import main

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SIZE_MB = 16


def _gate() -> None:
    reason = None
    if os.geteuid() != 0:
        reason = "mounting a small filesystem needs root"
    elif shutil.which("mount") is None:
        reason = "no mount(8) here"
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"CI must provide root and mount(8): {reason}")
    pytest.skip(reason)


def _mount(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *argv], capture_output=True, text=True, check=False)


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A freshly made filesystem of SIZE_MB MiB, mounted under ``tmp_path``."""
    _gate()
    mnt = tmp_path / "fs"
    mnt.mkdir()
    image = tmp_path / "fs.img"
    with open(image, "wb") as f:
        f.truncate(SIZE_MB << 20)
    # ext4 without blocks reserved for root: as root, full means full.
    made = subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], capture_output=True, check=False
    )
    done = made.returncode == 0 and _mount("-o", "loop", str(image), str(mnt)).returncode == 0
    if not done:
        # No loop devices (a container): tmpfs has no reserved blocks either.
        tmpfs = _mount("-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(mnt))
        assert tmpfs.returncode == 0, tmpfs.stderr
    try:
        yield mnt
    finally:
        _umount(mnt)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(mnt: Path) -> Path:
    """Writes a file until not one more byte fits."""
    filler = mnt / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    f.write(bytes(chunk))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    assert free_bytes(mnt) == 0
    return filler


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def listing(home: Path) -> dict[str, int]:
    """Every path of the store but the index and its side files, with its size."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(home):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, home)
            if not rel.startswith(("index.db", "lock", RESERVE_NAME)):
                out[rel] = os.lstat(full).st_size
    return out


def big_archive(path: Path, layers: int = 4, each: int = 4 << 20) -> Path:
    """A docker-archive of ``layers`` layers of ``each`` random bytes."""

    def tar(entries: list[tuple[str, bytes]]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for name, data in entries:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    blobs = [tar([(f"f{i}", os.urandom(each))]) for i in range(layers)]
    diff_ids = ["sha256:" + hashlib.sha256(b).hexdigest() for b in blobs]
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    ).encode()
    names = [f"l{i}/layer.tar" for i in range(layers)]
    manifest = json.dumps([{"Config": "c.json", "RepoTags": ["big:1"], "Layers": names}])
    path.write_bytes(
        tar(
            [
                *zip(names, blobs, strict=True),
                ("c.json", config),
                ("manifest.json", manifest.encode()),
            ]
        )
    )
    return path


@pytest.fixture
def full_store(
    small_fs: Path,
    monkeypatch: pytest.MonkeyPatch,
    busybox_tar: Path,
    capsys: pytest.CaptureFixture[str],
) -> Path:
    home = small_fs / "store"
    monkeypatch.setenv("LAMINA_HOME", str(home))
    assert run(capsys, "import", str(busybox_tar), "busybox:latest")[0] == 0
    assert run(capsys, "tag", "busybox:latest", "other:1")[0] == 0
    assert (home / RESERVE_NAME).stat().st_blocks * 512 >= 1 << 20
    return home


def test_a_load_that_runs_out_of_space_leaves_nothing(
    full_store: Path, small_fs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = big_archive(tmp_path / "big.tar")
    assert archive.stat().st_size > free_bytes(small_fs)
    before, free_before = listing(full_store), free_bytes(small_fs)
    code, out, err = run(capsys, "load", "-i", str(archive))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "No space left on device" in err, err
    assert listing(full_store) == before
    assert list((full_store / "tmp").iterdir()) == []
    # The space the load took is free again (the index may have grown by a page).
    assert free_bytes(small_fs) >= free_before - (64 << 10)
    code, out, _ = run(capsys, "fsck")
    assert code == 0, out


def test_with_no_space_left_the_store_is_listed_checked_and_freed(
    full_store: Path, small_fs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    filler = fill(small_fs)
    for argv in (
        ("images",),
        ("inspect", "busybox:latest"),
        ("history", "busybox:latest"),
        ("system", "df"),
        ("fsck",),
        ("rmi", "other:1"),
        ("rmi", "busybox:latest"),
        ("system", "prune", "-a", "-f"),
        ("builder", "prune", "--all", "-f"),
    ):
        code, out, err = run(capsys, *argv)
        assert code == 0 and err == "", (argv, out, err)
    assert run(capsys, "images", "-q")[1] == ""
    # What the prune's grace period kept goes with a prune that has none.
    store = Store(full_store)
    try:
        result = apply_prune(store, plan_prune(store, PruneRequest("system", grace=0.0)))
        assert result.layers and store.layers.all() == []
    finally:
        store.close()
    assert free_bytes(small_fs) > 1 << 20
    assert run(capsys, "fsck")[0] == 0
    # With room again, the next open keeps a reserve for the next time.
    filler.unlink()
    assert run(capsys, "images")[0] == 0
    assert (full_store / RESERVE_NAME).is_file()


@pytest.fixture
def read_only_store(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    busybox_tar: Path,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Path]:
    """A store with an image, seen through a read-only bind mount."""
    _gate()
    home = tmp_path / "store"
    monkeypatch.setenv("LAMINA_HOME", str(home))
    assert run(capsys, "import", str(busybox_tar), "busybox:latest")[0] == 0
    view = tmp_path / "ro"
    view.mkdir()
    bound = _mount("--bind", str(home), str(view))
    assert bound.returncode == 0, bound.stderr
    try:
        remount = _mount("-o", "remount,ro,bind", str(view))
        assert remount.returncode == 0, remount.stderr
        monkeypatch.setenv("LAMINA_HOME", str(view))
        yield view
    finally:
        _umount(view)


def test_a_read_only_store_is_listed_and_checked(
    read_only_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = listing(read_only_store)
    for argv in (
        ("images",),
        ("inspect", "busybox:latest"),
        ("history", "busybox:latest"),
        ("builds",),
        ("system", "df", "-v"),
        ("fsck",),
        ("fsck", "--deep"),
    ):
        code, out, err = run(capsys, *argv)
        assert code == 0 and err == "", (argv, out, err)
    for argv in (
        ("rmi", "busybox:latest"),
        ("tag", "busybox:latest", "x:1"),
        ("system", "prune", "-a", "-f"),
    ):
        code, out, err = run(capsys, *argv)
        assert code == 1 and err.count("\n") == 1 and "read-only" in err, (argv, err)
    assert listing(read_only_store) == before


def test_a_load_that_fails_after_installing_layers_removes_them(
    full_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The layers are staged and installed; then the config cannot be written (its
    # directory is a read-only mount here, a full disk in the field): what the load
    # installed, and no image uses, goes at once instead of after prune's grace period.
    archive = big_archive(tmp_path / "small.tar", layers=3, each=1 << 16)
    blobs = full_store / "blobs" / "sha256"
    before = listing(full_store)
    assert _mount("--bind", str(blobs), str(blobs)).returncode == 0
    try:
        assert _mount("-o", "remount,ro,bind", str(blobs)).returncode == 0
        code, out, err = run(capsys, "load", "-i", str(archive))
    finally:
        _umount(blobs)
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert "Read-only file system" in err
    assert listing(full_store) == before
    store = Store(full_store)
    try:
        assert len(store.layers.all()) == 1  # busybox's, as before
    finally:
        store.close()
    assert run(capsys, "fsck")[0] == 0
