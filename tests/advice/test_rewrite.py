"""Rewrites as line edits, and diffs that ``patch -p0`` applies byte for byte."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lamina.core.advice.rewrite import Edit, apply, compatible, unified_diff

TEXT = "FROM busybox\n# a comment\nRUN a\nRUN b\nCOPY . /app\n"


def test_edits_replace_whole_lines_and_leave_the_rest_as_written() -> None:
    moved = apply(TEXT, [Edit(3, 5, ("COPY . /app\n", "RUN a\n", "RUN b\n"))])
    assert moved == "FROM busybox\n# a comment\nCOPY . /app\nRUN a\nRUN b\n"
    assert apply(TEXT, [Edit(2, 2, ())]) == "FROM busybox\nRUN a\nRUN b\nCOPY . /app\n"


def test_an_edit_overlapping_an_earlier_one_is_left_out() -> None:
    first, second, third = Edit(3, 4, ("RUN ab\n",)), Edit(4, 5, ("x\n",)), Edit(5, 5, ("y\n",))
    assert compatible([first, second, third]) == [first, third]
    assert apply(TEXT, [first, second, third]) == "FROM busybox\n# a comment\nRUN ab\ny\n"


@pytest.mark.parametrize("text", [TEXT, TEXT.rstrip("\n")])
def test_the_diff_applies_with_patch_p0(tmp_path: Path, text: str) -> None:
    (tmp_path / "Dockerfile").write_text(text)
    new = apply(text, [Edit(4, 5, ("RUN b && c\n",))])
    diff = unified_diff(text, new, "Dockerfile")
    assert diff.startswith("--- Dockerfile\n+++ Dockerfile\n@@ ")
    if not text.endswith("\n"):
        assert "\\ No newline at end of file" in diff
    done = subprocess.run(
        ["patch", "-p0", "--batch"], input=diff, text=True, capture_output=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "Dockerfile").read_text() == new


def test_a_diff_can_create_a_file(tmp_path: Path) -> None:
    diff = unified_diff("", ".git\n", "ctx/.dockerignore", new_file=True)
    (tmp_path / "ctx").mkdir()
    done = subprocess.run(
        ["patch", "-p0", "--batch"], input=diff, text=True, capture_output=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "ctx" / ".dockerignore").read_text() == ".git\n"
    assert unified_diff("same\n", "same\n", "x") == ""
