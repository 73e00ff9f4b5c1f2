"""Comparing two images: shared layers, where they part, and every file that differs.

Both engines hand over the same thing, an :class:`ImageFiles` (per layer, base first,
its tar's entries with a content digest per regular file, read by
:func:`read_layer_files`), so the comparison is one pure function, :func:`diff_images`,
for the embedded store, a Docker Engine and an archive alike.

Each image's root filesystem is flattened the way a container runtime unpacks it
(:func:`flatten`): a whiteout ``.wh.NAME`` deletes ``NAME`` and everything below it, an
opaque marker ``.wh..wh..opq`` hides everything lower layers put in its directory, a
non-directory replaces whatever was at its path (a whole tree included), a hard link
is the file it links to, and a directory a deeper path implies but the tar omits is
made ``0755 root:root`` as ``tar -x`` makes it. The two flattened trees are then
compared path by path on type, content (digest and size), mode, owner and link target;
directory timestamps are not compared (an unpacked tree's directory times are the time
of unpacking, not the image's).

Every difference names the layer, and so the history line, that explains it: in the
second image the layer that wrote or deleted the path, in the first the layer that
wrote it.
"""

from __future__ import annotations

import hashlib
import posixpath
import stat
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from lamina.core.errors import ArchiveError
from lamina.core.model import FileChange, HistoryEntry

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
CHUNK = 1 << 20
IMPLIED_DIR_MODE = 0o755


@dataclass(frozen=True)
class FileEntry:
    """One header of a layer tar, path normalised to ``/a/b``.

    Attributes:
        path: absolute path in the image; for a whiteout the path it deletes, for an
            opaque marker the directory it empties.
        kind: ``file``, ``dir``, ``symlink``, ``hardlink``, ``other``, ``whiteout`` or
            ``opaque``.
        size: bytes of content (regular files; 0 otherwise).
        mode: permission bits, with setuid, setgid and sticky (``0o7777``).
        uid: owner.
        gid: group.
        link_target: a symlink's target as written, or a hard link's target path.
        digest: ``sha256:<hex>`` of a regular file's content ("" otherwise).
    """

    path: str
    kind: str
    size: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    link_target: str = ""
    digest: str = ""


@dataclass(frozen=True)
class LayerFiles:
    """One layer's entries, with what made it.

    Attributes:
        chain_id: the layer's chainID.
        diff_id: its tar's digest.
        created_by: the history line that made it ("" when the image records none).
        entries: its tar's entries in tar order.
    """

    chain_id: str
    diff_id: str
    created_by: str
    entries: tuple[FileEntry, ...]


@dataclass(frozen=True)
class ImageFiles:
    """Every layer of one image, base first.

    Attributes:
        ref: how the user named the image.
        image_id: its ID.
        layers: its layers, base first.
    """

    ref: str
    image_id: str
    layers: tuple[LayerFiles, ...]


@dataclass(frozen=True)
class Origin:
    """Where one side of a difference comes from.

    Attributes:
        layer: 0-based index of the layer in its image (base is 0).
        created_by: that layer's history line.
        deleted: True when the layer deleted the path (a whiteout or opaque marker).
    """

    layer: int
    created_by: str
    deleted: bool = False


@dataclass(frozen=True)
class FileDiff:
    """One path whose file differs between the two images.

    Attributes:
        path: the path.
        change: ``added`` (only in B), ``removed`` (only in A) or ``changed``.
        what: for ``changed``, what differs: ``type``, ``content``, ``mode``, ``owner``,
            ``link target``.
        kind_a: the file's kind in A ("" when absent).
        kind_b: its kind in B ("" when absent).
        size_a: its size in A (0 when absent).
        size_b: its size in B (0 when absent).
        a: the layer of A that wrote it, when A has it.
        b: the layer of B that wrote it, or deleted it when B lacks it.
    """

    path: str
    change: str
    what: tuple[str, ...]
    kind_a: str
    kind_b: str
    size_a: int
    size_b: int
    a: Origin | None
    b: Origin | None


