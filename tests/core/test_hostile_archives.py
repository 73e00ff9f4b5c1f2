"""Hostile archives: nothing outside the store is ever touched, whatever a tar says.

Every test plants a sentinel file and a sentinel directory outside the store, feeds
lamina an archive aimed at them, and checks afterwards that their mode, owner, times
and contents are exactly as before.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from lamina.core.embedded.archive import import_rootfs, load_archive
from lamina.core.embedded.store import Store
from lamina.core.errors import ArchiveError


class Sentinels:
    """A file and a directory outside the store, with a fingerprint of their state."""

    def __init__(self, root: Path) -> None:
        root.mkdir()
        self.file = root / "victim"
        self.file.write_text("secret\n")
        os.chmod(self.file, 0o600)
        self.dir = root / "victim-dir"
        (self.dir / "b").mkdir(parents=True)
        os.chmod(self.dir, 0o750)
        os.chmod(self.dir / "b", 0o700)
        self.before = self.fingerprint()

    def fingerprint(self) -> list[tuple[str, int, int, int, int, bytes]]:
        out = []
        for path in (self.file, self.dir, self.dir / "b"):
            st = os.lstat(path)
            data = path.read_bytes() if path.is_file() else b""
            out.append((str(path), st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, data))
        return out

    def assert_untouched(self) -> None:
        assert self.fingerprint() == self.before


@pytest.fixture
def sentinels(tmp_path: Path) -> Sentinels:
    return Sentinels(tmp_path / "outside")


def _tar(entries: list[tuple[str, bytes, str]]) -> bytes:
    """A tar of (name, type, linkname) entries; directories get mode 04777."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, link in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o4777
            info.mtime = 1
            info.linkname = link
            t.addfile(info)
    return buf.getvalue()


def dir_then_symlink(target: Path) -> bytes:
    """The reproducer: ``d/`` as a directory, then ``d`` as a symlink to ``target``."""
    return _tar([("d", tarfile.DIRTYPE, ""), ("d", tarfile.SYMTYPE, str(target))])


def nested_dir_then_parent_symlink(target_dir: Path) -> bytes:
    """``a/`` and ``a/b/`` as directories, then ``a`` as a symlink to ``target_dir``."""
    return _tar(
        [
            ("a", tarfile.DIRTYPE, ""),
            ("a/b", tarfile.DIRTYPE, ""),
            ("a", tarfile.SYMTYPE, str(target_dir)),
        ]
    )


HOSTILE: list[tuple[str, Callable[[Sentinels], bytes]]] = [
    ("dir-then-symlink-to-file", lambda s: dir_then_symlink(s.file)),
    ("dir-then-symlink-to-dir", lambda s: dir_then_symlink(s.dir)),
    ("parent-replaced-by-symlink", lambda s: nested_dir_then_parent_symlink(s.dir)),
]


