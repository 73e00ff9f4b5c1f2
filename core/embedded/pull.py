"""Pull and push for lamina's own store, over ``lamina.core.registry``.

Pull, like loading an archive, stages first and records last: every missing blob is
downloaded into ``tmp/downloads/`` (resumable: an interrupted pull leaves the verified
prefix there, and the next one asks only for the rest), checked against its digest,
decompressed and extracted into a work directory, and its tar's digest checked against
the config's diffID. Only when every layer checks out are they installed, the config
stored and the tag set, under the store lock. A failure at any point leaves the store
as it was, plus at most partial downloads that GC sweeps once they are old.

A layer whose tar the store has under other parents (same diffID, other chainID) is
regenerated from that layer instead of downloaded.

Push regenerates each layer's tar, compresses it deterministically (gzip, mtime 0, no
name), and uploads only what the registry lacks: HEAD first, then a cross-repository
mount where a record says another repository of that registry has the blob, then the
upload. The compressed digest is recorded per diffID, so a re-push asks the registry
about it without compressing again.

The layer-level steps are public for anything else that moves layers through a
registry (a build cache exported as an OCI artifact, say): ``fetch_layers`` stages
verified layers without recording them, ``install_layers`` records them under the
caller's store lock next to whatever refers to them, and ``upload_layers`` makes sure
a repository has each layer's compressed blob and says which descriptor to name.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from lamina.core.digest import Hasher, chain_ids, hex_of, short
from lamina.core.embedded.archive import open_decompressed
from lamina.core.embedded.distribution import LOCAL, BlobRecord, DistributionMetadata
from lamina.core.embedded.store import Store
from lamina.core.embedded.store.layers import StagedLayer
from lamina.core.errors import ArchiveError, NotFound, RegistryError, UsageError
from lamina.core.registry.client import RegistryClient
from lamina.core.registry.credentials import lookup
from lamina.core.registry.manifests import (
    MAX_CONFIG_BYTES,
    MT_DOCKER_CONFIG,
    MT_DOCKER_LAYER,
    MT_DOCKER_MANIFEST,
    MT_OCI_LAYER_GZIP,
    Descriptor,
    encode_manifest,
    host_platform,
    parse_platform,
)
from lamina.core.registry.plan import (
    HAVE_DIFF,
    HAVE_LAYER,
    HAVE_NONE,
    PullPlan,
    check_image,
    make_plan,
    resolve,
)
from lamina.core.registry.progress import (
    PullFinished,
    PushFinished,
    TransferEvent,
    TransferFinished,
    TransferProgressed,
    TransferStarted,
)
from lamina.core.registry.reference import Reference, parse_reference
from lamina.core.registry.transfer import DEFAULT_WORKERS, Report, Task, run_parallel

log = logging.getLogger(__name__)

DOWNLOADS = "downloads"
GZIP_LEVEL = 6  # Go's and Docker's default compression level
GZIP_TYPES = (MT_DOCKER_LAYER, MT_OCI_LAYER_GZIP)
CHUNK = 1 << 16


def client_for(ref: Reference) -> RegistryClient:
    """A client for the reference's registry, with the user's stored credentials."""
    return RegistryClient(ref.endpoint, lookup(ref.domain))


def _shared_with(store: Store) -> dict[str, tuple[str, ...]]:
    users: dict[str, list[str]] = {}
    for image in store.images.list():
        name = image.tags[0] if image.tags else short(image.id)
        for chain_id in image.layers:
            users.setdefault(chain_id, []).append(name)
    return {k: tuple(sorted(v)) for k, v in users.items()}


def plan_pull(store: Store, text: str, platform: str | None = None) -> PullPlan:
    """The pull plan for ``text`` against this store (fetches only manifests, and the
    config when the store lacks it).

    Raises:
        UsageError: a malformed reference or platform.
        RegistryError: the registry failed or refused, or the image is unusable.
    """
    ref = parse_reference(text)
    want = parse_platform(platform) if platform else host_platform()
    with client_for(ref) as client:
        resolved = resolve(client, ref, want)
        check_image(resolved)
        config_desc = resolved.manifest.config
        config_present = store.images.has_blob(config_desc.digest)
        if config_present:
            config = store.images.get_blob(config_desc.digest)
        else:
            config = client.get_blob(ref.path, config_desc, MAX_CONFIG_BYTES)
    diff_ids = {layer.diff_id for layer in store.layers.all()}
    shared = _shared_with(store)

    def have(chain_id: str, diff_id: str) -> str:
        if store.layers.exists(chain_id):
            return HAVE_LAYER
        return HAVE_DIFF if diff_id in diff_ids else HAVE_NONE

    return make_plan(
        resolved,
        config,
        image_present=store.images.exists(config_desc.digest),
        config_present=config_present,
        have=have,
        shared_with=lambda chain_id: shared.get(chain_id, ()),
        engine="embedded",
    )


@contextmanager
def _downloads(store: Store) -> Iterator[Path]:
    """``tmp/downloads/``: kept between pulls so an interrupted one resumes.

    While a pull runs its pid file keeps GC away; afterwards the directory is left
    without an owner, so GC sweeps it once it is older than the grace period.
    """
    path = store.home / "tmp" / DOWNLOADS
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / "pid").write_text(f"{os.getpid()}\n")
        os.utime(path)
    except OSError as exc:
        raise RegistryError(f"{path}: cannot prepare downloads: {exc.strerror}") from exc
    try:
        yield path
    finally:
        try:
            if (path / "pid").read_text().strip() == str(os.getpid()):
                (path / "pid").unlink()
            os.utime(path)
        except OSError:
            pass


def _created_by(config: Any, count: int) -> list[str]:
    """Each layer's ``created_by`` from the config's non-empty history entries."""
    history = config.get("history") if isinstance(config, dict) else None
    out = [
        str(entry.get("created_by") or "")
        for entry in (history if isinstance(history, list) else [])
        if isinstance(entry, dict) and not entry.get("empty_layer")
    ]
    return out if len(out) == count else [""] * count


@dataclass(frozen=True)
class WantedLayer:
    """One layer to bring into the store, at ``position`` of its chain.

    Attributes:
        position: its index in the chain (base = 0); staged layers are keyed by it.
        blob: the compressed blob the registry serves.
        diff_id: what its uncompressed tar must hash to.
        copy: regenerate it from a stored layer with the same diffID instead of
            downloading (the plan's ``diff``).
    """

    position: int
    blob: Descriptor
    diff_id: str
    copy: bool = False


def fetch_layers(
    store: Store,
    client: RegistryClient,
    repository: str,
    wanted: list[WantedLayer],
    work: Path,
    where: str,
    cancel: threading.Event | None = None,
    workers: int = DEFAULT_WORKERS,
) -> Iterator[TransferEvent | dict[int, StagedLayer]]:
    """Downloads (or copies) and stages layers, each verified; records nothing.

    Each blob is downloaded once however often it occurs, resumably, into
    ``tmp/downloads/``, checked against its digest, extracted under ``work`` and its
    tar checked against ``diff_id``; the download is deleted once staged. The last
    item yielded is the staged layers by position, for :func:`install_layers`.

    Raises:
        RegistryError, ArchiveError, TransferCancelled: as :func:`pull`.
    """
    staged: dict[int, StagedLayer] = {}
    tasks: list[Task] = []
    by_digest: dict[str, list[WantedLayer]] = {}
    for layer in wanted:
        if layer.copy:
            tasks.append(_copy_task(store, layer, work, staged, where))
        else:
            by_digest.setdefault(layer.blob.digest, []).append(layer)
    with _downloads(store) as downloads:
        for layers in by_digest.values():
            tasks.append(
                _download_task(store, client, repository, layers, downloads, work, staged, where)
            )
        yield from run_parallel(tasks, workers, cancel)
    yield staged


def install_layers(
    store: Store,
    chain: list[str],
    staged: dict[int, StagedLayer],
    created_by: list[str] | None = None,
) -> None:
    """Installs staged layers into a chain whose other layers the store has.

    Call it under ``store.lock()`` together with whatever records the layers (an
    image, a cache entry), so they appear all at once or not at all.

    Args:
        chain: the chainIDs, base first.
        staged: the staged layers by position (from :func:`fetch_layers`).
        created_by: each layer's instruction, for the layer records.

    Raises:
        NotFound: a layer that is neither staged nor in the store (pruned meanwhile).
    """
    for i, chain_id in enumerate(chain):
        parent = chain[i - 1] if i else None
        if i in staged:
            store.layers.install(staged[i], parent, created_by[i] if created_by else "")
        elif not store.layers.exists(chain_id):
            # Pruned between the plan and now: refuse rather than record a hole.
            raise NotFound(f"layer {chain_id} left the store during the pull; pull again")


def pull(
    store: Store,
    plan: PullPlan,
    cancel: threading.Event | None = None,
    workers: int = DEFAULT_WORKERS,
) -> Iterator[TransferEvent]:
    """Carries out a pull plan, yielding progress; the store changes only at the end.

    Raises:
        RegistryError: the registry failed, or a blob is truncated or does not match.
        ArchiveError: a layer is unsafe or does not match its diffID.
        TransferCancelled: ``cancel`` was set (verified downloads stay for a resume).
    """
    ref = parse_reference(plan.reference)
    tag = ref.familiar_tag
    downloaded = 0
    for layer in plan.layers:
        if layer.have == HAVE_LAYER or plan.image_present:
            yield TransferFinished(layer.digest, "present")
    if plan.image_present:
        with store.lock():
            if tag:
                store.images.tag(plan.image_id, tag)
        yield PullFinished(plan.image_id, plan.reference, 0)
        return
    created_by = _created_by(json.loads(plan.config_bytes), len(plan.layers))
    wanted = [
        WantedLayer(
            i,
            Descriptor(layer.media_type, layer.digest, layer.size),
            layer.diff_id,
            copy=layer.have == HAVE_DIFF,
        )
        for i, layer in enumerate(plan.layers)
        if layer.have != HAVE_LAYER
    ]
    staged: dict[int, StagedLayer] = {}
    with store.tmpdir("pull") as work, client_for(ref) as client:
        for item in fetch_layers(
            store, client, plan.repository, wanted, work, plan.reference, cancel, workers
        ):
            if isinstance(item, dict):
                staged = item
                continue
            if isinstance(item, TransferFinished):
                downloaded += item.moved
            yield item
        with store.lock():
            install_layers(store, [layer.chain_id for layer in plan.layers], staged, created_by)
            image_id = store.images.put_blob(plan.config_bytes)
            if image_id != plan.image_id:
                raise RegistryError(f"{plan.reference}: config does not match {plan.image_id}")
            store.images.add_image(image_id)
            if tag:
                store.images.tag(image_id, tag)
    _remember_pulled(store, plan)
    yield PullFinished(plan.image_id, plan.reference, downloaded)


def _remember_pulled(store: Store, plan: PullPlan) -> None:
    meta = DistributionMetadata(store.home)
    source = f"{plan.registry}/{plan.repository}"
    for layer in plan.layers:
        meta.add(layer.diff_id, BlobRecord(layer.digest, layer.media_type, layer.size, source))


def _stage(store: Store, blob: Path, dest: Path, diff_id: str, where: str) -> StagedLayer:
    try:
        raw = open(blob, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise RegistryError(f"{blob}: cannot read the download: {exc.strerror}") from exc
    with raw, open_decompressed(raw, where) as stream:
        layer = store.layers.stage_tar(stream, dest, where)
    if layer.diff_id != diff_id:
        raise ArchiveError(f"{where}: diffID {layer.diff_id} does not match the config's {diff_id}")
    return layer


def _download_task(
    store: Store,
    client: RegistryClient,
    repository: str,
    layers: list[WantedLayer],
    downloads: Path,
    work: Path,
    staged: dict[int, StagedLayer],
    where: str,
) -> Task:
    desc = layers[0].blob
    digest = desc.digest

    def task(report: Report, stop: threading.Event) -> None:
        path = downloads / hex_of(digest)
        lock = downloads / f"{hex_of(digest)}.lock"
        with _flocked(lock):
            had = path.stat().st_size if path.exists() else 0
            report(TransferStarted(digest, "download", desc.size))
            done = 0

            def progress(n: int) -> None:
                nonlocal done
                done += n
                report(TransferProgressed(digest, done, desc.size))

            client.download_blob(repository, desc, path, progress, stop)
            for layer in layers:
                i = layer.position
                what = f"{where}: layer {i + 1} ({short(digest)})"
                staged[i] = _stage(store, path, work / f"layer-{i}", layer.diff_id, what)
            # Staged and verified: the compressed copy is no longer needed to resume.
            path.unlink(missing_ok=True)
            lock.unlink(missing_ok=True)
        report(
            TransferFinished(
                digest, "resumed" if had else "downloaded", desc.size - min(had, desc.size)
            )
        )

    return task


def _copy_task(
    store: Store, layer: WantedLayer, work: Path, staged: dict[int, StagedLayer], where: str
) -> Task:
    """Regenerates a layer's tar from a stored layer with the same diffID."""

    def task(report: Report, stop: threading.Event) -> None:
        i = layer.position
        source = next((x for x in store.layers.all() if x.diff_id == layer.diff_id), None)
        if source is None:
            raise NotFound(f"layer {layer.diff_id} left the store during the pull; pull again")
        report(TransferStarted(layer.blob.digest, "copy", 0))
        tar = work / f"copy-{i}.tar"
        try:
            with open(tar, "wb") as out:
                store.layers.write_tar(source.chain_id, out)
        except OSError as exc:
            raise ArchiveError(f"{tar}: cannot write: {exc.strerror}") from exc
        what = f"{where}: layer {i + 1} (from {short(source.chain_id)})"
        staged[i] = _stage(store, tar, work / f"layer-{i}", layer.diff_id, what)
        tar.unlink(missing_ok=True)
        report(TransferFinished(layer.blob.digest, "copied", 0, short(source.chain_id)))

    return task


@contextmanager
def _flocked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``: two pulls never write one download at once."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise RegistryError(f"{path}: cannot lock: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- push ------------------------------------------------------------------------------


class _HashingFile:
    """A file that hashes what is written to it (the compressed blob's digest)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hasher = Hasher()

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.hasher.update(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()


def compress_layer(store: Store, chain_id: str, dest: Path) -> tuple[str, int]:
    """Writes the layer's tar gzip-compressed to ``dest``, the same bytes every time.

    gzip with mtime 0 and no file name, at Docker's default level: the same layer
    compresses to the same digest on every push from this zlib.

    Returns:
        (digest, size) of the compressed blob.
    """
    try:
        with open(dest, "wb") as raw:
            sink = _HashingFile(raw)
            with gzip.GzipFile(
                filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=sink, mtime=0
            ) as gz:
                store.layers.write_tar(chain_id, gz)  # type: ignore[arg-type]
            raw.flush()
    except OSError as exc:
        raise ArchiveError(f"{dest}: cannot write the compressed layer: {exc.strerror}") from exc
    return sink.hasher.digest(), sink.hasher.size


def upload_layers(
    store: Store,
    client: RegistryClient,
    ref: Reference,
    layers: list[tuple[str, str]],
    descriptors: dict[str, Descriptor],
    work: Path,
    cancel: threading.Event | None = None,
    workers: int = DEFAULT_WORKERS,
) -> Iterator[TransferEvent]:
    """Makes sure the registry has each layer's compressed blob in ``ref``'s repository.

    Per layer: HEAD the blobs the records know, mount one from another repository of
    the same registry, else compress deterministically and upload. Each layer's blob
    descriptor lands in ``descriptors`` (by diffID) for the manifest that names them.

    Args:
        layers: (diffID, chainID) pairs; a diffID is handled once.
        descriptors: filled with each diffID's compressed blob.
        work: where compressed blobs are written before upload.
    """
    meta = DistributionMetadata(store.home)
    tasks: list[Task] = []
    seen: set[str] = set()
    for diff_id, chain_id in layers:
        if diff_id not in seen:
            seen.add(diff_id)
            tasks.append(_push_task(store, client, ref, meta, diff_id, chain_id, work, descriptors))
    yield from run_parallel(tasks, workers, cancel)


def push(
    store: Store,
    text: str,
    cancel: threading.Event | None = None,
    workers: int = DEFAULT_WORKERS,
    upload_chunk: int | None = None,
) -> Iterator[TransferEvent]:
    """Pushes the local image ``text`` (``registry/repo:tag``) to its registry.

    Events are keyed by each layer's diffID (its compressed digest is known only once
    it is compressed; ``TransferFinished.detail`` names it).

    Raises:
        NotFound: no such image in the store.
        UsageError: a digest reference (a push names a tag).
        RegistryError: the registry failed or refused.
    """
    ref = parse_reference(text)
    if ref.digest or not ref.tag:
        raise UsageError(f"push {text}: name a tag, not a digest")
    assert ref.familiar_tag is not None
    try:
        image_id = store.images.resolve(ref.familiar_tag)
    except NotFound:
        raise NotFound(f"push {text}: no such image in the store (tag it first)") from None
    config_bytes = store.images.get_blob(image_id)
    config = store.images.get_config(image_id)
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    chains = chain_ids(diff_ids)
    descriptors: dict[str, Descriptor] = {}
    uploaded = 0
    with client_for(ref) as client, store.tmpdir("push") as work:
        if upload_chunk:
            client.upload_chunk = upload_chunk
        pairs = list(zip(diff_ids, chains, strict=True))
        for event in upload_layers(store, client, ref, pairs, descriptors, work, cancel, workers):
            if isinstance(event, TransferFinished):
                uploaded += event.moved
            yield event
        if not client.blob_exists(ref.path, image_id):
            client.put_blob_bytes(ref.path, config_bytes)
            uploaded += len(config_bytes)
        manifest = encode_manifest(
            Descriptor(MT_DOCKER_CONFIG, image_id, len(config_bytes)),
            [descriptors[d] for d in diff_ids],
            MT_DOCKER_MANIFEST,
        )
        digest = client.put_manifest(ref.path, ref.tag, manifest, MT_DOCKER_MANIFEST)
    log.info("pushed %s as %s", ref.name, digest)
    yield PushFinished(str(ref), digest, len(manifest), uploaded)


def _push_task(
    store: Store,
    client: RegistryClient,
    ref: Reference,
    meta: DistributionMetadata,
    diff_id: str,
    chain_id: str,
    work: Path,
    results: dict[str, Descriptor],
) -> Task:
    target = ref.name

    def done(report: Report, record: BlobRecord, outcome: str, moved: int, detail: str) -> None:
        results[diff_id] = Descriptor(MT_DOCKER_LAYER, record.digest, record.size)
        meta.add(diff_id, BlobRecord(record.digest, MT_DOCKER_LAYER, record.size, target))
        report(TransferFinished(diff_id, outcome, moved, detail or record.digest))

    def task(report: Report, stop: threading.Event) -> None:
        known = [r for r in meta.records(diff_id) if r.media_type in GZIP_TYPES and r.size > 0]
        # Where the registry may have it already: this repository, our own compression,
        # then other repositories of the same registry (mountable).
        for record in sorted(known, key=lambda r: (r.repository != target, r.repository != LOCAL)):
            if stop.is_set():
                return
            if client.blob_exists(ref.path, record.digest):
                done(report, record, "exists", 0, "")
                return
            domain, _, source = record.repository.partition("/")
            mountable = record.repository != LOCAL and domain == ref.domain and source != ref.path
            if mountable and client.mount_blob(ref.path, record.digest, source):
                done(report, record, "mounted", 0, f"from {source}")
                return
        report(TransferStarted(diff_id, "upload", 0))
        blob = work / f"{hex_of(diff_id)}.gz"
        digest, size = compress_layer(store, chain_id, blob)
        record = BlobRecord(digest, MT_DOCKER_LAYER, size, LOCAL)
        meta.add(diff_id, record)
        if client.blob_exists(ref.path, digest):
            done(report, record, "exists", 0, "")
            return
        sent = 0

        def progress(n: int) -> None:
            nonlocal sent
            sent += n
            report(TransferProgressed(diff_id, sent, size))

        client.upload_blob(ref.path, blob, digest, progress, stop)
        blob.unlink(missing_ok=True)
        done(report, record, "uploaded", size, "")

    return task


__all__ = [
    "WantedLayer",
    "compress_layer",
    "fetch_layers",
    "install_layers",
    "plan_pull",
    "pull",
    "push",
    "upload_layers",
]
