"""``lamina system df|prune``, ``image prune``, ``builder prune`` and ``fsck`` end to end."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import prune_support
import pytest

from lamina.core.embedded.store import Store
from lamina.tui.cli import main

S = prune_support


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def world(lamina_home: Path) -> dict[str, Any]:
    store = Store(lamina_home)
    try:
        base = S.stack(store, [20_000], "base")
        kept = S.image(store, base, tag="app:1")
        dangling = S.image(
            store, base + S.stack(store, [30_000], "old", parent=base[0]), nonce="old"
        )
        step = S.stack(store, [10_000], "step", parent=base[0])
        S.cache_entry(store, S.key("step"), step[0], parent=kept)
        return {"kept": kept, "dangling": dangling, "home": lamina_home}
    finally:
        store.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def image_ids(home: Path) -> set[str]:
    store = Store(home)
    try:
        return {i.id for i in store.images.list()}
    finally:
        store.close()


def test_df_table_and_json_agree_with_the_dry_run(
    capsys: pytest.CaptureFixture[str], world: dict[str, Any]
) -> None:
    code, out, _ = run(capsys, "system", "df")
    assert code == 0
    assert out.splitlines()[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert out.splitlines()[1].split()[:3] == ["Images", "2", "1"]
    code, out, _ = run(capsys, "system", "df", "-v")
    assert "<none>:<none>" in out and "app:1" in out and "SHARED SIZE" in out
    # Sizes are Docker's; what the store occupies on disk is its own, labelled figure.
    assert "On disk (blocks, hard links once): layers " in out
    header = next(line for line in out.splitlines() if line.startswith("LAYER"))
    assert header.split()[:3] == ["LAYER", "SIZE", "ON"]
    code, out, _ = run(capsys, "system", "df", "--format", "json")
    df = json.loads(out)
    code, out, _ = run(capsys, "system", "prune", "--dry-run", "--format", "json")
    dry = json.loads(out)
    assert df["reclaimable_bytes"] == dry["reclaimable_bytes"]
    assert {i["id"] for i in dry["images"]} == {world["dangling"]}


def test_image_prune_dry_run_deletes_nothing_then_apply_matches(
    capsys: pytest.CaptureFixture[str], world: dict[str, Any]
) -> None:
    home = world["home"]
    code, out, _ = run(capsys, "image", "prune", "--dry-run")
    assert code == 0 and "Would remove:" in out and world["dangling"] in out
    assert image_ids(home) == {world["kept"], world["dangling"]}
    code, out, _ = run(capsys, "image", "prune", "--dry-run", "--format", "json")
    predicted = json.loads(out)["reclaimable_bytes"]
    code, out, _ = run(capsys, "image", "prune", "-f", "--format", "json")
    result = json.loads(out)
    assert code == 0 and result["images"] == [world["dangling"]]
    assert result["reclaimed_bytes"] == predicted
    assert image_ids(home) == {world["kept"]}


def test_prune_without_a_terminal_or_force_refuses(
    capsys: pytest.CaptureFixture[str], world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    code, _out, err = run(capsys, "system", "prune")
    assert code == 2
    assert err.count("\n") == 1 and "stdin is not a terminal (use -f)" in err
    assert image_ids(world["home"]) == {world["kept"], world["dangling"]}


@pytest.mark.parametrize(("answer", "removed"), [("y\n", True), ("n\n", False), ("", False)])
def test_prune_asks_on_a_terminal(
    capsys: pytest.CaptureFixture[str],
    world: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    removed: bool,
) -> None:
    monkeypatch.setattr(sys, "stdin", _Tty(answer))
    code, out, err = run(capsys, "image", "prune")
    assert "Are you sure you want to continue? [y/N]" in out
    ids = image_ids(world["home"])
    if removed:
        assert code == 0 and "Total reclaimed space:" in out
        assert ids == {world["kept"]}
    else:
        assert code == 2 and "cancelled" in err
        assert ids == {world["kept"], world["dangling"]}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("image", "prune", "--filter", "colour=red", "-f"), "Invalid filter 'colour'"),
        (("image", "prune", "--filter", "until=soon", "-f"), "invalid until filter"),
        (("builder", "prune", "--keep-storage", "lots", "-f"), "invalid size 'lots'"),
        (("builder", "prune", "--filter", "label=a", "-f"), "Invalid filter 'label'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_deleted(
    capsys: pytest.CaptureFixture[str], world: dict[str, Any], argv: tuple[str, ...], message: str
) -> None:
    code, _out, err = run(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1
    assert image_ids(world["home"]) == {world["kept"], world["dangling"]}


def test_builder_prune_all_and_keep_storage(
    capsys: pytest.CaptureFixture[str], world: dict[str, Any]
) -> None:
    code, out, _ = run(
        capsys, "builder", "prune", "--keep-storage", "1GB", "-f", "--format", "json"
    )
    assert json.loads(out)["cache"] == []
    code, out, _ = run(capsys, "builder", "prune", "-f")
    assert code == 0 and "Deleted build cache objects:" in out and S.key("step") in out


def test_fsck_exit_status_and_repair(
    capsys: pytest.CaptureFixture[str], world: dict[str, Any]
) -> None:
    code, out, _ = run(capsys, "fsck")
    assert code == 0 and out.startswith("ok: ")
    (world["home"] / "tmp" / ".trash-abc-1").mkdir()
    code, out, _ = run(capsys, "fsck", "--format", "json")
    report = json.loads(out)
    # A leftover is a note: reported, swept by --repair or the next prune, never a failure.
    assert code == 0 and report["ok"] is True
    assert [(p["kind"], p["note"]) for p in report["problems"]] == [("leftover", True)]
    code, out, _ = run(capsys, "fsck")
    assert code == 0 and "note: leftover:" in out and "1 note(s)" in out
    code, out, _ = run(capsys, "fsck", "--repair")
    assert code == 0 and "[repaired]" in out
    code, out, _ = run(capsys, "fsck", "--deep")
    assert code == 0


def test_df_frees_names_what_removing_a_target_frees(
    capsys: pytest.CaptureFixture[str], world: dict[str, Any]
) -> None:
    code, out, _ = run(
        capsys, "system", "df", "--frees", "app:1", "--frees", world["dangling"], "--format", "json"
    )
    answers = json.loads(out)["frees"]
    assert code == 0 and answers[world["dangling"]] == 30_000
    # app:1's only layer is shared with the dangling image and the cache, and its config
    # is the parent state of the cache entry: removing it frees nothing.
    assert answers["app:1"] == 0
    code, out, err = run(capsys, "system", "df", "--frees", "nosuch:tag")
    assert code == 1 and out == "" and "no such image, tag or cache entry: nosuch:tag" in err


def test_builder_du_lists_the_cache_as_buildx_du_does(
    capsys: pytest.CaptureFixture[str], world: dict[str, Any]
) -> None:
    code, out, _ = run(capsys, "system", "df", "--format", "json")
    entries = {c["key"]: c for c in json.loads(out)["cache"]}
    assert entries
    code, out, _ = run(capsys, "builder", "du", "--format", "json")
    assert code == 0
    records = {r["id"]: r for r in json.loads(out)["records"]}
    assert set(records) == set(entries)
    for key, record in records.items():
        # lamina's own entries: their step is their description, and they have no type.
        assert record["description"] == entries[key]["instruction"] and record["type"] == ""
        assert record["size"] == entries[key]["size"]
    total = sum(e["size"] for e in entries.values())
    code, out, _ = run(capsys, "builder", "du")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "RECLAIMABLE", "SIZE", "LAST", "ACCESSED"]
    assert {line.split()[0] for line in lines[1 : 1 + len(entries)]} == set(entries)
    assert lines[-1].split() == ["Total:", f"{total / 1000:.4g}kB"]
    code, out, _ = run(capsys, "builder", "du", "--verbose")
    blocks = out.split("\n\n")
    assert [b.splitlines()[0].split()[-1] for b in blocks[: len(entries)]] == list(records)
    assert all("Reclaimable:    true" in b for b in blocks[: len(entries)])
