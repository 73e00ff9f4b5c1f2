"""lamina against Docker on a whole daemon: system df row by row, and every prune.

The state (:mod:`daemon_state`) holds images, stopped containers with data in their
writable layers, named and anonymous volumes, classic and BuildKit build cache. Each
prune runs through lamina on one copy of it and through Debian's ``docker`` on a second
copy made by the same script: lamina's dry run lists exactly what its prune removes,
and that is what Docker's own command removes, with the same bytes.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_state import (
    State,
    clean_slate,
    docker_2010,
    keep_alive,
    make_state,
    release,
    removed,
    snapshot,
)

from lamina.tui.cli import main
from lamina.tui.format import size

pytestmark = pytest.mark.docker


def lamina(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = main(["--engine", "docker", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return code, json.loads(out) if "--format" in args else out


@pytest.fixture
def daemon(docker_engine: Any, docker_base: str) -> Iterator[tuple[Any, str, State]]:
    """An emptied daemon whose base images stay in use; emptied again afterwards."""
    api = docker_engine.api
    prefix = f"lamina-truth-{uuid.uuid4().hex[:6]}"
    bases = [docker_base] + [
        t for i in api.images() for t in i.get("RepoTags") or [] if t == "busybox:latest"
    ]
    state = State(prefix, keep_alive(api, bases, prefix))
    clean_slate(api)
    try:
        yield api, docker_base, state
    finally:
        release(api, state)


def _go_rows() -> dict[str, dict[str, str]]:
    out = docker_2010("system", "df", "--format", "{{json .}}")
    return {r["Type"]: r for r in map(json.loads, out.splitlines())}


def _percent(part: int, whole: int) -> str:
    return f" ({part * 100 // whole}%)" if whole > 0 else ""


def test_system_df_agrees_with_docker_row_by_row(
    capsys: pytest.CaptureFixture[str], daemon: tuple[Any, str, State], tmp_path: Path
) -> None:
    api, base, state = daemon
    make_state(tmp_path, base, state.prefix)
    _, usage = lamina(capsys, "system", "df", "--format", "json")
    rows = {c["name"]: c for c in usage["categories"]}
    df = api.df()
    # Docker's own bytes, computed as docker/cli's formatter computes them.
    images = df["Images"]
    used = sum(i["Size"] - i["SharedSize"] for i in images if i["Containers"] > 0)
    records = df["BuildCache"] or []
    cache_size = sum(r["Size"] for r in records if not r["Shared"])
    theirs = {
        "images": (len(images), sum(1 for i in images if i["Containers"] > 0),
                   df["LayersSize"], df["LayersSize"] - used),
        "containers": (len(df["Containers"]),
                       sum(1 for c in df["Containers"] if c["State"] == "running"),
                       sum(c.get("SizeRw") or 0 for c in df["Containers"]),
                       sum(c.get("SizeRw") or 0 for c in df["Containers"]
                           if c["State"] != "running")),
        "volumes": (len(df["Volumes"]),
                    sum(1 for v in df["Volumes"] if v["UsageData"]["RefCount"] > 0),
                    sum(v["UsageData"]["Size"] for v in df["Volumes"]),
                    sum(v["UsageData"]["Size"] for v in df["Volumes"]
                        if v["UsageData"]["RefCount"] == 0)),
        "build_cache": (len(records), sum(1 for r in records if r["InUse"]), cache_size,
                        cache_size - sum(r["Size"] for r in records
                                         if r["InUse"] and not r["Shared"])),
    }  # fmt: skip
    for name, (count, active, total, reclaimable) in theirs.items():
        ours = rows[name]
        assert (ours["count"], ours["active"], ours["size"], ours["reclaimable"]) == (
            count,
            active,
            total,
            reclaimable,
        ), name
    # The state is what the test says it is.
    assert rows["containers"]["size"] >= 5000 and rows["containers"]["count"] >= 3
    assert rows["volumes"]["count"] >= 4 and records and any(r["Shared"] for r in records)
    # And the formatted strings are the 20.10 CLI's.
    strings = _go_rows()
    for name, go in (("images", "Images"), ("containers", "Containers"),
                     ("volumes", "Local Volumes"), ("build_cache", "Build Cache")):  # fmt: skip
        ours = rows[name]
        percent = "" if name == "build_cache" else _percent(ours["reclaimable"], ours["size"])
        assert strings[go]["TotalCount"] == str(ours["count"]), go
        assert strings[go]["Active"] == str(ours["active"]), go
        assert strings[go]["Size"] == size(ours["size"], docker=True, precision=4), go
        assert strings[go]["Reclaimable"] == (
            size(ours["reclaimable"], docker=True, precision=4) + percent
        ), go
    # The table lamina prints is the same text.
    _, table = lamina(capsys, "system", "df")
    for go in strings.values():
        assert re.search(
            rf"^{go['Type']}\s+{go['TotalCount']}\s+{go['Active']}\s+{re.escape(go['Size'])}\s+"
            rf"{re.escape(go['Reclaimable'])}$",
            table,
            re.M,
        ), go["Type"]
    # BuildKit's SHARED is Docker's, not lamina's guess.
    cache = {c["key"]: c for c in usage["cache"]}
    for r in records:
        assert cache["buildkit:" + r["ID"]]["shared"] == r["Shared"]
    # Containers and volumes are listed with what uses what.
    by_name = {c["name"]: c for c in usage["containers"]}
    assert by_name[f"{state.prefix}-c2"]["volumes"] == [f"{state.prefix}-used"]
    volumes = {v["name"]: v for v in usage["volumes"]}
    assert volumes[f"{state.prefix}-used"]["containers"] == [by_name[f"{state.prefix}-c2"]["id"]]
    assert not volumes[f"{state.prefix}-free"]["anonymous"]
    assert sum(1 for v in usage["volumes"] if v["anonymous"]) == 2


_PRUNES = [
    ("container", "prune"),
    ("volume", "prune"),
    ("image", "prune", "-a"),
    ("builder", "prune", "--all"),
    ("system", "prune"),
    ("system", "prune", "-a", "--volumes"),
]


def _docker_total(out: str) -> str:
    match = re.search(r"^Total reclaimed space: (\S+)$", out, re.M)
    assert match, out
    return match.group(1)


@pytest.mark.parametrize("command", _PRUNES, ids=" ".join)
def test_prune_removes_its_dry_run_and_what_docker_removes(
    capsys: pytest.CaptureFixture[str],
    daemon: tuple[Any, str, State],
    tmp_path: Path,
    command: tuple[str, ...],
) -> None:
    api, base, state = daemon
    # lamina on the first copy: the dry run, then the prune.
    make_state(tmp_path / "a", base, state.prefix)
    before = snapshot(api)
    _, plan = lamina(capsys, *command, "--dry-run", "--format", "json")
    _, result = lamina(capsys, *command, "-f", "--format", "json")
    ours = removed(before, snapshot(api))
    assert result["skipped"] == []
    assert set(result["containers"]) == {c["id"] for c in plan["containers"]}
    assert set(result["volumes"]) == {v["name"] for v in plan["volumes"]}
    assert set(result["images"]) == {i["id"] for i in plan["images"]}
    assert set(result["cache"]) == {c["key"] for c in plan["cache"]}
    assert result["reclaimed_bytes"] == plan["reclaimable_bytes"]
    names = {v: k for k, v in before["containers"].items()}
    assert sorted(names[c["id"]] for c in plan["containers"]) == ours["containers"]
    assert len(plan["images"]) == ours["images"] and len(plan["cache"]) == ours["cache"]
    assert len(plan["volumes"]) == len(ours["named"]) + ours["anonymous"]
    # Docker's own command on a second copy made by the same script.
    clean_slate(api)
    make_state(tmp_path / "b", base, state.prefix)
    before = snapshot(api)
    out = docker_2010(*command, "-f")
    theirs = removed(before, snapshot(api))
    assert theirs == ours
    assert _docker_total(out) == size(plan["reclaimable_bytes"], docker=True, precision=4)
    # The state had something for this prune to do.
    assert plan["reclaimable_bytes"] > 0 or command[0] == "volume"
    assert any(plan[k] for k in ("containers", "volumes", "images", "cache"))
