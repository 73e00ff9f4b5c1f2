"""kill -9 at random points of load and prune: a plain ``fsck`` (no ``--repair``) then
finds a healthy store, and the next prune leaves nothing unreferenced."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from lamina.core.accounting.plans import PruneRequest
from lamina.core.embedded.fsck import fsck
from lamina.core.embedded.prune import apply_prune, plan_prune
from lamina.core.embedded.store import Store

WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from lamina.core.accounting.plans import PruneRequest
    from lamina.core.embedded.archive import load_archive
    from lamina.core.embedded.prune import apply_prune, plan_prune
    from lamina.core.embedded.store import Store
    store = Store(Path(sys.argv[1]))
    archives = sys.argv[2:]
    print("ready", flush=True)
    n = 0
    while True:
        load_archive(store, Path(archives[n % len(archives)]))
        for image in store.images.list():
            store.images.remove(image.id)
        apply_prune(store, plan_prune(store, PruneRequest("system", grace=0.0)))
        n += 1
    """
)


def archive(path: Path, seed: int) -> Path:
    rng = random.Random(seed)
    layers = []
    for i in range(3):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for j in range(300):
                data = rng.randbytes(rng.randrange(1, 3000))
                info = tarfile.TarInfo(f"l{i}/d{j % 7}/f{j}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        layers.append(buf.getvalue())
    import hashlib

    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(x).hexdigest() for x in layers],
            },
        }
    ).encode()
    manifest = json.dumps(
        [{"Config": "c.json", "RepoTags": [f"k:{seed}"], "Layers": [f"{i}.tar" for i in range(3)]}]
    ).encode()
    with tarfile.open(path, "w") as tf:
        for name, data in [(f"{i}.tar", x) for i, x in enumerate(layers)] + [
            ("c.json", config),
            ("manifest.json", manifest),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15, 16])
def test_kill_9_during_loads_and_prunes_leaves_a_healthy_store(
    tmp_path: Path,
    seed: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "store"
    Store(home).close()
    archives = [str(archive(tmp_path / f"a{i}.tar", seed * 10 + i)) for i in range(2)]
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(home), *archives],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n", proc.stderr.read() if proc.stderr else ""
        time.sleep(random.Random(seed).uniform(0.2, 2.0))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    # What a user runs: plain `lamina fsck`, exit 0, nothing on stderr.
    from lamina.tui.cli import main

    monkeypatch.setenv("LAMINA_HOME", str(home))
    code = main(["fsck"])
    out, err = capsys.readouterr()
    assert code == 0 and err == "", out + err
    store = Store(home)
    try:
        report = fsck(store)
        assert report.ok, report.remaining
        assert all(p.note for p in report.problems), report.problems
        apply_prune(store, plan_prune(store, PruneRequest("system", grace=0.0)))
        clean = fsck(store, deep=True, grace=0.0)
        assert clean.ok and [p for p in clean.problems if not p.note] == []
    finally:
        store.close()
