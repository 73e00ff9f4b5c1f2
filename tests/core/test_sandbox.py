"""The RUN sandbox, exercised for real: overlay mounts, namespaces, a busybox rootfs.

Tests marked ``root`` need root (or user namespaces); they skip with a reason on a
laptop and fail in CI without it (see tests/conftest.py).
"""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import sandbox_rootfs

from lamina.core.embedded.sandbox import RunSpec, check_available, run
from lamina.core.embedded.sandbox.cgroup import pids_parent
from lamina.core.embedded.sandbox.child import SetupError, resolve_user
from lamina.core.embedded.sandbox.runner import MountSpec, availability_problem
from lamina.core.errors import BuildError

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ALLOWED_MOUNTS = ("/", "/proc", "/dev", "/sys", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname")


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory, busybox: str) -> Path:
    """One read-only busybox lower layer shared by the module's tests."""
    return sandbox_rootfs.make_busybox_rootfs(tmp_path_factory.mktemp("lower") / "rootfs", busybox)


class Sandbox:
    """Runs shell scripts on ``rootfs`` with a fresh upper/work pair each time."""

    def __init__(self, rootfs: Path, tmp: Path) -> None:
        self.rootfs = rootfs
        self.tmp = tmp
        self.count = 0
        self.upper = tmp / "upper"
        self.work = tmp / "work"

    def spec(self, script: str, **fields: object) -> RunSpec:
        self.count += 1
        self.upper = self.tmp / f"upper{self.count}"
        self.work = self.tmp / f"work{self.count}"
        self.upper.mkdir()
        self.work.mkdir()
        values: dict[str, object] = {
            "lowerdirs": (self.rootfs,),
            "upper": self.upper,
            "work": self.work,
            "argv": ("/bin/sh", "-c", script),
            "env": (PATH_ENV,),
        }
        values.update(fields)
        return RunSpec(**values)  # type: ignore[arg-type]

    def sh(self, script: str, **fields: object) -> tuple[int, list[str]]:
        lines: list[str] = []
        status = run(self.spec(script, **fields), lines.append)
        return status, lines

    def changes(self) -> dict[str, str]:
        """Every path in the last upper dir: "file", "dir", "whiteout", "symlink"."""
        found: dict[str, str] = {}
        for dirpath, dirnames, filenames in os.walk(self.upper):
            for name in [*dirnames, *filenames]:
                full = os.path.join(dirpath, name)
                st = os.lstat(full)
                rel = os.path.relpath(full, self.upper)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    found[rel] = "whiteout"
                elif stat.S_ISDIR(st.st_mode):
                    found[rel] = "dir"
                elif stat.S_ISLNK(st.st_mode):
                    found[rel] = "symlink"
                else:
                    found[rel] = "file"
        return found


@pytest.fixture
def box(rootfs: Path, tmp_path: Path) -> Sandbox:
    return Sandbox(rootfs, tmp_path)


