"""Generated build contexts: N files totalling about M bytes, the same on every run.

File sizes follow a log-normal spread (many small source files, a few large assets,
as in a real repository), scaled so the total is exactly the requested size. Content is
pseudo-random bytes from a fixed seed, so it is incompressible and identical across
runs and machines: a cache hit can never come from a lucky coincidence of content.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FILES_PER_DIR = 100
# Generated files get an old mtime, like a checkout's files that nobody touched today.
# A stat cache rightly distrusts files modified within the last moments (git's "racy"
# entries), so fresh mtimes would make every build rehash the whole context.
OLD_MTIME = 1_600_000_000
MANIFEST = ".bench-context.json"

# A RUN before the COPY (a layer from the base), the COPY of the whole context, and a
# RUN that walks what was copied: the shape of most application Dockerfiles.
DOCKERFILE = """\
FROM {base}
RUN echo "lamina bench" > /etc/bench-stamp && ls /bin | wc -l > /etc/bench-bin-count
COPY . /src
RUN find /src -type f | wc -l > /src-count && du -sk /src > /src-size
"""

DOCKERIGNORE = "Dockerfile\n.dockerignore\n" + MANIFEST + "\n"


@dataclass(frozen=True)
class ContextSpec:
    """What to generate.

    Attributes:
        files: number of regular files.
        total_bytes: their total size.
        seed: the random seed (sizes and content).
    """

    files: int
    total_bytes: int
    seed: int = 20_000


def _sizes(spec: ContextSpec) -> list[int]:
    rng = random.Random(spec.seed)
    raw = [rng.lognormvariate(0.0, 1.5) for _ in range(spec.files)]
    scale = spec.total_bytes / sum(raw)
    sizes = [max(1, int(r * scale)) for r in raw]
    # Put the rounding remainder on the largest file so the total is exact.
    biggest = max(range(len(sizes)), key=sizes.__getitem__)
    sizes[biggest] += spec.total_bytes - sum(sizes)
    return sizes


def file_path(index: int) -> str:
    """The context-relative path of file number ``index``."""
    return f"d{index // FILES_PER_DIR:04d}/f{index % FILES_PER_DIR:03d}.bin"


def write_files(root: Path, spec: ContextSpec) -> None:
    """Writes the spec's files (and nothing else) into a new directory ``root``."""
    root.mkdir(parents=True)
    rng = random.Random(spec.seed + 1)
    for index, size in enumerate(_sizes(spec)):
        path = root / file_path(index)
        if index % FILES_PER_DIR == 0:
            path.parent.mkdir()
        path.write_bytes(rng.randbytes(size))
        os.utime(path, (OLD_MTIME, OLD_MTIME))


def generate(root: Path, spec: ContextSpec, base: str) -> Path:
    """Creates (or reuses) a context directory with a Dockerfile building on ``base``.

    A context left by an earlier run with the same spec is reused: generating 500 MB
    takes longer than most measurements. Any edit a previous run made is reverted.

    Args:
        root: the context directory to create.
        spec: how many files and bytes.
        base: the image the Dockerfile starts ``FROM``.

    Returns:
        ``root``.
    """
    manifest = root / MANIFEST
    wanted = asdict(spec)
    if manifest.is_file() and json.loads(manifest.read_text()) == wanted:
        log.info("reusing context %s", root)
        revert_edit(root, spec)
    else:
        if root.exists():
            shutil.rmtree(root)
        write_files(root, spec)
        manifest.write_text(json.dumps(wanted))
        log.info("generated context %s: %d files, %d bytes", root, spec.files, spec.total_bytes)
    (root / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    (root / ".dockerignore").write_text(DOCKERIGNORE)
    return root


def edit_one_file(root: Path, spec: ContextSpec, generation: int) -> str:
    """Changes the content (not the size) of one file in the middle of the context.

    Each ``generation`` writes different bytes, so repeated edits each miss the cache.

    Args:
        root: a context made by :func:`generate`.
        spec: its spec.
        generation: which edit this is (1, 2, ...).

    Returns:
        The context-relative path edited.
    """
    index = spec.files // 2
    rel = file_path(index)
    path = root / rel
    size = path.stat().st_size
    stamp = f"edit {generation}\n".encode()
    data = (stamp * (size // len(stamp) + 1))[:size]
    path.write_bytes(data)
    return rel


def revert_edit(root: Path, spec: ContextSpec) -> None:
    """Restores the file :func:`edit_one_file` changes to its generated content."""
    rng = random.Random(spec.seed + 1)
    target = spec.files // 2
    for index, size in enumerate(_sizes(spec)):
        data = rng.randbytes(size)
        if index == target:
            path = root / file_path(index)
            if path.read_bytes() != data:
                path.write_bytes(data)
            os.utime(path, (OLD_MTIME, OLD_MTIME))
            return


def tree_bytes(root: Path) -> tuple[int, int]:
    """(regular files, bytes) under ``root``, excluding the bench's own files."""
    files = total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            if dirpath == str(root) and name in ("Dockerfile", ".dockerignore", MANIFEST):
                continue
            files += 1
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return files, total
