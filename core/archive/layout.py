"""Image archives read where they lie: docker-archive and OCI layouts, as tars or folders.

Nothing is copied into a store. A tar is indexed once (its headers only) and every
member is then read through its own file handle at its offset, so the archive can be
read by several threads at once (the app's workers) and never moves. A compressed tar
(``docker save | gzip``) cannot be read at offsets, so it is decompressed once into a
temporary file outside any store, removed on close.

Forms read:

* docker-archive: ``manifest.json`` (+ ``repositories`` for pre-1.10 tags), legacy
  ``<id>/layer.tar`` folders or Docker 25+ ``blobs/sha256/``;
* OCI image layout: ``index.json`` and ``blobs/sha256/`` (nested indexes followed, one
  manifest per index chosen for this host, attestations skipped);

layers gzip, zstd (with the ``zstandard`` package) or uncompressed. Every blob name is
a digest checked by regex before it becomes a path, and a folder layout refuses paths
that resolve outside it.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import platform
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from lamina.core.digest import is_digest
from lamina.core.errors import ArchiveError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# The bounds `lamina load` keeps (docs/limits.md), so an archive opened in place costs
# no more memory or time than loading it would.
MAX_JSON = 8 << 20
MAX_JSON_DEPTH = 64
MAX_MEMBERS = 100_000
MAX_LAYERS = 1_000
MAX_DESCRIPTORS = 50_000
CHUNK = 1 << 20

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST)
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


def host_arch() -> str:
    """The host's architecture in Go's naming (``amd64``, ``arm64``)."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}.get(
        machine, machine
    )


def _clean(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


class _Slice(io.RawIOBase):
    """``size`` bytes of a file from ``offset``, read with ``pread`` on a handle of its own."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self._offset = offset
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self._left)
        if n <= 0:
            return 0
        data = os.pread(self._fd, n, self._offset)
        got = len(data)
        b[:got] = data
        self._offset += got
        self._left -= got
        return got

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class Source:
    """The files of one archive, by their path inside it."""

    label: str

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def size(self, name: str) -> int:
        raise NotImplementedError

    def open(self, name: str) -> BinaryIO:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            data = f.read(MAX_JSON + 1)
        if len(data) > MAX_JSON:
            raise ArchiveError(f"{self.label}: {name}: too large for a manifest or config")
        return data

    def read_json(self, name: str) -> Any:
        return parse_json(self.read(name), f"{self.label}: {name}")

    def close(self) -> None:
        pass


class DirSource(Source):
    """An unpacked layout: a folder."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.label = str(root)

    def _path(self, name: str) -> Path:
        path = (self.root / _clean(name)).resolve()
        if path != self.root and self.root not in path.parents:
            raise ArchiveError(f"{self.label}: {name}: points outside the layout")
        return path

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def size(self, name: str) -> int:
        return self._path(name).stat().st_size

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self._path(name), "rb")
        except FileNotFoundError:
            raise ArchiveError(f"{self.label}: {name}: missing from the archive") from None
        except OSError as exc:
            raise ArchiveError(f"{self.label}: {name}: {exc.strerror}") from exc


