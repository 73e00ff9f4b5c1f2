"""COPY and ADD: resolving sources, checksumming them, and writing a new layer.

Sources come from the build context (``.dockerignore`` applied), from another stage's
or image's root filesystem (``--from``), from a heredoc, or (ADD) from a URL. The
classic builder's rules apply: a directory source copies its *contents*; several
sources need a destination ending in ``/``; a file copied to a path ending in ``/`` or
to an existing directory keeps its base name; a relative destination is relative to
WORKDIR; missing parent directories are created 0755 and owned by root; everything
copied belongs to 0:0 unless ``--chown`` says otherwise; ADD of a local tar archive
(plain, gzip, bzip2 or xz) extracts it.

The new layer is written in overlay format into a directory the caller commits with
``store.layers.commit_dir``. Directories that exist in the image below and are only
traversed are recreated with their existing metadata, so the layer records no
spurious change to them.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import os
import posixpath
import re
import shutil
import stat
import tarfile
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from lamina.core.context.checksum import (
    Context,
    ManifestEntry,
    entry_type,
    hash_string_slice,
    tarsum_file,
)
from lamina.core.dockerfile.quote import go_bytes
from lamina.core.embedded.builder.rootfs import RootFS, lookup_group, lookup_user, split
from lamina.core.embedded.store import beneath
from lamina.core.embedded.store.dedup import Candidate, FilePool, file_key
from lamina.core.errors import BuildError, ContextError

log = logging.getLogger(__name__)

_ARCHIVE_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


@dataclass
class Source:
    """One resolved COPY/ADD source.

    Attributes:
        origin: ``context``, ``rootfs`` (another stage or image), or ``file`` (a heredoc
            or a download written to a scratch file).
        path: the source path: relative to the context root, absolute in the rootfs, or
            the scratch file on disk.
        name: the base name a copied file keeps.
        is_dir: whether the source is a directory (its contents are copied).
        archive: ADD of a local tar archive: extract it instead of copying it.
        checksum: ``file:<hex>`` or ``dir:<hex>``.
        manifest: every entry the source contributes.
    """

    origin: str
    path: str
    name: str
    is_dir: bool = False
    archive: bool = False
    checksum: str = ""
    manifest: list[ManifestEntry] = field(default_factory=list)
    # For context sources the manifest is built on demand: only a miss needs it.
    manifest_of: Callable[[], list[ManifestEntry]] | None = field(
        default=None, repr=False, compare=False
    )
    # COPY/ADD --exclude (BuildKit): patterns of paths below a directory source that
    # are not copied (matched against the path relative to the source).
    exclude: tuple[str, ...] = ()
    # COPY --parents (BuildKit): the source's own path is kept below the destination.
    parents: bool = False
    # For context sources: ``Context.tree_cached`` of the source's path, so a checksum
    # of an unchanged tree is remembered rather than recomputed file by file.
    tree: Callable[[str, Callable[[], str]], str] | None = field(
        default=None, repr=False, compare=False
    )

    def entries(self) -> list[ManifestEntry]:
        """Every entry the source contributes (``manifest``, built now if deferred)."""
        every = self.manifest_of() if self.manifest_of is not None else self.manifest
        if not self.exclude:
            return every
        top = self.path.lstrip("/") if self.origin == "rootfs" else self.path
        return [e for e in every if not self.excluded(_below(top, e.path))]

    def excluded(self, rel: str) -> bool:
        """Whether ``rel`` (relative to the source) or a directory above it matches an
        ``--exclude`` pattern."""
        if not rel or not self.exclude:
            return False
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            head = "/".join(parts[:i])
            if any(go_match(p.strip("/"), head) for p in self.exclude):
                return True
        return False


def _below(top: str, path: str) -> str:
    if not top:
        return path
    return path[len(top) + 1 :] if path.startswith(top + "/") else ""


# -- Go's filepath.Match --------------------------------------------------------------


def has_wildcards(pattern: str) -> bool:
    """Whether a source path holds an unescaped ``*``, ``?`` or ``[`` (moby's check)."""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c in "*?[":
            return True
        i += 1
    return False


@functools.lru_cache(maxsize=256)
def _go_pattern(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            j = i + 1
            cls = ["["]
            if j < len(pattern) and pattern[j] == "^":
                cls.append("^")
                j += 1
            closed = False
            while j < len(pattern):
                d = pattern[j]
                if d == "]" and len(cls) > (2 if cls[-1] == "^" else 1):
                    closed = True
                    break
                if d == "\\" and j + 1 < len(pattern):
                    j += 1
                    d = pattern[j]
                    cls.append(re.escape(d))
                elif d == "-":
                    cls.append("-")
                else:
                    cls.append(re.escape(d) if d in "]^[\\" else d)
                j += 1
            if not closed:
                raise BuildError(f"bad wildcard pattern {pattern!r} (unclosed '[')")
            cls.append("]")
            out.append("".join(cls))
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def go_match(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match``: ``*`` and ``?`` never match ``/``."""
    return _go_pattern(pattern).match(name) is not None


# -- resolving sources ----------------------------------------------------------------


def _clean_context_path(src: str) -> str:
    parts: list[str] = []
    for part in src.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise ContextError(f"COPY source {src} is outside the build context")
            parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def context_sources(ctx: Context, src: str, *, add: bool) -> list[Source]:
    """The sources a context path (possibly a wildcard) names, checksummed.

    Raises:
        ContextError: nothing matches, or a matched file cannot be read.
    """
    rel = _clean_context_path(src)
    if has_wildcards(rel):
        matches: list[str] = []
        skip_below: list[str] = []
        for path in sorted(ctx.entries):
            if any(path.startswith(d + "/") for d in skip_below):
                continue
            if go_match(rel, path):
                matches.append(path)
                if ctx.is_dir(path):
                    skip_below.append(path)
        if not matches:
            raise ContextError(
                f"no source files were specified: {src} matches nothing in the context"
            )
        rels = matches
    else:
        if not ctx.exists(rel):
            raise ContextError(f"{src}: no such file or directory in the build context")
        rels = [rel]
    out = []
    for r in rels:
        # Hashing reads every file (or trusts the stat cache, whose signature holds the
        # mode and ctime), so an unreadable file fails here, naming itself.
        target = ctx.resolve(r)  # a symlinked source is followed, as by Docker
        is_dir = ctx.is_dir(r)
        archive = add and not is_dir and is_archive(ctx.root / target)
        out.append(
            Source(
                origin="context",
                path=target,
                name=r.rsplit("/", 1)[-1] if r else ".",
                is_dir=is_dir,
                archive=archive,
                checksum=ctx.checksum(r),
                manifest_of=functools.partial(ctx.manifest, r),
                tree=functools.partial(ctx.tree_cached, r),
            )
        )
    return out


def rootfs_sources(root: RootFS, src: str) -> list[Source]:
    """The sources a path (possibly a wildcard) names in another stage or image.

    Files are hashed with their real owner, as the classic builder hashes an image's
    files.

    Raises:
        BuildError: nothing matches.
    """
    parts = split(src)
    if has_wildcards("/".join(parts)):
        parent = "/" + "/".join(parts[:-1])
        names = [n for n in root.listdir(parent) if go_match(parts[-1], n)]
        paths = ["/" + "/".join(parts[:-1] + [n]) for n in names]
        if not paths:
            raise BuildError(f"no source files were specified: {src} matches nothing")
    else:
        paths = ["/" + "/".join(parts)]
        if root.stat(paths[0]) is None:
            raise BuildError(f"{src}: no such file or directory")
    out = []
    for path in paths:
        hit = root.stat(path)
        assert hit is not None
        disk, st = hit
        name = path.lstrip("/")
        entries = [(name, disk, st)]
        if stat.S_ISDIR(st.st_mode):
            entries += [(f"{name}/{rel}" if name else rel, d, s) for rel, d, s in root.walk(path)]
        sums = []
        manifest = []
        for entry_name, d, s in entries:
            if not entry_name:
                continue
            tarsum, content = tarsum_file(d, entry_name, s, real_owner=True)
            sums.append(tarsum)
            manifest.append(
                ManifestEntry(
                    path=entry_name,
                    type=entry_type(s.st_mode),
                    mode=stat.S_IMODE(s.st_mode),
                    size=s.st_size if stat.S_ISREG(s.st_mode) else 0,
                    digest=content,
                    link=os.readlink(d) if stat.S_ISLNK(s.st_mode) else "",
                    uid=s.st_uid,
                    gid=s.st_gid,
                )
            )
        is_dir = stat.S_ISDIR(st.st_mode)
        checksum = hash_string_slice("dir", sorted(sums)) if is_dir else "file:" + sums[0]
        out.append(
            Source(
                origin="rootfs",
                path=path,
                name=parts[-1] if parts else "/",
                is_dir=is_dir,
                checksum=checksum,
                manifest=manifest,
            )
        )
    return out


def file_source(path: Path, name: str, mode: int) -> Source:
    """A scratch file (heredoc body or download) as a source, hashed as a context file."""
    os.chmod(path, mode)
    st = os.lstat(path)
    tarsum, content = tarsum_file(path, name, st)
    return Source(
        origin="file",
        path=str(path),
        name=name,
        checksum="file:" + tarsum,
        manifest=[ManifestEntry(name, "file", mode, st.st_size, content)],
    )


def is_git_ref(src: str) -> bool:
    """Whether an ADD source names a git repository, as BuildKit's Dockerfile frontend
    reads it (1.6, ``ADD <git ref>``): a ``git://``, ``ssh://`` or ``git@`` remote, a
    ``github.com/`` path, or an http(s) URL whose path ends with ``.git``, each with an
    optional ``#ref[:subdir]``."""
    if src.startswith(("git://", "ssh://", "git@", "github.com/")):
        return True
    if src.startswith(("http://", "https://")):
        # "#ref:subdir" is the fragment; "?query" cannot be part of a git remote's path.
        path = src.split("#", 1)[0].split("?", 1)[0]
        return path.endswith(".git")
    return False


def download(url: str, dest_dir: Path, timeout: float = 60.0) -> tuple[Path, str]:
    """Downloads ``url`` into ``dest_dir``; returns the file and the name it keeps.

    Raises:
        BuildError: the download fails.
    """
    # urllib.request brings http.client and ssl: only an ADD of a URL loads them.
    import urllib.parse
    import urllib.request

    target = dest_dir / f"url-{hashlib.sha256(go_bytes(url)).hexdigest()[:16]}"
    try:
        # urlparse refuses some URLs itself ("http://[::1/x": ValueError).
        name = os.path.basename(urllib.parse.urlparse(url).path) or "download"
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(target, "wb") as f:
            shutil.copyfileobj(resp, f)
    except (OSError, ValueError) as exc:
        raise BuildError(f"cannot download {url}: {exc}") from exc
    return target, name


def is_archive(path: Path) -> bool:
    """Whether a local file is a tar archive ADD would extract (plain, gz, bz2, xz)."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
        if any(head.startswith(m) for m in _ARCHIVE_MAGIC):
            return tarfile.is_tarfile(path)
        return tarfile.is_tarfile(path)
    except (OSError, tarfile.TarError, EOFError):
        return False


# -- ownership ------------------------------------------------------------------------


def parse_chown(root: RootFS, chown: str) -> tuple[int, int]:
    """``--chown=user[:group]`` resolved in the target image (a lone user is also the
    group, as in the classic builder)."""
    parts = chown.split(":")
    if len(parts) > 2 or not parts[0]:
        raise BuildError(f"invalid --chown value {chown!r} (expected user[:group])")
    user, group = (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    uid, _ = lookup_user(root, user)
    gid = lookup_group(root, group)
    return uid, gid


def parse_chmod(chmod: str) -> int:
    """``--chmod=0755`` as an int."""
    try:
        mode = int(chmod, 8)
    except ValueError as exc:
        raise BuildError(f"invalid --chmod value {chmod!r} (expected octal)") from exc
    if mode < 0 or mode > 0o7777:
        raise BuildError(f"invalid --chmod value {chmod!r}")
    return mode


# -- writing the layer ----------------------------------------------------------------


# Threads copying a directory source's files (creating files is most of a cold COPY).
_COPY_THREADS = 4


@dataclass(frozen=True)
class _CopyJob:
    """One regular file to copy into a layer: a fresh inode with the copy's metadata."""

    rel: str
    target: str
    disk: Path | str
    st: os.stat_result
    mode: int
    uid: int
    gid: int
    cap: bytes | None
    # The content digest when the copy may share storage (see ``LayerWriter``).
    digest: str | None
    stable: Callable[[], bool] | None

    def run(self) -> Candidate | None:
        """Copies the file; returns it as a candidate for sharing when its digest holds.

        Raises:
            BuildError: the copy failed.
        """
        try:
            now, capped = _copy_file(self.disk, self.target, self)
        except OSError as exc:
            raise BuildError(f"cannot copy {self.rel}: {exc.strerror or exc}") from exc
        if self.digest is None or (self.stable is not None and not self.stable()):
            return None
        # The copy's own inode, keyed by what it is now (a filesystem with coarser
        # times than the source's would change the mtime, and so the key).
        cap = self.cap if capped else None
        xattrs = {"security.capability": cap} if cap is not None else {}
        key = file_key(
            self.digest, now.st_mode, now.st_uid, now.st_gid, now.st_size, now.st_mtime_ns, xattrs
        )
        return Candidate(self.rel, key, now.st_ino, now.st_blocks * 512, True, cap)


def _run_all(jobs: list[_CopyJob]) -> list[Candidate | None]:
    return [job.run() for job in jobs]


def _copy_file(src: Path | str, dst: str, job: _CopyJob) -> tuple[os.stat_result, bool]:
    """A new file ``dst`` with ``src``'s bytes and the job's owner, mode, capability and
    times, all set through its descriptor; returns its ``fstat`` and whether the
    capability was set (a filesystem may refuse it).

    ``copy_file_range`` copies in the kernel (sharing extents where the filesystem can),
    with ``sendfile`` where it cannot.
    """
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fout = os.open(
            dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            _copy_bytes(fin, fout)
            os.fchown(fout, job.uid, job.gid)
            # After chown, which clears set-id bits and capabilities.
            os.fchmod(fout, job.mode)
            capped = False
            if job.cap is not None:
                try:
                    os.setxattr(fout, "security.capability", job.cap)
                    capped = True
                except OSError:
                    pass
            os.utime(fout, ns=(job.st.st_atime_ns, job.st.st_mtime_ns))
            return os.fstat(fout), capped
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def _copy_bytes(fin: int, fout: int) -> None:
    try:
        while os.copy_file_range(fin, fout, 1 << 30):
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while os.sendfile(fout, fin, None, 1 << 30):
        pass


class LayerWriter:
    """Writes copied entries into an overlay-format layer directory.

    With a ``pool``, a regular file whose content digest is known becomes a link to the
    store's identical file (same content, mode, owner, size and mtime) instead of a
    copy, and every file whose key is known is listed in ``known`` for the commit (see
    ``store.dedup``). Nothing is ever written to a linked inode: its metadata is already
    what the copy would have set.

    Args:
        out: the (empty) layer directory.
        below: the image the layer goes on top of.
        owner: uid/gid for everything copied.
        chmod: a mode for everything copied, or None to keep the source's.
        pool: the store's shared files, or None to copy everything (a bind mount's
            copy may be written to, so it must never share an inode).
        held_below: keys of the files the layers below already share: an image must
            never see two names of one inode, so those are copied.
    """

    def __init__(
        self,
        out: Path,
        below: RootFS,
        owner: tuple[int, int] = (0, 0),
        chmod: int | None = None,
        pool: FilePool | None = None,
        held_below: Collection[bytes] = frozenset(),
    ) -> None:
        self.out = out
        self.below = below
        self.owner = owner
        self.chmod = chmod
        self.pool = pool
        self.known: dict[str, Candidate] = {}
        # Keys this layer holds, and those the layers below hold: none is shared twice.
        self._keys: set[bytes] = set(held_below)
        self._jobs: list[_CopyJob] | None = None
        # Every path ``put`` wrote; an ADD that extracts an archive writes paths of its
        # own, and from then on every path is checked.
        self._written: set[str] = set()
        self._extracted = False
        # Directories known to exist in the layer (their path), so a 20,000-file copy
        # does not re-check every parent of every file.
        self._made: dict[tuple[str, ...], str] = {}

    def ensure_dir(self, parts: list[str], *, own: bool = False) -> Path:
        """Makes ``parts`` exist as a directory in the layer, parents included.

        Directories that exist below keep their metadata; new parents are 0755 root;
        ``own`` gives a new final directory the copy's owner.
        """
        return Path(self._dir(parts, own=own))

    def _dir(self, parts: list[str], *, own: bool = False) -> str:
        # Plain strings, and each directory checked once: a 20,000-file copy would
        # otherwise spend more on pathlib than on the files.
        key = tuple(parts)
        done = self._made.get(key)
        if done is not None:
            return done
        # Start below the deepest parent already made (a tree is copied parents first,
        # so usually the one just above): walking every parent from the top made a
        # tree n levels deep cost n³.
        start = max(len(parts) - 1, 0)
        while start > 0 and key[:start] not in self._made:
            start -= 1
        cur = self._made[key[:start]] if start > 0 else str(self.out)
        for i in range(start, len(parts)):
            cur = f"{cur}/{parts[i]}"
            prefix = key[: i + 1]
            try:
                there: os.stat_result | None = os.lstat(cur)
            except FileNotFoundError:
                there = None
            if there is not None and stat.S_ISDIR(there.st_mode):
                self._made[prefix] = cur
                continue
            if there is not None:
                os.unlink(cur)
            existing = self.below.stat("/" + "/".join(prefix))
            os.mkdir(cur)
            if existing is not None and stat.S_ISDIR(existing[1].st_mode):
                st = existing[1]
                os.chown(cur, st.st_uid, st.st_gid)
                os.chmod(cur, stat.S_IMODE(st.st_mode))
                os.utime(cur, ns=(st.st_atime_ns, st.st_mtime_ns))
            else:
                last = i == len(parts) - 1
                uid, gid = self.owner if (own and last) else (0, 0)
                os.chown(cur, uid, gid)
                os.chmod(cur, 0o755)
            self._made[prefix] = cur
        return cur

    def put(
        self,
        parts: list[str],
        disk: Path | str,
        st: os.stat_result,
        digest: str | None = None,
        stable: Callable[[], bool] | None = None,
    ) -> None:
        """Copies one entry (file, symlink, directory, device) to ``parts``.

        Args:
            parts: the destination below the layer's root.
            disk: the source on disk.
            st: its ``lstat``.
            digest: the sha256 of a regular file's content, when known.
            stable: says whether ``digest`` still described the source once it was
                copied (None: it always does, the source cannot change).
        """
        parent = self._dir(parts[:-1])
        target = f"{parent}/{parts[-1]}"
        # Plain strings, and an lstat only where this layer may hold something already
        # (the directory is written by this copy alone): pathlib's checks cost more
        # than the copy of a small file.
        there: os.stat_result | None = None
        if self._extracted or target in self._written or tuple(parts) in self._made:
            try:
                there = os.lstat(target)
            except FileNotFoundError:
                there = None
        self._written.add(target)
        if there is not None:
            if not stat.S_ISDIR(there.st_mode):
                os.unlink(target)
            elif not stat.S_ISDIR(st.st_mode):
                beneath.remove_path(Path(target))  # iterative: a context may be any depth
                prefix = tuple(parts)
                self._made = {m: d for m, d in self._made.items() if m[: len(prefix)] != prefix}
        mode = stat.S_IMODE(st.st_mode) if self.chmod is None else self.chmod
        uid, gid = self.owner
        try:
            if stat.S_ISDIR(st.st_mode):
                if there is None or not stat.S_ISDIR(there.st_mode):
                    os.mkdir(target)
                os.chown(target, uid, gid)
                os.chmod(target, mode)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(disk), target)
                os.lchown(target, uid, gid)
            elif stat.S_ISREG(st.st_mode):
                self._file(parts, target, disk, st, mode, digest, stable)
                return
            else:
                os.mknod(target, st.st_mode, st.st_rdev)
                os.chown(target, uid, gid)
            os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        except OSError as exc:
            raise BuildError(f"cannot copy {parts[-1]}: {exc.strerror or exc}") from exc

    def _file(
        self,
        parts: list[str],
        target: str,
        disk: Path | str,
        st: os.stat_result,
        mode: int,
        digest: str | None,
        stable: Callable[[], bool] | None,
    ) -> None:
        uid, gid = self.owner
        try:
            cap: bytes | None = os.getxattr(disk, "security.capability", follow_symlinks=False)
        except OSError:
            cap = None
        rel = "/".join(parts)
        key = None
        if self.pool is not None and digest is not None and st.st_size > 0:
            xattrs = {"security.capability": cap} if cap is not None else {}
            key = file_key(
                digest, stat.S_IFREG | mode, uid, gid, st.st_size, st.st_mtime_ns, xattrs
            )
            # A second file of the same key in this layer keeps an inode of its own: two
            # names of one inode would be a hardlink the layer's tar does not have.
            if key in self._keys:
                key = None
            else:
                linked = self.pool.link_into(
                    key, target, stat.S_IFREG | mode, uid, gid, st.st_size, st.st_mtime_ns
                )
                self._keys.add(key)
                if linked is not None:
                    # The pool's inode carries exactly the key's xattrs: this capability.
                    self.known[rel] = Candidate(
                        rel, key, linked.st_ino, linked.st_blocks * 512, True, cap
                    )
                    return
        job = _CopyJob(rel, target, disk, st, mode, uid, gid, cap, digest if key else None, stable)
        if self._jobs is not None:
            self._jobs.append(job)
            return
        candidate = job.run()
        if candidate is not None:
            self.known[rel] = candidate

    def batch(self) -> None:
        """From now until :meth:`flush`, regular files are copied together, on as many
        threads as the machine has cores (their paths must be distinct, as below one
        source directory)."""
        self._jobs = []

    def flush(self) -> None:
        """Copies the files :meth:`batch` gathered, in parallel where there are cores.

        Raises:
            BuildError: a copy failed.
        """
        jobs, self._jobs = self._jobs or [], None
        threads = min(_COPY_THREADS, os.cpu_count() or 1, len(jobs))
        if threads < 2:
            done = [job.run() for job in jobs]
        else:
            # Contiguous shares, so each thread fills directories of its own.
            size = -(-len(jobs) // threads)
            shares = [jobs[i : i + size] for i in range(0, len(jobs), size)]
            import concurrent.futures

            with concurrent.futures.ThreadPoolExecutor(threads, "lamina-copy") as pool:
                done = [c for part in pool.map(_run_all, shares) for c in part]
        for job, candidate in zip(jobs, done, strict=True):
            if candidate is not None:
                self.known[job.rel] = candidate

    def extract(self, parts: list[str], archive: Path) -> None:
        """ADD of a local archive: extracts it into directory ``parts``.

        Names are taken relative to the destination (a leading ``/`` included, as
        Docker does); ``..`` out of it, a hardlink to outside it, and writing through a
        symlink are refused. Every write goes through directory fds (``beneath``), so
        no entry, however the archive orders them, can reach outside the layer.
        """
        dest = self.ensure_dir(parts, own=True)
        self._extracted = True
        try:
            with tarfile.open(archive, "r:*") as tar:
                _extract_into(tar, dest, None if self.owner == (0, 0) else self.owner)
        except beneath.EscapeRefused as exc:
            raise BuildError(f"cannot extract {archive.name}: {exc}") from exc
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise BuildError(f"cannot extract {archive.name}: {exc}") from exc


def _extract_into(tar: tarfile.TarFile, dest: Path, owner: tuple[int, int] | None) -> None:
    root_fd = beneath.open_root(dest)
    dirs: dict[str, beneath.Meta] = {}
    try:
        for member in tar:
            _extract_member(tar, member, root_fd, dirs, owner)
        for rel in sorted(dirs, key=lambda r: (-r.count("/"), r)):
            beneath.apply_dir(root_fd, rel, dirs[rel])
    finally:
        os.close(root_fd)


def _archive_rel(name: str) -> str:
    """A member name relative to the destination, cleaned as Go's ``filepath.Clean``."""
    clean = posixpath.normpath(name)
    if clean.startswith("/"):
        clean = clean.lstrip("/")  # "/../x" is "/x": rooted names stay inside
    elif clean == ".." or clean.startswith("../"):
        raise beneath.EscapeRefused(f"{name}: path climbs out of the destination ('..')")
    return "" if clean == "." else clean


def _extract_member(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    root_fd: int,
    dirs: dict[str, beneath.Meta],
    owner: tuple[int, int] | None,
) -> None:
    rel = _archive_rel(member.name)
    uid, gid = owner if owner is not None else (member.uid, member.gid)
    meta = beneath.Meta(uid, gid, member.mode, float(member.mtime))
    if rel == "":
        if member.isdir():
            dirs[""] = meta
        return
    parent, base = posixpath.split(rel)
    pfd = beneath.open_dir(root_fd, parent, create=True)
    try:
        try:
            existing: os.stat_result | None = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if member.isdir():
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                os.unlink(base, dir_fd=pfd)
                existing = None
            if existing is None:
                os.mkdir(base, 0o700, dir_fd=pfd)
            dirs[rel] = meta
            return
        if existing is not None:
            beneath.remove_at(pfd, base)
            for key in [k for k in dirs if k == rel or k.startswith(rel + "/")]:
                del dirs[key]
        if member.isreg():
            src = tar.extractfile(member)
            assert src is not None
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(base, flags, 0o600, dir_fd=pfd)
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(src, f)
                f.flush()
                beneath.apply_fd(f.fileno(), meta, rel)
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=pfd)
            beneath.apply_link(pfd, base, meta)
        elif member.islnk():
            target = _archive_rel(member.linkname)
            tparent, tbase = posixpath.split(target)
            tfd = beneath.open_dir(root_fd, tparent)
            try:
                os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
            finally:
                os.close(tfd)
        elif member.ischr() or member.isblk() or member.isfifo():
            kind = {
                tarfile.CHRTYPE: stat.S_IFCHR,
                tarfile.BLKTYPE: stat.S_IFBLK,
                tarfile.FIFOTYPE: stat.S_IFIFO,
            }[member.type]
            device = os.makedev(member.devmajor, member.devminor)
            os.mknod(base, kind | (member.mode & 0o777), device, dir_fd=pfd)
            os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
        else:
            log.debug("%s: skipping tar entry of type %r", member.name, member.type)
    finally:
        os.close(pfd)


def dest_is_dir(dest: str, below: RootFS) -> bool:
    """Whether a COPY destination names a directory (trailing ``/`` or existing dir)."""
    return dest.endswith("/") or below.is_dir(dest)


def apply_copy(
    out: Path,
    below: RootFS,
    sources: list[Source],
    dest: str,
    *,
    context: Context | None,
    from_root: RootFS | None,
    owner: tuple[int, int] = (0, 0),
    chmod: int | None = None,
    pool: FilePool | None = None,
    held_below: Collection[bytes] = frozenset(),
) -> dict[str, Candidate]:
    """Copies resolved sources into the layer directory ``out``.

    Args:
        out: the new layer's directory (overlay format).
        below: the image the layer goes on top of.
        sources: what :func:`context_sources`, :func:`rootfs_sources` or
            :func:`file_source` resolved.
        dest: the absolute destination (a trailing ``/`` marks a directory).
        context: the build context (for ``context`` sources).
        from_root: the stage or image (for ``rootfs`` sources).
        owner: ``--chown`` resolved, else 0:0.
        chmod: ``--chmod``, else None.
        pool: the store's shared files: unchanged files become links to them (a
            layer's copy only; see :class:`LayerWriter`).
        held_below: the keys the layers below hold (``FilePool.held_by``), never
            linked.

    Returns:
        The files whose keys are known, for ``commit_dir``.

    Raises:
        BuildError: the destination is invalid or a copy fails.
    """
    writer = LayerWriter(out, below, owner, chmod, pool, held_below)
    dest_parts = split(dest)
    into_dir = len(sources) > 1 or dest_is_dir(dest, below)
    if len(sources) > 1 and not dest.endswith("/"):
        raise BuildError(
            f"when copying more than one source the destination must end with '/': {dest}"
        )
    for src in sources:
        # --parents: the source's path (not only its name) is kept below the destination.
        kept = split(src.path)[:-1] if src.parents and src.origin != "file" else []
        if src.archive:
            writer.extract(dest_parts, (context.root if context else Path("/")) / src.path)
        elif src.is_dir:
            base = dest_parts + (split(src.path) if src.parents else [])
            writer.ensure_dir(base, own=True)
            writer.batch()
            for rel, disk, st, digest, stable in _walk_source(src, context, from_root):
                if src.excluded(rel):
                    continue
                writer.put(base + rel.split("/"), disk, st, digest, stable)
            writer.flush()
        else:
            disk, st, digest, stable = _source_file(src, context, from_root)
            target = dest_parts + kept + [src.name] if into_dir or kept else dest_parts
            if not target:
                raise BuildError(f"cannot copy {src.name} onto /")
            writer.put(target, disk, st, digest, stable)
    return writer.known


# One source entry: (path below the source, on disk, lstat, content digest or None, and
# whether that digest still held once the entry was copied).
_Entry = tuple[str, Path | str, os.stat_result, str | None, Callable[[], bool] | None]


def _source_file(
    src: Source, context: Context | None, from_root: RootFS | None
) -> tuple[Path, os.stat_result, str | None, Callable[[], bool] | None]:
    if src.origin == "context":
        assert context is not None
        return (
            Path(f"{context.root}/{src.path}"),
            context.entries[src.path],
            context.content_digest(src.path),
            functools.partial(context.unchanged, src.path),
        )
    digests = {e.path: e.digest for e in src.manifest if e.type == "file"}
    if src.origin == "rootfs":
        assert from_root is not None
        hit = from_root.stat(src.path)
        if hit is None:
            raise BuildError(f"{src.path}: no such file or directory")
        # A layer's file never changes: its digest always holds.
        return hit[0], hit[1], digests.get(src.path.lstrip("/")), None
    return Path(src.path), os.lstat(src.path), digests.get(src.name), None


def _walk_source(src: Source, context: Context | None, from_root: RootFS | None) -> list[_Entry]:
    if src.origin == "context":
        assert context is not None
        base = src.path
        root = str(context.root)  # plain strings: a Path per file costs more than its copy
        out: list[_Entry] = []
        for p in context.below(base):
            st = context.entries.get(p)
            if st is None:
                continue  # a directory only created to hold re-included paths
            rel = p[len(base) + 1 :] if base else p
            out.append(
                (
                    rel,
                    f"{root}/{p}",
                    st,
                    context.content_digest(p),
                    functools.partial(context.unchanged, p),
                )
            )
        return out
    assert from_root is not None
    top = src.path.lstrip("/")
    digests = {e.path: e.digest for e in src.manifest if e.type == "file"}
    return [
        (rel, disk, st, digests.get(f"{top}/{rel}" if top else rel), None)
        for rel, disk, st in from_root.walk(src.path)
    ]