@pytest.mark.parametrize("make", [h[1] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_import_touches_nothing_outside_the_store(
    store: Store, sentinels: Sentinels, tmp_path: Path, make: Callable[[Sentinels], bytes]
) -> None:
    evil = tmp_path / "evil.tar"
    evil.write_bytes(make(sentinels))
    summary = import_rootfs(store, evil, "evil:1")
    sentinels.assert_untouched()
    # The last entry of a path wins: the layer holds the symlink, not the directory.
    diff = store.layers.diff_path(summary.layers[-1])
    name = "d" if (diff / "d").is_symlink() else "a"
    assert (diff / name).is_symlink()


def _docker_archive(layer: bytes, diff_id: str) -> bytes:
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "evil"}],
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": ["evil:1"], "Layers": ["layer/layer.tar"]}]
    ).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in (
            ("layer/layer.tar", layer),
            (config_name, config),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("make", [h[1] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_refused_load_touches_nothing_outside_the_store(
    store: Store, sentinels: Sentinels, tmp_path: Path, make: Callable[[Sentinels], bytes]
) -> None:
    # A wrong diffID makes the load fail after staging; staging must not have acted.
    archive = tmp_path / "evil-archive.tar"
    archive.write_bytes(_docker_archive(make(sentinels), "sha256:" + "0" * 64))
    with pytest.raises(ArchiveError):
        load_archive(store, archive)
    sentinels.assert_untouched()
    assert store.images.list() == []


@pytest.mark.parametrize("make", [h[1] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_accepted_load_touches_nothing_outside_the_store(
    store: Store, sentinels: Sentinels, tmp_path: Path, make: Callable[[Sentinels], bytes]
) -> None:
    layer = make(sentinels)
    archive = tmp_path / "evil-archive.tar"
    archive.write_bytes(_docker_archive(layer, "sha256:" + hashlib.sha256(layer).hexdigest()))
    loaded = load_archive(store, archive)
    assert [s.tags for s in loaded] == [("evil:1",)]
    sentinels.assert_untouched()


def test_directory_metadata_still_applies_to_real_directories(store: Store, tmp_path: Path) -> None:
    # The fix must not lose the metadata of directories that stay directories.
    tar = tmp_path / "dirs.tar"
    tar.write_bytes(
        _tar([("x", tarfile.DIRTYPE, ""), ("x/y", tarfile.DIRTYPE, ""), ("z", tarfile.DIRTYPE, "")])
    )
    summary = import_rootfs(store, tar, "dirs:1")
    diff = store.layers.diff_path(summary.layers[-1])
    for name in ("x", "x/y", "z"):
        st = os.lstat(diff / name)
        assert stat.S_IMODE(st.st_mode) == 0o4777
        assert st.st_mtime == 1


@pytest.mark.parametrize("make", [h[1] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_add_of_a_hostile_archive_touches_nothing_outside_the_store(
    store: Store,
    sentinels: Sentinels,
    tmp_path: Path,
    make: Callable[[Sentinels], bytes],
) -> None:
    from lamina.core.embedded.builder.walk import run_build
    from lamina.core.events import BuildFinished
    from lamina.core.model import BuildRequest

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "evil.tar").write_bytes(make(sentinels))
    (ctx / "Dockerfile").write_text("FROM scratch\nADD evil.tar /x/\n")
    end = list(run_build(store, BuildRequest(context=str(ctx))))[-1]
    assert isinstance(end, BuildFinished), end
    sentinels.assert_untouched()


def _tree(root: Path, skip: Path) -> dict[str, tuple[int, int, int, int, bytes]]:
    """Every path under ``root`` but ``skip``: mode, owner, mtime and content."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = os.lstat(path)
            data = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
            out[str(path)] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, data)
    return out


@pytest.mark.parametrize("verb", ["import", "load"])
def test_the_issues_reproducer_changes_nothing_outside_the_store(
    lamina_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], verb: str
) -> None:
    from lamina.tui.cli import main

    victim = tmp_path / "victim"
    victim.write_text("root:x:0:0::/root:/bin/sh\n")
    os.chmod(victim, 0o640)
    # As the issue gives it: d/ a directory of mode 04777, then d a symlink to the victim.
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as t:
        d = tarfile.TarInfo("d")
        d.type, d.mode = tarfile.DIRTYPE, 0o4777
        t.addfile(d)
        s = tarfile.TarInfo("d")
        s.type, s.linkname = tarfile.SYMTYPE, str(victim)
        t.addfile(s)
    if verb == "load":
        # Inside a docker-archive whose diffID is wrong: refused after staging.
        evil.write_bytes(_docker_archive(evil.read_bytes(), "sha256:" + "0" * 64))
    main(["images"])  # the store exists before the fingerprint
    before = _tree(tmp_path, lamina_home)
    argv = ["import", str(evil), "evil:1"] if verb == "import" else ["load", "-i", str(evil)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == (0 if verb == "import" else 1), err
    assert _tree(tmp_path, lamina_home) == before
    assert stat.S_IMODE(os.lstat(victim).st_mode) == 0o640