def _all_xattrs(top: Path) -> dict[str, dict[str, bytes]]:
    found: dict[str, dict[str, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [".", *dirnames, *filenames]:
            full = os.path.normpath(os.path.join(dirpath, name))
            names = os.listxattr(full, follow_symlinks=False)
            if names:
                rel = os.path.relpath(full, top)
                found[rel] = {n: os.getxattr(full, n, follow_symlinks=False) for n in names}
    return found


# --- availability -----------------------------------------------------------------


@pytest.mark.root
def test_check_available_passes_here() -> None:
    check_available()


@pytest.mark.parametrize(
    ("sysctl", "value"),
    [
        ("kernel/unprivileged_userns_clone", "0"),
        ("user/max_user_namespaces", "0"),
        ("kernel/apparmor_restrict_unprivileged_userns", "1"),
    ],
)
def test_availability_problem_names_the_sysctl_in_one_line(
    tmp_path: Path, sysctl: str, value: str
) -> None:
    proc = tmp_path / "proc"
    (proc / "sys" / sysctl).parent.mkdir(parents=True)
    (proc / "sys" / sysctl).write_text(value + "\n")
    (proc / "filesystems").write_text("nodev\toverlay\n")
    message = availability_problem(proc, euid=1000)
    assert message == (
        f"RUN needs root or unprivileged user namespaces: {sysctl.replace('/', '.')}={value}"
    )
    assert "\n" not in message
    # The same settings do not stop root.
    assert availability_problem(proc, euid=0) is None


def test_availability_problem_accepts_enabled_user_namespaces(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "sys" / "user").mkdir(parents=True)
    (proc / "sys" / "user" / "max_user_namespaces").write_text("15000\n")
    assert availability_problem(proc, euid=1000) is None


# --- the layer the command leaves -------------------------------------------------


@pytest.mark.root
def test_a_new_file_is_the_only_change(box: Sandbox) -> None:
    status, lines = box.sh("echo hi > /a")
    assert status == 0 and lines == []
    assert box.changes() == {"a": "file"}
    assert (box.upper / "a").read_text() == "hi\n"
    assert list(box.work.iterdir()) == []
    assert _all_xattrs(box.upper) == {}


@pytest.mark.root
def test_deleting_a_lower_file_leaves_a_whiteout(box: Sandbox) -> None:
    status, _ = box.sh("rm /data/file /bin/ls /bin/cat && test ! -e /data/file")
    assert status == 0
    assert box.changes() == {
        "data": "dir",
        "data/file": "whiteout",
        "bin": "dir",
        "bin/ls": "whiteout",
        "bin/cat": "whiteout",
    }
    # Each whiteout is its own inode, so a layer tar never makes one a hardlink.
    inodes = {os.lstat(box.upper / p).st_ino for p in ("data/file", "bin/ls", "bin/cat")}
    assert len(inodes) == 3
    assert _all_xattrs(box.upper) == {}


@pytest.mark.root
def test_a_recreated_lower_dir_is_opaque(box: Sandbox) -> None:
    status, lines = box.sh(
        "rm -rf /data/dir && mkdir /data/dir && echo n > /data/dir/new && ls /data/dir"
    )
    assert status == 0 and lines == ["new"]
    assert box.changes() == {"data": "dir", "data/dir": "dir", "data/dir/new": "file"}
    assert _all_xattrs(box.upper) == {
        "data/dir": {"trusted.overlay.opaque": b"y", "user.overlay.opaque": b"y"}
    }


@pytest.mark.root
def test_copy_up_and_rename_leave_no_overlay_bookkeeping(box: Sandbox) -> None:
    status, _ = box.sh("echo more >> /data/file && chmod 700 /data/dir && mv /data/mv /data/moved")
    assert status == 0
    assert box.changes() == {
        "data": "dir",
        "data/file": "file",
        "data/dir": "dir",
        "data/mv": "whiteout",
        "data/moved": "dir",
        "data/moved/m": "file",
    }
    assert (box.upper / "data" / "file").read_text() == "f\nmore\n"
    assert stat.S_IMODE(os.lstat(box.upper / "data" / "dir").st_mode) == 0o700
    # A full copy, not a redirect: the moved dir stands alone in the layer.
    assert (box.upper / "data" / "moved" / "m").read_text() == "m\n"
    assert _all_xattrs(box.upper) == {}


@pytest.mark.root
def test_mountpoints_never_reach_the_upper_dir(box: Sandbox) -> None:
    script = (
        "echo x > /etc/newfile; cat /etc/hosts /etc/resolv.conf /etc/hostname >/dev/null;"
        " ls /proc /sys /dev >/dev/null; echo y > /dev/null; : > /dev/shm/s; echo z >> /etc/hosts"
    )
    status, lines = box.sh(script)
    assert status != 0  # /etc/hosts is read-only
    assert any("hosts" in line for line in lines)
    assert box.changes() == {"etc": "dir", "etc/newfile": "file"}


# --- isolation --------------------------------------------------------------------


@pytest.mark.root
def test_host_files_are_invisible(box: Sandbox, rootfs: Path) -> None:
    secret = Path("/tmp") / f"lamina-host-{secrets.token_hex(8)}"
    secret.write_text("host\n")
    try:
        status, lines = box.sh(
            f"test -e {secret} && echo visible; test -e {rootfs} && echo visible;"
            " test -e /work && echo visible; cut -d' ' -f5 /proc/self/mountinfo"
        )
    finally:
        secret.unlink()
    assert status == 0
    assert "visible" not in lines
    mounts = [line for line in lines if line]
    assert "/" in mounts
    for point in mounts:
        assert point == "/" or point.startswith(ALLOWED_MOUNTS[1:]), point


@pytest.mark.root
def test_proc_shows_only_the_sandbox(box: Sandbox) -> None:
    status, lines = box.sh("echo $$; ls /proc | grep -E '^[0-9]+$'")
    assert status == 0
    shell_pid, *pids = lines
    assert shell_pid == "2"  # PID 1 is the sandbox's init, the command comes next
    assert "1" in pids and "2" in pids
    assert len(pids) <= 4, pids
    assert str(os.getpid()) not in pids or int(os.getpid()) <= 4


@pytest.mark.root
def test_network_none_has_only_loopback_and_it_is_up(box: Sandbox) -> None:
    status, lines = box.sh(
        "tail -n +3 /proc/net/dev | cut -d: -f1; ip -o link show lo", network="none"
    )
    assert status == 0
    names = [line.strip() for line in lines[:-1]]
    assert names == ["lo"]
    assert ",UP" in lines[-1] or "<UP" in lines[-1]


@pytest.mark.root
def test_network_host_sees_the_host_interfaces(box: Sandbox) -> None:
    status, lines = box.sh("tail -n +3 /proc/net/dev | cut -d: -f1")
    assert status == 0
    host = Path("/proc/net/dev").read_text().splitlines()[2:]
    assert sorted(line.strip() for line in lines) == sorted(
        line.split(":")[0].strip() for line in host
    )


@pytest.mark.root
def test_hostname_devices_and_read_only_sys(box: Sandbox) -> None:
    status, lines = box.sh(
        "hostname; cat /etc/hostname; test -c /dev/null && test -c /dev/urandom && echo devs;"
        " head -c 5 /dev/zero | wc -c; ls /dev | tr '\\n' ' '; echo;"
        " touch /sys/x 2>/dev/null || echo sys-ro",
        hostname="step-3",
    )
    assert status == 0
    assert lines[:4] == ["step-3", "step-3", "devs", "5"]
    for name in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "fd", "stdout"):
        assert name in lines[4].split(), lines[4]
    assert lines[5] == "sys-ro"


# --- the process ------------------------------------------------------------------


@pytest.mark.root
@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("", "0 0 0 10"),
        ("nobody", "65534 65534 65534"),
        ("builder", "1000 1000 1000 10 50"),
        ("builder:staff", "1000 50 50"),
        ("4242", "4242 0 0"),
        ("4242:77", "4242 77 77"),
    ],
)
def test_user_is_resolved_in_the_rootfs(box: Sandbox, user: str, expected: str) -> None:
    status, lines = box.sh('echo "$(id -u) $(id -g) $(id -G)"', user=user)
    assert status == 0
    assert lines == [expected]


