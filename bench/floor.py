"""The floor of a fully cached rebuild, and what a store occupies on disk.

A cached rebuild cannot take less than starting Python and looking at every file of
the context once: the floor is exactly that, a child process of the interpreter lamina
runs on (site and all) that walks the context with ``os.scandir`` and ``lstat``s each
entry, as lamina's own walk does, and reads nothing. It is measured in the same run as
the builds, next to them.

``disk_bytes`` is what a store occupies: ``st_blocks * 512`` of every entry below it,
each inode once (``du`` counts hard links so too), so files that layers share by
hardlink count once.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from bench.measure import ChildResult, run_child

# What a cached rebuild must do at the least: start, then lstat every path once.
WALK = """\
import os, sys
stack = [sys.argv[1]]
n = 0
while stack:
    top = stack.pop()
    with os.scandir(top) as it:
        for entry in it:
            st = entry.stat(follow_symlinks=False)
            n += 1
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
print(n)
"""


def measure_floor(context: Path) -> ChildResult:
    """Runs the floor once: Python start-up plus one stat walk of ``context``.

    Returns:
        The child's result (its output is the number of entries walked).
    """
    return run_child([sys.executable, "-c", WALK, str(context)]).check("the floor's walk")


def disk_bytes(root: Path) -> int:
    """Bytes ``root`` occupies on disk: blocks of every entry, each inode once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    try:
        top = os.lstat(root)
    except FileNotFoundError:
        return 0
    total += top.st_blocks * 512
    stack = [str(root)] if stat.S_ISDIR(top.st_mode) else []
    while stack:
        base = stack.pop()
        try:
            entries = list(os.scandir(base))
        except OSError:
            continue  # vanished meanwhile (a daemon's scratch directories)
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
    return total
