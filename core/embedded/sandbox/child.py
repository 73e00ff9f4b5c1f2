"""The sandbox side of a RUN step: namespaces, the overlay root, and PID 1.

This file runs as its own program (``python -I -S child.py CTL_FD PARENT_PID``) in a
fresh, single-threaded interpreter started by ``runner.run``, and reads a JSON job on
stdin. It imports only the standard library, all of it up front: after ``pivot_root``
the host's Python library is no longer reachable, so a late import would fail.

Process tree::

    lamina (any threads)            runner.run: spawns the monitor, reads output, cancels
    └── monitor (this file)         unshare(mnt, pid, uts, ipc[, net][, user]), overlay
        └── init, PID 1             own mount ns: /proc, /dev, /sys, /etc binds, pivot_root
            └── command             setsid, capabilities, user, cwd, execve

Why a separate interpreter and not ``os.fork()`` in lamina itself: the builder runs in
a worker thread of a threaded program (the Textual app), and forking such a process
is only safe if the child execs at once; ``unshare(CLONE_NEWUSER)`` also refuses
multi-threaded callers. Why ctypes and not util-linux ``unshare(1)``: the steps
between unshare and exec (overlay option tricks, the init layer, binding /dev nodes,
pivot_root, reaping as PID 1, dropping capabilities, resolving the user inside the new
root) need code anyway, and ctypes on libc keeps it in one place with exact errors.

Control messages go to the parent on ``CTL_FD`` as JSON lines:
``{"error": "...", "kind": "build" | "unavailable"}`` and ``{"exit": N}``.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import platform
import resource
import signal
import socket
import stat
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# libseccomp's constants (seccomp.h).
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000
SCMP_CMP = {"ne": 1, "lt": 2, "le": 3, "eq": 4, "ge": 5, "gt": 6, "masked_eq": 7}
SCMP_FLTATR_CTL_NNP = 3
NR_SCMP_ERROR = -1

# pivot_root has no glibc wrapper; syscall numbers per architecture.
PIVOT_ROOT_NR = {
    "x86_64": 155,
    "aarch64": 41,
    "arm64": 41,
    "riscv64": 41,
    "loongarch64": 41,
    "armv7l": 218,
    "armv6l": 218,
    "i386": 217,
    "i686": 217,
    "ppc64le": 203,
    "ppc64": 203,
    "s390x": 217,
}

# Docker's default masked and read-only /proc and /sys paths.
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# Mountpoints the init layer provides so they never reach the upper dir.
INIT_DIRS = ("proc", "dev", "sys", "etc")
INIT_FILES = ("etc/hosts", "etc/resolv.conf", "etc/hostname")

# Filesystems the kernel refuses as an overlay upper (no d_type, xattrs or tmpfile).
UNFIT_UPPER_FS = frozenset({"overlay", "nfs", "nfs4", "fuse", "9p", "vfat", "exfat", "ecryptfs"})

NONE_HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


class SetupError(Exception):
    """A sandbox step that failed; ``kind`` is "build" or "unavailable"."""

    def __init__(self, message: str, kind: str = "build") -> None:
        super().__init__(message)
        self.kind = kind


# --- libc -------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]
_libc.syscall.restype = ctypes.c_long

# Loaded now: after pivot_root no host library can be found.
try:
    _seccomp: ctypes.CDLL | None = ctypes.CDLL("libseccomp.so.2", use_errno=True)
except OSError:
    _seccomp = None
if _seccomp is not None:
    _seccomp.seccomp_init.restype = ctypes.c_void_p
    _seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
    _seccomp.seccomp_release.argtypes = [ctypes.c_void_p]
    _seccomp.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    _seccomp.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    _seccomp.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    _seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    _seccomp.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    _seccomp.seccomp_load.argtypes = [ctypes.c_void_p]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


class _ArgCmp(ctypes.Structure):
    """libseccomp's ``struct scmp_arg_cmp``."""

    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


