"""A lost index is never an empty store: refused, never pruned, and rebuilt from disk.

A crash or a full disk can leave ``index.db`` empty or missing next to intact layers.
Treated as an empty store, every layer would look like debris, and ``fsck --repair``
or ``system prune`` would delete them all.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from lamina.tui.cli import main

DIVE = "images/dive/test-docker-image.tar"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def listing(home: Path) -> dict[str, tuple[int, str]]:
    """Every file of the store but the index itself, with its mode and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(home):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(home))
            if rel.startswith("index.db") or rel == "lock":
                continue
            st = os.lstat(full)
            digest = hashlib.sha256(full.read_bytes()).hexdigest() if full.is_file() else ""
            out[rel] = (st.st_mode, digest)
    return out


@pytest.fixture
def filled(
    lamina_home: Path,
    conformance: Path,
    busybox_tar: Path,
    capsys: pytest.CaptureFixture[str],
) -> dict[str, str]:
    """A store holding dive's test image and a busybox import; returns tag -> image ID."""
    assert run(capsys, "load", "-i", str(conformance / DIVE))[0] == 0
    assert run(capsys, "import", str(busybox_tar), "busybox:latest")[0] == 0
    assert run(capsys, "tag", "busybox:latest", "base:1")[0] == 0
    tags = {}
    for tag in ("dive-test:latest", "busybox:latest", "base:1"):
        code, out, _ = run(capsys, "inspect", tag)
        assert code == 0
        tags[tag] = json.loads(out)[0]["Id"]
    return tags


def lose_index(home: Path, how: str) -> None:
    for suffix in ("-wal", "-shm"):
        (home / f"index.db{suffix}").unlink(missing_ok=True)
    if how == "empty":
        (home / "index.db").write_bytes(b"")
    else:
        (home / "index.db").unlink()


@pytest.mark.parametrize("how", ["empty", "missing"])
@pytest.mark.parametrize(
    "argv",
    [
        ("images",),
        ("fsck",),
        ("fsck", "--repair"),
        ("system", "prune", "-a", "-f"),
        ("image", "prune", "-a", "-f"),
        ("builder", "prune", "--all", "-f"),
        ("system", "df"),
    ],
    ids=lambda a: "-".join(a) if isinstance(a, tuple) else a,
)
def test_a_lost_index_is_refused_and_nothing_is_deleted(
    filled: dict[str, str],
    lamina_home: Path,
    capsys: pytest.CaptureFixture[str],
    how: str,
    argv: tuple[str, ...],
) -> None:
    lose_index(lamina_home, how)
    before = listing(lamina_home)
    layers = len(os.listdir(lamina_home / "layers"))
    assert layers > 0
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    assert err.startswith(f"lamina: {lamina_home / 'index.db'} is {how} but {layers} layer(s)")
    assert "`lamina fsck --rebuild-index` recovers" in err
    assert err.count("\n") == 1
    assert listing(lamina_home) == before
    assert (lamina_home / "index.db").exists() == (how == "empty")


@pytest.mark.parametrize("how", ["empty", "missing", "damaged"])
def test_rebuild_index_recovers_images_tags_and_layers(
    filled: dict[str, str],
    lamina_home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    how: str,
) -> None:
    saved = tmp_path / "before.tar"
    assert run(capsys, "save", "-o", str(saved), "dive-test:latest")[0] == 0
    _, history_before, _ = run(capsys, "history", "--no-trunc", "dive-test:latest")
    if how == "damaged":
        (lamina_home / "index.db").write_bytes(b"not an sqlite database" * 64)
    else:
        lose_index(lamina_home, how)
    before = listing(lamina_home)
    code, out, err = run(capsys, "fsck", "--rebuild-index")
    assert code == 0, err
    assert "rebuilt the index: 15 layers, 2 images, 3 tags" in out
    # Nothing was deleted or changed but the index (and the tag file it rewrote).
    after = listing(lamina_home)
    assert {k: v for k, v in after.items() if k != "repositories.json"} == {
        k: v for k, v in before.items() if k != "repositories.json"
    } | {k: v for k, v in after.items() if k.startswith("index.db.lost")}
    for tag, image_id in filled.items():
        code, out, _ = run(capsys, "inspect", tag)
        assert code == 0 and json.loads(out)[0]["Id"] == image_id
    assert run(capsys, "history", "--no-trunc", "dive-test:latest")[1] == history_before
    code, out, err = run(capsys, "fsck", "--deep")
    assert code == 0, out + err
    again = tmp_path / "after.tar"
    assert run(capsys, "save", "-o", str(again), "dive-test:latest")[0] == 0
    assert again.read_bytes() == saved.read_bytes()


def test_an_unindexed_layer_that_a_config_names_is_never_swept(
    filled: dict[str, str], lamina_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Part of an index lost (a row gone, its directory and its image's config kept).
    db = sqlite3.connect(lamina_home / "index.db")
    top = db.execute(
        "SELECT top_layer FROM images WHERE id = ?", (filled["dive-test:latest"],)
    ).fetchone()[0]
    db.execute("PRAGMA foreign_keys = OFF")
    db.execute("DELETE FROM tags WHERE image_id = ?", (filled["dive-test:latest"],))
    db.execute("DELETE FROM images WHERE id = ?", (filled["dive-test:latest"],))
    db.execute("DELETE FROM layers WHERE chain_id = ?", (top,))
    db.commit()
    db.close()
    layer_dir = lamina_home / "layers" / top.removeprefix("sha256:")
    code, out, _ = run(capsys, "fsck", "--repair")
    assert code == 1
    assert f"unindexed-layer: layers/{layer_dir.name} has no index row" in out
    assert layer_dir.is_dir()
    assert run(capsys, "system", "prune", "-a", "-f")[0] == 0
    assert layer_dir.is_dir()


def test_a_new_store_still_starts_empty(
    lamina_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "images")
    assert code == 0 and err == ""
    assert (lamina_home / "index.db").stat().st_size > 0
