"""Reading a root filesystem across a chain of layer directories, without mounting.

The layers are overlay-format ``diff/`` directories, top first: a 0:0 character device
hides the path below it, an opaque directory hides everything below it in lower layers,
and a non-directory hides whatever lower layers hold beneath its path. This is what
COPY needs to find ``/etc/passwd`` for ``--chown``, to copy ``--from`` another stage,
and to know whether a destination already exists as a directory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from lamina.core.embedded.store.layers import LayerStore, is_opaque, is_whiteout
from lamina.core.errors import BuildError

_MAX_LINKS = 40


def split(path: str) -> list[str]:
    """The components of an in-container path, ``.`` and empty parts dropped, ``..``
    resolved lexically (never above the root)."""
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        out.append(part)
    return out


class RootFS:
    """A read-only merged view of layer directories.

    Args:
        layers: the ``diff/`` directories, top layer first (an empty list is ``scratch``).
    """

    def __init__(self, layers: list[Path]) -> None:
        self.layers = layers

    def _contributors(self, parts: list[str]) -> list[tuple[Path, os.stat_result]]:
        """The on-disk entries that make up ``parts`` in the merged view, top first."""
        out: list[tuple[Path, os.stat_result]] = []
        for layer in self.layers:
            cur = layer
            found = True
            stop_after = False
            for i, part in enumerate(parts):
                cur = cur / part
                try:
                    st = os.lstat(cur)
                except FileNotFoundError:
                    found = False
                    break
                except OSError as exc:
                    raise BuildError(f"cannot read layer path {cur}: {exc.strerror}") from exc
                if is_whiteout(st):
                    return out
                if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
                    return out
                if stat.S_ISDIR(st.st_mode) and is_opaque(cur):
                    stop_after = True
            if found:
                st = os.lstat(cur)
                if out and stat.S_ISDIR(out[0][1].st_mode) and not stat.S_ISDIR(st.st_mode):
                    return out
                out.append((cur, st))
                if not stat.S_ISDIR(st.st_mode):
                    return out
            if stop_after:
                return out
        return out

    def lstat(self, path: str) -> tuple[Path, os.stat_result] | None:
        """Where ``path`` lives on disk and its ``lstat``, without following a final
        symlink (intermediate symlinks are followed inside the root)."""
        parts = self._resolve_parents(split(path))
        if parts is None:
            return None
        if not parts:
            if not self.layers:
                return None
            return self.layers[0], os.lstat(self.layers[0])
        entries = self._contributors(parts)
        return entries[0] if entries else None

    def stat(self, path: str) -> tuple[Path, os.stat_result] | None:
        """Like :meth:`lstat` but following a final symlink inside the root."""
        parts = split(path)
        for _ in range(_MAX_LINKS):
            resolved = self._resolve_parents(parts)
            if resolved is None:
                return None
            hit = self.lstat("/".join(resolved)) if resolved else self.lstat("/")
            if hit is None or not stat.S_ISLNK(hit[1].st_mode):
                return hit
            target = os.readlink(hit[0])
            base = [] if target.startswith("/") else resolved[:-1]
            parts = split("/".join(base + [target]))
        return None

    def _resolve_parents(self, parts: list[str]) -> list[str] | None:
        """``parts`` with symlinks among its parent directories resolved."""
        hops = 0
        done: list[str] = []
        rest = list(parts)
        while len(rest) > 1:
            part = rest.pop(0)
            entries = self._contributors(done + [part])
            if not entries:
                return done + [part] + rest
            disk, st = entries[0]
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_LINKS:
                    return None
                target = os.readlink(disk)
                base = [] if target.startswith("/") else done
                combined = split("/".join(base + [target]))
                done = []
                rest = combined + rest
                continue
            done.append(part)
        return done + rest

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists (a dangling final symlink counts)."""
        return self.lstat(path) is not None

    def is_dir(self, path: str) -> bool:
        """Whether ``path`` is a directory, following symlinks."""
        hit = self.stat(path)
        return hit is not None and stat.S_ISDIR(hit[1].st_mode)

    def listdir(self, path: str) -> list[str]:
        """The names in directory ``path`` of the merged view, sorted."""
        resolved = self.stat(path)
        if resolved is None or not stat.S_ISDIR(resolved[1].st_mode):
            return []
        parts = self._canonical(path)
        seen: dict[str, bool] = {}
        for disk, st in self._contributors(parts) if parts else self._root_contributors():
            if not stat.S_ISDIR(st.st_mode):
                break
            for name in os.listdir(disk):
                if name in seen:
                    continue
                seen[name] = not is_whiteout(os.lstat(disk / name))
        return sorted(n for n, visible in seen.items() if visible)

    def _root_contributors(self) -> list[tuple[Path, os.stat_result]]:
        out = []
        for layer in self.layers:
            out.append((layer, os.lstat(layer)))
            if is_opaque(layer):
                break
        return out

    def _canonical(self, path: str) -> list[str]:
        parts = split(path)
        for _ in range(_MAX_LINKS):
            resolved = self._resolve_parents(parts)
            if resolved is None:
                return parts
            hit = self._contributors(resolved) if resolved else []
            if not hit or not stat.S_ISLNK(hit[0][1].st_mode):
                return resolved
            target = os.readlink(hit[0][0])
            base = [] if target.startswith("/") else resolved[:-1]
            parts = split("/".join(base + [target]))
        return parts

    def walk(self, path: str) -> Iterator[tuple[str, Path, os.stat_result]]:
        """Every entry below directory ``path`` (depth first, sorted), as (path relative
        to ``path``, on-disk location, lstat)."""
        base = self._canonical(path)
        stack = [""]
        while stack:
            rel = stack.pop()
            names = self.listdir("/" + "/".join(base + split(rel)))
            children = []
            for name in names:
                child = f"{rel}/{name}" if rel else name
                hit = self._contributors(base + split(child))
                if not hit:
                    continue
                disk, st = hit[0]
                children.append(child)
                yield child, disk, st
            for child in reversed(children):
                hit = self._contributors(base + split(child))
                if hit and stat.S_ISDIR(hit[0][1].st_mode):
                    stack.append(child)

    def read_file(self, path: str) -> bytes | None:
        """The content of a regular file (symlinks followed), or None."""
        hit = self.stat(path)
        if hit is None or not stat.S_ISREG(hit[1].st_mode):
            return None
        try:
            return hit[0].read_bytes()
        except OSError as exc:
            raise BuildError(f"cannot read {path} in the image: {exc.strerror}") from exc