_libc.capget.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]
_libc.capset.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]
if _seccomp is not None:
    _seccomp.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def _check(ret: int, what: str, kind: str = "build") -> None:
    if ret == -1:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}", kind) from OSError(err, os.strerror(err))


def _errno_of(exc: SetupError) -> int:
    cause = exc.__cause__
    return cause.errno if isinstance(cause, OSError) and cause.errno else 0


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    """mount(2); raises SetupError naming the target."""
    ret = _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data))
    _check(ret, f"mount {fstype or source or ''} on {target}")


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_libc.umount2(_b(target), flags), f"umount {target}")


def unshare(flags: int) -> None:
    """unshare(2); a refusal means the machine cannot sandbox."""
    _check(_libc.unshare(flags), "unshare", "unavailable")


def prctl(option: int, arg: int) -> None:
    """prctl(2) with one argument."""
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl {option}")


def sethostname(name: str) -> None:
    """sethostname(2) in the new UTS namespace."""
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2) via syscall(2); raises SetupError if unknown here."""
    nr = PIVOT_ROOT_NR.get(platform.machine())
    if nr is None:
        raise SetupError(f"pivot_root: unknown syscall number on {platform.machine()}")
    ret = _libc.syscall(ctypes.c_long(nr), _b(new_root), _b(put_old))
    _check(int(ret), "pivot_root")


# --- users ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecUser:
    """Who the command runs as, resolved inside the rootfs."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    home: str = "/"


def _parse_id(text: str) -> int | None:
    if not text.isdigit():
        return None
    value = int(text)
    return value if value < 2**32 - 1 else None


def _entries(text: str, width: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) >= width:
            rows.append(parts)
    return rows


def resolve_user(spec: str, passwd: str, group: str) -> ExecUser:
    """Resolve a Docker USER value against passwd and group file contents.

    Follows moby/sys/user ``GetExecUser``: a name must exist in passwd, a numeric uid
    need not (gid 0 then); an explicit group sets the primary gid and no supplementary
    groups; otherwise the supplementary groups are those listing the user by name.
    An empty spec means root.

    Args:
        spec: "", "name", "uid", "uid:gid", "name:group" and so on.
        passwd: contents of the rootfs's /etc/passwd ("" if missing).
        group: contents of the rootfs's /etc/group ("" if missing).

    Returns:
        The uid, primary gid, supplementary gids and home directory.

    Raises:
        SetupError: a name that is in neither file, or an id out of range.
    """
    user_arg, _, group_arg = (spec or "0").partition(":")
    users = _entries(passwd, 7)
    uid_num = _parse_id(user_arg)
    matched: list[str] | None = None
    for row in users:
        if (uid_num is None and row[0] == user_arg) or (
            uid_num is not None and _parse_id(row[2]) == uid_num
        ):
            matched = row
            break
    uid, gid, home, name = 0, 0, "/", ""
    if matched is not None:
        uid = _parse_id(matched[2]) or 0
        gid = _parse_id(matched[3]) or 0
        home = matched[5] or "/"
        name = matched[0]
    elif uid_num is None:
        raise SetupError(f"unable to find user {user_arg}: no matching entries in passwd file")
    else:
        uid = uid_num
    groups: list[int] = []
    rows = _entries(group, 4)
    if group_arg:
        gid_num = _parse_id(group_arg)
        found = [
            r
            for r in rows
            if r[0] == group_arg or (gid_num is not None and _parse_id(r[2]) == gid_num)
        ]
        if found:
            gid = _parse_id(found[0][2]) or 0
        elif gid_num is not None:
            gid = gid_num
        else:
            raise SetupError(f"unable to find group {group_arg}: no matching entries in group file")
    elif name:
        for row in rows:
            members = [m.strip() for m in row[3].split(",")]
            row_gid = _parse_id(row[2])
            if name in members and row_gid is not None and row_gid not in groups:
                groups.append(row_gid)
    return ExecUser(uid=uid, gid=gid, groups=tuple(groups), home=home)


