"""Finding a build's Dockerfile and context, the same way for both engines."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.core.context.files import dockerfile_path, load_build_files
from lamina.core.errors import ContextError


def _context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "logs").mkdir(parents=True)
    (ctx / "Dockerfile").write_bytes(b"FROM x\r\nCOPY . /\n\xff\n")
    (ctx / "keep.txt").write_text("k")
    (ctx / "logs" / "a.log").write_text("a")
    (ctx / "logs" / "keep.log").write_text("k")
    (ctx / ".dockerignore").write_text("logs\n!logs/keep.log\n")
    return ctx


def test_the_default_dockerfile_is_in_the_context(tmp_path: Path) -> None:
    assert dockerfile_path(tmp_path, None) == tmp_path / "Dockerfile"
    assert dockerfile_path(tmp_path, "other/Dockerfile") == Path("other/Dockerfile")


def test_files_read_as_the_daemon_reads_them(tmp_path: Path) -> None:
    files = load_build_files(_context(tmp_path), None)
    assert files.dockerfile == tmp_path / "ctx" / "Dockerfile"
    # Bytes as they are: line ends untouched, non-UTF-8 kept for the parser to judge.
    assert files.text == "FROM x\r\nCOPY . /\n\udcff\n"
    assert sorted(files.context.entries) == [
        ".dockerignore",
        "Dockerfile",
        "keep.txt",
        "logs/keep.log",
    ]


def test_a_dockerfile_specific_ignore_file_only_where_asked(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    (ctx / "Dockerfile.dockerignore").write_text("keep.txt\n")
    buildkit = load_build_files(ctx, None).context.entries
    classic = load_build_files(ctx, None, dockerfile_ignore=False).context.entries
    assert "keep.txt" not in buildkit and "logs/a.log" in buildkit
    assert "keep.txt" in classic and "logs/a.log" not in classic


def test_a_relative_dockerfile_is_read_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _context(tmp_path)
    (tmp_path / "elsewhere.Dockerfile").write_text("FROM y\n")
    monkeypatch.chdir(tmp_path)
    files = load_build_files(ctx, "elsewhere.Dockerfile")
    assert files.dockerfile == Path("elsewhere.Dockerfile") and files.text == "FROM y\n"


def test_what_cannot_be_read_is_one_context_error(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="is not a directory"):
        load_build_files(tmp_path / "missing", None)
    ctx = _context(tmp_path)
    with pytest.raises(ContextError, match=f"cannot read Dockerfile {ctx}/nope"):
        load_build_files(ctx, ctx / "nope")
