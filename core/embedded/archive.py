"""Images in and out of the store as archives.

* ``import_rootfs``: one layer from a root filesystem tar, like ``docker import``.
* ``load_archive``: ``docker save`` archives (``manifest.json`` with legacy layer folders
  or the Docker 25+ ``blobs/`` layout, kaniko tarballs) and OCI image layouts, as tars
  or directories, with gzip, zstd, estargz or uncompressed layers.
* ``save_archive``: a tar that is both a docker-archive (``manifest.json``, accepted by
  ``docker load`` since Docker 1.10) and an OCI image layout (``index.json``,
  ``oci-layout``), with every blob under ``blobs/sha256/`` like Docker 25+ writes it.
  Layers are stored uncompressed and regenerated from their tar-split, so each layer
  blob's digest is the layer's original diffID.

Loading checks every layer's diffID against the config before anything is recorded:
a bad archive leaves the store exactly as it was.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import platform
import posixpath
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, cast

from lamina.core.digest import Hasher, chain_ids, hex_of, is_digest, sha256_bytes
from lamina.core.embedded.store import Store, normalize_tag, schema
from lamina.core.embedded.store.images import format_created
from lamina.core.embedded.store.layers import StagedLayer
from lamina.core.embedded.store.tarsplit import (
    CHUNK,
    END_OF_ARCHIVE,
    TarReader,
    padding,
    pax_header,
)
from lamina.core.errors import ArchiveError, LaminaError, StoreError
from lamina.core.model import ImageSummary

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST)
MANIFEST_TYPES = (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
MAX_JSON = schema.MAX_JSON_BYTES  # no manifest or config is this big; refuse to read one
# Descriptors one archive may list in all (index entries, manifests' layers, docker-archive
# images and their layers), counting repeats: bounds the work a small archive can ask for.
MAX_DESCRIPTORS = 50_000
# Files in an archive (a docker save tar holds a few per image and layer).
MAX_ARCHIVE_MEMBERS = 100_000


def host_platform() -> tuple[str, str]:
    """The host's (os, architecture) in Go's naming (``linux``, ``amd64``)."""
    machine = platform.machine().lower()
    arch = {
        "x86_64": "amd64",
        "amd64": "amd64",
        "aarch64": "arm64",
        "arm64": "arm64",
        "armv7l": "arm",
        "armv6l": "arm",
        "i386": "386",
        "i686": "386",
        "ppc64le": "ppc64le",
        "s390x": "s390x",
        "riscv64": "riscv64",
    }.get(machine, machine)
    return "linux", arch


@contextmanager
def open_decompressed(raw: BinaryIO, where: str) -> Iterator[BinaryIO]:
    """``raw`` decompressed according to its magic bytes (gzip/estargz, zstd or none)."""
    head = _peek(raw, 4)
    if head.startswith(GZIP_MAGIC):
        # GzipFile reads every member, so estargz's trailing TOC member is included.
        with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            yield cast(BinaryIO, _Translating(gz, where))
        return
    if head == ZSTD_MAGIC:
        try:
            import zstandard
        except ImportError as exc:
            raise ArchiveError(f"{where}: zstd layers need the 'zstandard' package") from exc
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        with reader:
            yield cast(BinaryIO, _Translating(reader, where))
        return
    yield raw


def _peek(raw: BinaryIO, n: int) -> bytes:
    peek = getattr(raw, "peek", None)
    if peek is not None:
        # A buffered stream peeks without seeking, so a pipe works too.
        return bytes(peek(n)[:n])
    pos = raw.tell()
    head = raw.read(n)
    raw.seek(pos)
    return head


class _Translating:
    """A reader that turns decompression errors into ``ArchiveError``."""

    def __init__(self, inner: Any, where: str) -> None:
        self.inner = inner
        self.where = where

    def read(self, n: int = -1) -> bytes:
        try:
            data: bytes = self.inner.read(n)
            return data
        except (OSError, EOFError, ValueError) as exc:
            raise ArchiveError(f"{self.where}: corrupt compressed data: {exc}") from exc
        except Exception as exc:  # zstandard.ZstdError
            if type(exc).__name__ == "ZstdError":
                raise ArchiveError(f"{self.where}: corrupt zstd data: {exc}") from exc
            raise


# -- reading archives ------------------------------------------------------------------


class _Source:
    """Files of an archive, by their path inside it."""

    label: str

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def open(self, name: str) -> BinaryIO:
        raise NotImplementedError

    def read_json(self, name: str) -> Any:
        return _parse_json(self.read(name), f"{self.label}: {name}")

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            data = f.read(MAX_JSON + 1)
        if len(data) > MAX_JSON:
            raise ArchiveError(
                f"{self.label}: {name}: too large for a manifest or config "
                f"(the limit is {MAX_JSON >> 20} MiB)"
            )
        return data

    def close(self) -> None:
        pass


def _clean(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


class _DirSource(_Source):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.label = str(root)

    def _path(self, name: str) -> Path:
        try:
            path = (self.root / _clean(name)).resolve()
        except (OSError, RuntimeError, ValueError) as exc:
            raise ArchiveError(f"{self.label}: {name!r}: cannot be resolved ({exc})") from None
        if path != self.root and self.root not in path.parents:
            raise ArchiveError(f"{self.label}: {name}: points outside the layout")
        return path

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def open(self, name: str) -> BinaryIO:
        # O_NONBLOCK: opening a FIFO planted in the layout must not wait for a writer.
        try:
            fd = os.open(self._path(name), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ArchiveError(f"{self.label}: {name}: missing from the archive") from None
        except OSError as exc:
            raise ArchiveError(f"{self.label}: {name}: {exc.strerror}") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ArchiveError(f"{self.label}: {name}: not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")


@dataclass(frozen=True)
class _Entry:
    """A member of an archive tar: where its payload is."""

    name: str
    type: bytes
    offset: int
    size: int
    linkname: str

    def is_file(self) -> bool:
        return self.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)


class _Slice:
    """A read-only view of ``size`` bytes at ``offset`` of an open file (positional
    reads, so several can be open at once)."""

    def __init__(self, fd: int, offset: int, size: int, where: str) -> None:
        self.fd, self.offset, self.size, self.where = fd, offset, size, where
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        data = os.pread(self.fd, n, self.offset + self.pos)
        if not data:
            raise ArchiveError(f"{self.where}: truncated archive")
        self.pos += len(data)
        return data

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence]
        self.pos = max(0, min(self.size, base + pos))
        return self.pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def __enter__(self) -> _Slice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _TarSource(_Source):
    """An archive tar, indexed in one streaming pass with the layer reader's limits
    (1 MiB extended headers, nothing read after the end-of-archive blocks)."""

    def __init__(self, path: Path, label: str) -> None:
        self.label = label
        try:
            self.file = open(path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise ArchiveError(f"{label}: {exc.strerror}") from exc
        try:
            self.members = self._index(os.fstat(self.file.fileno()).st_size)
        except BaseException:
            self.file.close()
            raise

    def _index(self, file_size: int) -> dict[str, _Entry]:
        members: dict[str, _Entry] = {}
        reader = TarReader(self.file, self.label, hashing=False, keep_trailer=False)
        for m in reader:
            if len(members) >= MAX_ARCHIVE_MEMBERS:
                raise ArchiveError(
                    f"{self.label}: more than {MAX_ARCHIVE_MEMBERS} files in the archive"
                )
            entry = _Entry(m.name, m.type, reader.offset, reader.pending, m.linkname)
            if entry.offset + entry.size > file_size:
                raise ArchiveError(f"{self.label}: {_clean(m.name)}: truncated archive")
            members[_clean(m.name)] = entry
            reader.skip_payload()
        if not members and reader.size == 0:
            raise ArchiveError(f"{self.label}: empty file, not a tar archive")
        return members

    def _member(self, name: str) -> _Entry:
        m = self.members.get(_clean(name))
        for _ in range(16):
            if m is None:
                raise ArchiveError(f"{self.label}: {name}: missing from the archive")
            if m.type == tarfile.SYMTYPE:
                m = self.members.get(_clean(posixpath.join(posixpath.dirname(m.name), m.linkname)))
            elif m.type == tarfile.LNKTYPE:
                m = self.members.get(_clean(m.linkname))
            else:
                break
        if m is None or not m.is_file():
            raise ArchiveError(f"{self.label}: {name}: not a regular file in the archive")
        return m

    def exists(self, name: str) -> bool:
        m = self.members.get(_clean(name))
        return m is not None and (m.is_file() or m.type in (tarfile.SYMTYPE, tarfile.LNKTYPE))

    def open(self, name: str) -> BinaryIO:
        m = self._member(name)
        return cast(BinaryIO, _Slice(self.file.fileno(), m.offset, m.size, f"{self.label}: {name}"))

    def close(self) -> None:
        self.file.close()


def _parse_json(data: bytes, where: str) -> Any:
    try:
        return schema.parse(data)
    except schema.Invalid as exc:
        raise ArchiveError(f"{where}: {exc}") from None


def _checked(check: Callable[[Any, str], None], doc: Any, where: str, path: str) -> Any:
    """``doc`` after ``check`` (a ``schema`` check) passed; else a one-line refusal."""
    try:
        check(doc, path)
    except schema.Invalid as exc:
        raise ArchiveError(f"{where}: {exc}") from None
    return doc


@dataclass
class _ImagePlan:
    """One image of an archive: its config bytes and where its layer blobs are."""

    config: bytes
    layers: list[str]  # archive paths, base first
    tags: list[str] = field(default_factory=list)
    where: str = ""


class _Budget:
    """Counts the descriptors an archive makes lamina follow (``MAX_DESCRIPTORS``)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.used = 0

    def spend(self, n: int) -> None:
        self.used += n
        if self.used > MAX_DESCRIPTORS:
            raise ArchiveError(
                f"{self.label}: lists more than {MAX_DESCRIPTORS} manifests and layers "
                "in all; not loaded"
            )


