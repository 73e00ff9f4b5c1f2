"""The build context tar, sent the way the ``docker`` CLI sends it.

The SDK's own context tar keeps each file's real uid/gid and names, so a ``chown`` in
the context would miss Docker's cache; the CLI forces uid/gid 0 (moby's
``archive.TarWithOptions`` with ``ChownOpts``), and that is what users' caches are made
of. This module writes the context like the CLI: ``.dockerignore`` applied (the
Dockerfile and ``.dockerignore`` themselves are always sent, and the daemon drops them
if the patterns match), owners zeroed, and a Dockerfile from outside the context added
under a random ``.dockerfile.<hex>`` name that ``.dockerignore`` lists (docker/cli's
``AddDockerfileToBuildContext``).
"""

from __future__ import annotations

import io
import logging
import os
import secrets
import tarfile
import tempfile
import time
from pathlib import Path
from typing import IO, cast

from lamina.core.context.dockerignore import matches, read_ignore_file, walk_context
from lamina.core.errors import ContextError, LaminaError

log = logging.getLogger(__name__)


def _zero_owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _capability(path: Path, info: tarfile.TarInfo) -> None:
    """Carries ``security.capability``, the one xattr the CLI reads into the context tar."""
    if not (info.isreg() or info.isdir()):
        return
    try:
        value = os.getxattr(path, "security.capability", follow_symlinks=False)
    except OSError:
        return  # no such attribute, or a filesystem without xattrs
    # Go's archive/tar writes xattrs as SCHILY.xattr.* PAX records; values are raw bytes.
    key = "SCHILY.xattr.security.capability"
    info.pax_headers = {**info.pax_headers, key: value.decode("utf-8", "surrogateescape")}


def context_tar(context_dir: Path, dockerfile: Path) -> tuple[IO[bytes], str]:
    """Writes the context as the CLI would send it.

    Args:
        context_dir: the build context.
        dockerfile: the Dockerfile (inside or outside the context).

    Returns:
        ``(tar file, Dockerfile name inside the tar)``; the file is positioned at 0 and
        removed when closed.

    Raises:
        ContextError: an unreadable context, Dockerfile or ``.dockerignore``.
    """
    root = context_dir.resolve()
    df = dockerfile if dockerfile.is_absolute() else Path.cwd() / dockerfile
    df = Path(os.path.abspath(df))
    ignore_path = root / ".dockerignore"
    try:
        ignore_text = ignore_path.read_text(encoding="utf-8") if ignore_path.is_file() else None
        df_bytes = df.read_bytes()
    except OSError as exc:
        raise ContextError(f"cannot read {exc.filename}: {exc.strerror or exc}") from exc
    try:
        rel_df = df.relative_to(root).as_posix()
        outside = False
    except ValueError:
        rel_df = ".dockerfile." + secrets.token_hex(10)
        outside = True
    excludes = read_ignore_file(ignore_text) if ignore_text is not None else []
    walk_excludes = list(excludes)
    # Like docker/cli's TrimBuildFilesFromExcludes: both files always reach the daemon.
    if excludes and matches(".dockerignore", excludes):
        walk_excludes.append("!.dockerignore")
    if excludes and not outside and matches(rel_df, excludes):
        walk_excludes.append("!" + rel_df)
    # Returned open: the build streams it to Docker and closes it.
    out = tempfile.TemporaryFile(prefix="lamina-context-")  # noqa: SIM115
    try:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel, _is_dir in walk_context(root, exclude=walk_excludes or None):
                if outside and rel == ".dockerignore":
                    continue  # rewritten below
                full = root / rel
                try:
                    # typeshed says TarInfo, but a socket gives None.
                    info = cast("tarfile.TarInfo | None", tar.gettarinfo(str(full), arcname=rel))
                except OSError as exc:
                    raise ContextError(
                        f"cannot read context file {rel}: {exc.strerror or exc}"
                    ) from exc
                if info is None:
                    continue  # a socket: the CLI skips those too
                _zero_owner(info)
                _capability(full, info)
                if info.isreg():
                    try:
                        with open(full, "rb") as fh:
                            tar.addfile(info, fh)
                    except OSError as exc:
                        raise ContextError(
                            f"cannot read context file {rel}: {exc.strerror or exc}"
                        ) from exc
                else:
                    tar.addfile(info)
            if outside:
                now = time.time()
                df_info = tarfile.TarInfo(rel_df)
                df_info.size, df_info.mode, df_info.mtime = len(df_bytes), 0o600, now
                tar.addfile(df_info, io.BytesIO(df_bytes))
                ignore = (ignore_text or "") + "\n" + rel_df + "\n"
                ig_info = tarfile.TarInfo(".dockerignore")
                ig_info.size, ig_info.mode, ig_info.mtime = len(ignore.encode()), 0o600, now
                tar.addfile(ig_info, io.BytesIO(ignore.encode()))
    except LaminaError:
        out.close()
        raise
    except OSError as exc:
        out.close()
        raise ContextError(
            f"cannot write the build context for {root}: {exc.strerror or exc}"
        ) from exc
    out.seek(0)
    log.debug("context %s sent with Dockerfile %s", root, rel_df)
    return out, rel_df
