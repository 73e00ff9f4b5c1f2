"""A damaged index (bytes flipped or zeroed in a page, a truncated file): every verb
says so in one line naming the file and ``lamina fsck --rebuild-index``, nothing is
deleted on the strength of what the damaged index says, and the rebuild recovers.

Regression tests of the ``sqlite3.DatabaseError`` and ``TypeError`` tracebacks (rows of
NULLs from a zeroed page) that ``images``, ``inspect``, ``fsck`` and ``build`` gave.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from lamina.tui.cli import main

REBUILD = "`lamina fsck --rebuild-index` rebuilds it"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def filled(
    lamina_home: Path, tmp_path: Path, busybox_tar: Path, capsys: pytest.CaptureFixture[str]
) -> Path:
    """A store with busybox and two images built on it (no RUN); returns the context."""
    assert run(capsys, "import", str(busybox_tar), "busybox:latest")[0] == 0
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f.txt").write_text("f")
    for i in range(2):
        (ctx / "Dockerfile").write_text(f"FROM busybox\nLABEL n={i}\nCOPY f.txt /f{i}\n")
        assert run(capsys, "build", "-t", f"app:{i}", str(ctx))[0] == 0
    # Everything in the database file itself, as after a clean close.
    db = sqlite3.connect(lamina_home / "index.db")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    for suffix in ("-wal", "-shm"):
        (lamina_home / f"index.db{suffix}").unlink(missing_ok=True)
    return ctx


def _page_of(db: Path, table: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        root = int(
            conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[
                0
            ]
        )
    finally:
        conn.close()
    return (root - 1) * page_size


def zero_table_page(table: str) -> Callable[[Path], None]:
    def damage(db: Path) -> None:
        start = _page_of(db, table)
        data = bytearray(db.read_bytes())
        # The page header stays; its cells point at zeros: SQLite reads rows of NULLs.
        data[start + 8 : start + 4096] = bytes(4096 - 8)
        db.write_bytes(bytes(data))

    return damage


def flip_table_page(table: str) -> Callable[[Path], None]:
    def damage(db: Path) -> None:
        start = _page_of(db, table)
        data = bytearray(db.read_bytes())
        for offset in range(start + 3, start + 12):
            data[offset] ^= 0xFF
        db.write_bytes(bytes(data))

    return damage


def truncate(db: Path) -> None:
    data = db.read_bytes()
    db.write_bytes(data[: len(data) - 4096 - 1000])


def flip_header(db: Path) -> None:
    data = bytearray(db.read_bytes())
    data[16:24] = bytes(b ^ 0xFF for b in data[16:24])  # page size and format bytes
    db.write_bytes(bytes(data))


DAMAGE: dict[str, Callable[[Path], None]] = {
    "zeroed-layers-page": zero_table_page("layers"),
    "zeroed-images-page": zero_table_page("images"),
    "zeroed-builds-page": zero_table_page("builds"),
    "flipped-tags-page": flip_table_page("tags"),
    "truncated": truncate,
    "flipped-header": flip_header,
}


def listing(home: Path) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(home):
        for name in dirnames + filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), home)
            if not rel.startswith(("index.db", "lock", "tmp")):
                out[rel] = os.lstat(os.path.join(dirpath, name)).st_mode
    return out


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_a_damaged_index_is_named_in_one_line_by_every_verb(
    filled: Path, lamina_home: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    db = lamina_home / "index.db"
    DAMAGE[how](db)
    before = listing(lamina_home)
    verbs = [
        ("images",),
        ("inspect", "app:1"),
        ("history", "app:1"),
        ("build", "-t", "app:2", str(filled)),
        ("rmi", "app:0"),
        ("system", "df"),
        ("system", "prune", "-a", "-f"),
        ("builder", "prune", "--all", "-f"),
        ("fsck",),
        ("fsck", "--repair"),
    ]
    expected = {"app:0", "app:1", "busybox:latest"}
    for argv in verbs:
        code, _out, err = run(capsys, *argv)
        if code == 0 and argv[0] == "build":
            expected.add("app:2")
        if code == 0 and argv[0] == "rmi":
            expected.discard("app:0")
        assert "internal error" not in err and "Traceback" not in err, (argv, err)
        if code:
            assert code == 1 and err.count("\n") == 1, (argv, err)
            assert err.startswith(f"lamina: {db}") or f"{db}: " in err, (argv, err)
            assert REBUILD in err or "rebuild-index" in err, (argv, err)
        else:
            # A verb that read nothing from the damaged part may succeed; it prints
            # nothing on stderr then.
            assert argv[0] not in ("fsck",) and err == "", (argv, err)
    # No layer or config was deleted on the word of the damaged index (a build that
    # read nothing damaged may have added some).
    after = listing(lamina_home)
    assert {k: v for k, v in after.items() if k in before} == before
    # The way out works: the layers and configs give the images back.
    code, out, err = run(capsys, "fsck", "--rebuild-index")
    assert code == 0, err
    code, out, err = run(capsys, "fsck")
    assert code == 0, out + err
    code, out, _ = run(capsys, "images", "--format", "json")
    lines = [json.loads(line) for line in out.splitlines()]
    tags = sorted(f"{i['Repository']}:{i['Tag']}" for i in lines if i["Tag"] != "<none>")
    assert code == 0 and tags == sorted(expected), out
