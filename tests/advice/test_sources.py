"""What a build records of its context for the replay, and how that record stays bounded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from advice_builds import Engines, Project

from lamina.core.embedded.store import Store
from lamina.core.embedded.store.builds import KEEP_SOURCES, MAX_SOURCE_PATHS, fold_paths
from lamina.core.model import BuildRequest


def test_a_build_records_a_hash_per_copied_path_and_each_stage_base(
    tmp_path: Path, engines: Engines
) -> None:
    p = Project(tmp_path / "ctx", engines("a"))
    p.write("app.sh", "echo hi\n")
    p.write("data/a.txt", "a\n")
    p.write("unused.txt", "not copied\n")
    p.dockerfile("FROM busybox\nCOPY app.sh /app/\nCOPY data/ /app/data/\n")
    p.build()
    build = p.engine.builds()[0]
    record = p.engine.build_sources([build.id])[build.id]
    assert set(record.paths) == {"app.sh", "data", "data/a.txt"}
    assert all(re.fullmatch(r"[0-9a-f]{16}", h) for h in record.paths.values())
    assert record.bases == {0: p.engine.image("busybox:latest").id}
    assert record.complete and not record.folded
    # A cached rebuild records the same hashes; an edit changes exactly its path's.
    p.build()
    p.write("data/a.txt", "b\n")
    p.build()
    newest = p.engine.builds(3)
    again, edited = (p.engine.build_sources([b.id])[b.id] for b in (newest[1], newest[0]))
    assert again.paths == record.paths
    assert {k for k in record.paths if record.paths[k] != edited.paths[k]} == {"data/a.txt"}


def test_a_dry_run_records_nothing(tmp_path: Path, engines: Engines) -> None:
    p = Project(tmp_path / "ctx", engines("a"))
    p.write("f", "x\n")
    p.dockerfile("FROM busybox\nCOPY f /f\n")
    p.build(dry_run=True)
    assert p.engine.builds() == []


def test_deep_paths_fold_into_their_directories_past_the_bound() -> None:
    paths = {f"node_modules/pkg{i}/index.js": f"{i:016x}" for i in range(30)}
    paths["app.js"] = "a" * 16
    assert fold_paths(paths, limit=100) == paths
    folded = fold_paths(paths, limit=10)
    assert folded is not None and folded["app.js"] == "a" * 16
    assert set(folded) == {"app.js", "node_modules/"}
    # The folded hash moves when anything below moves.
    moved = dict(paths, **{"node_modules/pkg3/index.js": "f" * 16})
    changed = fold_paths(moved, limit=10)
    assert changed is not None and changed["node_modules/"] != folded["node_modules/"]
    assert fold_paths({f"f{i}": "0" * 16 for i in range(20)}, limit=10) is None


def test_only_the_newest_builds_of_a_dockerfile_keep_their_record(store: Store) -> None:
    ids = []
    for _ in range(KEEP_SOURCES + 2):
        build_id = store.builds.start(BuildRequest(context="/ctx"), Path("/ctx/Dockerfile"))
        store.builds.record_sources(build_id, "/ctx/Dockerfile", {"f": "0" * 16}, {})
        ids.append(build_id)
    other = store.builds.start(BuildRequest(context="/o"), Path("/o/Dockerfile"))
    store.builds.record_sources(other, "/o/Dockerfile", {"g": "1" * 16}, {})
    kept = store.builds.sources([*ids, other])
    assert sorted(kept) == sorted(ids[2:] + [other])


def test_a_context_too_large_to_record_is_marked_incomplete(store: Store) -> None:
    build_id = store.builds.start(BuildRequest(context="/ctx"), Path("/ctx/Dockerfile"))
    flat = {f"f{i}": "0" * 16 for i in range(MAX_SOURCE_PATHS + 1)}
    store.builds.record_sources(build_id, "/ctx/Dockerfile", flat, {})
    record = store.builds.sources([build_id])[build_id]
    assert not record.complete and record.paths == {}


@pytest.mark.parametrize("count", [0, 1])
def test_builds_without_a_record_are_not_replayed_and_the_report_says_so(
    tmp_path: Path, engines: Engines, count: int
) -> None:
    p = Project(tmp_path / "ctx", engines("a"))
    p.write("f", "x\n")
    p.dockerfile("FROM busybox\nCOPY . /app\n")
    p.build()
    p.build()
    if count:
        # As a store written before its builds kept a record.
        p.engine.store.index.connection().execute("DELETE FROM build_sources")
    report = p.advise()
    assert report.builds == 2 and report.replayable == 2 - 2 * count
    if count:
        assert any("2 of the 2 builds have no per-path record" in n for n in report.notes)
    assert any("history too short to replay" in n for n in report.notes)
