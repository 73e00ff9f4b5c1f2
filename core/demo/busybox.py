"""A busybox root filesystem, built offline, for a ``busybox:latest`` base image.

Tests, the demo and CI have no registry to pull from, so they import this tar with
``lamina.core.embedded.archive.import_rootfs``. It holds a static busybox, one symlink per
applet (from ``busybox --list-full``), ``/etc/passwd`` with root and nobody,
``/etc/group``, ``/tmp`` (1777) and ``/root``. Entries are written in a fixed order
with fixed times, so the same busybox always gives the same tar (and diffID).
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

from lamina.core.errors import BuildError

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\nnobody:x:65534:\n"
# A fixed timestamp so the tar is reproducible.
_MTIME = 946684800  # 2000-01-01T00:00:00Z


def _applets(busybox: str) -> list[str]:
    try:
        out = subprocess.run(
            [busybox, "--list-full"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"cannot list the applets of {busybox}: {exc}") from exc
    return sorted({line.strip().lstrip("/") for line in out.splitlines() if line.strip()})


def _info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = link
    info.mtime = _MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def busybox_rootfs_tar(dest: Path, busybox: str = "/bin/busybox") -> Path:
    """Writes a minimal busybox root filesystem as an uncompressed tar.

    Args:
        dest: the tar file to write (its parent must exist).
        busybox: a statically linked busybox binary.

    Returns:
        ``dest``.

    Raises:
        BuildError: busybox is missing or cannot list its applets.
    """
    try:
        data = Path(busybox).read_bytes()
    except OSError as exc:
        raise BuildError(f"cannot read busybox at {busybox}: {exc.strerror or exc}") from exc
    applets = [a for a in _applets(busybox) if a != "bin/busybox"]
    dirs = {"bin", "etc", "root", "tmp"}
    for applet in applets:
        parts = applet.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs):
            mode = {"tmp": 0o1777, "root": 0o700}.get(d, 0o755)
            tar.addfile(_info(d + "/", tarfile.DIRTYPE, mode))
        tar.addfile(_info("bin/busybox", tarfile.REGTYPE, 0o755, len(data)), io.BytesIO(data))
        for applet in applets:
            # Absolute targets resolve inside the container's root, wherever it is.
            tar.addfile(_info(applet, tarfile.SYMTYPE, 0o777, link="/bin/busybox"))
        for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
            raw = text.encode()
            tar.addfile(_info(name, tarfile.REGTYPE, 0o644, len(raw)), io.BytesIO(raw))
    os.replace(tmp, dest)
    return dest