# --- the job ----------------------------------------------------------------------


@dataclass
class Job:
    """The JSON job ``runner.run`` sends on stdin."""

    lowerdirs: list[str]
    upper: str
    work: str
    argv: list[str]
    env: list[str]
    cwd: str
    user: str
    network: str
    hostname: str
    scratch: str
    userns: bool
    uid: int = 0
    gid: int = 0
    mounts: list[dict[str, Any]] = field(default_factory=list)
    caps: list[int] = field(default_factory=list)
    seccomp: dict[str, Any] | None = None
    pids_limit: int = 0
    cgroup: str | None = None


class Control:
    """JSON lines to the parent on the control pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message) + "\n").encode()
        try:
            os.write(self.fd, data)
        except OSError:
            pass  # the parent is gone; nobody is left to tell

    def error(self, message: str, kind: str = "build") -> None:
        self.send({"error": message, "kind": kind})


def _makedirs(path: str, mode: int) -> None:
    """``os.makedirs(path, mode, exist_ok=True)`` without its recursion: a WORKDIR or a
    mount target may be as deep as a Dockerfile makes it.

    Raises:
        OSError: a component that cannot be made (``FileExistsError`` for a file).
    """
    missing = []
    head = os.path.normpath(path)
    while not os.path.isdir(head):
        missing.append(head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    for component in reversed(missing):
        try:
            os.mkdir(component, mode)
        except FileExistsError:
            if not os.path.isdir(component):
                raise


def _write(path: str, text: str, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _lower_stat(lowerdirs: Sequence[str], rel: str) -> os.stat_result | None:
    """The stat of ``rel`` as a directory in the merged lowers, or None if absent."""
    for lower in lowerdirs:
        try:
            st = os.lstat(os.path.join(lower, rel))
        except FileNotFoundError:
            continue
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode):
            return st
        return None  # a whiteout or a non-directory hides everything below
    return None


def _copy_meta(path: str, st: os.stat_result | None, default_mode: int) -> None:
    mode = stat.S_IMODE(st.st_mode) if st else default_mode
    os.chmod(path, mode)
    if st is not None:
        try:
            os.chown(path, st.st_uid, st.st_gid)
        except OSError:
            pass  # an owner not mapped into a user namespace; root's view is fine
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _loopback_up() -> None:
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, siocgifflags, req))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH22x", b"lo", flags | iff_up))


def _locked_flags(path: str) -> int:
    """Mount flags a read-only remount must keep (the kernel locks them in a user ns)."""
    f_flag = os.statvfs(path).f_flag
    flags = 0
    for st_flag, ms_flag in (
        (os.ST_NOSUID, MS_NOSUID),
        (os.ST_NODEV, MS_NODEV),
        (os.ST_NOEXEC, MS_NOEXEC),
        (os.ST_NOATIME, MS_NOATIME),
        (os.ST_NODIRATIME, MS_NODIRATIME),
        (os.ST_RELATIME, MS_RELATIME),
    ):
        if f_flag & st_flag:
            flags |= ms_flag
    return flags


def bind(
    source: str,
    target: str,
    readonly: bool = False,
    recursive: bool = False,
    extra_flags: int = 0,
) -> None:
    """Bind-mount ``source`` on ``target``, read-only if asked, with ``extra_flags``
    (MS_NODEV, MS_NOSUID) on top of the flags it already has."""
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    if readonly or extra_flags:
        flags = MS_BIND | MS_REMOUNT | _locked_flags(target) | extra_flags
        mount(None, target, None, flags | (MS_RDONLY if readonly else 0))


class Monitor:
    """Sets up the namespaces and the overlay, forks PID 1, waits, cleans up."""

    def __init__(self, job: Job, ctl: Control) -> None:
        self.job = job
        self.ctl = ctl
        self.init_pid = 0
        self.cancelled = False
        self.root = os.path.join(job.scratch, "root")

    # monitor side

    def run(self) -> int:
        job = self.job
        # Docker's umask, whatever lamina's is: it decides the modes in the layer.
        os.umask(0o022)
        if job.cgroup:
            # First, before any fork: every process of the RUN lands in the cgroup.
            _join_cgroup(job.cgroup)
        if job.userns:
            self._enter_userns()
            if job.pids_limit and not job.cgroup:
                _limit_processes(job.pids_limit)
        flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC
        if job.network == "none":
            flags |= CLONE_NEWNET
        unshare(flags)
        # Nothing mounted from here on may propagate back to the host.
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        sethostname(job.hostname)
        if job.network == "none":
            try:
                _loopback_up()
            except OSError as exc:
                raise SetupError(f"bring up loopback: {exc.strerror}") from exc
        self._prepare_scratch()
        self._mount_overlay()
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        pid = os.fork()
        if pid == 0:
            self._init_main()  # never returns
        self.init_pid = pid
        if self.cancelled:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        for target in (self.root, job.scratch):
            try:
                umount2(target)
            except SetupError:
                try:
                    umount2(target, MNT_DETACH)
                except SetupError:
                    pass  # the namespace dies with this process anyway
        try:
            # Here too, not only in lamina: if lamina died, nobody else removes it.
            os.rmdir(job.scratch)
        except OSError:
            pass
        return code if code >= 0 else 128 - code

    def _on_term(self, signum: int, frame: object) -> None:
        self.cancelled = True
        if self.init_pid:
            # PID 1 dying takes every process of the namespace with it.
            os.kill(self.init_pid, signal.SIGKILL)

    def _enter_userns(self) -> None:
        job = self.job
        unshare(CLONE_NEWUSER)
        try:
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"0 {job.uid} 1\n")
            _write("/proc/self/gid_map", f"0 {job.gid} 1\n")
        except OSError as exc:
            raise SetupError(f"user namespace id maps: {exc.strerror}", "unavailable") from exc

    def _prepare_scratch(self) -> None:
        job = self.job
        scratch = job.scratch
        # A private tmpfs: the init layer, the short symlinks and the mountpoint vanish
        # with the namespace and are never visible on the host.
        mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=700")
        init = os.path.join(scratch, "init")
        os.mkdir(init)
        _copy_meta(init, _lower_stat(job.lowerdirs, "."), 0o755)
        for rel in INIT_DIRS:
            path = os.path.join(init, rel)
            os.mkdir(path)
            _copy_meta(path, _lower_stat(job.lowerdirs, rel), 0o755)
        for rel in INIT_FILES:
            _write(os.path.join(init, rel), "")
        links = os.path.join(scratch, "l")
        os.mkdir(links)
        for i, lower in enumerate(job.lowerdirs):
            os.symlink(lower, os.path.join(links, str(i)))
        os.symlink(job.upper, os.path.join(scratch, "u"))
        os.symlink(job.work, os.path.join(scratch, "w"))
        os.mkdir(self.root, 0o755)
        files = os.path.join(scratch, "files")
        os.mkdir(files)
        _write(os.path.join(files, "hostname"), job.hostname + "\n")
        _write(os.path.join(files, "hosts"), NONE_HOSTS)
        _write(os.path.join(files, "resolv.conf"), "")

    def _mount_overlay(self) -> None:
        job = self.job
        # Relative, short lowerdir names from inside the scratch dir keep the option
        # string far below the kernel's one-page limit, whatever the layer paths.
        os.chdir(job.scratch)
        lower = ":".join(["init"] + [f"l/{i}" for i in range(len(job.lowerdirs))])
        base = f"lowerdir={lower},upperdir=u,workdir=w"
        if job.userns:
            base += ",userxattr"
        # Full copy-ups, no redirect xattrs and no index: the upper dir must be a
        # self-contained layer in the plain overlay format.
        strict = base + ",index=off,redirect_dir=off,metacopy=off"
        try:
            mount("overlay", "root", "overlay", MS_NODEV, strict)
        except SetupError as exc:
            if _errno_of(exc) != errno.EINVAL:
                raise self._overlay_error(exc) from exc
            try:
                mount("overlay", "root", "overlay", MS_NODEV, base)
            except SetupError as exc2:
                raise self._overlay_error(exc2) from exc2

    def _overlay_error(self, exc: SetupError) -> SetupError:
        err = _errno_of(exc)
        reason = os.strerror(err) if err else str(exc)
        kind = "unavailable" if err in (errno.ENODEV, errno.EPERM) else "build"
        fstype = filesystem_of(self.job.upper)
        if fstype in UNFIT_UPPER_FS:
            # The kernel only says EINVAL (details go to dmesg); name the usual cause.
            reason += f"; the upper dir is on {fstype}, which cannot hold an overlay upper layer"
        return SetupError(
            f"mount overlay (upper {self.job.upper}, {len(self.job.lowerdirs)} layers): {reason}",
            kind,
        )

    # init side (PID 1 of the new PID namespace)

    def _init_main(self) -> None:
        code = 1
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            # Our own mount namespace, so pivot_root does not move the monitor too.
            unshare(CLONE_NEWNS)
            self._setup_rootfs()
            self._pivot()
            # /proc/1 of this process is not readable by the command (no ptrace cap).
            prctl(PR_SET_DUMPABLE, 0)
            code = self._spawn_and_reap()
        except SetupError as exc:
            self.ctl.error(str(exc), exc.kind)
        except BaseException as exc:  # noqa: BLE001 - report anything, then exit
            self.ctl.error(f"sandbox init: {type(exc).__name__}: {exc}")
        os._exit(code)

    def _setup_rootfs(self) -> None:
        job = self.job
        root = self.root
        mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        dev = f"{root}/dev"
        # nodev: a node the command makes here (it keeps CAP_MKNOD, as in Docker) opens
        # nothing; the standard nodes are bind mounts of the host's, which keep theirs.
        mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NODEV | MS_STRICTATIME, "mode=755,size=65536k")
        for name in DEVICES:
            host = f"/dev/{name}"
            if not os.path.exists(host):
                continue
            _write(f"{dev}/{name}", "", 0o666)
            bind(host, f"{dev}/{name}")
        os.mkdir(f"{dev}/pts", 0o755)
        try:
            mount(
                "devpts",
                f"{dev}/pts",
                "devpts",
                MS_NOSUID | MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=0620",
            )
            os.symlink("pts/ptmx", f"{dev}/ptmx")
        except SetupError:
            pass  # no ptys for this RUN; Docker's builder gives none either
        os.mkdir(f"{dev}/shm", 0o1777)
        mount(
            "shm", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k"
        )
        os.mkdir(f"{dev}/mqueue", 0o755)
        try:
            mount("mqueue", f"{dev}/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except SetupError:
            os.rmdir(f"{dev}/mqueue")
        for name, target in (
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ):
            os.symlink(target, f"{dev}/{name}")
        try:
            mount("sysfs", f"{root}/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except SetupError:
            pass  # sysfs needs a network namespace we own; /sys stays an empty dir
        files = os.path.join(job.scratch, "files")
        bind(f"{files}/hostname", f"{root}/etc/hostname", readonly=True)
        for name in ("hosts", "resolv.conf"):
            source = f"{files}/{name}"
            if job.network == "host" and os.path.isfile(f"/etc/{name}"):
                source = f"/etc/{name}"
            bind(source, f"{root}/etc/{name}", readonly=True)
        for path in MASKED_PATHS:
            target = root + path
            try:
                if os.path.isdir(target):
                    mount("tmpfs", target, "tmpfs", MS_RDONLY)
                elif os.path.exists(target):
                    bind(f"{dev}/null", target)
            except SetupError:
                pass  # best effort, like runc
        for path in READONLY_PATHS:
            target = root + path
            if os.path.exists(target):
                try:
                    bind(target, target, readonly=True, recursive=True)
                except SetupError:
                    pass
        for extra in job.mounts:
            self._mount_extra(extra)

    def _mount_extra(self, extra: dict[str, Any]) -> None:
        """One RUN --mount: its mount point made in the rootfs (it stays in the layer, as
        BuildKit's does), then a bind or a tmpfs on it."""
        target = self.root + os.path.normpath(extra["target"])
        source = extra.get("source")
        # The rootfs is not trusted and this runs before pivot_root: a symlink on the
        # way would make the mount point (or the mount) land outside the rootfs.
        walked = self.root
        for part in os.path.normpath(extra["target"]).strip("/").split("/"):
            walked = os.path.join(walked, part)
            if os.path.islink(walked):
                raise SetupError(f"mount target {extra['target']} passes through a symlink")
        try:
            if source is not None and not os.path.isdir(source):
                _makedirs(os.path.dirname(target), 0o755)
                if not os.path.exists(target):
                    _write(target, "", 0o644)
            else:
                _makedirs(target, 0o755)
        except OSError as exc:
            raise SetupError(f"create mount point {extra['target']}: {exc.strerror}") from exc
        if source is None:
            size = int(extra.get("size") or 0)
            mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size}" if size else None)
        else:
            # nodev and nosuid like every other writable place: a cache mount outlives
            # the step, and a node or setuid file made in it must stay inert.
            bind(
                source,
                target,
                readonly=bool(extra.get("readonly")),
                recursive=True,
                extra_flags=MS_NODEV | MS_NOSUID,
            )

    def _pivot(self) -> None:
        os.chdir(self.root)
        try:
            pivot_root(".", ".")
        except SetupError:
            # pivot_root refuses a rootfs (initramfs) root; moving the mount and
            # chrooting is what runc does there too.
            mount(self.root, "/", None, MS_MOVE)
            os.chroot(".")
        else:
            # The old root is stacked on "."; detach it so no host path stays reachable.
            umount2(".", MNT_DETACH)
        os.chdir("/")

    def _spawn_and_reap(self) -> int:
        job = self.job
        user = resolve_user(job.user, _read_text("/etc/passwd"), _read_text("/etc/group"))
        env = list(job.env)
        if not any(item.startswith("HOME=") for item in env):
            env.append(f"HOME={user.home}")  # runc does the same when HOME is unset
        try:
            _makedirs(job.cwd, 0o755)
        except OSError as exc:
            raise SetupError(f"create working directory {job.cwd}: {exc.strerror}") from exc
        rules = None
        if job.seccomp is not None and _seccomp is None:
            # As Docker runs without a filter where the kernel has no seccomp.
            self.ctl.send({"warning": "RUN without a seccomp filter: no libseccomp.so.2 here"})
        elif job.seccomp is not None:
            rules = SeccompFilter(job.seccomp)
        pid = os.fork()
        if pid == 0:
            self._exec(user, env, rules)
        while True:
            try:
                got, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return 1
            if got == pid:
                code = os.waitstatus_to_exitcode(status)
                return code if code >= 0 else 128 - code

    def _exec(self, user: ExecUser, env: list[str], rules: SeccompFilter | None) -> None:
        job = self.job
        try:
            os.setsid()
            # Python ignores SIGPIPE and SIGXFSZ; an exec'd shell must not inherit that.
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            _drop_capabilities(job.caps)
            who = f"{job.user or 'root'} ({user.uid}:{user.gid})"
            if job.userns and (user.uid, user.gid) != (0, 0):
                raise SetupError(f"user {who} needs root: without it only uid 0 is mapped")
            try:
                if not job.userns:  # setgroups is denied in a user namespace
                    os.setgroups(list(user.groups))
                os.setresgid(user.gid, user.gid, user.gid)
                os.setresuid(user.uid, user.uid, user.uid)
            except OSError as exc:
                raise SetupError(f"switch to user {who}: {exc.strerror}") from exc
            try:
                os.chdir(job.cwd)
            except OSError as exc:
                raise SetupError(f"chdir to {job.cwd}: {exc.strerror}") from exc
            environ = dict(item.split("=", 1) for item in env)
            # Last, so nothing above runs under them: a setuid or file-capability
            # binary gives the command nothing, and the syscalls Docker's default
            # profile refuses (mount, unshare, keyctl, ...) fail with EPERM.
            prctl(PR_SET_NO_NEW_PRIVS, 1)
            if rules is not None:
                rules.load()
            try:
                os.execvpe(job.argv[0], job.argv, environ)
            except FileNotFoundError:
                if "/" in job.argv[0]:
                    raise SetupError(f"exec {job.argv[0]}: no such file or directory") from None
                raise SetupError(
                    f"exec {job.argv[0]}: executable file not found in $PATH"
                ) from None
            except OSError as exc:
                raise SetupError(f"exec {job.argv[0]}: {exc.strerror}") from exc
        except SetupError as exc:
            self.ctl.error(str(exc), exc.kind)
        except BaseException as exc:  # noqa: BLE001 - report anything, then exit
            self.ctl.error(f"sandbox exec: {type(exc).__name__}: {exc}")
        os._exit(127)


