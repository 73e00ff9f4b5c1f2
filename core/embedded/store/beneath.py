"""File operations on paths inside one directory tree that never resolve a symlink.

An archive may define a path as a directory and later redefine it as a symlink to
anywhere (``d/`` then ``d -> /etc/shadow``). Any call that takes a path and follows
symlinks (``os.chmod``, ``os.chown``, ``open``) would then act on the host. Everything
here walks from a directory file descriptor one component at a time with
``O_NOFOLLOW``, so a symlink anywhere on the way stops the walk instead of leaving the
tree: the same guarantee as ``openat2(RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH)``, which
Python does not expose.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# errnos meaning "a component is not a plain directory": a symlink, a file, or gone.
_NOT_A_DIR = (errno.ELOOP, errno.ENOTDIR, errno.ENOENT)


class EscapeRefused(Exception):
    """A path whose resolution would cross a symlink or a non-directory, or climb out.

    ``str(exc)`` is one line naming the path.
    """


def split_rel(rel: str) -> list[str]:
    """The components of a relative path (``""`` is the root itself)."""
    return [p for p in rel.split("/") if p not in ("", ".")]


def open_dir(root_fd: int, rel: str, *, create: bool = False, mode: int = 0o755) -> int:
    """Opens the directory ``rel`` below ``root_fd`` without following any symlink.

    Args:
        root_fd: an open directory.
        rel: a path relative to it (``..`` is refused).
        create: make missing components (with ``mode``) instead of failing.
        mode: the mode of created components.

    Returns:
        A new file descriptor of the directory; the caller closes it.

    Raises:
        EscapeRefused: a component is a symlink, is not a directory, or is ``..``.
        FileNotFoundError: a component is missing and ``create`` is False.
    """
    fd = os.dup(root_fd)
    try:
        for part in split_rel(rel):
            if part == "..":
                raise EscapeRefused(f"{rel}: path climbs out ('..')")
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, mode, dir_fd=fd)
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise EscapeRefused(
                        f"{rel}: a component is a symlink or not a directory"
                    ) from exc
                raise
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass(frozen=True)
class Meta:
    """Ownership, mode, times and extended attributes to give an entry."""

    uid: int
    gid: int
    mode: int
    mtime: float
    xattrs: Mapping[str, bytes] = field(default_factory=dict)


def apply_fd(fd: int, meta: Meta, where: str) -> None:
    """Applies ``meta`` to the open file or directory ``fd`` (never to a path).

    Args:
        fd: an open regular file or directory.
        meta: what to apply; a chown refused to a non-root user is skipped.
        where: names the entry in log messages.
    """
    try:
        os.fchown(fd, meta.uid, meta.gid)
    except PermissionError:
        log.debug("%s: cannot chown to %d:%d (not root)", where, meta.uid, meta.gid)
    for name, value in meta.xattrs.items():
        if ".overlay." in name:
            # overlayfs metadata (redirect, origin, opaque) must come from lamina, never
            # from an archive: a forged redirect could expose other paths.
            log.warning("%s: ignoring xattr %s from the archive", where, name)
            continue
        try:
            os.setxattr(fd, name, value)
        except OSError as exc:
            log.warning("%s: cannot set xattr %s: %s", where, name, exc.strerror)
    # chmod after chown: a chown clears the setuid and setgid bits.
    os.fchmod(fd, meta.mode & 0o7777)
    os.utime(fd, (meta.mtime, meta.mtime))


def apply_dir(root_fd: int, rel: str, meta: Meta) -> bool:
    """Applies ``meta`` to the directory ``rel`` below ``root_fd`` if it still is one.

    Returns:
        False when ``rel`` is no longer a directory reachable without a symlink (a later
        entry replaced it), in which case nothing is touched.
    """
    try:
        fd = open_dir(root_fd, rel)
    except EscapeRefused:
        return False
    except OSError as exc:
        if exc.errno in _NOT_A_DIR:
            return False
        raise
    try:
        apply_fd(fd, meta, rel or ".")
    finally:
        os.close(fd)
    return True


def apply_link(dir_fd: int, name: str, meta: Meta) -> None:
    """Owner and times of the symlink ``name`` in ``dir_fd`` (never its target)."""
    try:
        os.chown(name, meta.uid, meta.gid, dir_fd=dir_fd, follow_symlinks=False)
    except PermissionError:
        log.debug("%s: cannot chown to %d:%d (not root)", name, meta.uid, meta.gid)
    os.utime(name, (meta.mtime, meta.mtime), dir_fd=dir_fd, follow_symlinks=False)


def apply_node(dir_fd: int, name: str, meta: Meta) -> None:
    """Owner, mode and times of the FIFO or device node ``name`` in ``dir_fd``.

    The node was just made in a private staging directory, so nothing can have swapped
    it for a symlink; it is still refused if it is one (fchmodat cannot refuse to follow).
    """
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
        raise EscapeRefused(f"{name}: not a FIFO or device node")
    try:
        os.chown(name, meta.uid, meta.gid, dir_fd=dir_fd, follow_symlinks=False)
    except PermissionError:
        log.debug("%s: cannot chown to %d:%d (not root)", name, meta.uid, meta.gid)
    os.chmod(name, meta.mode & 0o7777, dir_fd=dir_fd)
    os.utime(name, (meta.mtime, meta.mtime), dir_fd=dir_fd, follow_symlinks=False)


def remove_at(dir_fd: int, name: str) -> None:
    """Removes whatever ``name`` is in ``dir_fd``; a directory goes with its contents.

    Iterative and bottom-up through one directory fd at a time (``..`` to climb), so
    neither the depth of the tree nor a symlink inside it can make it recurse, run out
    of file descriptors, or leave the tree. Each directory is listed once.

    Raises:
        OSError: what cannot be removed (the part removed so far stays removed).
    """
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    fd = _open_for_removal(dir_fd, name)
    names = [name]
    # Per level: the subdirectories still to remove.
    pending = [_unlink_files(fd)]
    try:
        while pending:
            if pending[-1]:
                sub = pending[-1].pop()
                child = _open_for_removal(fd, sub)
                os.close(fd)
                fd = child
                names.append(sub)
                pending.append(_unlink_files(fd))
                continue
            pending.pop()
            up = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = up
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)


def remove_path(path: Path) -> None:
    """``remove_at`` for a path: removes ``path`` (not following it if a symlink)."""
    parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        remove_at(parent, path.name)
    finally:
        os.close(parent)


def remove_quietly(path: Path) -> None:
    """``remove_path`` for cleanup: a failure is logged, never raised.

    What stays behind is a leftover under ``tmp/`` that the next prune sweeps.
    """
    try:
        remove_path(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("%s: cannot remove (%s); the next prune retries", path, exc.strerror or exc)


def _open_for_removal(dir_fd: int, name: str) -> int:
    try:
        return open_dir(dir_fd, name)
    except PermissionError:
        # A directory without read or search permission for its (non-root) owner.
        os.chmod(name, 0o700, dir_fd=dir_fd)
        return open_dir(dir_fd, name)


def _unlink_files(fd: int) -> list[str]:
    """Unlinks every non-directory in ``fd``; returns the subdirectories' names."""
    subdirs = []
    if os.geteuid() != 0:
        # A (non-root) owner needs write and search permission to empty a directory
        # that an archive or a RUN step left read-only.
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o700 != 0o700:
            os.fchmod(fd, mode | 0o700)
    with os.scandir(fd) as entries:
        listed = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    for entry_name, is_dir in listed:
        if is_dir:
            subdirs.append(entry_name)
        else:
            os.unlink(entry_name, dir_fd=fd)
    return subdirs


def open_root(path: Path) -> int:
    """Opens the top of a tree (which must itself be a real directory)."""
    return os.open(path, _DIR_FLAGS)
