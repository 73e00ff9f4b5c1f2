"""Layer commit throughput: lamina's ``commit_dir`` against ``sha256sum`` and ``tar``.

Committing a layer must at least read every byte, serialise the tree as a tar and hash
that tar; ``tar -cf - . | sha256sum`` does exactly that with the machine's own tools,
so it is the practical ceiling, and plain ``sha256sum`` over the files is the hashing
ceiling. All three see the same files with the data in the page cache (flushed with
``sync`` before each timing), so none of them pays for the disk and the others not.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.context import ContextSpec, write_files
from bench.measure import BenchError, Samples, Skipped, run_child
from bench.report import Row

log = logging.getLogger(__name__)

MB = 1_000_000


@dataclass(frozen=True)
class ThroughputSpec:
    """The layer to commit.

    Attributes:
        files: regular files in it.
        total_bytes: their total size.
        repeat: how many commits (each of a fresh copy).
    """

    files: int
    total_bytes: int
    repeat: int


def _shell(cmd: str, cwd: Path) -> float:
    result = run_child(["/bin/bash", "-o", "pipefail", "-c", cmd], cwd=cwd)
    result.check(cmd)
    return result.seconds


def measure_commit(work: Path, spec: ThroughputSpec) -> list[Row]:
    """Commits a fresh copy of one large layer ``repeat`` times; returns the rows.

    Args:
        work: a scratch directory (a store is created inside it).
        spec: the layer's size and the repeat count.

    Raises:
        Skipped: ``sha256sum`` or ``tar`` is missing.
    """
    for tool in ("sha256sum", "tar", "cp", "sync"):
        if shutil.which(tool) is None:
            raise Skipped(f"{tool} is not installed")
    from lamina.core.embedded.store import Store

    pristine = work / "layer-data"
    if not pristine.is_dir():
        write_files(pristine, ContextSpec(spec.files, spec.total_bytes, seed=7))
    store = Store(work / "store")
    lamina = Samples("MB/s")
    hashing = Samples("MB/s")
    tarring = Samples("MB/s")
    # coreutils' sha256sum may not use the CPU's SHA instructions while OpenSSL (and
    # Python's hashlib, which lamina uses) does; with openssl installed the fastest
    # tools the machine has are measured too.
    openssl = shutil.which("openssl")
    tar_openssl = Samples("MB/s")
    try:
        for n in range(spec.repeat):
            with store.tmpdir("bench") as tmp:
                src = tmp / "diff"
                # A copy, not hardlinks: a committed layer owns its inodes.
                subprocess.run(["cp", "-a", str(pristine), str(src)], check=True)
                subprocess.run(["sync"], check=True)
                seconds = _shell(
                    "find . -type f -print0 | sort -z | xargs -0 cat | sha256sum >/dev/null", src
                )
                hashing.add(spec.total_bytes / MB / seconds)
                seconds = _shell("tar --sort=name -cf - . | sha256sum >/dev/null", src)
                tarring.add(spec.total_bytes / MB / seconds)
                if openssl:
                    seconds = _shell(
                        "tar --sort=name -cf - . | openssl dgst -sha256 >/dev/null", src
                    )
                    tar_openssl.add(spec.total_bytes / MB / seconds)
                start = time.perf_counter()
                info = store.layers.commit_dir(src, None, created_by=f"bench commit {n}")
                seconds = time.perf_counter() - start
                lamina.add(spec.total_bytes / MB / seconds)
                if src.exists():
                    raise BenchError(f"commit_dir left {src} behind")
                log.info("commit %d: %s in %.2fs", n, info.chain_id, seconds)
                # The same data every time: the first commit stores the layer, later ones
                # find the chainID and discard their copy, after the same tar and hash.
        layer_dir = store.layers.diff_path(info.chain_id)
        if not layer_dir.is_dir():
            raise BenchError(f"committed layer {info.chain_id} has no directory")
    finally:
        store.close()
    size = f"{spec.files:,} files, {spec.total_bytes / MB:,.0f} MB"
    rows = [
        Row(
            "Layer commit",
            f"commit one layer ({size}) vs `tar | sha256sum`",
            lamina,
            tarring,
            "tar | sha256sum",
            higher_is_better=True,
            notes="tar + hash + tar-split + fsync + index row; the ceiling serialises and hashes only",
        ),
        Row(
            "Layer commit",
            "commit vs hashing alone (`cat | sha256sum`)",
            lamina,
            hashing,
            "sha256sum",
            higher_is_better=True,
        ),
    ]
    if tar_openssl.values:
        rows.insert(
            1,
            Row(
                "Layer commit",
                "commit vs `tar | openssl dgst -sha256`",
                lamina,
                tar_openssl,
                "tar | openssl",
                higher_is_better=True,
                notes="OpenSSL uses the CPU's SHA instructions as Python's hashlib does",
            ),
        )
    return rows
