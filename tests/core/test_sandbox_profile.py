"""Docker's default capabilities and seccomp profile as lamina resolves them, and where
a RUN's pids cgroup goes (pure: no sandbox is started)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from lamina.core.embedded.sandbox.cgroup import pids_parent
from lamina.core.embedded.sandbox.profile import (
    DEFAULT_CAPABILITIES,
    capability_numbers,
    seccomp_rules,
)


def _allowed(profile: dict[str, object]) -> dict[str, list[dict[str, object]]]:
    found: dict[str, list[dict[str, object]]] = {}
    for rule in profile["rules"]:  # type: ignore[attr-defined]
        for name in rule["names"]:
            found.setdefault(name, []).append(rule)
    return found


def test_capabilities_are_dockers_fourteen() -> None:
    assert len(DEFAULT_CAPABILITIES) == 14
    # The CapEff `docker run` shows as root.
    assert sum(1 << n for n in capability_numbers()) == 0xA80425FB


def test_what_needs_sys_admin_is_not_allowed() -> None:
    rules = _allowed(seccomp_rules(machine="x86_64", release="6.1.0"))
    for name in (
        "mount",
        "umount2",
        "unshare",
        "setns",
        "bpf",
        "keyctl",
        "add_key",
        "open_by_handle_at",
        "init_module",
        "kexec_load",
        "reboot",
        "swapon",
        "perf_event_open",
        "fsopen",
        "move_mount",
        "open_tree",
        "settimeofday",
    ):
        assert name not in rules, name
    # clone only without namespace flags, clone3 says ENOSYS so libc falls back.
    (clone,) = rules["clone"]
    assert clone["args"] == [[0, "masked_eq", 0x7E020000, 0]]
    (clone3,) = rules["clone3"]
    assert (clone3["action"], clone3["errno"]) == ("errno", errno.ENOSYS)
    assert rules["chroot"] and rules["mknod"] and rules["arch_prctl"]
    assert [r["args"] for r in rules["socket"]] == [
        [[0, "lt", 38, 0]],
        [[0, "eq", 39, 0]],
        [[0, "gt", 40, 0]],
    ]


def test_profile_follows_the_architecture_and_kernel() -> None:
    arm = seccomp_rules(machine="aarch64", release="6.1.0")
    assert arm["arches"] == ["arm"]
    assert "arch_prctl" not in _allowed(arm) and "set_tls" in _allowed(arm)
    s390 = _allowed(seccomp_rules(machine="s390x", release="6.1.0"))
    assert [r["args"][0][0] for r in s390["clone"]] == [1]
    # ptrace is in Docker's list only from kernel 4.8 on.
    assert "ptrace" not in _allowed(seccomp_rules(machine="x86_64", release="4.4.0-210"))
    assert "ptrace" in _allowed(seccomp_rules(machine="x86_64", release="6.18.44-fc"))
    assert seccomp_rules(machine="x86_64")["arches"] == ["x86", "x32"]


MOUNTINFO = (
    "25 30 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n"
    "33 25 0:29 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "34 25 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
)


@pytest.mark.parametrize(
    ("proc_cgroup", "want", "delegated"),
    [
        # Hybrid (this kind of machine): v2 without pids, v1 pids.
        ("8:pids:/a\n0::/\n", "pids/a", False),
        ("0::/a\n", "unified/a", True),
        ("0::/a\n", None, False),  # pids not delegated to children
        ("4:memory:/\n", None, False),
    ],
)
def test_pids_parent_finds_the_hierarchy_with_pids(
    tmp_path: Path, proc_cgroup: str, want: str | None, delegated: bool
) -> None:
    for sub in ("pids/a", "unified/a"):
        (tmp_path / sub).mkdir(parents=True)
    if delegated:
        (tmp_path / "unified" / "a" / "cgroup.subtree_control").write_text("cpu pids\n")
    mountinfo = MOUNTINFO.replace("/sys/fs/cgroup", str(tmp_path))
    found, reason = pids_parent(proc_cgroup, mountinfo)
    if want is None:
        assert found is None and reason
    else:
        assert found == tmp_path / want and reason == ""
