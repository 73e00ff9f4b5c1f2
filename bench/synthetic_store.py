"""A synthetic store at scale: thousands of images and layers, real and consistent.

Everything goes through the store's public API (``commit_dir``, ``put_config``,
``add_image``, ``tag``) so the result is exactly what builds would have left: real
layer directories with tar-splits, index rows, config blobs. Cache records are written
with one ``INSERT`` each inside ``index.transaction()``, as the builder records them.

Shape: images come in families (an application and its versions). Each family shares
a base chain of layers; each image adds its own layers on top, one cache record for its
last step, and every tenth image is dangling (its tag moved on), so ``system df`` has
shared and unique sizes to compute and a prune plan has something to remove.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.measure import BenchError

log = logging.getLogger(__name__)

MANIFEST = "bench-synthetic.json"
DAY = 86_400.0
# Threads committing layers at once: enough to overlap fsyncs on two cores.
WORKERS = 8


@dataclass(frozen=True)
class StoreSpec:
    """How big a store to make.

    Attributes:
        images: images in the store (about a tenth dangling).
        layers: layers in the store, shared bases included.
        images_per_family: images sharing one base chain.
    """

    images: int
    layers: int
    images_per_family: int = 20

    def shape(self) -> tuple[int, int, int]:
        """(families, base chain length, layers each image adds)."""
        families = max(1, self.images // self.images_per_family)
        own = max(1, self.layers // self.images - 1)
        base = max(1, (self.layers - self.images * own) // families)
        return families, base, own


@dataclass(frozen=True)
class SyntheticStore:
    """What was generated.

    Attributes:
        home: the store directory.
        images: images recorded.
        layers: layers recorded.
        tagged: images with a tag.
        cache_records: cache rows.
        seconds: time taken to generate (0 when reused).
    """

    home: Path
    images: int
    layers: int
    tagged: int
    cache_records: int
    seconds: float


def _layer(store: Any, parent: str | None, rng: random.Random, label: str) -> str:
    with store.tmpdir("synthetic") as tmp:
        diff = tmp / "diff"
        (diff / "opt" / "app").mkdir(parents=True)
        # Small but different sizes and content, so every diffID is distinct and sizes
        # add up to something a disk report must sum correctly.
        size = rng.randint(64, 8192)
        (diff / "opt" / "app" / label).write_bytes(rng.randbytes(size))
        info = store.layers.commit_dir(diff, parent, created_by=f"RUN make {label}")
        return str(info.chain_id)


def _config(diff_ids: list[str], created: float, labels: dict[str, str]) -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": stamp,
        "config": {
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": stamp, "created_by": f"RUN step {n}"} for n in range(len(diff_ids))
        ],
    }


def generate(home: Path, spec: StoreSpec, seed: int = 2000) -> SyntheticStore:
    """Creates the store at ``home``, or reuses one an earlier run made with this spec.

    Args:
        home: the store directory (must not hold anything else).
        spec: how many images and layers.
        seed: the random seed (sizes, content, times).

    Raises:
        BenchError: the store does not hold what was asked for afterwards.
    """
    from lamina.core.embedded.builder.keys import step_key
    from lamina.core.embedded.store import Store

    # Next to the store, not in it: a store holds only what lamina put there.
    manifest = home.parent / f"{home.name}.{MANIFEST}"
    wanted = {**asdict(spec), "seed": seed}
    if manifest.is_file() and json.loads(manifest.read_text()).get("spec") == wanted:
        done = json.loads(manifest.read_text())
        problems = fsck(home)
        if not problems:
            log.info("reusing synthetic store %s", home)
            return SyntheticStore(
                home, done["images"], done["layers"], done["tagged"], done["cache"], 0.0
            )
        # Made by an older lamina, or damaged: it is ours (the manifest says so), redo it.
        log.warning("synthetic store %s fails fsck (%s); making it again", home, problems[0])
        manifest.unlink()
        shutil.rmtree(home)
    if home.exists() and any(home.iterdir()):
        raise BenchError(f"{home}: not empty and not a synthetic store of this size; remove it")

    start = time.perf_counter()
    now = time.time()
    families, base_len, own = spec.shape()
    store = Store(home)
    try:
        # Chains are sequential, but different families and images are independent:
        # commits in a few threads overlap their fsyncs (ext4 commits them as a group).
        # Each unit of work has its own seeded generator, so thread order changes nothing.
        def base_chain(fam: int) -> list[str]:
            rng = random.Random(seed * 1_000_003 + fam)
            extra = spec.layers - spec.images * own - families * base_len if fam == 0 else 0
            chain: list[str] = []
            for n in range(base_len + extra):
                chain.append(_layer(store, chain[-1] if chain else None, rng, f"base{fam}-{n}"))
            return chain

        with ThreadPoolExecutor(WORKERS) as pool:
            bases = list(pool.map(base_chain, range(families)))
        diff_of = {c: store.layers.get(c).diff_id for chain in bases for c in chain}

        def image(i: int) -> tuple[Any, ...]:
            rng = random.Random(seed * 7_000_003 + i)
            fam = i % families
            chain = list(bases[fam])
            diffs = [diff_of[c] for c in chain]
            for n in range(own):
                chain.append(_layer(store, chain[-1], rng, f"app{i}-{n}"))
                diffs.append(store.layers.get(chain[-1]).diff_id)
            created = now - rng.uniform(0, 90 * DAY)
            labels = {"org.example.family": f"app{fam}", "org.example.build": str(i)}
            parent_state = store.images.put_config(_config(diffs[:-1], created - 60, labels))
            image_id = store.images.put_config(_config(diffs, created, labels))
            store.images.add_image(image_id)
            if i % 10 != 9:
                store.images.tag(image_id, f"synthetic/app{fam}:v{i}")
            used = created + rng.uniform(0, now - created)
            key = step_key(parent_state, {"instruction": "RUN", "synthetic": i})
            return (
                key,
                parent_state,
                f"RUN make app{i}",
                json.dumps({"synthetic": i}),
                image_id,
                chain[-1],
                created,
                used,
                rng.randint(1, 50),
            )

        with ThreadPoolExecutor(WORKERS) as pool:
            cache_rows = list(pool.map(image, range(spec.images)))
        tagged = sum(1 for i in range(spec.images) if i % 10 != 9)
        cache = len(cache_rows)
        with store.lock(), store.index.transaction() as conn:
            conn.executemany(
                "INSERT INTO cache (key, parent, instruction, inputs, result, top_layer, created,"
                " last_used, use_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                cache_rows,
            )
        conn = store.index.connection()
        n_layers = conn.execute("SELECT count(*) FROM layers").fetchone()[0]
        n_images = conn.execute("SELECT count(*) FROM images").fetchone()[0]
    finally:
        store.close()
    if n_layers != spec.layers or n_images != spec.images:
        raise BenchError(
            f"{home}: asked for {spec.images} images / {spec.layers} layers, "
            f"got {n_images} / {n_layers}"
        )
    seconds = time.perf_counter() - start
    problems = fsck(home)
    if problems:
        raise BenchError(f"{home}: fsck found {len(problems)} problems, first: {problems[0]}")
    manifest.write_text(
        json.dumps(
            {
                "spec": wanted,
                "images": n_images,
                "layers": n_layers,
                "tagged": tagged,
                "cache": cache,
            }
        )
    )
    log.info("generated synthetic store %s in %.1fs", home, seconds)
    return SyntheticStore(home, n_images, n_layers, tagged, cache, seconds)


def fsck(home: Path) -> list[str]:
    """Problems ``lamina.core.embedded.fsck`` finds in the store (empty when consistent)."""
    from lamina.core.embedded.fsck import fsck as check
    from lamina.core.embedded.store import Store
    from lamina.core.errors import LaminaError

    try:
        store = Store(home)
    except LaminaError as exc:
        # One that does not open (an index another lamina wrote) is a problem too.
        return [str(exc)]
    try:
        report = check(store)
    finally:
        store.close()
    return [p.message for p in report.remaining]
