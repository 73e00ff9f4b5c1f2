"""What a RUN command may do: Docker's default capabilities and seccomp profile.

Both are moby's defaults, transcribed from ``daemon/pkg/oci/caps/defaults.go`` and
``github.com/moby/profiles/seccomp/default_linux.go``. The seccomp profile is an allow
list: every system call not named fails with ``EPERM`` (``clone3`` with ``ENOSYS``, so
libc falls back to ``clone``). Rules that Docker includes only for capabilities the
container holds (``mount``, ``unshare``, ``setns``, ``bpf``, ``keyctl`` is never
allowed, ...) are resolved here against lamina's capability set, as dockerd resolves
them against the container's, so a RUN gets exactly what ``docker run`` gets by default.

:func:`seccomp_rules` hands the resolved rules to ``child.py`` in the job, as plain
data; the child compiles them with libseccomp (through ctypes, in the command process
just before ``execve``). The profile lives here and not in the child so it can be read
and tested next to its source.
"""

from __future__ import annotations

import errno
import os
import platform
from dataclasses import dataclass
from typing import Any

# Linux capability numbers (linux/capability.h).
CAPABILITY_NUMBERS = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}

# moby's DefaultCapabilities(), in its order. CAP_MKNOD stays, as in Docker: a node
# made in a RUN is inert because every filesystem the command can write is nodev
# (Docker gets the same effect from the device cgroup).
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

AF_ALG = 38
AF_VSOCK = 40
NAMESPACE_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
    | 0x02000000  # CLONE_NEWCGROUP
)

# platform.machine() to Go's GOARCH, the names moby's Includes/Excludes.Arches use.
GOARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "loongarch64": "loong64",
}

# moby's arches(): the native architecture's sub-architectures, in libseccomp's names.
SUB_ARCHES = {"x86_64": ("x86", "x32"), "aarch64": ("arm",), "s390x": ("s390",)}


@dataclass(frozen=True)
class Arg:
    """A condition on one argument: ``op`` is ``eq``, ``lt``, ``gt`` or ``masked_eq``
    (``arg & value == value_two``)."""

    index: int
    op: str
    value: int
    value_two: int = 0


@dataclass(frozen=True)
class Syscalls:
    """One entry of moby's profile: names, an action, and when it applies."""

    names: tuple[str, ...]
    action: str = "allow"
    errno_ret: int = 0
    args: tuple[Arg, ...] = ()
    caps: tuple[str, ...] = ()  # included only if the container has all of these
    not_caps: tuple[str, ...] = ()  # excluded if it has any of these
    arches: tuple[str, ...] = ()  # included only on these GOARCH values
    not_arches: tuple[str, ...] = ()
    min_kernel: tuple[int, int] | None = None


_ALLOWED = """
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown
chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect
copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir
fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr
flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64
fsync ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv
futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32 geteuid
geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp
getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32
getrlimit get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid
gettimeofday getuid getuid32 getxattr getxattrat inotify_add_watch inotify_init
inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents
io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit ipc kill landlock_add_rule
landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat
listen listmount listxattr listxattrat llistxattr _llseek lremovexattr lseek lsetxattr
lstat lstat64 madvise map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir
mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify
mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64
mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync munlock munlockall munmap
name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open
pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64
prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64
pwritev pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg
recvmmsg_time64 recvmsg remap_file_pages removexattr removexattrat rename renameat
renameat2 restart_syscall riscv_hwprobe rmdir rseq rt_sigaction rt_sigpending
rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam
sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval
sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32
setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority
setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32
setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid
setuid32 setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd
signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64
statmount statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time
timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat
uretprobe utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid
write writev
"""

