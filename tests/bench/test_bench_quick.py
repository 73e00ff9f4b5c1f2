"""``python -m bench --quick`` end to end, so the benchmark cannot rot unnoticed.

The numbers at these sizes mean nothing; what is checked is that every part runs on
real stores, real builds and (when marked) a real Docker Engine, that each cache
decision the benchmark relies on was verified, and that the report says what ran.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _bench(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
            *args,
        ],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert (out / "results.json").is_file(), proc.stderr[-2000:]
    return proc.returncode, json.loads((out / "results.json").read_text()), proc.stdout


def _rows(data: dict[str, Any], section: str) -> list[dict[str, Any]]:
    return [row for row in data["rows"] if row["section"] == section]


@pytest.mark.slow
@pytest.mark.root
def test_quick_run_without_docker_measures_every_lamina_part(tmp_path: Path) -> None:
    code, data, stdout = _bench(tmp_path, "--no-docker", "--no-podman", "--profile", "cached-build")
    assert data["failed"] == [], data["failed"]
    assert code == 0
    assert [s["what"] for s in data["skipped"]] == [
        "Docker columns (BuildKit, classic)",
        "podman column",
    ]
    builds = _rows(data, "Builds")
    assert [r["what"].split(" (")[0] for r in builds] == [
        "cold build",
        "fully cached rebuild",
        "rebuild after editing one file",
        "the floor: Python start-up and one stat walk of the context",
        "fully cached rebuild ÷ the floor",
        "store growth per one-file edit",
        "context files a dry run opens after a one-file edit",
        "bytes the dry run reads in all",
    ]
    for row in data["rows"]:
        assert row["lamina"]["values"] and all(v > 0 for v in row["lamina"]["values"]), row
    # Without Docker there is no reference, so no speed-up verdict is claimed.
    assert all(r["reference"] is None and r["met"] is None for r in builds[:3])
    floor, ratio, growth = builds[3], builds[4], builds[5]
    assert floor["lamina"]["median"] < data["rows"][1]["lamina"]["median"]
    assert ratio["target"] == "≤ 2.00×" and ratio["met"] is not None
    assert growth["lamina"]["unit"] == "B" and growth["met"] is not None
    opened, read = builds[6], builds[7]
    assert opened["lamina"]["values"] == [1.0], (
        "a dry run after a one-file edit opens that file only"
    )
    assert opened["met"] is True and read["met"] is True
    # Two independent stages against one, and the same two built one after the other.
    parallel, sequential, machine = _rows(data, "Parallel stages")
    assert machine["reference_name"] == "one process" and machine["reference"]["median"] > 0
    assert parallel["reference_name"] == sequential["reference_name"] == "one stage"
    assert parallel["reference"]["median"] > 0 and parallel["speedup"] is not None
    assert parallel["target"] and sequential["target"] == ""
    assert "two stages over one, repeat by repeat" in parallel["notes"]
    commit = _rows(data, "Layer commit")
    assert commit and all(r["reference"]["median"] > 0 for r in commit)
    inspect = {r["what"].split(",")[0] for r in _rows(data, "Inspect at scale")}
    assert inspect == {
        "`system df -v` CLI",
        "system df",
        "prune plan (system -a)",
        "open the app until the first view shows data",
        "key press round trip (`down`",
    }
    assert data["profiles"] and data["profiles"][0]["top"]
    assert "| cold build (200 files / 2 MB) |" in stdout and "Skipped:" in stdout


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.docker
def test_quick_builds_against_docker_compare_side_by_side(tmp_path: Path) -> None:
    code, data, _ = _bench(tmp_path, "--only", "builds")
    assert data["failed"] == [], data["failed"]
    # podman is a column only where it is installed; Docker's two builders always are.
    assert code == 0 and [s["what"] for s in data["skipped"]] in ([], ["podman column"])
    assert "DOCKER_BUILDKIT=1" in data["builders"]["BuildKit"]
    assert "DOCKER_BUILDKIT=0" in data["builders"]["classic"]
    builds = _rows(data, "Builds")[:3]
    assert len(builds) == 3
    for row in builds:
        assert row["reference"]["values"] and row["reference"]["median"] > 0, row
        assert row["reference_name"] == "BuildKit" and row["speedup"] is not None
        classic = row["others"][0]
        assert classic["name"] == "classic" and classic["median"] > 0
    # `system df -v` timed on both sides over the same images built in both.
    (df,) = [r for r in _rows(data, "Inspect at scale") if r["what"].startswith("`system df -v`")]
    assert df["lamina"]["median"] > 0 and df["reference"]["median"] > 0
    assert "ms per image" in df["notes"] and "Docker" in df["notes"]