@pytest.mark.root
def test_unknown_user_is_a_one_line_build_error(box: Sandbox) -> None:
    with pytest.raises(
        BuildError, match="unable to find user ghost: no matching entries in passwd file"
    ) as info:
        box.sh("true", user="ghost")
    assert "\n" not in str(info.value)


@pytest.mark.root
@pytest.mark.parametrize(
    ("script", "status"),
    [("exit 0", 0), ("exit 3", 3), ("false", 1), ("kill -9 $$", 137), ("kill -15 $$", 143)],
)
def test_exit_status_propagates(box: Sandbox, script: str, status: int) -> None:
    assert box.sh(script)[0] == status


@pytest.mark.root
def test_output_lines_arrive_in_order(box: Sandbox) -> None:
    script = "for i in $(seq 1 200); do echo out$i; echo err$i >&2; done; printf 'crlf\\r\\n'; printf tail"
    status, lines = box.sh(script)
    assert status == 0
    expected = [f"{kind}{i}" for i in range(1, 201) for kind in ("out", "err")]
    assert lines == [*expected, "crlf", "tail"]


@pytest.mark.root
def test_environment_is_exact_and_cwd_is_created(box: Sandbox) -> None:
    status, lines = box.sh(
        "pwd; env | sort", env=(PATH_ENV, "A=1", "B=x y"), cwd="/srv/app", user="builder"
    )
    assert status == 0
    # busybox sh adds PWD and SHLVL itself; HOME comes from passwd like runc does.
    assert lines == [
        "/srv/app",
        "A=1",
        "B=x y",
        "HOME=/home/builder",
        PATH_ENV,
        "PWD=/srv/app",
        "SHLVL=1",
    ]
    assert box.changes() == {"srv": "dir", "srv/app": "dir"}


