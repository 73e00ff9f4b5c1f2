"""Classic-builder source checksums: tarsum v1 headers, dir:/file:/multi:, the stat cache,
and which context paths reach the builder."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from lamina.core.context.checksum import (
    Context,
    StatCache,
    diff_manifests,
    hash_string_slice,
    manifest_to_json,
    multi_checksum,
    tarsum_file,
)
from lamina.core.context.dockerignore import PatternMatcher, read_ignore_file
from lamina.core.embedded.store import Store
from lamina.core.errors import ContextError


def header(**fields: str) -> bytes:
    order = [
        "name", "mode", "uid", "gid", "size", "typeflag", "linkname", "uname", "gname",
        "devmajor", "devminor",
    ]  # fmt: skip
    defaults = {"uid": "0", "gid": "0", "linkname": "", "uname": "", "gname": "",
                "devmajor": "0", "devminor": "0", "size": "0"}  # fmt: skip
    values = {**defaults, **fields}
    return b"".join(k.encode() + values[k].encode() for k in order)


def test_regular_file_tarsum_matches_the_v1_header_layout(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_bytes(b"hello\n")
    os.chmod(f, 0o644)
    expected = hashlib.sha256(
        header(name="a.txt", mode="420", size="6", typeflag="0") + b"hello\n"
    ).hexdigest()
    tarsum, content = tarsum_file(f, "a.txt")
    assert tarsum == expected
    assert content == hashlib.sha256(b"hello\n").hexdigest()


def test_directory_symlink_and_owner_fields(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    os.chmod(d, 0o750)
    link = tmp_path / "l"
    os.symlink("target/x", link)
    os.chown(d, 1000, 1000)
    assert (
        tarsum_file(d, "d")[0]
        == hashlib.sha256(header(name="d/", mode="488", typeflag="5")).hexdigest()
    )
    # A file copied from a stage keeps its real owner in the hash.
    assert (
        tarsum_file(d, "d", real_owner=True)[0]
        == hashlib.sha256(
            header(name="d/", mode="488", typeflag="5", uid="1000", gid="1000")
        ).hexdigest()
    )
    assert (
        tarsum_file(link, "l")[0]
        == hashlib.sha256(
            header(name="l", mode="511", typeflag="2", linkname="target/x")
        ).hexdigest()
    )


def test_capability_xattr_is_hashed(tmp_path: Path) -> None:
    f = tmp_path / "ping"
    f.write_bytes(b"bin")
    before = tarsum_file(f, "ping")[0]
    # VFS_CAP_REVISION_2 with cap_net_raw (bit 13) permitted and effective.
    cap = bytes.fromhex("01000002" + "00200000" + "00000000" + "00000000" + "00000000")
    try:
        os.setxattr(f, "security.capability", cap)
    except OSError as exc:
        pytest.skip(f"this filesystem refuses security.capability xattrs: {exc}")
    expected = hashlib.sha256(
        header(name="ping", mode=str(os.stat(f).st_mode & 0o7777), size="3", typeflag="0")
        + b"security.capability"
        + cap
        + b"bin"
    ).hexdigest()
    assert tarsum_file(f, "ping")[0] == expected != before


def test_dir_file_and_multi_composition(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "b").write_text("b")
    (tmp_path / "src" / "a").write_text("a")
    (tmp_path / "one").write_text("1")
    ctx = Context(tmp_path)
    sums = sorted(ctx.file_sum(p) for p in ("src", "src/a", "src/b"))
    assert ctx.checksum("src") == "dir:" + hashlib.sha256(",".join(sums).encode()).hexdigest()
    assert ctx.checksum("one") == "file:" + tarsum_file(tmp_path / "one", "one")[0]
    assert multi_checksum([ctx.checksum("one")]) == ctx.checksum("one")
    both = [ctx.checksum("one"), ctx.checksum("src")]
    assert multi_checksum(both) == hash_string_slice("multi", both)
    assert multi_checksum(both).startswith("multi:")


def test_names_are_relative_to_the_context_root(tmp_path: Path) -> None:
    """Moving a file changes its hash even with the same bytes and mode."""
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("same")
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "f").write_text("same")
    ctx = Context(tmp_path)
    assert ctx.file_sum("x/f") != ctx.file_sum("y/f")


def _matcher(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    pm = PatternMatcher(read_ignore_file(text))

    def excluded(rel: str, is_dir: bool) -> tuple[bool, bool]:
        if pm.included(rel, is_dir):
            return False, True
        return True, is_dir and not pm.can_skip_dir(rel)

    return excluded


def test_dockerignore_filters_the_walk(tmp_path: Path) -> None:
    for rel in ("Dockerfile", ".dockerignore", "app/main.py", "app/x.log", "logs/keep.log",
                "logs/drop.log", "node_modules/m/index.js"):  # fmt: skip
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)
    text = "**/*.log\n!logs/keep.log\nnode_modules\nDockerfile\n"
    ctx = Context(tmp_path, _matcher(tmp_path, text))
    assert sorted(ctx.entries) == [".dockerignore", "app", "app/main.py", "logs", "logs/keep.log"]
    assert not ctx.exists("Dockerfile")
    assert ctx.below("app") == ["app/main.py"]


def test_stat_cache_makes_a_rehash_cost_stats_not_reads(tmp_path: Path, store: Store) -> None:
    ctx_dir = tmp_path / "ctx"
    n = 2000
    for i in range(n):
        p = ctx_dir / f"d{i % 20}" / f"f{i}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"file {i}\n")
    old = time.time() - 60
    for root, _dirs, files in os.walk(ctx_dir):
        for name in files:
            os.utime(os.path.join(root, name), (old, old))
    first = Context(ctx_dir, stat_cache=StatCache(store.stat_cache))
    checksum = first.checksum("")
    assert first.stat_cache.misses == n
    first.stat_cache.flush()
    rows = store.index.connection().execute("SELECT count(*) FROM stat_cache").fetchone()[0]
    assert rows == n

    second = Context(ctx_dir, stat_cache=StatCache(store.stat_cache))
    assert second.checksum("") == checksum
    assert (second.stat_cache.hits, second.stat_cache.misses) == (n, 0)

    # Same size, same mtime, new bytes: ctime moves, so the stale sum is not trusted.
    target = ctx_dir / "d0" / "f0.txt"
    target.write_text("FILE 0\n")
    os.utime(target, (old, old))
    third = Context(ctx_dir, stat_cache=StatCache(store.stat_cache))
    assert third.checksum("") != checksum
    assert third.stat_cache.misses == 1


def test_freshly_modified_files_are_not_cached(tmp_path: Path, store: Store) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "new.txt").write_text("just written")
    ctx = Context(tmp_path / "ctx", stat_cache=StatCache(store.stat_cache))
    ctx.checksum("")
    ctx.stat_cache.flush()
    assert store.index.connection().execute("SELECT count(*) FROM stat_cache").fetchone()[0] == 0


def test_missing_context_is_a_context_error(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="is not a directory"):
        _ = Context(tmp_path / "missing").entries


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ({"a": ["file", 420, 1, "x", "", 0, 0]}, {"a": ["file", 493, 1, "x", "", 0, 0]},
         ([], [], [{"path": "a", "what": ["mode"]}])),
        ({"a": ["file", 420, 1, "x", "", 0, 0]}, {"a": ["file", 493, 2, "y", "", 0, 0]},
         ([], [], [{"path": "a", "what": ["mode", "content"]}])),
        ({"a": ["symlink", 511, 0, "e", "t1", 0, 0]}, {"a": ["symlink", 511, 0, "e", "t2", 0, 0]},
         ([], [], [{"path": "a", "what": ["link target"]}])),
        ({"a": ["file", 420, 1, "x", "", 0, 0]}, {"a": ["dir", 493, 0, "e", "", 0, 0]},
         ([], [], [{"path": "a", "what": ["type"]}])),
        ({"a": ["file", 420, 1, "x", "", 0, 0]}, {"b": ["file", 420, 1, "x", "", 0, 0]},
         (["b"], ["a"], [])),
        ({"a": ["file", 420, 1, "x", "", 0, 0]}, {"a": ["file", 420, 1, "x", "", 1, 1]},
         ([], [], [{"path": "a", "what": ["owner"]}])),
    ],
)  # fmt: skip
def test_manifest_differences_are_named(
    old: dict[str, list[object]], new: dict[str, list[object]], expected: tuple[object, ...]
) -> None:
    assert diff_manifests(old, new) == expected


def test_manifest_round_trip(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("abc")
    os.symlink("f", tmp_path / "l")
    ctx = Context(tmp_path)
    doc = manifest_to_json(ctx.manifest(""))
    assert doc["f"][:3] == ["file", os.stat(tmp_path / "f").st_mode & 0o7777, 3]
    assert doc["f"][3] == hashlib.sha256(b"abc").hexdigest()
    assert doc["l"][0] == "symlink" and doc["l"][4] == "f"


# Checksums Docker Engine's classic builder printed (`docker history`, DOCKER_BUILDKIT=0)
# for these exact contexts; modes and contents are fixed, mtimes and owners are not.
DOCKER_OBSERVED = {
    "first": {
        "f": "file:8582af4daeaf0680f84231b3cb3c1b3f178576b5a6a8982837583d5676f28428",
        "d1": "dir:94fee713bfa162448909b547b365f2fe08cd783d4218fcfd81c09d81946d2f30",
        "d2": "dir:1985aa912f9cc4f102da8f444fe06548e18cb19f65e8551cca7643bee4320c6e",
        "d3": "dir:95c3e71b21900012b97d05da5021449734cd400960c450c231ce562fa04228e7",
    },
    "second": {
        "d4": "dir:912837dcd6ed876d71a26e5d241bb0576df3c8033a271266e8a8cea3f3c09a1f",
        "d5": "dir:7951b13d59f0eed6f200441f90926a934a35c55e250e417fa3164a8f88279ca9",
        "top": "file:cf3ad9b798754bdfe1139c67c9e2f9a1f57fe8d8f6f0c6b9288db6e7c65cd8f6",
        "d6": "dir:01fbabd8c26f5bd291207c0e56020f98537a942bba3e7414d9f906d074ae1adb",
    },
}


def _make(root: Path, files: dict[str, str], dirs: tuple[str, ...], links: dict[str, str]) -> None:
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(root / d, 0o755)
    for rel, text in files.items():
        (root / rel).write_text(text)
        os.chmod(root / rel, 0o644)
    for rel, target in links.items():
        os.symlink(target, root / rel)


def test_checksums_equal_what_docker_printed(tmp_path: Path) -> None:
    first = tmp_path / "first"
    first.mkdir()
    # d3/l dangles: Docker hashes a broken link as its own path.
    _make(first, {"f": "hi\n", "d1/x": "x\n"}, ("d1", "d2", "d3"), {"d3/l": "../nowhere"})
    second = tmp_path / "second"
    second.mkdir()
    # Links are followed inside the context: d4/l and top hash as f, d6/dl as d5's entry.
    _make(
        second,
        {"f": "f\n", "d5/x": "x\n"},
        ("d4", "d5", "d6"),
        {"d4/l": "../f", "d5/l": "x", "top": "f", "d6/dl": "../d5"},
    )
    for name, root in (("first", first), ("second", second)):
        ctx = Context(root)
        got = {source: ctx.checksum(source) for source in DOCKER_OBSERVED[name]}
        assert got == DOCKER_OBSERVED[name]