PROFILE: tuple[Syscalls, ...] = (
    Syscalls(tuple(_ALLOWED.split())),
    Syscalls(("process_vm_readv", "process_vm_writev", "ptrace"), min_kernel=(4, 8)),
    # socket(2) for every address family but AF_ALG and AF_VSOCK.
    Syscalls(("socket",), args=(Arg(0, "lt", AF_ALG),)),
    Syscalls(("socket",), args=(Arg(0, "eq", AF_ALG + 1),)),
    Syscalls(("socket",), args=(Arg(0, "gt", AF_VSOCK),)),
    *(
        Syscalls(("personality",), args=(Arg(0, "eq", persona),))
        for persona in (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)
    ),
    Syscalls(("sync_file_range2", "swapcontext"), arches=("ppc64le",)),
    Syscalls(
        (
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ),
        arches=("arm", "arm64"),
    ),
    Syscalls(("arch_prctl",), arches=("amd64", "x32")),
    Syscalls(("modify_ldt",), arches=("amd64", "x32", "x86")),
    Syscalls(
        ("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"),
        arches=("s390", "s390x"),
    ),
    Syscalls(("riscv_flush_icache",), arches=("riscv64",)),
    Syscalls(("open_by_handle_at",), caps=("CAP_DAC_READ_SEARCH",)),
    Syscalls(
        (
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "lsm_get_self_attr",
            "lsm_list_modules",
            "lsm_set_self_attr",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ),
        caps=("CAP_SYS_ADMIN",),
    ),
    # clone(2) without namespace flags (s390 passes the flags second).
    Syscalls(
        ("clone",),
        args=(Arg(0, "masked_eq", NAMESPACE_FLAGS, 0),),
        not_caps=("CAP_SYS_ADMIN",),
        not_arches=("s390", "s390x"),
    ),
    Syscalls(
        ("clone",),
        args=(Arg(1, "masked_eq", NAMESPACE_FLAGS, 0),),
        arches=("s390", "s390x"),
        not_caps=("CAP_SYS_ADMIN",),
    ),
    Syscalls(("clone3",), action="errno", errno_ret=errno.ENOSYS, not_caps=("CAP_SYS_ADMIN",)),
    Syscalls(("reboot",), caps=("CAP_SYS_BOOT",)),
    Syscalls(("chroot",), caps=("CAP_SYS_CHROOT",)),
    Syscalls(("delete_module", "init_module", "finit_module"), caps=("CAP_SYS_MODULE",)),
    Syscalls(("acct",), caps=("CAP_SYS_PACCT",)),
    Syscalls(
        (
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ),
        caps=("CAP_SYS_PTRACE",),
    ),
    Syscalls(("iopl", "ioperm"), caps=("CAP_SYS_RAWIO",)),
    Syscalls(("settimeofday", "stime", "clock_settime", "clock_settime64"), caps=("CAP_SYS_TIME",)),
    Syscalls(("vhangup",), caps=("CAP_SYS_TTY_CONFIG",)),
    Syscalls(
        ("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"),
        caps=("CAP_SYS_NICE",),
    ),
    Syscalls(("syslog",), caps=("CAP_SYSLOG",)),
    Syscalls(("bpf",), caps=("CAP_BPF",)),
    Syscalls(("perf_event_open",), caps=("CAP_PERFMON",)),
)


def capability_numbers(names: tuple[str, ...] = DEFAULT_CAPABILITIES) -> list[int]:
    """The numbers of capability names, for the child's bounding and effective sets."""
    return sorted(CAPABILITY_NUMBERS[name] for name in names)


def _kernel(release: str) -> tuple[int, int]:
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return 0, 0


def seccomp_rules(
    caps: tuple[str, ...] = DEFAULT_CAPABILITIES,
    machine: str | None = None,
    release: str | None = None,
) -> dict[str, Any]:
    """Docker's default profile resolved for ``caps`` on this machine, as job data.

    Args:
        caps: the capabilities the command keeps.
        machine: ``platform.machine()`` (default: this one's).
        release: the kernel release (default: this one's).

    Returns:
        ``{"default_errno": EPERM, "arches": [sub-architectures], "rules": [{"names",
        "action", "errno", "args": [[index, op, value, value_two], ...]}, ...]}``.
    """
    machine = machine or platform.machine()
    kernel = _kernel(release or os.uname().release)
    goarch = GOARCH.get(machine, machine)
    held = set(caps)
    rules: list[dict[str, Any]] = []
    for entry in PROFILE:
        if entry.caps and not all(c in held for c in entry.caps):
            continue
        if any(c in held for c in entry.not_caps):
            continue
        if entry.arches and goarch not in entry.arches:
            continue
        if goarch in entry.not_arches:
            continue
        if entry.min_kernel is not None and kernel < entry.min_kernel:
            continue
        rules.append(
            {
                "names": list(entry.names),
                "action": entry.action,
                "errno": entry.errno_ret,
                "args": [[a.index, a.op, a.value, a.value_two] for a in entry.args],
            }
        )
    return {
        "default_errno": errno.EPERM,
        "arches": list(SUB_ARCHES.get(machine, ())),
        "rules": rules,
    }
