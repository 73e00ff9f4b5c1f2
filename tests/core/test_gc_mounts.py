"""The sweep never follows a mount out of the store (a real bind mount, so root)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lamina.core.embedded.prune import collect
from lamina.core.embedded.store import Store
from lamina.core.embedded.trash import (
    has_mount_below,
    mount_points,
)


@pytest.mark.root
def test_a_leftover_with_a_mount_inside_is_left_alone(tmp_path: Path, store: Store) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data").write_text("not the store's to delete")
    dead = store.home / "tmp" / "build-dead"
    (dead / "rootfs").mkdir(parents=True)
    (dead / "pid").write_text("999999999\n")
    subprocess.run(["mount", "--bind", str(precious), str(dead / "rootfs")], check=True)
    try:
        assert has_mount_below(dead, mount_points())
        result = collect(store, grace=0.0)
        assert "tmp/build-dead" not in result.leftovers
        assert (precious / "data").read_text() == "not the store's to delete"
    finally:
        subprocess.run(["umount", str(dead / "rootfs")], check=True)
    # Once unmounted, the next collection sweeps it.
    assert "tmp/build-dead" in collect(store, grace=0.0).leftovers
    assert not dead.exists() and (precious / "data").exists()
