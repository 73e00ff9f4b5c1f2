"""Unpacking an image the way a runtime does, with GNU tar, and walking what comes out.

The reference the image diff is checked against: every layer tar of a ``docker save``
archive is extracted in order by ``/usr/bin/tar`` (as root, so owners are kept), after
its whiteouts have deleted what they hide below; the resulting trees are walked with
``os.lstat`` and compared path by path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

TAR = "/usr/bin/tar"


def layer_members(archive: Path) -> list[str]:
    """The layer tar paths of the one image in a docker-archive, base first."""
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert len(manifest) == 1
    return list(manifest[0]["Layers"])


def unpack(archive: Path, dest: Path, work: Path) -> Path:
    """Unpacks the archive's image into ``dest`` layer by layer, whiteouts applied."""
    dest.mkdir(parents=True)
    work.mkdir(parents=True, exist_ok=True)
    for i, member in enumerate(layer_members(archive)):
        blob = work / f"layer{i}.tar"
        subprocess.run([TAR, "-xf", str(archive), "-O", member], stdout=blob.open("wb"), check=True)
        names = subprocess.run(
            [TAR, "-tf", str(blob)], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        for name in names:
            path = name.rstrip("/")
            parent, _, base = path.rpartition("/")
            target_dir = dest / parent if parent else dest
            if base == ".wh..wh..opq":
                if target_dir.is_dir():
                    for child in target_dir.iterdir():
                        _remove(child)
            elif base.startswith(".wh."):
                _remove(target_dir / base[len(".wh.") :])
        subprocess.run(
            [
                TAR,
                "-xpf",
                str(blob),
                "-C",
                str(dest),
                "--same-owner",
                "--numeric-owner",
                "--exclude=.wh.*",
            ],
            check=True,
        )
        blob.unlink()
    return dest


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def walk(root: Path) -> dict[str, tuple[object, ...]]:
    """path -> (type, mode, uid, gid, size, content sha256, symlink target)."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            st = os.lstat(full)
            rel = "/" + str(full.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = (
                    "symlink",
                    stat.S_IMODE(st.st_mode),
                    st.st_uid,
                    st.st_gid,
                    0,
                    "",
                    os.readlink(full),
                )
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, 0, "", "")
            elif stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(full.read_bytes()).hexdigest()
                out[rel] = (
                    "file",
                    stat.S_IMODE(st.st_mode),
                    st.st_uid,
                    st.st_gid,
                    st.st_size,
                    digest,
                    "",
                )
            else:
                out[rel] = ("other", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, 0, "", "")
    return out


def differing(a: dict[str, tuple[object, ...]], b: dict[str, tuple[object, ...]]) -> set[str]:
    """Paths whose entries differ between two walks (present in one only, or unequal)."""
    out = set()
    for path in a.keys() | b.keys():
        x, y = a.get(path), b.get(path)
        if x is None or y is None:
            out.add(path)
            continue
        if x[0] == y[0] == "symlink":
            # A symlink's own mode means nothing on Linux.
            x, y = x[:1] + x[2:], y[:1] + y[2:]
        if x != y:
            out.add(path)
    return out