@pytest.mark.root
def test_cancel_kills_the_whole_namespace_quickly(box: Sandbox) -> None:
    seconds = str(1000 + secrets.randbelow(8000))
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    started = time.monotonic()
    try:
        status = run(box.spec(f"sleep {seconds} & sleep {seconds}; echo never"), None, cancel)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5
    assert status == 137
    survivors = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if (p.info["cmdline"] or [])[-2:] == ["sleep", seconds]
    ]
    assert survivors == []
    assert list(box.work.iterdir()) == []


@pytest.mark.root
def test_missing_executable_is_a_build_error(box: Sandbox) -> None:
    with pytest.raises(BuildError, match="exec nosuchtool: executable file not found in \\$PATH"):
        run(box.spec("", argv=("nosuchtool", "--help")))


@pytest.mark.root
def test_scratch_has_no_shell_and_leaves_nothing(box: Sandbox) -> None:
    with pytest.raises(BuildError, match="exec /bin/sh: no such file or directory"):
        box.sh("true", lowerdirs=())
    assert box.changes() == {}


@pytest.mark.root
def test_many_layers_with_long_paths(box: Sandbox, tmp_path: Path) -> None:
    # 120 layers of ~150-character paths: far beyond the overlay option page limit.
    layers = []
    for i in range(120):
        layer = tmp_path / "layers" / (f"{i:03d}-" + "x" * 150) / "diff"
        (layer / "many").mkdir(parents=True)
        (layer / "many" / f"f{i:03d}").write_text("")
        (layer / "many" / "who").write_text(f"{i}\n")
        layers.append(layer)
    status, lines = box.sh("ls /many | wc -l; cat /many/who", lowerdirs=(*layers, box.rootfs))
    assert status == 0
    assert lines == ["121", "0"]  # 120 files plus "who", taken from the top layer


@pytest.mark.root
def test_bad_specs_are_refused_before_anything_runs(box: Sandbox) -> None:
    spec = box.spec("true")
    (spec.upper / "stale").write_text("")
    with pytest.raises(BuildError, match=r"upper directory .* is not empty"):
        run(spec)
    with pytest.raises(BuildError, match="unknown network mode 'bridge'"):
        run(box.spec("true", network="bridge"))
    with pytest.raises(BuildError, match="working directory 'app' is not absolute"):
        run(box.spec("true", cwd="app"))


# --- user resolution (pure) -------------------------------------------------------

PASSWD = "root:x:0:0:root:/root:/bin/sh\n# comment\nbad line\napp:x:1000:1001::/home/app:/bin/sh\n"
GROUP = "root:x:0:\nwheel:x:10:root,app\nappgrp:x:1001:\nextra:x:2000: app \n"


@pytest.mark.parametrize(
    ("spec", "uid", "gid", "groups", "home"),
    [
        ("", 0, 0, (10,), "/root"),
        ("root", 0, 0, (10,), "/root"),
        ("app", 1000, 1001, (10, 2000), "/home/app"),
        ("1000", 1000, 1001, (10, 2000), "/home/app"),
        ("app:wheel", 1000, 10, (), "/home/app"),
        ("app:3000", 1000, 3000, (), "/home/app"),
        ("555", 555, 0, (), "/"),
        ("555:appgrp", 555, 1001, (), "/"),
    ],
)
def test_resolve_user(spec: str, uid: int, gid: int, groups: tuple[int, ...], home: str) -> None:
    user = resolve_user(spec, PASSWD, GROUP)
    assert (user.uid, user.gid, user.groups, user.home) == (uid, gid, groups, home)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ghost", "unable to find user ghost: no matching entries in passwd file"),
        ("app:ghosts", "unable to find group ghosts: no matching entries in group file"),
    ],
)
def test_resolve_user_errors(spec: str, message: str) -> None:
    with pytest.raises(SetupError, match=message):
        resolve_user(spec, PASSWD, GROUP)


def test_core_sandbox_child_is_stdlib_only() -> None:
    # child.py runs as `python -I -S child.py` and after pivot_root cannot import.
    source = (
        Path(__file__).resolve().parents[2] / "core" / "embedded" / "sandbox" / "child.py"
    ).read_text()
    assert "lamina" not in "".join(
        line for line in source.splitlines() if line.startswith(("import ", "from "))
    )


