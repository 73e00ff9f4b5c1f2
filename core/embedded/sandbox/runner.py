"""RUN in an isolated root filesystem: overlayfs plus mount, PID, UTS, IPC (and net) namespaces.

``run(spec)`` mounts the layers of ``spec.lowerdirs`` under an empty ``spec.upper``,
runs ``spec.argv`` inside, and leaves in ``spec.upper`` exactly what the command
changed, in the layer format of docs/architecture.md (whiteouts as 0:0 character
devices, opaque directories by xattr).

How, and why this way:

* lamina may be a threaded program (the Textual app runs builds in worker threads), so
  it never forks itself: it starts a fresh, single-threaded interpreter on
  ``child.py`` (stdlib only, ``python -I -S``), which calls ``unshare`` through ctypes
  (Python 3.11 has no ``os.unshare``). That monitor mounts a private tmpfs holding the
  *init* layer (empty ``/proc``, ``/dev``, ``/sys``, ``/etc/hosts``,
  ``/etc/resolv.conf``, ``/etc/hostname`` mountpoints, like Docker's ``-init`` layer)
  and short symlinks to every layer, so the overlay option string stays short for any
  number of layers, then mounts the overlay.
* It forks PID 1 of the new PID namespace, which takes its own mount namespace, mounts
  ``/proc``, a minimal ``/dev`` (host device nodes bind-mounted, devpts, shm),
  read-only ``/sys``, read-only ``/etc`` binds, then ``pivot_root`` and detaches the old
  root: no host path stays reachable. It forks the command (new session, Docker's
  default capability bounding set, the resolved user, the working directory) and reaps
  every child until the command exits.
* Cancel: the monitor gets SIGTERM and SIGKILLs PID 1; the kernel then kills every
  process of the namespace. If lamina dies, ``PR_SET_PDEATHSIG`` does the same.
* Without root, the monitor first enters a user namespace mapping the caller to 0 and
  mounts the overlay with ``userxattr``; only uid 0 exists inside then.
* Afterwards :func:`normalize_upper` strips overlay's private xattrs (origin, impure,
  ...), writes the opaque marker under both ``trusted.`` and ``user.`` where it may,
  and gives each whiteout its own inode; the work dir is emptied.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import selectors
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lamina.core.embedded.sandbox import cgroup
from lamina.core.embedded.sandbox.profile import capability_numbers, seccomp_rules
from lamina.core.embedded.store import beneath
from lamina.core.errors import BuildError, SandboxUnavailable

log = logging.getLogger(__name__)

CHILD = Path(__file__).with_name("child.py")
NETWORKS = ("host", "none")
# How long a cancelled monitor may take to tear its namespace down before SIGKILL.
KILL_GRACE = 5.0
OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")
# Processes (and threads) one RUN may have at once: Podman's default pids_limit. Docker
# sets none by default; a build needing more is rare, a fork bomb is stopped here.
DEFAULT_PIDS_LIMIT = 2048


@dataclass(frozen=True)
class MountSpec:
    """One extra mount inside the RUN's filesystem (``RUN --mount``).

    Attributes:
        target: absolute path inside the sandbox; created (a directory, or an empty
            file for a file ``source``) when missing, and left in the layer as BuildKit
            leaves its mount points.
        source: the host path bound there; None for a tmpfs.
        readonly: bound read-only.
        size: tmpfs size in bytes (0: the kernel's default).
    """

    target: str
    source: Path | None = None
    readonly: bool = False
    size: int = 0


@dataclass(frozen=True)
class RunSpec:
    """One RUN step.

    Attributes:
        lowerdirs: layer diff dirs, top first (overlayfs lowerdir order); empty for
            ``FROM scratch``.
        upper: an empty dir; afterwards it holds exactly what the command changed.
        work: an empty dir on the same filesystem as ``upper`` (overlay workdir).
        argv: the command in exec form.
        env: ``K=V`` strings, the process environment (``HOME`` is added from the
            user's passwd entry when absent, as runc does).
        cwd: absolute working directory, created if missing (like WORKDIR).
        user: "", "name", "uid", "uid:gid" or "name:group", resolved in the rootfs.
        network: "host" shares the host network, "none" gets only loopback.
        hostname: the sandbox's hostname (and /etc/hostname).
        mounts: binds and tmpfs mounts on top of the root filesystem, in order.
        pids_limit: the most processes the command may have at once (0: no limit).
    """

    lowerdirs: tuple[Path, ...]
    upper: Path
    work: Path
    argv: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str = "/"
    user: str = ""
    network: str = "host"
    hostname: str = "lamina"
    mounts: tuple[MountSpec, ...] = ()
    pids_limit: int = DEFAULT_PIDS_LIMIT


def _read_sysctl(proc: Path, name: str) -> str | None:
    try:
        return (proc / "sys" / name.replace(".", "/")).read_text().strip()
    except OSError:
        return None


def availability_problem(proc: Path = Path("/proc"), euid: int | None = None) -> str | None:
    """Why RUN cannot be isolated here from the kernel settings alone, or None.

    Args:
        proc: where procfs is mounted (a directory of the same shape in tests).
        euid: the effective uid to judge for (default: this process's).

    Returns:
        A one-line reason, or None when nothing in the settings forbids it.
    """
    uid = os.geteuid() if euid is None else euid
    # overlayfs itself is left to the live probe: the module may load on first mount.
    if uid == 0:
        return None
    prefix = "RUN needs root or unprivileged user namespaces"
    for name, bad in (
        ("kernel.unprivileged_userns_clone", "0"),
        ("user.max_user_namespaces", "0"),
        ("kernel.apparmor_restrict_unprivileged_userns", "1"),
    ):
        if _read_sysctl(proc, name) == bad:
            return f"{prefix}: {name}={bad}"
    return None


@functools.lru_cache(maxsize=1)
def _probe() -> str | None:
    """Live check: can a process here unshare, mount a tmpfs and an overlay?"""
    scratch = tempfile.mkdtemp(prefix="lamina-probe-")
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-S", str(CHILD), "--probe", scratch],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sandbox probe could not start: {exc}"
    finally:
        try:
            os.rmdir(scratch)
        except OSError:
            pass
    lines = proc.stdout.strip().splitlines()
    answer = lines[-1] if lines else (proc.stderr.strip().splitlines() or ["no answer"])[-1]
    return None if answer == "ok" else answer


def check_available() -> None:
    """Raise SandboxUnavailable (one line) if RUN cannot be isolated here.

    Raises:
        SandboxUnavailable: no root and no usable user namespaces, no overlayfs, or
            namespaces refused (e.g. inside an unprivileged container).
    """
    reason = availability_problem()
    if reason is not None:
        raise SandboxUnavailable(reason)
    failure = _probe()
    if failure is not None:
        who = "as root" if os.geteuid() == 0 else "without root (user namespaces)"
        raise SandboxUnavailable(f"RUN cannot be isolated {who}: {failure}")


def _validate(spec: RunSpec) -> None:
    if not spec.argv:
        raise BuildError("RUN: empty command")
    if spec.network not in NETWORKS:
        raise BuildError(f"RUN: unknown network mode {spec.network!r} (host or none)")
    if not spec.cwd.startswith("/"):
        raise BuildError(f"RUN: working directory {spec.cwd!r} is not absolute")
    for item in spec.env:
        if "=" not in item or "\0" in item:
            raise BuildError(f"RUN: malformed environment entry {item!r} (want K=V)")
    for arg in spec.argv:
        if "\0" in arg:
            raise BuildError("RUN: a command argument contains a NUL byte")
    for lower in spec.lowerdirs:
        if not lower.is_dir():
            raise BuildError(f"RUN: layer directory {lower} does not exist")
    for m in spec.mounts:
        if not m.target.startswith("/") or "\0" in m.target:
            raise BuildError(f"RUN: mount target {m.target!r} is not absolute")
        if m.source is not None and not m.source.exists():
            raise BuildError(f"RUN: mount source {m.source} does not exist")
    for name, path in (("upper", spec.upper), ("work", spec.work)):
        if not path.is_dir():
            raise BuildError(f"RUN: {name} directory {path} does not exist")
        if any(path.iterdir()):
            raise BuildError(f"RUN: {name} directory {path} is not empty")
    if spec.upper.stat().st_dev != spec.work.stat().st_dev:
        raise BuildError(f"RUN: {spec.upper} and {spec.work} are on different filesystems")


def _prepare_upper_root(spec: RunSpec) -> None:
    """Give the upper dir the lower root's mode: the merged "/" takes the upper's."""
    st: os.stat_result | None = None
    for lower in spec.lowerdirs:
        try:
            st = lower.lstat()
            break
        except OSError:
            continue
    mode = stat.S_IMODE(st.st_mode) if st else 0o755
    os.chmod(spec.upper, mode)
    if os.geteuid() == 0:
        os.chown(spec.upper, st.st_uid if st else 0, st.st_gid if st else 0)


class _Lines:
    """Splits a byte stream into lines for on_output (LF ends a line; CR LF too)."""

    def __init__(self, sink: Callable[[str], None] | None) -> None:
        self.sink = sink
        self.buffer = b""

    def feed(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self._emit(line)

    def close(self) -> None:
        if self.buffer:
            self._emit(self.buffer)
            self.buffer = b""

    def _emit(self, raw: bytes) -> None:
        if self.sink is not None:
            self.sink(raw.removesuffix(b"\r").decode("utf-8", errors="replace"))


def run(
    spec: RunSpec,
    on_output: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> int:
    """Run one command in the sandbox and return its exit status.

    Args:
        spec: what to run and on which layers.
        on_output: called with each output line (stdout and stderr merged, in order,
            without the newline), from the calling thread.
        cancel: when set, the whole sandbox is killed within moments.

    Returns:
        The command's exit status; 128 + signal number if it was killed (137 when
        cancelled).

    Raises:
        SandboxUnavailable: RUN cannot be isolated on this machine.
        BuildError: a bad spec, a failed sandbox step, an unknown user, or a command
            that cannot be executed (names the step).
    """
    check_available()
    _validate(spec)
    _prepare_upper_root(spec)
    userns = os.geteuid() != 0
    scratch = Path(tempfile.mkdtemp(prefix="lamina-run-"))
    group = cgroup.create(spec.pids_limit) if spec.pids_limit else None
    job = {
        "lowerdirs": [str(Path(p).absolute()) for p in spec.lowerdirs],
        "upper": str(spec.upper.absolute()),
        "work": str(spec.work.absolute()),
        "argv": list(spec.argv),
        "env": list(spec.env),
        "cwd": spec.cwd,
        "user": spec.user,
        "network": spec.network,
        "hostname": spec.hostname,
        "mounts": [
            {
                "target": m.target,
                "source": None if m.source is None else str(m.source.absolute()),
                "readonly": m.readonly,
                "size": m.size,
            }
            for m in spec.mounts
        ],
        "scratch": str(scratch),
        "userns": userns,
        "uid": os.geteuid(),
        "gid": os.getegid(),
        "caps": capability_numbers(),
        "seccomp": seccomp_rules(),
        "pids_limit": spec.pids_limit,
        "cgroup": None if group is None else str(group),
    }
    ctl_read, ctl_write = os.pipe()
    messages: list[dict[str, object]] = []
    try:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(CHILD), str(ctl_write), str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(ctl_write,),
                start_new_session=True,
            )
        except OSError as exc:
            raise SandboxUnavailable(f"cannot start the sandbox: {exc.strerror}") from exc
        finally:
            os.close(ctl_write)
        try:
            _talk(proc, json.dumps(job).encode(), ctl_read, messages, on_output, cancel)
        finally:
            if proc.poll() is None:
                _stop(proc)
    finally:
        os.close(ctl_read)
        if group is not None:
            cgroup.remove(group)
        _clear_dir(spec.work)
        try:
            normalize_upper(spec.upper)
        except OSError as exc:
            log.warning("could not normalize upper dir %s: %s", spec.upper, exc)
        try:
            scratch.rmdir()
        except FileNotFoundError:
            pass  # the monitor removed it
        except OSError:
            log.warning("sandbox scratch dir %s left behind", scratch)
    for message in messages:
        if "warning" in message:
            log.warning("%s", message["warning"])
        if "error" in message:
            text = str(message["error"])
            if message.get("kind") == "unavailable":
                raise SandboxUnavailable(f"RUN cannot be isolated: {text}")
            raise BuildError(f"RUN {_show(spec.argv)}: {text}")
    status: int | None = None
    for message in messages:
        if "exit" in message:
            status = int(str(message["exit"]))
    if status is None:
        code = proc.returncode
        status = 128 - code if code < 0 else 128 + signal.SIGKILL
        if not (cancel is not None and cancel.is_set()):
            raise BuildError(f"RUN {_show(spec.argv)}: the sandbox ended without a status ({code})")
    return status


def _show(argv: tuple[str, ...]) -> str:
    text = " ".join(argv)
    return text if len(text) <= 60 else text[:57] + "..."


def _talk(
    proc: subprocess.Popen[bytes],
    job: bytes,
    ctl_read: int,
    messages: list[dict[str, object]],
    on_output: Callable[[str], None] | None,
    cancel: threading.Event | None,
) -> None:
    """Send the job, pump output and control lines until both pipes close."""
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(job)
        proc.stdin.close()
    except BrokenPipeError:
        pass  # the monitor died at once; its control message or exit code says why
    lines = _Lines(on_output)
    ctl_buffer = b""
    out_fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(out_fd, selectors.EVENT_READ, "out")
    sel.register(ctl_read, selectors.EVENT_READ, "ctl")
    open_fds = 2
    stop_sent = 0.0
    try:
        while open_fds:
            if cancel is not None and cancel.is_set() and not stop_sent:
                stop_sent = time.monotonic()
                _signal(proc, signal.SIGTERM)
            if stop_sent and time.monotonic() - stop_sent > KILL_GRACE:
                _signal(proc, signal.SIGKILL)
            for key, _ in sel.select(timeout=0.1):
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fd)
                    open_fds -= 1
                    continue
                if key.data == "out":
                    lines.feed(data)
                else:
                    ctl_buffer += data
    finally:
        sel.close()
        lines.close()
    for raw in ctl_buffer.splitlines():
        try:
            message = json.loads(raw)
        except ValueError:
            continue
        if isinstance(message, dict):
            messages.append(message)
    proc.wait()


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Tear a still-running monitor down (lamina is unwinding)."""
    _signal(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=KILL_GRACE)
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGKILL)
        proc.wait()


def _clear_dir(path: Path) -> None:
    """Remove everything in ``path`` (overlay leaves ``work/work`` with mode 000).

    ``beneath.remove_path`` opens what it cannot read, and removes a tree of any depth
    without recursion.
    """
    try:
        entries = list(path.iterdir())
    except OSError:
        return
    for entry in entries:
        try:
            beneath.remove_path(entry)
        except OSError as exc:
            log.warning("could not clean overlay work dir %s: %s", entry, exc)


def _overlay_xattrs(path: str) -> list[str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []
    return [n for n in names if n.startswith(OVERLAY_XATTR_PREFIXES)]


def normalize_upper(upper: Path) -> None:
    """Turn an overlay upper dir into a clean layer dir, in place.

    Removes overlay's private xattrs (``origin``, ``impure``, ``redirect``, ...) under
    both ``trusted.overlay.`` and ``user.overlay.``; an opaque directory keeps
    ``opaque=y`` under both prefixes (``trusted.`` only when root). A whiteout sharing
    its inode with others (overlay links one whiteout many times) gets its own.

    Args:
        upper: the upper dir after the overlay is unmounted.
    """
    privileged = os.geteuid() == 0
    stack = [str(upper)]
    while stack:
        current = stack.pop()
        _normalize_entry(current, True, privileged)
        with os.scandir(current) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    _normalize_entry(entry.path, False, privileged)


def _normalize_entry(path: str, is_dir: bool, privileged: bool) -> None:
    opaque = False
    for name in _overlay_xattrs(path):
        suffix = name.split(".", 2)[2]
        if suffix == "opaque" and is_dir:
            try:
                opaque = opaque or os.getxattr(path, name, follow_symlinks=False) == b"y"
            except OSError:
                pass
        try:
            os.removexattr(path, name, follow_symlinks=False)
        except OSError as exc:
            log.warning("cannot remove xattr %s from %s: %s", name, path, exc)
    if opaque:
        prefixes = ("trusted.overlay.", "user.overlay.") if privileged else ("user.overlay.",)
        for prefix in prefixes:
            os.setxattr(path, prefix + "opaque", b"y", follow_symlinks=False)
        return
    if is_dir:
        return
    st = os.lstat(path)
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0 and st.st_nlink > 1:
        tmp = path + ".lamina-wh"
        os.mknod(tmp, stat.S_IFCHR | stat.S_IMODE(st.st_mode), 0)
        os.replace(tmp, path)