def filesystem_of(path: str, mountinfo: str = "/proc/self/mountinfo") -> str:
    """The filesystem type holding ``path``, from mountinfo ("" if unknown)."""
    target = os.path.realpath(path)
    best, fstype = -1, ""
    for line in _read_text(mountinfo).splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) <= sep + 1 or len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best:
            best, fstype = len(point), fields[sep + 1]
    return fstype


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _drop_capabilities(keep: Sequence[int]) -> None:
    """Leave only ``keep`` in the bounding, permitted and effective sets; nothing
    inheritable or ambient.

    The bounding set alone is not enough: at ``execve`` a root process gains its
    inheritable set too, so whatever lamina inherited there would reach the command.
    """
    try:
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            last = int(handle.read())
    except (OSError, ValueError):
        last = 40
    for cap in range(last + 1):
        if cap in keep:
            continue
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == -1 and ctypes.get_errno() != errno.EINVAL:
            _check(-1, f"drop capability {cap}")
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    for word in range(2):
        mask = sum(1 << (cap - 32 * word) for cap in keep if 32 * word <= cap < 32 * (word + 1))
        data[word].permitted &= mask
        data[word].effective &= mask
        data[word].inheritable = 0
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    cleared = _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    # EINVAL: kernels before 4.3 have no ambient set.
    if cleared == -1 and ctypes.get_errno() != errno.EINVAL:
        _check(-1, "clear ambient capabilities")


