"""``lamina system df`` says what storing identical files once saves."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lamina.core.embedded.store import Store
from lamina.tui.cli import main


def commit(store: Store, files: dict[str, bytes]) -> str:
    with store.tmpdir("test") as work:
        src = work / "upper"
        for rel, data in files.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
            os.utime(src / rel, (1_600_000_000, 1_600_000_000))
        return store.layers.commit_dir(src, None, "RUN x").chain_id


def test_system_df_shows_the_storage_layers_share_and_what_it_saves(
    lamina_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store(lamina_home)
    try:
        data = {"lib/big.bin": bytes(range(256)) * 1000}
        commit(store, data)
        commit(store, {**data, "other": b"o"})
    finally:
        store.close()
    assert main(["system", "df"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("Identical files"))
    assert "that layers share saves" in line and "on disk" in line
    assert main(["system", "df", "--format", "json"]) == 0
    df = json.loads(capsys.readouterr().out)
    assert df["dedup_saved"] == df["shared_disk"] > 256_000


def test_system_df_says_nothing_of_sharing_when_nothing_is_shared(
    lamina_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store(lamina_home)
    try:
        commit(store, {"a": b"a" * 10_000})
    finally:
        store.close()
    assert main(["system", "df"]) == 0
    assert "Identical files" not in capsys.readouterr().out
