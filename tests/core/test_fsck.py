"""fsck on a real store: what it finds, what --repair fixes, what it never touches."""

from __future__ import annotations

import shutil
import time
from typing import Any

import prune_support

from lamina.core.digest import hex_of
from lamina.core.embedded.fsck import fsck
from lamina.core.embedded.store import Store

S = prune_support


def kinds(report: Any) -> set[tuple[str, bool]]:
    return {(p.kind, p.repaired) for p in report.problems}


def test_a_consistent_store_is_clean_even_deep(store: Store) -> None:
    base = S.stack(store, [5_000, 5_000], "b")
    img = S.image(store, base, tag="b:1")
    S.cache_entry(store, S.key(1), base[1], parent=img)
    report = fsck(store, deep=True)
    assert report.ok and report.problems == ()
    assert (report.layers, report.images, report.cache) == (2, 1, 1)


def test_repair_sweeps_leftovers(store: Store) -> None:
    S.image(store, S.stack(store, [5_000], "b"), tag="b:1")
    stray = store.home / "layers" / ("cd" * 32)
    (stray / "diff").mkdir(parents=True)
    (store.home / "tmp" / ".trash-x-1").mkdir()
    report = fsck(store)
    assert kinds(report) == {("leftover", False)} and len(report.problems) == 2
    # Leftovers of interrupted work are information, never damage: fsck stays ok.
    assert report.ok and all(p.note for p in report.problems)
    report = fsck(store, repair=True)
    assert report.ok and kinds(report) == {("leftover", True)}
    assert not stray.exists()
    assert fsck(store).problems == ()


def test_cache_rows_whose_layers_are_gone_are_dropped(store: Store) -> None:
    base = S.stack(store, [5_000], "b")
    img = S.image(store, base, tag="b:1")
    step = S.stack(store, [5_000, 5_000], "step", parent=base[0])
    S.cache_entry(store, S.key("lost"), step[1], parent=img)
    shutil.rmtree(store.home / "layers" / hex_of(step[0]))
    report = fsck(store)
    assert ("cache-missing-layer", False) in kinds(report)
    assert ("missing-layer-dir", False) in kinds(report)
    report = fsck(store, repair=True)
    assert report.ok, report.remaining
    rows = store.index.connection().execute("SELECT chain_id FROM layers").fetchall()
    assert {r[0] for r in rows} == {base[0]}
    assert not (store.home / "layers" / hex_of(step[1])).exists()
    assert store.index.connection().execute("SELECT count(*) FROM cache").fetchone()[0] == 0
    S.assert_tagged_intact(store)
    assert fsck(store, deep=True).ok


def test_an_image_with_missing_data_is_reported_never_deleted(store: Store) -> None:
    base = S.stack(store, [5_000, 5_000], "b")
    img = S.image(store, base, tag="b:1")
    shutil.rmtree(store.home / "layers" / hex_of(base[0]))
    report = fsck(store, repair=True)
    assert not report.ok
    assert ("missing-layer", False) in kinds(report)
    assert any(p.subject == img for p in report.remaining)
    assert store.images.exists(img) and store.layers.exists(base[0])


def test_deep_finds_changed_layer_contents(store: Store) -> None:
    base = S.stack(store, [5_000], "b")
    S.image(store, base, tag="b:1")
    victim = next((store.layers.diff_path(base[0]) / "data").iterdir())
    victim.write_bytes(b"tampered" + victim.read_bytes()[8:])
    assert fsck(store).ok  # a shallow check does not read contents
    report = fsck(store, deep=True)
    assert ("corrupt-layer", False) in kinds(report) and ("missing-layer", False) in kinds(report)


def test_missing_config_and_interrupted_builds(store: Store) -> None:
    img = S.image(store, S.stack(store, [5_000], "b"), tag="b:1")
    store.images.blob_path(img).unlink()
    with store.index.transaction() as conn:
        conn.execute(
            "INSERT INTO builds (started, dockerfile, context, tags, build_args, status, pid)"
            " VALUES (?, 'Dockerfile', '.', '[]', '{}', 'running', 999999999)",
            (time.time(),),
        )
    report = fsck(store, repair=True)
    assert ("missing-config", False) in kinds(report)
    assert ("interrupted-build", True) in kinds(report)
    status = store.index.connection().execute("SELECT status FROM builds").fetchone()[0]
    assert status == "failed"
    assert report.to_json()["ok"] is False  # the missing config, not the build
    assert [p.note for p in report.problems if p.kind == "interrupted-build"] == [True]


def test_buildkit_cache_chained_on_keys_is_consistent(busybox_store: Store, tmp_path: Any) -> None:
    # Under BuildKit's rules an entry's parent is the key of the step before it, not a
    # config: fsck must neither report it nor drop it on repair.
    from lamina.core.embedded.builder.walk import run_build
    from lamina.core.events import BuildFinished
    from lamina.core.model import BuildRequest

    store = busybox_store
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for name in ("a", "b", "c"):
        (ctx / name).write_text(name)
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY a /a\nCOPY b /b\nCOPY c /c\n")
    request = BuildRequest(context=str(ctx), builder="buildkit")
    assert isinstance(list(run_build(store, request))[-1], BuildFinished)
    entries = store.index.rows("SELECT key FROM cache")
    assert len(entries) == 3 and len(store.cache.chained_on_keys()) == 2
    assert fsck(store, deep=True).ok
    assert fsck(store, repair=True).problems == ()
    assert len(store.index.rows("SELECT key FROM cache")) == 3
    # The first step's parent is the base image's config, and is still checked.
    (first,) = store.index.rows("SELECT key, parent FROM cache WHERE instruction = 'COPY a /a'")
    store.images.blob_path(first["parent"]).unlink()
    report = fsck(store)
    assert ("cache-missing-config", first["key"]) in {(p.kind, p.subject) for p in report.problems}