def _docker_archive_plans(src: _Source) -> list[_ImagePlan]:
    manifest = _checked(
        schema.check_docker_manifest,
        src.read_json("manifest.json"),
        src.label,
        "manifest.json",
    )
    repositories: dict[str, dict[str, str]] = {}
    if src.exists("repositories"):
        repositories = _checked(
            schema.check_repositories, src.read_json("repositories"), src.label, "repositories"
        )
    budget = _Budget(src.label)
    plans = []
    by_config: dict[str, _ImagePlan] = {}
    for n, entry in enumerate(manifest, 1):
        where = f"{src.label}: manifest.json image {n}"
        layers = entry.get("Layers") or []
        budget.spend(1 + len(layers))
        tags = list(entry.get("RepoTags") or [])
        if not tags and layers:
            # Pre-1.10 archives name tags in `repositories` by the top layer's folder.
            top = _clean(layers[-1]).split("/")[0]
            for repo, by_tag in repositories.items():
                for tag, legacy_id in by_tag.items():
                    if legacy_id == top:
                        tags.append(f"{repo}:{tag}")
        key = f"{_clean(entry['Config'])}\0{chr(0).join(layers)}"
        if key in by_config:
            # The same image listed again: one plan, every tag.
            by_config[key].tags.extend(t for t in tags if t not in by_config[key].tags)
            continue
        plan = _ImagePlan(src.read(entry["Config"]), list(layers), tags, where)
        by_config[key] = plan
        plans.append(plan)
    return plans


