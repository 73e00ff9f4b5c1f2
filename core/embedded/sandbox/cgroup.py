"""A pids cgroup per RUN: the limit on how many processes a command may have at once.

Docker and BuildKit put each container in its own cgroup and can set ``pids.max``
there; lamina does the same with whichever hierarchy holds the pids controller:

* cgroup v2: a child of lamina's own cgroup, when that cgroup delegates ``pids`` to its
  children (``cgroup.subtree_control``). lamina never changes the host's delegation.
* cgroup v1: a child of lamina's cgroup in the ``pids`` hierarchy.

Where neither can be written (no root, no delegation), ``child.py`` falls back to
``RLIMIT_NPROC`` inside its user namespace, where the kernel counts exactly the
sandbox's processes; as root without a usable cgroup there is no limit (the kernel
does not apply ``RLIMIT_NPROC`` to root), and :func:`create` says why in the log.

Cgroups are named ``lamina-run-<pid>-<random>``; one whose lamina process is gone (a
``kill -9``) is removed by the next RUN that creates one next to it.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "lamina-run-"


def _mounts(mountinfo: str) -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, fstype, super options) of each cgroup mount."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 4 or fields[sep + 1] not in ("cgroup", "cgroup2"):
            continue
        point = fields[4].replace("\\040", " ")
        found.append((fields[3], point, fields[sep + 1], set(fields[sep + 3].split(","))))
    return found


def pids_parent(
    proc_cgroup: str | None = None, mountinfo: str | None = None
) -> tuple[Path | None, str]:
    """Where a RUN's pids cgroup can be made, or None and why not.

    Args:
        proc_cgroup: the contents of ``/proc/self/cgroup`` (default: read it).
        mountinfo: the contents of ``/proc/self/mountinfo`` (default: read it).

    Returns:
        ``(directory, "")`` or ``(None, reason)``.
    """
    try:
        proc_cgroup = proc_cgroup if proc_cgroup is not None else _read("/proc/self/cgroup")
        mountinfo = mountinfo if mountinfo is not None else _read("/proc/self/mountinfo")
    except OSError as exc:
        return None, f"cannot read the process's cgroups: {exc.strerror}"
    mounts = _mounts(mountinfo)
    for line in proc_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not hierarchy:
            continue
        if controllers == "" and hierarchy == "0":
            for root, point, fstype, _ in mounts:
                if fstype != "cgroup2":
                    continue
                here = _inside(point, root, path)
                if here is not None and "pids" in _read_quiet(here / "cgroup.subtree_control"):
                    return here, ""
        elif "pids" in controllers.split(","):
            for root, point, fstype, options in mounts:
                if fstype == "cgroup" and "pids" in options:
                    here = _inside(point, root, path)
                    if here is not None:
                        return here, ""
    return None, "no pids controller is delegated to lamina's cgroup"


def _inside(point: str, root: str, path: str) -> Path | None:
    """The directory of cgroup ``path`` under a mount of the hierarchy at ``root``."""
    if root != "/" and not (path == root or path.startswith(root.rstrip("/") + "/")):
        return None
    rel = path[len(root) :] if root != "/" else path
    here = Path(point) / rel.lstrip("/")
    return here if here.is_dir() else None


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _read_quiet(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def create(limit: int) -> Path | None:
    """A fresh pids cgroup allowing ``limit`` processes, or None where none can be made.

    Args:
        limit: the most processes (and threads) the RUN may have at once.

    Returns:
        The cgroup's directory; the monitor joins it, :func:`remove` deletes it.
    """
    parent, reason = pids_parent()
    if parent is None:
        log.debug("RUN without a pids cgroup: %s", reason)
        return None
    _sweep(parent)
    path = parent / f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        path.mkdir()
    except OSError as exc:
        log.debug("RUN without a pids cgroup: %s: %s", path, exc.strerror)
        return None
    try:
        (path / "pids.max").write_text(f"{limit}\n")
    except OSError as exc:
        log.debug("RUN without a pids cgroup: %s/pids.max: %s", path, exc.strerror)
        remove(path)
        return None
    return path


def remove(path: Path, wait: float = 2.0) -> None:
    """Delete a RUN's cgroup once its processes are gone (they may take a moment)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if time.monotonic() >= deadline:
                log.warning("cgroup %s left behind: %s", path, exc.strerror)
                return
            time.sleep(0.02)


def _sweep(parent: Path) -> None:
    """Remove the cgroups of lamina processes that died before removing theirs."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        owner = entry.name[len(PREFIX) :].split("-", 1)[0]
        if not owner.isdigit() or _alive(int(owner)):
            continue
        try:
            entry.rmdir()
        except OSError:
            pass  # still has processes; a later sweep gets it


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
