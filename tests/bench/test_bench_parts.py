"""The benchmark's own parts: generated data, statistics, verdicts, the report."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.context import ContextSpec, edit_one_file, generate, revert_edit, tree_bytes
from bench.measure import Samples, Skipped, run_child
from bench.report import Results, Row, markdown
from bench.synthetic_store import StoreSpec
from bench.synthetic_store import generate as generate_store


def test_context_has_exactly_the_files_and_bytes_asked_for(tmp_path: Path) -> None:
    spec = ContextSpec(files=250, total_bytes=1_234_567)
    root = generate(tmp_path / "ctx", spec, base="busybox:latest")
    assert tree_bytes(root) == (250, 1_234_567)
    assert (root / "Dockerfile").read_text().startswith("FROM busybox:latest\n")
    assert "Dockerfile" in (root / ".dockerignore").read_text().split()


def test_context_is_the_same_on_every_generation(tmp_path: Path) -> None:
    spec = ContextSpec(files=120, total_bytes=300_000)
    a = generate(tmp_path / "a", spec, base="x")
    b = generate(tmp_path / "b", spec, base="x")
    for dirpath, _dirs, names in os.walk(a):
        for name in names:
            path = Path(dirpath) / name
            assert path.read_bytes() == (b / path.relative_to(a)).read_bytes(), path


def test_edit_changes_content_not_size_and_revert_restores_it(tmp_path: Path) -> None:
    spec = ContextSpec(files=100, total_bytes=200_000)
    root = generate(tmp_path / "ctx", spec, base="x")
    before = {p: p.read_bytes() for p in root.rglob("*.bin")}
    rel = edit_one_file(root, spec, 1)
    first = (root / rel).read_bytes()
    assert first != before[root / rel] and len(first) == len(before[root / rel])
    edit_one_file(root, spec, 2)
    assert (root / rel).read_bytes() != first, "each generation must write different bytes"
    changed = [p for p, data in before.items() if p.read_bytes() != data]
    assert changed == [root / rel]
    revert_edit(root, spec)
    assert all(p.read_bytes() == data for p, data in before.items())
    # Reuse reverts a leftover edit too.
    edit_one_file(root, spec, 3)
    generate(root, spec, base="x")
    assert (root / rel).read_bytes() == before[root / rel]


def test_samples_report_median_and_spread() -> None:
    s = Samples("s", [3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.low, s.high) == (2.5, 1.0, 10.0)
    assert s.to_json()["values"] == [3.0, 1.0, 2.0, 10.0]


@pytest.mark.parametrize(
    ("own", "ref", "higher", "target", "speedup", "met"),
    [
        ([1.0], [20.0], False, 20.0, 20.0, True),  # exactly 20x faster meets ">= 20x"
        ([1.0], [19.0], False, 20.0, 19.0, False),
        ([2.0], [1.0], False, 1.0, 0.5, False),  # twice as slow as Docker
        ([300.0], [200.0], True, 1.0, 1.5, True),  # MB/s: more is better
        ([1.0], None, False, 1.0, None, None),  # no reference: no verdict
    ],
)
def test_row_speedup_and_verdict(
    own: list[float],
    ref: list[float] | None,
    higher: bool,
    target: float,
    speedup: float | None,
    met: bool | None,
) -> None:
    row = Row(
        "Builds",
        "x",
        Samples("s", own),
        Samples("s", ref) if ref else None,
        "Docker",
        higher_is_better=higher,
        target_speedup=target,
    )
    assert row.speedup == speedup
    assert row.met is met


def test_row_absolute_ceiling() -> None:
    assert Row("I", "df", Samples("s", [0.4, 0.9, 1.5]), target_max=1.0).met is True
    assert Row("I", "df", Samples("s", [1.2, 0.9, 1.5]), target_max=1.0).met is False


def test_markdown_escapes_pipes_and_lists_skips(tmp_path: Path) -> None:
    results = Results(command="python -m bench --quick", config={})
    results.rows.append(
        Row(
            "Layer commit",
            "commit vs `tar | sha256sum`",
            Samples("MB/s", [500.0]),
            Samples("MB/s", [250.0]),
            "tar | sha256sum",
            higher_is_better=True,
        )
    )
    results.skip("Docker columns", "dockerd is not installed")
    json_path, md_path = results.write(tmp_path)
    text = md_path.read_text()
    table = [line for line in text.splitlines() if line.startswith("| Layer commit")]
    assert len(table) == 1
    # 8 unescaped separators: 7 cells.
    assert table[0].replace("\\|", "").count("|") == 8
    assert "2.00×" in table[0]
    assert "- Docker columns: dockerd is not installed" in text
    assert json_path.is_file() and markdown(results.to_json()) == text


def test_run_child_reports_status_output_and_peak_memory() -> None:
    ok = run_child(["/bin/sh", "-c", "echo hello; echo oops >&2"])
    assert ok.returncode == 0 and "hello" in ok.output and "oops" in ok.output
    assert ok.max_rss > 0 and ok.seconds > 0
    bad = run_child(["/bin/sh", "-c", "echo last words; exit 3"])
    with pytest.raises(Exception, match="exited 3: last words"):
        bad.check("failing step")


def test_docker_side_skips_with_a_reason_without_docker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bench import dockerd
    from bench.dockerd import docker_daemon

    monkeypatch.setenv("PATH", str(tmp_path))  # neither docker nor dockerd on it
    monkeypatch.setattr(dockerd, "DEBIAN_DOCKER", str(tmp_path / "docker"))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    with pytest.raises(Skipped, match="docker CLI is not installed"), docker_daemon():
        pass


def test_synthetic_store_is_exactly_the_size_asked_for(tmp_path: Path) -> None:
    from bench.synthetic_store import fsck
    from lamina.core.embedded.store import Store

    spec = StoreSpec(images=12, layers=60, images_per_family=4)
    made = generate_store(tmp_path / "store", spec)
    assert (made.images, made.layers) == (12, 60)
    assert fsck(tmp_path / "store") == []
    store = Store(tmp_path / "store")
    try:
        conn = store.index.connection()
        assert conn.execute("SELECT count(*) FROM layers").fetchone()[0] == 60
        assert conn.execute("SELECT count(*) FROM cache").fetchone()[0] == 12
        dangling = conn.execute(
            "SELECT count(*) FROM images WHERE id NOT IN (SELECT image_id FROM tags)"
        ).fetchone()[0]
        assert dangling == 12 - made.tagged > 0
        # Families share their base chain: fewer distinct bottom layers than images.
        images = store.images.list()
        bases = {img.layers[0] for img in images}
        assert len(bases) == 3
        families, base, own = spec.shape()
        assert (families, base, own) == (3, 4, 4)
        for img in images:
            assert len(img.layers) == base + own
            assert store.layers.diff_path(img.layers[-1]).is_dir()
    finally:
        store.close()
    again = generate_store(tmp_path / "store", spec)
    assert again.seconds == 0.0, "a second run with the same spec reuses the store"
    # The consistency check is real: a layer directory gone is reported.
    import shutil

    shutil.rmtree(store.layers.diff_path(images[0].layers[-1]))
    assert fsck(tmp_path / "store") != []
    assert generate_store(tmp_path / "store", spec).seconds > 0.0, "a damaged one is redone"
    assert fsck(tmp_path / "store") == []
    # So is one whose index this lamina cannot open (another version's schema).
    import sqlite3

    db = sqlite3.connect(tmp_path / "store" / "index.db")
    db.execute("PRAGMA user_version = 99")
    db.close()
    assert fsck(tmp_path / "store") != []
    assert generate_store(tmp_path / "store", spec).seconds > 0.0
    assert fsck(tmp_path / "store") == []


@pytest.mark.parametrize(
    ("cached", "kind", "ok"),
    [
        ((None, False, False, False), "cold", True),
        ((None, True, False, False), "cold", False),
        ((None, True, True, True), "cached", True),
        ((None, True, False, True), "cached", False),
        ((None, True, False, False), "edit", True),
        ((None, True, True, True), "edit", False),  # the edit went unnoticed
        ((None, False, False, False), "edit", False),
        ((None,), "cached", False),  # no decisions at all proves nothing
    ],
)
def test_build_decisions_are_checked(cached: tuple[bool | None, ...], kind: str, ok: bool) -> None:
    from bench.builds import check_decisions
    from bench.measure import BenchError

    if ok:
        check_decisions(cached, kind)
    else:
        with pytest.raises(BenchError):
            check_decisions(cached, kind)


def test_generated_files_are_old_and_an_edit_is_new(tmp_path: Path) -> None:
    import time

    from bench.context import OLD_MTIME, file_path

    spec = ContextSpec(files=30, total_bytes=30_000)
    root = generate(tmp_path / "ctx", spec, base="x")
    assert {int(p.stat().st_mtime) for p in root.rglob("*.bin")} == {OLD_MTIME}
    rel = edit_one_file(root, spec, 1)
    assert (root / rel).stat().st_mtime > time.time() - 60
    revert_edit(root, spec)
    assert int((root / file_path(spec.files // 2)).stat().st_mtime) == OLD_MTIME


def test_stage_dockerfiles_are_independent_stages_of_equal_cost() -> None:
    from bench.stages import BASE_TAG, dockerfile
    from lamina.core.dockerfile.instructions import load_dockerfile
    from lamina.core.dockerfile.reachable import dependencies, needed_stages

    text = dockerfile(2, 64)
    df = load_dockerfile(text, "Dockerfile")
    assert [s.base for s in df.stages] == [BASE_TAG] * 3
    # The final stage needs both, and neither needs the other: they can run at once.
    assert needed_stages(df, None, {}) == [0, 1, 2]
    assert dependencies(df, 1, {}) == set() and dependencies(df, 2, {}) == {0, 1}
    runs = [i.original for s in df.stages for i in s.instructions if i.keyword == "RUN"]
    assert len(runs) == 2 and runs[0] != runs[1], "identical steps would be merged into one"
    assert runs[0].replace("/out/a", "/out/b") == runs[1] and "count=64" in runs[0]
    one = load_dockerfile(dockerfile(1, 64), "Dockerfile")
    assert len(one.stages) == 2 and needed_stages(one, None, {}) == [0, 1]


BUILDKIT_OUTPUT = """\
#1 [internal] load build definition from Dockerfile
#1 DONE 0.0s
#4 [1/4] FROM docker.io/lamina-bench/busybox:latest
#4 CACHED
#6 [internal] load build context
#6 transferring context: 5.83MB 0.3s done
#5 [2/4] RUN echo "lamina bench" > /etc/bench-stamp
#5 CACHED
#7 [3/4] COPY . /src
#7 DONE 2.1s
#8 [4/4] RUN find /src -type f | wc -l > /src-count
#8 DONE 0.4s
"""

PODMAN_OUTPUT = """\
STEP 1/4: FROM lamina-bench/busybox:latest
STEP 2/4: RUN echo hi > /x
--> Using cache 91ab1397a5c0
--> 91ab1397a5c
STEP 3/4: COPY . /src
--> 41c8e01f488
STEP 4/4: RUN ls /src | wc -l > /c
COMMIT lamina-bench/app:latest
"""

CLASSIC_OUTPUT = """\
Step 1/4 : FROM lamina-bench/busybox:latest
 ---> 2059ddcadf4c