@dataclass(frozen=True)
class LayerRef:
    """One layer as the diff lists it."""

    index: int
    chain_id: str
    created_by: str


@dataclass(frozen=True)
class ImageDiff:
    """What separates image A from image B.

    Attributes:
        a: A's reference as given.
        b: B's reference as given.
        a_id: A's image ID.
        b_id: B's image ID.
        shared: the layers both stacks start with (same chainIDs), base first.
        parted_at: index of the first layer where the stacks part (None when identical).
        only_a: A's layers above the shared ones.
        only_b: B's layers above the shared ones.
        files: every differing path, sorted by path.
    """

    a: str
    b: str
    a_id: str
    b_id: str
    shared: tuple[LayerRef, ...]
    parted_at: int | None
    only_a: tuple[LayerRef, ...]
    only_b: tuple[LayerRef, ...]
    files: tuple[FileDiff, ...] = field(default=())

    def count(self, change: str) -> int:
        """How many paths have this change (``added``, ``removed``, ``changed``)."""
        return sum(1 for f in self.files if f.change == change)

    @property
    def bytes_added(self) -> int:
        """Bytes of the files only B has."""
        return sum(f.size_b for f in self.files if f.change == "added")

    @property
    def bytes_removed(self) -> int:
        """Bytes of the files only A has."""
        return sum(f.size_a for f in self.files if f.change == "removed")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``lamina diff --format json``)."""

        def layer(ref: LayerRef) -> dict[str, Any]:
            return {"index": ref.index, "chain_id": ref.chain_id, "created_by": ref.created_by}

        def origin(o: Origin | None) -> dict[str, Any] | None:
            if o is None:
                return None
            return {"layer": o.layer, "created_by": o.created_by, "deleted": o.deleted}

        return {
            "a": {"ref": self.a, "id": self.a_id},
            "b": {"ref": self.b, "id": self.b_id},
            "shared_layers": [layer(x) for x in self.shared],
            "parted_at": self.parted_at,
            "only_a": [layer(x) for x in self.only_a],
            "only_b": [layer(x) for x in self.only_b],
            "summary": {
                "added": self.count("added"),
                "removed": self.count("removed"),
                "changed": self.count("changed"),
                "bytes_added": self.bytes_added,
                "bytes_removed": self.bytes_removed,
            },
            "files": [
                {
                    "path": f.path,
                    "change": f.change,
                    "what": list(f.what),
                    "kind_a": f.kind_a,
                    "kind_b": f.kind_b,
                    "size_a": f.size_a,
                    "size_b": f.size_b,
                    "a": origin(f.a),
                    "b": origin(f.b),
                }
                for f in self.files
            ],
        }


# -- reading a layer -----------------------------------------------------------------


def norm_path(name: str) -> str:
    """A tar member name as an absolute, normalised path (``./a//b`` -> ``/a/b``)."""
    path = posixpath.normpath("/" + name.lstrip("/"))
    # normpath keeps a leading "//" (POSIX gives it a meaning); a tar never does.
    return "/" + path.lstrip("/")


def _kind(info: tarfile.TarInfo) -> str:
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    if info.isreg():
        return "file"
    return "other"


def _content_digest(stream: IO[bytes] | None) -> str:
    h = hashlib.sha256()
    if stream is not None:
        while chunk := stream.read(CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def read_layer_files(
    stream: IO[bytes], chain_id: str, diff_id: str, created_by: str = "", name: str = "layer"
) -> LayerFiles:
    """Lists one uncompressed layer tar, hashing every regular file's content.

    Args:
        stream: the tar, read once front to back.
        chain_id: the layer's chainID.
        diff_id: the layer's diffID.
        created_by: the history line that made it.
        name: how error messages name the layer.

    Raises:
        ArchiveError: the stream is not a readable tar.
    """
    entries: list[FileEntry] = []
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                path = norm_path(info.name)
                if path == "/":
                    continue
                parent, base = posixpath.split(path)
                if base == OPAQUE:
                    entries.append(FileEntry(parent, "opaque"))
                    continue
                if base.startswith(WHITEOUT_PREFIX):
                    gone = posixpath.join(parent, base[len(WHITEOUT_PREFIX) :])
                    entries.append(FileEntry(gone, "whiteout"))
                    continue
                kind = _kind(info)
                entries.append(
                    FileEntry(
                        path=path,
                        kind=kind,
                        size=info.size if kind == "file" else 0,
                        mode=stat.S_IMODE(info.mode),
                        uid=info.uid,
                        gid=info.gid,
                        link_target=(
                            norm_path(info.linkname) if kind == "hardlink" else info.linkname
                        ),
                        digest=_content_digest(tar.extractfile(info)) if kind == "file" else "",
                    )
                )
    except (tarfile.TarError, OSError) as exc:
        raise ArchiveError(f"{name}: not a readable layer tar ({exc})") from exc
    return LayerFiles(chain_id, diff_id, created_by, tuple(entries))


def layer_instructions(history: Sequence[HistoryEntry], chain_ids: Sequence[str]) -> list[str]:
    """Each layer's history line, base first, from an engine's history (newest first)."""
    by_chain = {e.chain_id: e.created_by for e in history if e.chain_id}
    made = [e.created_by for e in reversed(history) if not e.empty_layer]
    out = []
    for i, chain_id in enumerate(chain_ids):
        line = by_chain.get(chain_id)
        if line is None:
            line = made[i] if i < len(made) else ""
        out.append(line)
    return out


# -- flattening ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Placed:
    entry: FileEntry
    layer: int


def _below(state: dict[str, _Placed], path: str) -> list[str]:
    prefix = "/" if path == "/" else path + "/"
    return [p for p in state if p.startswith(prefix)]


def flatten(layers: Iterable[LayerFiles]) -> tuple[dict[str, _Placed], dict[str, int]]:
    """The root filesystem the layers unpack to, and which layer deleted what.

    Returns:
        ``(files, deleted)``: path -> the entry there and the layer that wrote it; and
        path -> the last layer that deleted it (for paths absent at the end).
    """
    state: dict[str, _Placed] = {}
    deleted: dict[str, int] = {}
    for index, layer in enumerate(layers):
        # A layer's whiteouts and opaque markers apply to the layers below it only.
        for entry in layer.entries:
            if entry.kind == "opaque":
                for path in _below(state, entry.path):
                    del state[path]
                    deleted[path] = index
            elif entry.kind == "whiteout":
                for path in [entry.path, *_below(state, entry.path)]:
                    if state.pop(path, None) is not None:
                        deleted[path] = index
        for entry in layer.entries:
            if entry.kind in ("opaque", "whiteout"):
                continue
            old = state.get(entry.path)
            if old is not None and old.entry.kind == "dir" and entry.kind != "dir":
                for path in _below(state, entry.path):
                    del state[path]
                    deleted[path] = index
            parent = posixpath.dirname(entry.path)
            while parent != "/" and parent not in state:
                state[parent] = _Placed(FileEntry(parent, "dir", mode=IMPLIED_DIR_MODE), index)
                parent = posixpath.dirname(parent)
            placed = entry
            if entry.kind == "hardlink":
                target = state.get(entry.link_target)
                if target is not None:
                    t = target.entry
                    # A hard link is its target's inode: same content, mode and owner.
                    placed = FileEntry(
                        entry.path, t.kind, t.size, t.mode, t.uid, t.gid, t.link_target, t.digest
                    )
            state[entry.path] = _Placed(placed, index)
            deleted.pop(entry.path, None)
    return state, deleted


# -- comparing -----------------------------------------------------------------------


def _differences(a: FileEntry, b: FileEntry) -> tuple[str, ...]:
    what = []
    if a.kind != b.kind:
        what.append("type")
    elif a.kind == "file" and (a.digest != b.digest or a.size != b.size):
        what.append("content")
    # A symlink's own mode means nothing on Linux (it is always followed).
    if a.mode != b.mode and not (a.kind == b.kind == "symlink"):
        what.append("mode")
    if (a.uid, a.gid) != (b.uid, b.gid):
        what.append("owner")
    if a.kind == b.kind == "symlink" and a.link_target != b.link_target:
        what.append("link target")
    return tuple(what)


def _refs(image: ImageFiles, start: int) -> tuple[LayerRef, ...]:
    return tuple(
        LayerRef(i, layer.chain_id, layer.created_by)
        for i, layer in enumerate(image.layers)
        if i >= start
    )


def diff_images(a: ImageFiles, b: ImageFiles) -> ImageDiff:
    """Everything that separates image ``a`` from image ``b``.

    Args:
        a: the first image's files (what ``lamina diff A B`` calls A).
        b: the second image's.

    Returns:
        The shared layers, where the stacks part, and every path whose file differs,
        each with the history lines that explain it.
    """
    shared = 0
    for la, lb in zip(a.layers, b.layers, strict=False):
        if la.chain_id != lb.chain_id:
            break
        shared += 1
    identical = shared == len(a.layers) == len(b.layers)
    files_a, _ = flatten(a.layers)
    files_b, deleted_b = flatten(b.layers)

    def origin(image: ImageFiles, index: int, deleted: bool = False) -> Origin:
        return Origin(index, image.layers[index].created_by, deleted)

    out: list[FileDiff] = []
    for path in sorted(files_a.keys() | files_b.keys()):
        pa, pb = files_a.get(path), files_b.get(path)
        if pa is not None and pb is not None:
            what = _differences(pa.entry, pb.entry)
            if not what:
                continue
            out.append(
                FileDiff(
                    path,
                    "changed",
                    what,
                    pa.entry.kind,
                    pb.entry.kind,
                    pa.entry.size,
                    pb.entry.size,
                    origin(a, pa.layer),
                    origin(b, pb.layer),
                )
            )
        elif pb is not None:
            out.append(
                FileDiff(
                    path,
                    "added",
                    (),
                    "",
                    pb.entry.kind,
                    0,
                    pb.entry.size,
                    None,
                    origin(b, pb.layer),
                )
            )
        elif pa is not None:
            gone = deleted_b.get(path)
            out.append(
                FileDiff(
                    path,
                    "removed",
                    (),
                    pa.entry.kind,
                    "",
                    pa.entry.size,
                    0,
                    origin(a, pa.layer),
                    origin(b, gone, deleted=True) if gone is not None else None,
                )
            )
    return ImageDiff(
        a=a.ref,
        b=b.ref,
        a_id=a.image_id,
        b_id=b.image_id,
        shared=_refs(a, 0)[:shared],
        parted_at=None if identical else shared,
        only_a=_refs(a, shared),
        only_b=_refs(b, shared),
        files=tuple(out),
    )


def layer_changes(lower: Sequence[LayerFiles], layer: LayerFiles) -> list[FileChange]:
    """What ``layer`` adds, modifies and deletes on top of ``lower`` (base first), as
    the Layers view lists it (opaque markers are not listed: their deletions show as
    the directory being modified).

    Returns:
        One change per path, sorted by path.
    """
    below, _ = flatten(lower)
    out: dict[str, FileChange] = {}
    for e in layer.entries:
        if e.kind == "opaque":
            continue
        if e.kind == "whiteout":
            old = below.get(e.path)
            o = old.entry if old is not None else FileEntry(e.path, "file")
            out[e.path] = FileChange(
                e.path, "deleted", o.kind, o.size, o.mode, o.uid, o.gid, o.link_target
            )
            continue
        out[e.path] = FileChange(
            e.path,
            "modified" if e.path in below else "added",
            e.kind,
            e.size,
            e.mode,
            e.uid,
            e.gid,
            e.link_target,
        )
    return [out[path] for path in sorted(out)]