@pytest.mark.root
def test_pid_1_reaps_orphans(box: Sandbox) -> None:
    status, lines = box.sh("(sh -c 'exit 0' &); (sleep 0.1 &); sleep 0.4; ps -o pid,ppid,stat,comm")
    assert status == 0
    header, *rows = lines
    assert header.split() == ["PID", "PPID", "STAT", "COMMAND"]
    assert [row.split()[0] for row in rows] == ["1", "2"]  # init and ps: no zombie left
    assert not any(row.split()[2].startswith("Z") for row in rows)


@pytest.mark.root
def test_the_sandbox_dies_with_lamina(box: Sandbox) -> None:
    seconds = str(1000 + secrets.randbelow(8000))
    spec = box.spec(f"sleep {seconds}")
    code = (
        "import sys\nfrom pathlib import Path\nfrom lamina.core.embedded.sandbox import RunSpec, run\n"
        f"run(RunSpec(lowerdirs=(Path({str(box.rootfs)!r}),), upper=Path({str(spec.upper)!r}),"
        f" work=Path({str(spec.work)!r}), argv=('sleep', {seconds!r}), env=({PATH_ENV!r},)))\n"
    )
    tmpdir = box.tmp / "lamina-tmp"
    tmpdir.mkdir()
    lamina = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, "TMPDIR": str(tmpdir)}
    )

    def sleepers() -> list[psutil.Process]:
        return [
            p
            for p in psutil.process_iter(["cmdline"])
            if (p.info["cmdline"] or [])[-2:] == ["sleep", seconds]
        ]

    try:
        deadline = time.monotonic() + 10
        while not sleepers() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sleepers(), "the command never started"
    finally:
        lamina.kill()
        lamina.wait()
    deadline = time.monotonic() + 5
    while (sleepers() or any(tmpdir.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sleepers() == []
    assert list(tmpdir.iterdir()) == []  # the sandbox's scratch dir went too


@pytest.mark.root
def test_an_upper_on_overlayfs_is_named_as_the_cause(box: Sandbox, tmp_path: Path) -> None:
    host = tmp_path / "host-overlay"
    for name in ("lower", "upper", "work", "merged"):
        (host / name).mkdir(parents=True)
    opts = f"lowerdir={host / 'lower'},upperdir={host / 'upper'},workdir={host / 'work'}"
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", opts, str(host / "merged")], check=True
    )
    try:
        upper, work = host / "merged" / "u", host / "merged" / "w"
        upper.mkdir()
        work.mkdir()
        spec = RunSpec(lowerdirs=(box.rootfs,), upper=upper, work=work, argv=("true",), env=())
        with pytest.raises(BuildError, match="the upper dir is on overlay, which cannot") as info:
            run(spec)
        assert "\n" not in str(info.value)
    finally:
        subprocess.run(["umount", str(host / "merged")], check=True)


@pytest.mark.root
def test_commands_get_dockers_umask_whatever_laminas_is(box: Sandbox) -> None:
    old = os.umask(0o077)
    try:
        status, lines = box.sh("umask; echo x > /f; mkdir /d")
    finally:
        os.umask(old)
    assert status == 0 and lines == ["0022"]
    assert stat.S_IMODE(os.lstat(box.upper / "f").st_mode) == 0o644
    assert stat.S_IMODE(os.lstat(box.upper / "d").st_mode) == 0o755


@pytest.mark.root
@pytest.mark.parametrize("network", ["host", "none"])
def test_etc_files_come_from_the_host_only_with_host_network(box: Sandbox, network: str) -> None:
    status, lines = box.sh("cat /etc/resolv.conf; echo --; cat /etc/hosts", network=network)
    assert status == 0
    cut = lines.index("--")
    resolv, hosts = lines[:cut], lines[cut + 1 :]
    if network == "host":
        assert resolv == Path("/etc/resolv.conf").read_text().splitlines()
        assert hosts == Path("/etc/hosts").read_text().splitlines()
    else:
        assert resolv == []
        assert hosts == ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]


# --- hardening: what Docker's defaults allow and no more ----------------------------

DOCKER_CAPS = "00000000a80425fb"  # CapEff of `docker run busybox` as root