def _oci_plans(src: _Source) -> list[_ImagePlan]:
    index = src.read_json("index.json")
    walk = _IndexWalk(src)
    walk.index(index, "index.json", depth=0, inherited_tag=None)
    return walk.plans


def _blob_name(digest: Any, where: str) -> str:
    if not isinstance(digest, str) or not is_digest(digest):
        raise ArchiveError(f"{where}: malformed digest {digest!r}")
    return f"blobs/sha256/{hex_of(digest)}"


def _read_blob(src: _Source, desc: dict[str, Any], where: str) -> bytes:
    digest = desc.get("digest")
    data = src.read(_blob_name(digest, f"{src.label}: {where}"))
    if sha256_bytes(data) != digest:
        raise ArchiveError(f"{src.label}: {where}: blob {digest} does not match its digest")
    return data


def _is_attestation(desc: dict[str, Any]) -> bool:
    ann = desc.get("annotations") or {}
    plat = desc.get("platform") or {}
    return ann.get("vnd.docker.reference.type") == "attestation-manifest" or (
        plat.get("os") == "unknown" and plat.get("architecture") == "unknown"
    )


def _select_platform(descs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    descs = [d for d in descs if not _is_attestation(d)]
    with_platform = [d for d in descs if d.get("platform")]
    if len(descs) <= 1 or not with_platform:
        return descs
    os_name, arch = host_platform()
    mine = [
        d
        for d in descs
        if (d.get("platform") or {}).get("os") == os_name
        and (d.get("platform") or {}).get("architecture") == arch
    ]
    if mine:
        return mine[:1]
    # Nothing for this host: keep the first, so the archive still loads for inspection.
    return descs[:1]


def _tag_from(desc: dict[str, Any]) -> str | None:
    ann = desc.get("annotations") or {}
    name = ann.get(CONTAINERD_NAME)
    if isinstance(name, str) and name:
        return name
    ref = ann.get(REF_NAME)
    # A bare tag ("latest", "1.0") names no repository: nothing to tag with.
    if isinstance(ref, str) and ref and ("/" in ref or ":" in ref):
        return ref
    return None


class _IndexWalk:
    """Walks an OCI index down to its manifests, each blob read and checked once.

    An index may list the same manifest (or nested index) any number of times; each
    digest is followed once (a repeat only adds its tag), and every descriptor listed
    counts against ``MAX_DESCRIPTORS``, so neither fan-out nor repetition can make the
    walk exponential.
    """

    def __init__(self, src: _Source) -> None:
        self.src = src
        self.plans: list[_ImagePlan] = []
        self.budget = _Budget(src.label)
        self.seen_indexes: set[str] = set()
        self.by_manifest: dict[str, _ImagePlan] = {}

    def index(self, index: Any, where: str, depth: int, inherited_tag: str | None) -> None:
        src = self.src
        if depth > 8:
            raise ArchiveError(f"{src.label}: {where}: indexes nested too deeply")
        if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            raise ArchiveError(f"{src.label}: {where}: not an image index")
        _checked(schema.check_index, index, f"{src.label}: {where}", "index")
        self.budget.spend(len(index["manifests"]))
        for desc in _select_platform(index["manifests"]):
            self.descriptor(desc, where, depth, _tag_from(desc) or inherited_tag)

    def descriptor(self, desc: dict[str, Any], where: str, depth: int, tag: str | None) -> None:
        src = self.src
        mt = desc.get("mediaType")
        digest = str(desc.get("digest"))
        name = f"{where} -> {digest}"
        if digest in self.by_manifest:
            plan = self.by_manifest[digest]
            if tag and tag not in plan.tags:
                plan.tags.append(tag)
            return
        if mt in INDEX_TYPES:
            if digest in self.seen_indexes:
                return
            self.seen_indexes.add(digest)
            sub = _parse_json(_read_blob(src, desc, name), f"{src.label}: {name}")
            self.index(sub, name, depth + 1, tag)
            return
        doc = _parse_json(_read_blob(src, desc, name), f"{src.label}: {name}")
        if mt is None and isinstance(doc, dict) and "manifests" in doc:
            if digest not in self.seen_indexes:
                self.seen_indexes.add(digest)
                self.index(doc, name, depth + 1, tag)
            return
        if mt not in MANIFEST_TYPES and not (isinstance(doc, dict) and "config" in doc):
            log.info("%s: skipping %s (%s)", src.label, digest, mt)
            return
        if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
            raise ArchiveError(f"{src.label}: {name}: manifest has no config")
        _checked(schema.check_manifest, doc, f"{src.label}: {name}", "manifest")
        self.budget.spend(1 + len(doc["layers"]))
        config = _read_blob(src, doc["config"], name + " config")
        layers = [_blob_name(layer["digest"], f"{src.label}: {name}") for layer in doc["layers"]]
        plan = _ImagePlan(config, layers, [tag] if tag else [], f"{src.label}: {name}")
        self.by_manifest[digest] = plan
        self.plans.append(plan)


@contextmanager
def _open_source(store: Store, path: Path) -> Iterator[_Source]:
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ArchiveError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise ArchiveError(f"{path}: {exc.strerror}") from exc
    if stat.S_ISDIR(st.st_mode):
        src: _Source = _DirSource(path)
        yield src
        return
    if not stat.S_ISREG(st.st_mode):
        # A pipe (`load -i <(…)`) or a device: read it once, into the store's tmp.
        with store.tmpdir("load") as work:
            plain = work / "input"
            _spool(path, plain)
            with _open_source(store, plain) as src:
                yield src
        return
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(GZIP_MAGIC) or head == ZSTD_MAGIC:
        # `docker save | gzip` is common: decompress once into the store's tmp.
        with store.tmpdir("load") as work, open(path, "rb") as raw:
            plain = work / "archive.tar"
            try:
                with open_decompressed(raw, str(path)) as stream, open(plain, "wb") as out:
                    shutil.copyfileobj(stream, out, CHUNK)
            except OSError as exc:
                raise ArchiveError(f"{path}: cannot decompress into {work}: {exc}") from exc
            src = _TarSource(plain, str(path))
            try:
                yield src
            finally:
                src.close()
        return
    src = _TarSource(path, str(path))
    try:
        yield src
    finally:
        src.close()


def _spool(path: Path, dest: Path) -> None:
    try:
        with open(path, "rb") as f, open(dest, "wb") as out:
            shutil.copyfileobj(f, out, CHUNK)
    except OSError as exc:
        raise ArchiveError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def load_archive(store: Store, path: Path) -> list[ImageSummary]:
    """Loads every image of a docker-archive or OCI layout (tar or directory).

    Each layer's diffID is checked against the config's ``rootfs.diff_ids`` before
    anything is recorded; layers already in the store are not read again.

    Args:
        store: where to load into.
        path: the archive (tar, possibly gzip/zstd-compressed) or layout directory.

    Returns:
        The loaded images, tagged from ``RepoTags`` or the OCI ref-name annotations.

    Raises:
        ArchiveError: for anything that is not a well-formed, safe image archive.
    """
    path = Path(path)
    with _open_source(store, path) as src:
        if src.exists("manifest.json"):
            plans = _docker_archive_plans(src)
        elif src.exists("index.json"):
            plans = _oci_plans(src)
        else:
            raise ArchiveError(
                f"{path}: not an image archive (no manifest.json or index.json); "
                "use `lamina import` to make an image from a root filesystem tar"
            )
        if not plans:
            raise ArchiveError(f"{path}: the archive holds no image")
        return _load_plans(store, src, plans)


def _load_plans(store: Store, src: _Source, plans: list[_ImagePlan]) -> list[ImageSummary]:
    prepared: list[tuple[_ImagePlan, list[str], list[str]]] = []
    for plan in plans:
        config = _parse_json(plan.config, f"{plan.where}: config")
        _checked(schema.check_config, config, plan.where, "config")
        diff_ids: list[str] = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(plan.layers):
            raise ArchiveError(
                f"{plan.where}: {len(plan.layers)} layers but the config lists "
                f"{len(diff_ids)} diff_ids"
            )
        tags = [normalize_tag(t) for t in plan.tags]
        prepared.append((plan, diff_ids, tags))
    with store.tmpdir("load") as work:
        # Stage every missing layer first; nothing is recorded until all check out.
        staged: dict[str, StagedLayer] = {}
        order: list[tuple[str, str | None, str]] = []
        for plan, diff_ids, _tags in prepared:
            chain = chain_ids(diff_ids)
            created_by = _layer_created_by(_parse_json(plan.config, plan.where), len(chain))
            for i, (chain_id, diff_id, name) in enumerate(
                zip(chain, diff_ids, plan.layers, strict=False)
            ):
                parent = chain[i - 1] if i else None
                if chain_id in staged or store.layers.exists(chain_id):
                    continue
                where = f"{plan.where}: layer {i + 1} ({name})"
                with src.open(name) as raw, open_decompressed(raw, where) as stream:
                    layer = store.layers.stage_tar(stream, work / hex_of(chain_id), where)
                if layer.diff_id != diff_id:
                    raise ArchiveError(
                        f"{where}: diffID {layer.diff_id} does not match the config's {diff_id}"
                    )
                staged[chain_id] = layer
                order.append((chain_id, parent, created_by[i]))
        results = []
        installed: list[str] = []
        with store.lock():
            try:
                for chain_id, parent, created_by_text in order:
                    if store.layers.exists(chain_id):
                        continue  # another process installed it meanwhile: not ours
                    store.layers.install(staged[chain_id], parent, created_by_text)
                    installed.append(chain_id)
                for plan, _diff_ids, tags in prepared:
                    image_id = store.images.put_blob(plan.config)
                    store.images.add_image(image_id)
                    for tag in tags:
                        store.images.tag(image_id, tag)
                    results.append(store.images.summary(image_id))
            except BaseException:
                # A full disk, say: what this load installed and no image uses goes now,
                # not after prune's grace period.
                _uninstall(store, installed)
                raise
    for summary in results:
        log.info("loaded %s %s", summary.id, " ".join(summary.tags))
    return results


def _uninstall(store: Store, chain_ids_: list[str]) -> None:
    """Removes the layers among ``chain_ids_`` that nothing references (best effort:
    what cannot be removed now is swept by a later prune)."""
    from lamina.core.accounting.graph import Liveness
    from lamina.core.embedded.store.graph import load_graph
    from lamina.core.embedded.trash import remove_tree, to_trash

    try:
        with store.lock():
            with store.index.transaction("load rollback"):
                live = Liveness(load_graph(store))
                dead = [c for c in reversed(chain_ids_) if not live.live(c)]
                freed = store.layers.forget(dead)
            store.files.unlink(freed)
        for chain_id in dead:
            moved = to_trash(store, store.layers.dir_path(chain_id))
            if moved is not None:
                remove_tree(moved)
    except (LaminaError, OSError) as exc:
        log.warning("layers of the failed load stay until the next prune: %s", exc)


# -- import ----------------------------------------------------------------------------


def import_rootfs(store: Store, tar_path: Path, ref: str, message: str = "") -> ImageSummary:
    """Makes a one-layer image from a root filesystem tar, like ``docker import``.

    Args:
        store: where to import into.
        tar_path: an uncompressed or gzip/zstd-compressed tar.
        ref: the tag to give it ("" for none).
        message: the history comment (default ``Imported from <file>``).

    Raises:
        ArchiveError: for an unsafe or unreadable tar.
        UsageError: for a malformed tag.
    """
    tar_path = Path(tar_path)
    tag = normalize_tag(ref) if ref else None
    where = str(tar_path)
    try:
        raw = open(tar_path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise ArchiveError(f"{tar_path}: {exc.strerror}") from exc
    with raw, open_decompressed(raw, where) as stream, store.tmpdir("import") as work:
        layer = store.layers.stage_tar(stream, work / "layer", where)
        if layer.tar_size == 0:
            # Nothing at all (``import /dev/null``) is not an empty tar: refuse it.
            raise ArchiveError(f"{tar_path}: empty input, not a tar archive")
        now = time.time()
        created = format_created(now)
        os_name, arch = host_platform()
        config = {
            "architecture": arch,
            "config": {},
            "created": created,
            "history": [
                {
                    "created": created,
                    "comment": message or f"Imported from {tar_path.name}",
                }
            ],
            "os": os_name,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }
        with store.lock():
            store.layers.install(layer, None, f"import {tar_path.name}")
            image_id = store.images.put_config(config)
            store.images.add_image(image_id)
            if tag:
                store.images.tag(image_id, tag)
    return store.images.summary(image_id)


# -- save ------------------------------------------------------------------------------


class _TarWriter:
    """Writes a tar the way Go's archive/tar does (PAX, two zero blocks at the end)."""

    def __init__(self, out: BinaryIO, mtime: int) -> None:
        self.out = out
        self.mtime = mtime
        self.dirs: set[str] = set()

    def _info(self, name: str, type_: bytes, size: int = 0, mode: int = 0o644) -> bytes:
        ti = tarfile.TarInfo(name)
        ti.type, ti.size, ti.mode, ti.mtime = type_, size, mode, self.mtime
        ti.uname = ti.gname = ""
        return pax_header(ti)

    def mkdirs(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                self.dirs.add(d)
                self.out.write(self._info(d + "/", tarfile.DIRTYPE, mode=0o755))

    def file(self, name: str, data: bytes) -> None:
        self.mkdirs(name)
        self.out.write(self._info(name, tarfile.REGTYPE, len(data)))
        self.out.write(data)
        self.out.write(padding(len(data)))

    def stream(self, name: str, size: int, write: Callable[[BinaryIO], None]) -> str:
        """Writes an entry whose payload ``write(sink)`` produces; returns its sha256."""
        self.mkdirs(name)
        self.out.write(self._info(name, tarfile.REGTYPE, size))
        counter = _Counting(self.out)
        write(counter)  # type: ignore[arg-type]
        if counter.size != size:
            raise StoreError(f"{name}: produced {counter.size} bytes, expected {size}")
        self.out.write(padding(size))
        return counter.hasher.digest()

    def close(self) -> None:
        self.out.write(END_OF_ARCHIVE)


class _Counting:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.size = 0
        self.hasher = Hasher()

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.hasher.update(data)
        self.size += len(data)
        return len(data)


def save_archive(store: Store, refs: list[str], out_path: Path) -> None:
    """Writes images as one tar that ``docker load`` (20.10 and later) accepts.

    The layout is Docker 25+'s: ``manifest.json`` (Config, RepoTags, Layers pointing
    into ``blobs/sha256/``), ``index.json`` and ``oci-layout``, plus one OCI manifest
    per image. Layer blobs are uncompressed and hash to the original diffIDs.

    Args:
        store: the store holding the images.
        refs: tags or IDs; a tag puts that tag in RepoTags, an ID saves untagged.
        out_path: the tar to write (replaced atomically).

    Raises:
        NotFound: if a reference names no image.
        StoreError: if a layer cannot be regenerated with its diffID.
    """
    if not refs:
        raise ArchiveError("nothing to save: give at least one image")
    images: dict[str, list[str]] = {}
    for ref in refs:
        image_id = store.images.resolve(ref)
        tags = images.setdefault(image_id, [])
        tag = _tag_of_ref(store, ref, image_id)
        if tag and tag not in tags:
            tags.append(tag)
    out_path = Path(out_path)
    try:
        st: os.stat_result | None = os.stat(out_path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise ArchiveError(f"{out_path}: cannot write: {exc.strerror}") from exc
    if st is not None and not stat.S_ISREG(st.st_mode):
        _save_to_stream(store, images, out_path, st)
        return
    # A symlink to a file stays a symlink: the file it names is what gets replaced.
    out_path = Path(os.path.realpath(out_path)) if out_path.is_symlink() else out_path
    out_dir = out_path.parent if str(out_path.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", dir=out_dir)
    except OSError as exc:
        raise ArchiveError(f"{out_path}: cannot write: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as raw:
            _write_archive(store, images, raw)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp_name, out_path)
    except BaseException as exc:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise ArchiveError(f"{out_path}: cannot write: {exc.strerror or exc}") from exc
        raise


def _save_to_stream(
    store: Store, images: dict[str, list[str]], out_path: Path, st: os.stat_result
) -> None:
    """Writes the archive into an existing pipe or device, like ``docker save -o``: the
    node itself is never replaced (``save -o /dev/null`` must leave /dev/null alone)."""
    if stat.S_ISDIR(st.st_mode):
        raise ArchiveError(f"{out_path}: is a directory")
    if not (stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise ArchiveError(f"{out_path}: not a regular file, a pipe or a device")
    try:
        fd = os.open(out_path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ArchiveError(f"{out_path}: cannot write: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as raw:
            _write_archive(store, images, raw)
    except OSError as exc:
        raise ArchiveError(f"{out_path}: cannot write: {exc.strerror or exc}") from exc


def _tag_of_ref(store: Store, ref: str, image_id: str) -> str | None:
    if is_digest(ref) or ref.startswith("sha256:"):
        return None
    try:
        tag = normalize_tag(ref)
    except LaminaError:
        return None
    return tag if tag in store.images.tags_of(image_id) else None


def _write_archive(store: Store, images: dict[str, list[str]], raw: BinaryIO) -> None:
    first = next(iter(images))
    mtime = int(store.images.summary(first).created)
    out = _TarWriter(raw, mtime)
    written: set[str] = set()
    manifest: list[dict[str, Any]] = []
    index_entries: list[dict[str, Any]] = []
    for image_id, tags in images.items():
        config_bytes = store.images.get_blob(image_id)
        config = _parse_json(config_bytes, image_id)
        diff_ids: list[str] = list((config.get("rootfs") or {}).get("diff_ids") or [])
        chain = chain_ids(diff_ids)
        layer_names: list[str] = []
        layer_descs: list[dict[str, Any]] = []
        for chain_id, diff_id in zip(chain, diff_ids, strict=False):
            name = f"blobs/sha256/{hex_of(diff_id)}"
            size = store.layers.tar_size(chain_id)
            if name not in written:
                digest = out.stream(name, size, partial(store.layers.write_tar, chain_id))
                if digest != diff_id:
                    raise StoreError(
                        f"layer {chain_id}: regenerated tar does not hash to {diff_id}; "
                        "run `lamina fsck`"
                    )
                written.add(name)
            layer_names.append(name)
            layer_descs.append({"mediaType": MT_OCI_LAYER, "digest": diff_id, "size": size})
        config_name = f"blobs/sha256/{hex_of(image_id)}"
        if config_name not in written:
            out.file(config_name, config_bytes)
            written.add(config_name)
        oci_manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MT_OCI_MANIFEST,
                "config": {
                    "mediaType": MT_OCI_CONFIG,
                    "digest": image_id,
                    "size": len(config_bytes),
                },
                "layers": layer_descs,
            },
            separators=(",", ":"),
        ).encode()
        manifest_digest = sha256_bytes(oci_manifest)
        manifest_name = f"blobs/sha256/{hex_of(manifest_digest)}"
        if manifest_name not in written:
            out.file(manifest_name, oci_manifest)
            written.add(manifest_name)
        desc = {"mediaType": MT_OCI_MANIFEST, "digest": manifest_digest, "size": len(oci_manifest)}
        if tags:
            for tag in tags:
                index_entries.append(
                    dict(
                        desc,
                        annotations={
                            CONTAINERD_NAME: _full_name(tag),
                            REF_NAME: tag.rsplit(":", 1)[1],
                        },
                    )
                )
        else:
            index_entries.append(desc)
        manifest.append({"Config": config_name, "RepoTags": tags or None, "Layers": layer_names})
    index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": index_entries}
    out.file("index.json", json.dumps(index, separators=(",", ":")).encode())
    out.file("manifest.json", json.dumps(manifest, separators=(",", ":")).encode())
    out.file("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    out.close()


def _full_name(tag: str) -> str:
    """``busybox:latest`` -> ``docker.io/library/busybox:latest`` (containerd's form)."""
    name = tag.rsplit(":", 1)[0]
    first = name.split("/")[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        return tag
    if "/" not in name:
        return f"docker.io/library/{tag}"
    return f"docker.io/{tag}"


def _layer_created_by(config: Any, count: int) -> list[str]:
    """Each layer's ``created_by`` from the config's history (entries that are not
    ``empty_layer`` map to the layers in order); "" where the history does not say."""
    out: list[str] = []
    history = config.get("history") if isinstance(config, dict) else None
    for entry in history if isinstance(history, list) else []:
        if isinstance(entry, dict) and not entry.get("empty_layer"):
            out.append(str(entry.get("created_by") or ""))
    if len(out) != count:
        # A history that does not line up with the layers names none of them.
        return [""] * count
    return out
