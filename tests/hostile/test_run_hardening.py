"""The issue's RUN reproducer end to end: a build may make a device node and a setuid
binary (Docker's builds may too), but nothing it leaves can be used, inside the next
RUN or by another user of the machine."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.store import PRIVATE_DIRS, Store
from lamina.core.events import BuildFailed, BuildFinished, StepOutput
from lamina.core.model import BuildRequest

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("busybox_store")]

REPRODUCER = "RUN mknod /blk b 254 0 && chmod 666 /blk && chmod 4777 /bin/busybox"


def _build(store: Store, ctx: Path, text: str) -> list[object]:
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(text)
    return list(run_build(store, BuildRequest(context=str(ctx), tags=("evil:1",))))


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
        capture_output=True,
        text=True,
        check=False,
    )


def test_what_a_run_leaves_is_out_of_reach(store: Store, tmp_path: Path) -> None:
    events = _build(store, tmp_path / "ctx", f"FROM busybox\n{REPRODUCER}\n")
    assert isinstance(events[-1], BuildFinished), events[-1]
    image = store.images.resolve("evil:1")
    top = store.images.chain_of(store.images.get_config(image))[-1]
    layer_dir = store.layers.diff_path(top)
    node = layer_dir / "blk"
    assert stat.S_ISBLK(os.lstat(node).st_mode)
    assert os.lstat(layer_dir / "bin" / "busybox").st_mode & stat.S_ISUID
    for sub in ("", *PRIVATE_DIRS):
        assert stat.S_IMODE(os.stat(store.home / sub).st_mode) == 0o700, sub
    # Another user cannot even see that the node or the setuid binary exist.
    for path in (node, layer_dir / "bin" / "busybox"):
        seen = _as_nobody("stat", str(path))
        assert seen.returncode != 0 and "Permission denied" in seen.stderr


def test_the_node_and_setuid_bit_give_the_next_run_nothing(store: Store, tmp_path: Path) -> None:
    events = _build(
        store,
        tmp_path / "ctx",
        f"FROM busybox\n{REPRODUCER}\nRUN sed -i 's/^root:x:/root::/' /etc/passwd\n"
        "RUN head -c 1 /blk || echo inert\n"
        "USER nobody\nRUN su -c 'id -u' root\n",
    )
    out = [e.line for e in events if isinstance(e, StepOutput)]
    assert "inert" in out
    assert "head: /blk: Permission denied" in out
    end = events[-1]
    assert isinstance(end, BuildFailed)
    assert "su: must be suid to work properly" in end.message


def test_an_older_stores_open_dirs_are_closed(tmp_path: Path) -> None:
    home = tmp_path / "old"
    for sub in ("blobs/sha256", *PRIVATE_DIRS):
        (home / sub).mkdir(parents=True)
        os.chmod(home / sub, 0o755)
    Store(home).close()
    for sub in PRIVATE_DIRS:
        assert stat.S_IMODE(os.stat(home / sub).st_mode) == 0o700, sub
