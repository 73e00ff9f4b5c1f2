"""The sandbox without root: a user namespace maps the caller to 0, overlay uses userxattr.

Run for real as ``nobody`` through ``setpriv``; this needs root to switch users and a
Python interpreter that ``nobody`` may execute, and skips saying so otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sandbox_rootfs

NOBODY = 65534
PATH_ENV = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"

SCRIPT = """
import json, site, sys
site.addsitedir(sys.argv[1])
from pathlib import Path
from lamina.core.errors import LaminaError
from lamina.core.embedded.sandbox import RunSpec, check_available, run
job = json.loads(sys.argv[2])
lines = []
try:
    check_available()
    spec = RunSpec(
        lowerdirs=tuple(Path(p) for p in job["lowerdirs"]), upper=Path(job["upper"]),
        work=Path(job["work"]), argv=tuple(job["argv"]), env=tuple(job["env"]),
        user=job.get("user", ""), network=job.get("network", "host"),
        pids_limit=job.get("pids_limit", 2048),
    )
    print(json.dumps({"status": run(spec, lines.append), "lines": lines}))
except LaminaError as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc), "lines": lines}))
"""


def _as_nobody(python: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": "/tmp", "LANG": "C.UTF-8"},
        cwd="/",
        check=False,
    )


def _python_for_nobody() -> str | None:
    """An interpreter of this Python version that nobody can execute."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (
        sys.executable,
        f"/usr/bin/python{version}",
        f"/usr/local/bin/python{version}",
    ):
        if not os.path.exists(candidate) or shutil.which("setpriv") is None:
            continue
        # The sandbox re-executes sys.executable, so that must work for nobody too.
        check = (
            f"import subprocess, sys; assert sys.version.startswith('{version}');"
            " subprocess.run([sys.executable, '-c', ''], check=True)"
        )
        probe = _as_nobody(candidate, "-c", check)
        if probe.returncode == 0:
            return candidate
    return None


@pytest.fixture(scope="module")
def rootless(busybox: str) -> Iterator[tuple[str, Path, Path]]:
    """(python, rootfs, workspace): a busybox rootfs owned by nobody, as its store would be."""
    if os.geteuid() != 0:
        pytest.skip("switching to the nobody user needs root")
    python = _python_for_nobody()
    if python is None:
        pytest.skip("no Python interpreter of this version is executable by nobody (via setpriv)")
    # tmp_path lives under a root-only directory; nobody needs its own workspace.
    workspace = Path(tempfile.mkdtemp(prefix="lamina-rootless-", dir="/tmp"))
    try:
        os.chmod(workspace, 0o755)
        rootfs = sandbox_rootfs.make_busybox_rootfs(
            workspace / "rootfs", busybox, owner=(NOBODY, NOBODY)
        )
        yield python, rootfs, workspace
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def _run_as_nobody(
    rootless: tuple[str, Path, Path], name: str, script: str, **job: Any
) -> tuple[dict[str, Any], Path]:
    python, rootfs, workspace = rootless
    upper, work = workspace / f"{name}-upper", workspace / f"{name}-work"
    for path in (upper, work):
        path.mkdir()
        os.chown(path, NOBODY, NOBODY)
    payload: dict[str, Any] = {
        "lowerdirs": [str(rootfs)],
        "upper": str(upper),
        "work": str(work),
        "argv": ["/bin/sh", "-c", script],
        "env": [PATH_ENV],
        **job,
    }
    purelib = sysconfig.get_paths()["purelib"]
    done = _as_nobody(python, "-c", SCRIPT, purelib, json.dumps(payload))
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert list(work.iterdir()) == []
    return result, upper


@pytest.mark.root
def test_rootless_run_produces_a_layer(rootless: tuple[str, Path, Path]) -> None:
    script = (
        "id -u; echo hi > /a; rm /data/file; rm -rf /data/dir; mkdir /data/dir;"
        " echo n > /data/dir/new; tail -n +3 /proc/net/dev | cut -d: -f1; ls /proc | grep -c '^[0-9]'"
    )
    result, upper = _run_as_nobody(rootless, "layer", script, network="none")
    assert result.get("status") == 0, result
    uid, interfaces, pids = (line.strip() for line in result["lines"])
    assert (uid, interfaces) == ("0", "lo")
    assert 2 <= int(pids) <= 4  # init, the shell, ls and grep: no host process
    assert (upper / "a").read_text() == "hi\n"
    whiteout = os.lstat(upper / "data" / "file")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert sorted(os.listdir(upper / "data" / "dir")) == ["new"]
    # Without root only the user.* namespace can hold the opaque marker.
    assert os.listxattr(upper / "data" / "dir") == ["user.overlay.opaque"]
    assert os.getxattr(upper / "data" / "dir", "user.overlay.opaque") == b"y"
    for dirpath, dirnames, filenames in os.walk(upper):
        for entry in [dirpath, *(os.path.join(dirpath, n) for n in [*dirnames, *filenames])]:
            if entry != str(upper / "data" / "dir"):
                assert os.listxattr(entry, follow_symlinks=False) == [], entry
    assert sorted(os.listdir(upper)) == ["a", "data"]


@pytest.mark.root
def test_rootless_refuses_other_users(rootless: tuple[str, Path, Path]) -> None:
    result, upper = _run_as_nobody(rootless, "user", "id -u", user="nobody")
    assert result.get("error") == "BuildError", result
    assert "needs root" in result["message"] and "\n" not in result["message"]
    assert list(upper.iterdir()) == []


@pytest.mark.root
def test_rootless_run_is_hardened_like_root(rootless: tuple[str, Path, Path]) -> None:
    result, _ = _run_as_nobody(
        rootless,
        "hardened",
        "grep -E '^(CapEff|CapInh|NoNewPrivs|Seccomp):' /proc/self/status;"
        " unshare -U true 2>&1; mknod /z c 1 5 2>/dev/null && head -c 1 /z >/dev/null 2>&1 || echo inert",
    )
    assert result.get("status") == 0, result
    assert result["lines"] == [
        "CapInh:\t0000000000000000",
        "CapEff:\t00000000a80425fb",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        "unshare: unshare(0x10000000): Operation not permitted",
        "inert",
    ]


@pytest.mark.root
def test_rootless_fork_bomb_stops_at_the_limit(rootless: tuple[str, Path, Path]) -> None:
    # No cgroup can be made without root: RLIMIT_NPROC in the user namespace holds.
    result, _ = _run_as_nobody(
        rootless,
        "bomb",
        "(n=0; while [ $n -lt 300 ]; do sleep 60 & n=$((n+1)); done) 2>/dev/null;"
        " set -- /proc/[0-9]*; echo $#",
        pids_limit=48,
    )
    assert result.get("status") == 0, result
    assert 30 <= int(result["lines"][-1]) <= 48, result