class SeccompFilter:
    """A libseccomp filter compiled from the rules ``profile.seccomp_rules`` sends.

    Built in PID 1 before the command is forked (so a bad rule is a setup error, not
    a command that never runs) and loaded by the command just before ``execve``.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        lib = _seccomp
        if lib is None:
            raise SetupError("seccomp: libseccomp.so.2 cannot be loaded")
        self.lib = lib
        default = SCMP_ACT_ERRNO | (int(spec.get("default_errno", errno.EPERM)) & 0xFFFF)
        ctx = lib.seccomp_init(default)
        if not ctx:
            raise SetupError("seccomp: cannot create a filter")
        self.ctx = ctypes.c_void_p(ctx)
        for name in spec.get("arches", ()):
            token = lib.seccomp_arch_resolve_name(name.encode())
            ret = lib.seccomp_arch_add(self.ctx, token) if token else 0
            if ret < 0 and -ret != errno.EEXIST:
                raise SetupError(f"seccomp: add architecture {name}: {os.strerror(-ret)}")
        for rule in spec.get("rules", ()):
            action = SCMP_ACT_ALLOW
            if rule.get("action") == "errno":
                action = SCMP_ACT_ERRNO | (int(rule.get("errno", errno.EPERM)) & 0xFFFF)
            args = rule.get("args") or []
            array = (_ArgCmp * max(1, len(args)))()
            for i, (index, op, value, value_two) in enumerate(args):
                array[i] = _ArgCmp(index, SCMP_CMP[op], value, value_two)
            for name in rule["names"]:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr == NR_SCMP_ERROR:
                    continue  # unknown to this libseccomp: Docker skips it too
                ret = lib.seccomp_rule_add_array(self.ctx, action, nr, len(args), array)
                # EDOM/EFAULT: a call this architecture does not have.
                if ret < 0 and -ret not in (errno.EDOM, errno.EFAULT, errno.EEXIST):
                    raise SetupError(f"seccomp: rule for {name}: {os.strerror(-ret)}")

    def load(self) -> None:
        """Install the filter on this process (``no_new_privs`` must be set)."""
        ret = self.lib.seccomp_load(self.ctx)
        if ret < 0:
            raise SetupError(f"seccomp: load the filter: {os.strerror(-ret)}")


def _join_cgroup(path: str) -> None:
    """Move this process (and so everything it forks) into the RUN's cgroup."""
    try:
        _write(os.path.join(path, "cgroup.procs"), f"{os.getpid()}\n")
    except OSError as exc:
        raise SetupError(f"join cgroup {path}: {exc.strerror}") from exc