Step 2/4 : RUN echo hi
 ---> Using cache
 ---> 1b2c3d4e5f60
Step 3/4 : COPY . /src
 ---> 3c4d5e6f7a8b
Step 4/4 : RUN ls
Successfully built 9f8e7d6c5b4a
"""


@pytest.mark.parametrize(
    ("parse", "output"),
    [
        ("bench.docker_side:parse_buildkit", BUILDKIT_OUTPUT),
        ("bench.podman_side:parse_podman", PODMAN_OUTPUT),
        ("bench.docker_side:parse_classic", CLASSIC_OUTPUT),
    ],
)
def test_each_builders_output_gives_its_steps_and_hits(parse: str, output: str) -> None:
    import importlib

    module, _, name = parse.partition(":")
    steps, cached = getattr(importlib.import_module(module), name)(output)
    # FROM is never counted: BuildKit says CACHED for a local base, a decision it never made.
    assert (steps, cached) == (4, 1)


def test_reference_decisions_are_checked() -> None:
    from bench.builds import check_reference
    from bench.docker_side import RefBuild
    from bench.measure import BenchError, ChildResult

    result = ChildResult(("docker",), 1.0, 0, "", 0)
    check_reference("BuildKit", RefBuild(result, 4, 1), "edit")
    check_reference("BuildKit", RefBuild(result, 4, 3), "cached")
    for steps, cached, kind in ((4, 1, "cold"), (4, 2, "edit"), (0, 0, "cold")):
        with pytest.raises(BenchError, match="BuildKit"):
            check_reference("BuildKit", RefBuild(result, steps, cached), kind)


def test_scale_multiplies_every_size_and_a_knob_still_wins() -> None:
    from bench.__main__ import FULL, make_parser, sizes_from

    sizes = sizes_from(make_parser().parse_args(["--scale", "0.1", "--files", "300"]))
    assert sizes.files == 300
    assert sizes.context_mb == round(FULL.context_mb * 0.1)
    assert sizes.layers == round(FULL.layers * 0.1) and sizes.repeat == FULL.repeat


def test_floor_walks_every_entry_and_disk_bytes_counts_links_once(tmp_path: Path) -> None:
    from bench.floor import disk_bytes, measure_floor

    spec = ContextSpec(files=40, total_bytes=400_000)
    root = generate(tmp_path / "ctx", spec, base="x")
    result = measure_floor(root)
    entries = sum(len(d) + len(f) for _, d, f in os.walk(root))
    assert int(result.output.strip()) == entries and result.seconds > 0
    before = disk_bytes(root)
    big = next(root.rglob("*.bin"))
    os.link(big, root / "second-name")
    assert disk_bytes(root) - before < big.stat().st_blocks * 512, "a hard link is not a copy"
    (root / "copy").write_bytes(big.read_bytes())
    assert disk_bytes(root) - before >= big.stat().st_blocks * 512


def build_results() -> dict[str, object]:
    results = Results(command="python -m bench", config={})
    results.builders = {"BuildKit": "Docker 20.10's", "classic": "the same daemon's"}
    results.rows.append(
        Row(
            "Builds",
            "rebuild after editing one file",
            Samples("s", [1.0, 2.0]),
            Samples("s", [9.0, 8.0]),
            "BuildKit",
            target_speedup=3.0,
            others=[("classic", Samples("s", [30.0]))],
        )
    )
    results.rows.append(
        Row("Builds", "store growth per one-file edit", Samples("B", [2e6]), target_max=5e6)
    )
    results.skip("podman column", "podman is not installed")
    return results.to_json()


def test_build_table_has_a_column_per_builder() -> None:
    from bench.report import builds_table

    head, _rule, edit, growth = builds_table(build_results())
    assert (
        head == "| measurement | lamina | BuildKit | classic | lamina vs BuildKit | target | met |"
    )
    assert "| 1.50 s (1.00 s–2.00 s) | 8.50 s (8.00 s–9.00 s) | 30.00 s | 5.67× |" in edit
    assert edit.endswith("| ≥ 3× BuildKit | yes |")
    assert growth.endswith("| – | – | – | ≤ 5.0 MB | yes |")


def test_readme_block_is_replaced_by_the_run(tmp_path: Path) -> None:
    from bench.readme import BEGIN, END, main

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{BEGIN}\nold table\n{END}\n\nafter\n")
    results = tmp_path / "results.json"
    import json

    results.write_text(json.dumps(build_results()))
    assert main([str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old table" not in text and text.endswith(f"{END}\n\nafter\n")
    assert "| rebuild after editing one file |" in text
    assert "Command: `python -m bench`" in text
    assert "podman column (podman is not installed)" in text
