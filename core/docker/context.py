"""The build context tar, sent the way the ``docker`` CLI sends it.

The classic builder hashes each COPY/ADD source from the tar headers it receives
(tarsum v1: name, mode, uid, gid, size, typeflag, linkname, uname, gname, devmajor,
devminor), so a build shares the user's own ``docker build`` cache only if lamina's tar
headers are the CLI's, field for field. The CLI writes the context with moby's
``archive.TarWithOptions`` and ``ChownOpts`` uid/gid 0, and what that writes changed:

* CLI up to 20.10 (moby ``pkg/archive`` 20.10, ``FileInfoHeader``): ``uname``/``gname``
  looked up from the file's *real* owner (``root``, or a local user's name; empty when
  the uid has no name), and the file type bits in ``mode`` (``0100644``, ``040755``:
  ``fillGo18FileTypeBits``);
* CLI 23.0 (``FileInfoHeaderNoLookups``): no names, type bits still in ``mode``;
* CLI 24.0 and newer (moby cddaa84777 dropped ``fillGo18FileTypeBits``): no names, and
  ``mode`` holds the permission bits only.

lamina writes the tar of the CLI that ships with the daemon it talks to (daemon 20.10 is
API 1.41, 23.0 is 1.42, 24.0 is 1.43): Debian 12's ``docker.io`` is CLI and daemon
20.10, and a 28.x CLI on the same 20.10 daemon hashes differently from both (its cache
is not the 20.10 CLI's either). Checked against Docker 20.10.24 and a 28.2.2 CLI.

Otherwise the context is the CLI's: ``.dockerignore`` applied (the Dockerfile and
``.dockerignore`` themselves are always sent, and the daemon drops them if the patterns
match), owners zeroed, and a Dockerfile from outside the context added under a random
``.dockerfile.<hex>`` name that ``.dockerignore`` lists (docker/cli's
``AddDockerfileToBuildContext``, which writes mode ``0600`` without type bits).

That is the classic builder's context. A BuildKit build uploads one of its own,
:func:`buildkit_context_tar`: BuildKit checksums what it unpacks, not the tar headers.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
import stat
import tarfile
import tempfile
import time
from pathlib import Path
from typing import IO, cast

from lamina.core.context.dockerignore import (
    load_ignore_patterns,
    matches,
    read_ignore_file,
    walk_context,
)
from lamina.core.errors import ContextError, LaminaError

log = logging.getLogger(__name__)


# The context tar each generation of the docker CLI writes (see the module docstring).
STYLE_LOOKUPS = "cli-20.10"  # names of the real owner, file type bits in mode
STYLE_TYPE_BITS = "cli-23"  # no names, file type bits in mode
STYLE_PLAIN = "cli-24"  # no names, permission bits only


def tar_style(api_version: str) -> str:
    """The context tar of the CLI that ships with a daemon speaking ``api_version``."""
    try:
        version = tuple(int(p) for p in api_version.split(".")[:2])
    except ValueError:
        return STYLE_PLAIN
    if version <= (1, 41):
        return STYLE_LOOKUPS
    if version == (1, 42):
        return STYLE_TYPE_BITS
    return STYLE_PLAIN


class _GoTarInfo(tarfile.TarInfo):
    """A tar entry whose ``mode`` field may carry the file type bits, as Go's
    ``archive/tar`` writes them for moby's ``fillGo18FileTypeBits`` (Python's tarfile
    masks ``mode`` to ``0o7777``)."""

    full_mode: int | None = None

    def tobuf(
        self,
        format: int | None = tarfile.DEFAULT_FORMAT,
        encoding: str | None = None,
        errors: str = "surrogateescape",
    ) -> bytes:
        buf = super().tobuf(format, encoding or tarfile.ENCODING, errors)  # type: ignore[arg-type]
        if self.full_mode is None:
            return buf
        # The entry's own header is the last block (extended headers come before it).
        header = bytearray(buf[-tarfile.BLOCKSIZE :])
        header[100:108] = b"%07o\0" % self.full_mode
        header[148:156] = b"        "
        # tarfile's own checksum: unsigned sum of the block, the field read as spaces.
        chksum = sum(header)
        header[148:155] = b"%06o\0" % chksum
        return buf[: -tarfile.BLOCKSIZE] + bytes(header)


def _as_cli(info: tarfile.TarInfo, st_mode: int, style: str) -> tarfile.TarInfo:
    """Owner and mode as that CLI writes them; uid/gid are always 0 (``ChownOpts``)."""
    info.uid = info.gid = 0
    if style != STYLE_LOOKUPS:
        info.uname = info.gname = ""  # 20.10 keeps the names tarfile looked up
    if style != STYLE_PLAIN and isinstance(info, _GoTarInfo):
        info.full_mode = stat.S_IFMT(st_mode) | stat.S_IMODE(st_mode)
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


def _add_entries(
    tar: tarfile.TarFile, root: Path, rels: list[str], style: str, whole_seconds: bool
) -> None:
    """Adds context entries, owners and modes as that CLI writes them."""
    for rel in rels:
        full = root / rel
        try:
            # typeshed says TarInfo, but a socket gives None.
            info = cast("tarfile.TarInfo | None", tar.gettarinfo(str(full), arcname=rel))
        except OSError as exc:
            raise ContextError(f"cannot read context file {rel}: {exc.strerror or exc}") from exc
        if info is None:
            continue  # a socket: the CLI skips those too
        _as_cli(info, os.lstat(full).st_mode, style)
        _capability(full, info)
        if whole_seconds:
            info.mtime = int(info.mtime)
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


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    """Adds a file lamina writes itself (mode ``0600`` without type bits, as docker/cli's
    ``AddDockerfileToBuildContext`` writes it)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, mtime
    tar.addfile(info, io.BytesIO(data))