def _limit_processes(limit: int) -> None:
    """RLIMIT_NPROC for a user namespace without a cgroup: the kernel counts the
    processes of the namespace's uid 0, so the limit is the sandbox's own."""
    _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    value = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (value, value))
    except (OSError, ValueError) as exc:
        raise SetupError(f"limit processes to {limit}: {exc}") from exc


def probe(userns: bool, uid: int, gid: int, scratch: str) -> str | None:
    """Try what a RUN needs (namespaces, a tmpfs, an overlay); None if all works."""
    try:
        if userns:
            unshare(CLONE_NEWUSER)
            try:
                _write("/proc/self/setgroups", "deny")
                _write("/proc/self/uid_map", f"0 {uid} 1\n")
                _write("/proc/self/gid_map", f"0 {gid} 1\n")
            except OSError as exc:
                return f"user namespace id maps: {exc.strerror}"
        unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET)
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=700")
        for name in ("a", "b", "m"):
            os.mkdir(os.path.join(scratch, name))
        os.chdir(scratch)
        mount("overlay", "m", "overlay", 0, "lowerdir=a:b")
    except SetupError as exc:
        return str(exc)
    return None


def main(argv: Sequence[str]) -> int:
    """Entry point: ``child.py CTL_FD PARENT_PID`` or ``child.py --probe SCRATCH``."""
    if len(argv) >= 3 and argv[1] == "--probe":
        userns = os.geteuid() != 0
        reason = probe(userns, os.geteuid(), os.getegid(), argv[2])
        sys.stdout.write((reason or "ok") + "\n")
        return 0
    ctl = Control(int(argv[1]))
    os.set_inheritable(ctl.fd, False)
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != int(argv[2]):
            return 1  # lamina died before we could watch it
        raw = json.loads(sys.stdin.buffer.read())
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        job = Job(**raw)
        status = Monitor(job, ctl).run()
    except SetupError as exc:
        ctl.error(str(exc), exc.kind)
        return 1
    except Exception as exc:  # noqa: BLE001 - report anything as one line
        ctl.error(f"sandbox: {type(exc).__name__}: {exc}")
        return 1
    ctl.send({"exit": status})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