class TarSource(Source):
    """A tar: its headers indexed once, each member read at its offset."""

    def __init__(self, path: Path, label: str) -> None:
        self.path = path
        self.label = label
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            with tarfile.open(path, mode="r:") as tar:
                for m in tar:
                    if len(self.members) >= MAX_MEMBERS:
                        raise ArchiveError(f"{label}: more than {MAX_MEMBERS} files in the archive")
                    self.members[_clean(m.name)] = m
        except (tarfile.TarError, OSError) as exc:
            raise ArchiveError(f"{label}: not a tar archive ({exc})") from exc

    def _member(self, name: str) -> tarfile.TarInfo:
        m = self.members.get(_clean(name))
        for _ in range(16):
            if m is None:
                raise ArchiveError(f"{self.label}: {name}: missing from the archive")
            if m.issym():
                m = self.members.get(_clean(posixpath.join(posixpath.dirname(m.name), m.linkname)))
            elif m.islnk():
                m = self.members.get(_clean(m.linkname))
            else:
                break
        if m is None or not m.isfile() or m.sparse:
            raise ArchiveError(f"{self.label}: {name}: not a regular file in the archive")
        return m

    def exists(self, name: str) -> bool:
        m = self.members.get(_clean(name))
        return m is not None and (m.isfile() or m.issym() or m.islnk())

    def size(self, name: str) -> int:
        return self._member(name).size

    def open(self, name: str) -> BinaryIO:
        m = self._member(name)
        return cast(BinaryIO, io.BufferedReader(_Slice(self.path, m.offset_data, m.size), CHUNK))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(data: bytes, where: str) -> Any:
    """A manifest, index or config: JSON, at most 64 levels deep, no NaN or Infinity."""
    if _depth(data) > MAX_JSON_DEPTH:
        raise ArchiveError(f"{where}: JSON nested more than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(data, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ArchiveError(f"{where}: not valid JSON ({exc})") from exc


def _depth(data: bytes) -> int:
    """How deeply the document's arrays and objects nest (brackets in strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


@contextmanager
def decompressed(raw: BinaryIO, where: str) -> Iterator[IO[bytes]]:
    """``raw`` decompressed according to its magic bytes (gzip/estargz, zstd or none)."""
    head = raw.peek(4)[:4] if isinstance(raw, io.BufferedReader) else b""
    if not head:
        pos = raw.tell()
        head = raw.read(4)
        raw.seek(pos)
    if head.startswith(GZIP_MAGIC):
        with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            yield cast(IO[bytes], _Translating(gz, where))
        return
    if head == ZSTD_MAGIC:
        try:
            import zstandard
        except ImportError as exc:
            raise ArchiveError(f"{where}: zstd layers need the 'zstandard' package") from exc
        with zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as reader:
            yield cast(IO[bytes], _Translating(reader, where))
        return
    yield raw


class _Translating(io.RawIOBase):
    """A reader that turns decompression errors into ``ArchiveError``."""

    def __init__(self, inner: Any, where: str) -> None:
        self.inner = inner
        self.where = where

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            data: bytes = self.inner.read(len(b))
        except (OSError, EOFError, ValueError) as exc:
            raise ArchiveError(f"{self.where}: corrupt compressed data: {exc}") from exc
        except Exception as exc:  # zstandard.ZstdError
            if type(exc).__name__ == "ZstdError":
                raise ArchiveError(f"{self.where}: corrupt zstd data: {exc}") from exc
            raise
        b[: len(data)] = data
        return len(data)


@dataclass
class ArchivedImage:
    """One image of an archive: its config and where its layer blobs are.

    Attributes:
        config: the config JSON's bytes (the image ID is their sha256).
        layers: archive paths of the layer blobs, base first.
        tags: the tags the archive names it by.
        where: how messages name it.
    """

    config: bytes
    layers: list[str]
    tags: list[str] = field(default_factory=list)
    where: str = ""


def blob_name(digest: Any, where: str) -> str:
    """``blobs/sha256/<hex>`` for a well-formed digest."""
    if not isinstance(digest, str) or not is_digest(digest):
        raise ArchiveError(f"{where}: malformed digest {digest!r}")
    return f"blobs/sha256/{digest.split(':', 1)[1]}"


def _docker_archive(src: Source) -> list[ArchivedImage]:
    manifest = src.read_json("manifest.json")
    if not isinstance(manifest, list):
        raise ArchiveError(f"{src.label}: manifest.json: expected a list of images")
    repositories: dict[str, Any] = {}
    if src.exists("repositories"):
        doc = src.read_json("repositories")
        if isinstance(doc, dict):
            repositories = doc
    images = []
    for n, entry in enumerate(manifest, 1):
        where = f"{src.label}: manifest.json image {n}"
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise ArchiveError(f"{where}: no Config")
        layers = entry.get("Layers") or []
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise ArchiveError(f"{where}: Layers must be a list of paths")
        tags = [t for t in entry.get("RepoTags") or [] if isinstance(t, str)]
        if not tags and layers:
            top = _clean(layers[-1]).split("/")[0]
            for repo, by_tag in repositories.items():
                for tag, legacy_id in (by_tag if isinstance(by_tag, dict) else {}).items():
                    if legacy_id == top:
                        tags.append(f"{repo}:{tag}")
        images.append(ArchivedImage(src.read(entry["Config"]), list(layers), tags, where))
    return images


def _is_attestation(desc: dict[str, Any]) -> bool:
    ann = desc.get("annotations") or {}
    plat = desc.get("platform") or {}
    return ann.get("vnd.docker.reference.type") == "attestation-manifest" or (
        plat.get("os") == "unknown" and plat.get("architecture") == "unknown"
    )


def _choose(descs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    descs = [d for d in descs if not _is_attestation(d)]
    if len(descs) <= 1 or not any(d.get("platform") for d in descs):
        return descs
    arch = host_arch()
    mine = [d for d in descs if (d.get("platform") or {}).get("architecture") == arch]
    return (mine or descs)[:1]


def _tag_of(desc: dict[str, Any]) -> str | None:
    ann = desc.get("annotations") or {}
    name = ann.get(CONTAINERD_NAME)
    if isinstance(name, str) and name:
        return name
    ref = ann.get(REF_NAME)
    if isinstance(ref, str) and ref and ("/" in ref or ":" in ref):
        return ref
    return None


def _read_blob(src: Source, desc: dict[str, Any], where: str) -> bytes:
    from lamina.core.digest import sha256_bytes

    digest = desc.get("digest")
    data = src.read(blob_name(digest, where))
    if sha256_bytes(data) != digest:
        raise ArchiveError(f"{src.label}: {where}: blob {digest} does not match its digest")
    return data


@dataclass
class _Walked:
    """What an index walk has followed: each digest once, every descriptor counted."""

    images: dict[str, ArchivedImage] = field(default_factory=dict)
    indexes: set[str] = field(default_factory=set)
    descriptors: int = 0

    def spend(self, n: int, label: str) -> None:
        self.descriptors += n
        if self.descriptors > MAX_DESCRIPTORS:
            raise ArchiveError(
                f"{label}: lists more than {MAX_DESCRIPTORS} manifests and layers in all"
            )


def _oci(
    src: Source,
    index: Any,
    where: str,
    out: list[ArchivedImage],
    depth: int = 0,
    tag: str | None = None,
    walked: _Walked | None = None,
) -> None:
    # Each index and manifest is read once and every descriptor counts, as lamina load
    # walks them: ten descriptors without a platform on each of eight levels, all naming
    # the next one, were followed 10⁸ times.
    walked = _Walked() if walked is None else walked
    if depth > 8:
        raise ArchiveError(f"{src.label}: {where}: indexes nested too deeply")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise ArchiveError(f"{src.label}: {where}: not an image index")
    walked.spend(len(index["manifests"]), src.label)
    for desc in _choose([d for d in index["manifests"] if isinstance(d, dict)]):
        digest = str(desc.get("digest"))
        name = f"{where} -> {digest}"
        own_tag = _tag_of(desc) or tag
        if digest in walked.images:
            seen = walked.images[digest]
            if own_tag and own_tag not in seen.tags:
                seen.tags.append(own_tag)
            continue
        if digest in walked.indexes:
            continue
        doc = parse_json(_read_blob(src, desc, name), f"{src.label}: {name}")
        if desc.get("mediaType") in INDEX_TYPES or (isinstance(doc, dict) and "manifests" in doc):
            walked.indexes.add(digest)
            _oci(src, doc, name, out, depth + 1, own_tag, walked)
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
            continue  # an artifact, not an image
        config = _read_blob(src, doc["config"], name + " config")
        layers = [
            blob_name(layer.get("digest"), name)
            for layer in doc.get("layers") or []
            if isinstance(layer, dict)
        ]
        walked.spend(1 + len(layers), src.label)
        image = ArchivedImage(config, layers, [own_tag] if own_tag else [], f"{src.label}: {name}")
        walked.images[digest] = image
        out.append(image)


def read_images(src: Source) -> list[ArchivedImage]:
    """Every image the archive holds.

    Raises:
        ArchiveError: not an image archive, a malformed one, or one past the bounds
            ``lamina load`` keeps (``docs/limits.md``).
    """
    if src.exists("manifest.json"):
        images = _docker_archive(src)
    elif src.exists("index.json"):
        images = []
        _oci(src, src.read_json("index.json"), "index.json", images)
    else:
        raise ArchiveError(f"{src.label}: not an image archive (no manifest.json or index.json)")
    if not images:
        raise ArchiveError(f"{src.label}: the archive holds no image")
    for image in images:
        if len(image.layers) > MAX_LAYERS:
            raise ArchiveError(f"{image.where}: more than {MAX_LAYERS} layers")
    return images


class Opened:
    """An archive opened for reading, and what to clean up when done."""

    def __init__(self, source: Source, scratch: Path | None = None) -> None:
        self.source = source
        self.scratch = scratch

    def close(self) -> None:
        self.source.close()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


def open_archive(path: Path) -> Opened:
    """Opens a layout folder or an image tar (compressed ones into a temporary file).

    Raises:
        ArchiveError: no such file, or not a readable tar.
    """
    path = Path(path)
    if path.is_dir():
        return Opened(DirSource(path))
    if not path.is_file():
        raise ArchiveError(f"{path}: no such file or directory")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(GZIP_MAGIC) or head == ZSTD_MAGIC):
        return Opened(TarSource(path, str(path)))
    scratch = Path(tempfile.mkdtemp(prefix="lamina-archive-"))
    try:
        plain = scratch / "archive.tar"
        with open(path, "rb") as raw, decompressed(raw, str(path)) as stream:
            with open(plain, "wb") as out:
                shutil.copyfileobj(stream, out, CHUNK)
        return Opened(TarSource(plain, str(path)), scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
