"""A busybox root filesystem for sandbox and RUN tests.

Tests import it as ``sandbox_rootfs`` (``tests/support`` is on pytest's ``pythonpath``)
and call ``make_busybox_rootfs(dest, busybox)``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "builder:x:1000:1000:builder:/home/builder:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = (
    "root:x:0:\nwheel:x:10:root,builder\nbuilder:x:1000:\nstaff:x:50:builder\nnogroup:x:65534:\n"
)


def make_busybox_rootfs(dest: Path, busybox: str, owner: tuple[int, int] | None = None) -> Path:
    """Write a minimal busybox root filesystem at ``dest``.

    It has ``/bin/busybox`` with every applet symlinked where ``--list-full`` puts it,
    ``/etc/passwd`` and ``/etc/group`` (root, builder 1000, nobody 65534), ``/tmp``
    (1777), ``/root``, and test data: ``/data/file`` (``f``), ``/data/dir/x``,
    ``/data/mv/m``.

    Args:
        dest: an absent or empty directory.
        busybox: the static busybox binary to copy.
        owner: uid and gid to give every entry (an unprivileged layer store's view).

    Returns:
        ``dest``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)
    for rel in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "data/dir", "data/mv"):
        (dest / rel).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    os.chmod(dest / "root", 0o700)
    shutil.copy2(busybox, dest / "bin" / "busybox")
    applets = subprocess.run(
        [busybox, "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        link = dest / applet
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists() and not link.is_symlink():
            link.symlink_to("/bin/busybox")
    (dest / "etc" / "passwd").write_text(PASSWD)
    (dest / "etc" / "group").write_text(GROUP)
    (dest / "data" / "file").write_text("f\n")
    (dest / "data" / "dir" / "x").write_text("x\n")
    (dest / "data" / "mv" / "m").write_text("m\n")
    if owner is not None:
        for dirpath, dirnames, filenames in os.walk(dest):
            for name in [*dirnames, *filenames]:
                os.chown(os.path.join(dirpath, name), *owner, follow_symlinks=False)
        os.chown(dest, *owner)
    return dest