@pytest.mark.root
def test_the_command_has_dockers_capabilities_no_new_privs_and_seccomp(box: Sandbox) -> None:
    status, lines = box.sh("grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status")
    assert status == 0
    fields = dict(line.split(":\t") for line in lines)
    assert fields == {
        "CapInh": "0000000000000000",
        "CapPrm": DOCKER_CAPS,
        "CapEff": DOCKER_CAPS,
        "CapBnd": DOCKER_CAPS,
        "CapAmb": "0000000000000000",
        "NoNewPrivs": "1",
        "Seccomp": "2",
        "Seccomp_filters": "1",
    }


@pytest.mark.root
def test_a_device_node_made_in_run_opens_nothing(box: Sandbox, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    # The reproducer, then nodes of /dev/zero (c 1 5) wherever the command can
    # write: the rootfs, /dev, a tmpfs mount and a bind (a cache mount outlives the step).
    script = (
        "mknod /blk b 254 0 && chmod 666 /blk && echo made;"
        " for d in / /dev/ /tmpfs/ /cache/; do mknod ${d}z5 c 1 5 &&"
        " { head -c 1 ${d}z5 >/dev/null 2>&1 && echo open $d || echo refused $d; }; done;"
        " head -c 1 /dev/zero | wc -c"
    )
    status, lines = box.sh(
        script,
        mounts=(MountSpec("/tmpfs"), MountSpec("/cache", cache)),
    )
    assert status == 0
    assert lines == [
        "made",
        "refused /",
        "refused /dev/",
        "refused /tmpfs/",
        "refused /cache/",
        "1",
    ]
    # Made, as Docker makes it (CAP_MKNOD stays), but inert.
    assert stat.S_ISBLK(os.lstat(box.upper / "blk").st_mode)


@pytest.mark.root
def test_a_setuid_bit_set_in_run_gives_no_privilege(box: Sandbox) -> None:
    # busybox's su needs its setuid bit; root may su to nobody, who then tries back.
    status, lines = box.sh(
        "sed -i 's/^root:x:/root::/' /etc/passwd && chmod 4755 /bin/busybox &&"
        " su -s /bin/sh -c 'su -c \"id -u\" root' nobody"
    )
    assert lines == ["su: must be suid to work properly"]
    assert status != 0


@pytest.mark.root
@pytest.mark.parametrize(
    ("script", "message"),
    [
        # Without seccomp, creating a user namespace needs no capability at all.
        ("unshare -U true", "unshare: unshare(0x10000000): Operation not permitted"),
        ("unshare -m true", "unshare: unshare(0x20000): Operation not permitted"),
        ("mount -t tmpfs none /mnt", "mount: permission denied (are you root?)"),
        ("nsenter -t 1 -m true", "nsenter: can't open '/proc/1/ns/mnt': Permission denied"),
    ],
)
def test_namespaces_and_mounts_are_refused_inside_run(
    box: Sandbox, script: str, message: str
) -> None:
    status, lines = box.sh(script)
    assert status == 1
    assert lines == [message]


@pytest.mark.root
def test_chroot_stays_allowed_as_in_docker(box: Sandbox) -> None:
    assert box.sh("chroot / true") == (0, [])


@pytest.mark.root
def test_a_fork_bomb_stops_at_the_pids_limit(box: Sandbox) -> None:
    started = time.monotonic()
    status, lines = box.sh(
        # The subshell stops at the first fork that fails; counting takes no fork.
        "(n=0; while [ $n -lt 300 ]; do sleep 60 & n=$((n+1)); done) 2>/dev/null;"
        " set -- /proc/[0-9]*; echo $#",
        pids_limit=64,
    )
    assert status == 0
    # The monitor counts too, outside the PID namespace.
    assert 40 <= int(lines[-1]) <= 63, lines
    assert time.monotonic() - started < 30
    # Every sleeper went with the namespace, and the cgroup with them.
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "60"]]
    parent = pids_parent()[0]
    if parent is not None:
        assert not [p for p in parent.iterdir() if p.name.startswith(f"lamina-run-{os.getpid()}-")]


@pytest.mark.root
def test_the_classic_fork_bomb_does_not_outlive_its_step(box: Sandbox) -> None:
    started = time.monotonic()
    status, _ = box.sh("b(){ b | b & }; b; sleep 1; echo done", pids_limit=64)
    assert status == 0
    assert time.monotonic() - started < 30
