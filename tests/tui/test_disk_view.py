"""The Disk view, ``system df`` and the prune confirmation give one store's numbers alike.

One store with every kind of thing a prune takes (a dangling image with a layer of its
own, one a tagged image was built FROM, build cache, a layer nothing references, dead
work under ``tmp/``) is read three ways: ``lamina system df`` and ``image prune
--dry-run`` on the command line, the Disk view, and the dialog its ``p`` key opens.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import prune_support
import pytest
from textual.widgets import DataTable, Static

from lamina.core.embedded.store import Store
from lamina.tui import format as fmt
from lamina.tui.cli import main
from lamina.tui.screens.confirm import ConfirmPruneScreen
from lamina.tui.widgets.disk import DiskView

from .conftest import open_embedded
from .test_app import SIZE, main_screen, new_app, settle

S = prune_support


@pytest.fixture
def home(lamina_home: Path) -> Path:
    store = Store(lamina_home)
    try:
        base = S.stack(store, [20_000], "base")
        kept = S.image(store, base, tag="app:1")
        S.image(store, base + S.stack(store, [30_000], "old", parent=base[0]), nonce="old")
        # Dangling, but app:2 was built FROM it: image prune keeps it.
        parent = S.image(store, base, nonce="parent")
        child = S.stack(store, [5_000], "child", parent=base[0])
        S.image(store, base + child, tag="app:2", parent=parent)
        step = S.stack(store, [10_000], "step", parent=base[0])
        S.cache_entry(store, S.key("step"), step[0], parent=kept)
        orphan = S.stack(store, [7_000], "orphan")
    finally:
        store.close()
    # Old enough for a prune to take what nothing references (the default grace is 15 min).
    db = sqlite3.connect(lamina_home / "index.db")
    with db:
        db.execute(
            "UPDATE layers SET created = ? WHERE chain_id = ?", (time.time() - 3600, orphan[0])
        )
    db.close()
    dead = lamina_home / "tmp" / "build-dead"
    dead.mkdir()
    (dead / "pid").write_text("999999999\n")
    (dead / "junk").write_bytes(b"x" * 6000)
    return lamina_home


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(list(args)) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def _items(plan: dict[str, Any]) -> dict[str, Any]:
    keys = ("images", "cache", "layers", "blobs", "leftovers", "reclaimable_bytes", "disk_bytes")
    return {k: plan[k] for k in keys}


async def test_the_disk_view_system_df_and_the_dialog_agree(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    df = cli(capsys, "system", "df", "--format", "json")
    dry = cli(capsys, "image", "prune", "--dry-run", "--format", "json")
    categories = {c["name"]: c for c in df["categories"]}
    engine = open_embedded(home)
    try:
        app = new_app(engine)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await pilot.press("4")
            await settle(app, pilot)
            disk = main_screen(app).query_one(DiskView)
            table = disk.query_one("#disk-table", DataTable)
            rows = {
                str(table.get_row_at(i)[0]): [str(c) for c in table.get_row_at(i)]
                for i in range(table.row_count)
            }
            for name in ("images", "build_cache", "orphan_layers", "leftovers"):
                row = rows[name.replace("_", " ")]
                assert row[1] == str(categories[name]["count"]), name
                assert row[2] == fmt.size(categories[name]["size"]), name
                reclaim = categories[name]["reclaimable"]
                assert row[3] == (fmt.size(reclaim) if reclaim else ""), name
            summary = str(disk.query_one("#disk-summary", Static).render())
            assert f"layers {fmt.size(df['layers_size'])}" in summary
            assert f"reclaimable {fmt.size(df['reclaimable_bytes'])}" in summary
            assert f"layers {fmt.size(df['layers_disk'])}, system prune frees" in summary
            prune_text = str(disk.query_one("#disk-prune", Static).render())
            assert disk.dangling_plan is not None
            shown = _items(disk.dangling_plan.to_json())
            assert shown == _items(dry)
            line = f"p prunes {fmt.plan_summary(disk.dangling_plan)}"
            assert line in prune_text
            row_p = next(r for r in prune_text.splitlines() if "image prune (dangling)" in r)
            assert row_p.split("]")[1].strip() == fmt.size(dry["reclaimable_bytes"])
            # The parent of app:2 is dangling and stays: the view says so.
            assert "1 dangling image stays: image prune keeps what a kept image was built FROM" in (
                prune_text
            )

            await pilot.press("p")
            await settle(app, pilot)
            assert isinstance(app.screen, ConfirmPruneScreen)
            assert _items(app.screen.plan.to_json()) == _items(dry)
            body = str(app.screen.query_one("#dialog-text", Static).render())
            assert f"This removes {fmt.plan_summary(app.screen.plan)}:" in body
            # The view shows the very plan the dialog confirms.
            assert disk.dangling_plan is app.screen.plan
            assert body.count("•") == len(app.screen.plan.describe())
    finally:
        engine.close()
    # Every number is Docker's measure and fits the size it belongs to.
    for c in df["categories"]:
        assert c["reclaimable"] <= c["reclaimable_all"] <= c["size"], c
    assert dry["reclaimable_bytes"] == 30_000 + 7_000 + sum(x["bytes"] for x in dry["leftovers"])


def test_cache_mounts_count_in_system_df_as_in_the_dry_runs(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store(home)
    try:
        with store.cache_mounts.use("pip", "shared") as path:
            (path / "wheel.whl").write_bytes(b"w" * 50_000)
    finally:
        store.close()
    df = cli(capsys, "system", "df", "--format", "json")
    mount = store_mount_size(home)
    assert mount >= 50_000
    cache = {c["name"]: c for c in df["categories"]}["build_cache"]
    builder = cli(capsys, "builder", "prune", "--dry-run", "--format", "json")
    system = cli(capsys, "system", "prune", "--dry-run", "--format", "json")
    # The row is the cache part of builder prune's plan: its entries and its mounts.
    assert cache["reclaimable"] == sum(c["bytes"] for c in builder["cache"]) + sum(
        m["bytes"] for m in builder["cache_mounts"]
    )
    assert mount <= cache["reclaimable"] <= cache["size"]
    assert df["reclaimable_bytes"] == system["reclaimable_bytes"]
    estimates = {p["command"]: p["bytes"] for p in df["prunes"]}
    assert estimates["builder prune"] == builder["reclaimable_bytes"]
    assert estimates["system prune"] == system["reclaimable_bytes"]


def store_mount_size(home: Path) -> int:
    store = Store(home)
    try:
        return sum(m.size for m in store.cache_mounts.entries())
    finally:
        store.close()