def layer_stack(layers: LayerStore, top: str | None) -> RootFS:
    """The root filesystem of the stack whose top layer is ``top`` (None is ``scratch``).

    Raises:
        NotFound: if a layer of the chain is missing.
    """
    if top is None:
        return RootFS([])
    return RootFS([layers.diff_path(layer.chain_id) for layer in reversed(layers.chain(top))])


_MAX_ID = (1 << 32) - 1


def numeric_id(text: str) -> int | None:
    """``text`` as a uid or gid, as BuildKit reads one (``strconv.ParseUint(s, 10, 32)``:
    ASCII digits, at most 2³² − 1), or None when it is not one, and so a name."""
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= _MAX_ID else None


def lookup_user(root: RootFS, user: str) -> tuple[int, int | None]:
    """Resolves a user name or id to ``(uid, primary gid)`` through the root's
    ``/etc/passwd``; a numeric id not listed there has no known primary group.

    Raises:
        BuildError: a name (or a number too large to be an id) that is not listed.
    """
    uid = numeric_id(user)
    if uid is not None:
        for fields in _entries(root, "/etc/passwd"):
            if len(fields) > 3 and numeric_id(fields[2]) == uid:
                return uid, numeric_id(fields[3])
        return uid, None
    for fields in _entries(root, "/etc/passwd"):
        if fields[0] == user and len(fields) > 3 and (found := numeric_id(fields[2])) is not None:
            return found, numeric_id(fields[3])
    raise BuildError(f"unknown user {user!r} (not in the image's /etc/passwd)")


def lookup_group(root: RootFS, group: str) -> int:
    """Resolves a group name or id through the root's ``/etc/group``.

    Raises:
        BuildError: a name (or a number too large to be an id) that is not listed.
    """
    gid = numeric_id(group)
    if gid is not None:
        return gid
    for fields in _entries(root, "/etc/group"):
        if fields[0] == group and len(fields) > 2 and (found := numeric_id(fields[2])) is not None:
            return found
    raise BuildError(f"unknown group {group!r} (not in the image's /etc/group)")


def _entries(root: RootFS, path: str) -> list[list[str]]:
    data = root.read_file(path)
    if data is None:
        return []
    return [
        line.split(":")
        for line in data.decode("utf-8", "replace").splitlines()
        if line and not line.startswith("#")
    ]


def join(workdir: str, path: str) -> str:
    """An in-container path made absolute against ``workdir`` (a trailing ``/`` kept)."""
    trailing = path.endswith(("/", "/.")) or path == "."
    full = str(PurePosixPath("/") / workdir / path) if not path.startswith("/") else path
    parts = split(full)
    out = "/" + "/".join(parts)
    if trailing and out != "/":
        out += "/"
    return out