def _absolute(dockerfile: Path) -> Path:
    df = dockerfile if dockerfile.is_absolute() else Path.cwd() / dockerfile
    return Path(os.path.abspath(df))


def context_tar(
    context_dir: Path, dockerfile: Path, style: str = STYLE_PLAIN
) -> tuple[IO[bytes], str]:
    """Writes the context as the CLI would send it.

    Args:
        context_dir: the build context.
        dockerfile: the Dockerfile (inside or outside the context).
        style: which CLI's tar (:func:`tar_style`).

    Returns:
        ``(tar file, Dockerfile name inside the tar)``; the file is positioned at 0 and
        removed when closed.

    Raises:
        ContextError: an unreadable context, Dockerfile or ``.dockerignore``.
    """
    root = context_dir.resolve()
    df = _absolute(dockerfile)
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
        with tarfile.open(
            fileobj=out, mode="w", format=tarfile.PAX_FORMAT, tarinfo=_GoTarInfo
        ) as tar:
            rels = [
                rel
                for rel, _is_dir in walk_context(root, exclude=walk_excludes or None)
                if not (outside and rel == ".dockerignore")  # rewritten below
            ]
            _add_entries(tar, root, rels, style, whole_seconds=False)
            if outside:
                now = time.time()
                _add_file(tar, rel_df, df_bytes, now)
                ignore = (ignore_text or "") + "\n" + rel_df + "\n"
                _add_file(tar, ".dockerignore", ignore.encode(), now)
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


# The name an outside Dockerfile takes in a BuildKit upload: fixed, so that a
# ``COPY . .`` seeing it keys the same from one build to the next.
OUTSIDE_DOCKERFILE = ".dockerfile.lamina"


def buildkit_context_tar(context_dir: Path, dockerfile: Path) -> tuple[IO[bytes], str]:
    """Writes the context a BuildKit build uploads, as BuildKit would have received it.

    The Engine API serves an uploaded context to BuildKit as a tar to unpack (moby's
    ``builder/builder-next``, ``reqBodyHandler``), not through the session the docker
    CLI opens, and BuildKit applies no ignore patterns to such a context. So lamina
    applies them here exactly as BuildKit applies them to the CLI's: the patterns of
    ``<Dockerfile>.dockerignore`` next to the Dockerfile, else of
    ``<context>/.dockerignore``, and nothing put back (the CLI's session sends the
    Dockerfile apart, so an excluded Dockerfile or ``.dockerignore`` is not in its
    context). BuildKit's content checksums ignore owners and mtimes and owners are
    zeroed anyway, so ``COPY`` steps key as they do for the CLI's builds and the two
    share the cache.

    What cannot be the CLI's:

    * BuildKit reads the Dockerfile from the upload, so a Dockerfile the patterns
      exclude is still sent, and one from outside the context is sent as
      ``.dockerfile.lamina``: a copy of the whole context sees that one file more;
    * a copy of the context's root (``COPY . /app``) never shares the CLI's cache:
      BuildKit checksums the root of a context a session synced with a placeholder for
      its header (``cache/contenthash/checksum.go``, ``HandleChange``: "root is not
      called by HandleChange. need to fake it") and the root of an unpacked upload
      from the directory itself. lamina's own builds of it hit each other; every
      other ``COPY`` and ``ADD`` of the context, and everything after, is shared.

    The upload must look like a tar in its first 1024 bytes (BuildKit's ``isArchive``
    reads one header there), so no entry carries sub-second mtimes (which would take a
    PAX header: Go's writer rounds them away for the CLI too) and the Dockerfile, a
    short name, comes first.

    Args:
        context_dir: the build context.
        dockerfile: the Dockerfile (inside or outside the context).

    Returns:
        ``(tar file, Dockerfile name inside the tar)``; the file is positioned at 0 and
        removed when closed.

    Raises:
        ContextError: an unreadable context, Dockerfile or ignore file.
    """
    root = context_dir.resolve()
    df = _absolute(dockerfile)
    try:
        df_bytes = df.read_bytes()
    except OSError as exc:
        raise ContextError(f"cannot read {exc.filename}: {exc.strerror or exc}") from exc
    patterns = load_ignore_patterns(root, df)
    try:
        rel_df: str | None = df.relative_to(root).as_posix()
    except ValueError:
        rel_df = None
    out = tempfile.TemporaryFile(prefix="lamina-context-")  # noqa: SIM115
    try:
        with tarfile.open(
            fileobj=out, mode="w", format=tarfile.PAX_FORMAT, tarinfo=_GoTarInfo
        ) as tar:
            rels = [rel for rel, _is_dir in walk_context(root, exclude=patterns or None)]
            if rel_df is None:
                name = OUTSIDE_DOCKERFILE
                _add_file(tar, name, df_bytes, int(time.time()))
                rels = [r for r in rels if r != name]
            else:
                name = rel_df
                if rel_df in rels:
                    rels.remove(rel_df)
                _add_entries(tar, root, [rel_df], STYLE_PLAIN, whole_seconds=True)
            _add_entries(tar, root, rels, STYLE_PLAIN, whole_seconds=True)
    except LaminaError:
        out.close()
        raise
    except OSError as exc:
        out.close()
        raise ContextError(
            f"cannot write the build context for {root}: {exc.strerror or exc}"
        ) from exc
    out.seek(0)
    log.debug("BuildKit context %s uploaded with Dockerfile %s", root, name)
    return out, name
