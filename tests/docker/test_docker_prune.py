"""Disk usage and prune on a real daemon: lamina's plan against what Docker then does."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lamina.core.accounting.plans import PruneRequest
from lamina.core.docker.convert import BUILDKIT_PREFIX
from lamina.core.docker.engine import DockerEngine
from lamina.core.docker.prune import DIFFERENCES
from lamina.core.errors import UsageError
from lamina.core.events import BuildFinished
from lamina.core.model import BuildRequest

pytestmark = pytest.mark.docker


def build(engine: DockerEngine, context: Path, tag: str) -> str:
    # The classic builder: its intermediates are the images these plans are about.
    events = list(engine.build(BuildRequest(context=str(context), tags=(tag,), builder="classic")))
    done = [e for e in events if isinstance(e, BuildFinished)]
    assert done, f"build failed: {events[-1]}"
    assert done[0].image is not None
    return done[0].image


@pytest.fixture
def dangling(
    docker_engine: DockerEngine,
    docker_base: str,
    docker_tag: Callable[[str], str],
    tmp_path: Path,
    tree: Any,
) -> tuple[str, str, str]:
    """A tag rebuilt once: (tag, the old now-dangling image, the new image)."""
    token = os.urandom(8).hex()
    ctx = tree(
        tmp_path / "ctx",
        {
            "Dockerfile": f"FROM {docker_base}\n"
            "COPY f /f\n"
            f"RUN head -c 20000 /dev/zero > /big && echo {token} > /token\n"
            "LABEL stage=old\n",
            "f": "one",
        },
    )
    tag = docker_tag("pruned")
    old = build(docker_engine, ctx, tag)
    (ctx / "f").write_text("two")
    new = build(docker_engine, ctx, tag)
    assert old != new
    return tag, old, new


def test_system_df_matches_docker(
    docker_engine: DockerEngine, dangling: tuple[str, str, str]
) -> None:
    tag, old, new = dangling
    usage = docker_engine.disk_usage()
    df = docker_engine.api.df()
    theirs = {i["Id"]: i for i in df["Images"]}
    ours = {i.id: i for i in usage.images}
    assert set(ours) == set(theirs)  # docker images, without intermediates
    for image_id, row in theirs.items():
        assert ours[image_id].size == row["Size"], image_id
        assert ours[image_id].shared_size == row["SharedSize"], image_id
        assert ours[image_id].unique_size == row["Size"] - row["SharedSize"]
    assert ours[old].dangling and tag in ours[new].tags
    assert usage.layers_size == df["LayersSize"]
    assert not any(u.chain_id.startswith(BUILDKIT_PREFIX) for u in usage.layers)
    # The old build's RUN/COPY intermediates are build cache in lamina's per-entry view,
    # while the Build Cache row counts BuildKit's records, as docker system df does.
    assert sum(1 for c in usage.cache if not c.key.startswith(BUILDKIT_PREFIX)) >= 2
    assert usage.category("build_cache").count == len(df["BuildCache"] or [])
    # The Images row is Docker's: every layer once, less what containers' images need.
    assert usage.category("images").size == df["LayersSize"]
    assert usage.category("images").count == len(df["Images"])
    # What `image prune` frees is exactly what its plan frees.
    plan = docker_engine.plan_prune(PruneRequest("image"))
    prunes = {p.command: p.bytes for p in usage.prunes}
    assert prunes["image prune"] == plan.reclaimable_bytes
    assert DIFFERENCES  # the stated differences exist for the CLI to print


def test_image_prune_plan_is_what_docker_removes(
    docker_engine: DockerEngine, dangling: tuple[str, str, str]
) -> None:
    tag, old, new = dangling
    plan = docker_engine.plan_prune(PruneRequest("image"))
    planned = {p.id for p in plan.images}
    assert old in planned and new not in planned
    # The old image's own layers (the old COPY and the RUN above it) are freed.
    old_layers = docker_engine.image(old).layers
    new_layers = set(docker_engine.image(new).layers)
    assert {p.chain_id for p in plan.layers} >= {c for c in old_layers if c not in new_layers}
    assert plan.reclaimable_bytes >= 20000
    # Intermediates only the old image needed go with it, as Docker's prune removes them.
    assert any("intermediate" in p.reason for p in plan.images)
    result = docker_engine.apply_prune(plan)
    assert set(result.images) == planned
    assert set(result.layers) == {p.chain_id for p in plan.layers}
    assert result.reclaimed_bytes == plan.reclaimable_bytes
    assert not result.skipped
    assert docker_engine.image(tag).id == new
    after = docker_engine.plan_prune(PruneRequest("image"))
    assert old not in {p.id for p in after.images}


def test_system_prune_removes_dangling_images_and_build_cache(
    docker_engine: DockerEngine, dangling: tuple[str, str, str]
) -> None:
    tag, old, new = dangling
    plan = docker_engine.plan_prune(PruneRequest("system"))
    assert old in {p.id for p in plan.images} and new not in {p.id for p in plan.images}
    result = docker_engine.apply_prune(plan)
    assert old in result.images
    image_bytes = sum(p.bytes for p in plan.layers if not p.chain_id.startswith(BUILDKIT_PREFIX))
    # Image layers free exactly what was planned; BuildKit may re-measure by a few bytes.
    assert image_bytes <= result.reclaimed_bytes <= plan.reclaimable_bytes + 4096
    assert docker_engine.image(tag).id == new


def test_image_prune_filters_reach_docker(
    docker_engine: DockerEngine, dangling: tuple[str, str, str]
) -> None:
    _, old, _ = dangling
    # Nothing is older than a week: Docker removes nothing, and lamina planned nothing.
    plan = docker_engine.plan_prune(PruneRequest("image", filters=("until=168h",)))
    assert old not in {p.id for p in plan.images}
    result = docker_engine.apply_prune(plan)
    assert old not in result.images
    plan = docker_engine.plan_prune(PruneRequest("image", filters=("label=stage=new",)))
    assert old not in {p.id for p in plan.images}  # it carries stage=old
    with pytest.raises(UsageError):
        docker_engine.plan_prune(PruneRequest("image", filters=("colour=red",)))


def _buildkit_docker() -> str:
    """A docker CLI that can build with BuildKit without buildx (Debian's 20.10)."""
    for candidate in ("/usr/bin/docker", shutil.which("docker") or ""):
        if candidate and os.path.exists(candidate):
            out = subprocess.run(
                [candidate, "version", "--format", "{{.Client.Version}}"],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode == 0 and out.stdout.startswith("20."):
                return candidate
    pytest.fail("a docker 20.10 CLI (Debian's docker.io) is needed to make BuildKit cache records")


def test_builder_prune_plan_matches_docker(
    docker_engine: DockerEngine, docker_base: str, tmp_path: Path, tree: Any
) -> None:
    exe = _buildkit_docker()
    token = os.urandom(8).hex()
    ctx = tree(
        tmp_path / "bk",
        {
            "Dockerfile": f"FROM {docker_base}\nRUN echo {token} > /t && head -c 30000 /dev/zero > /z\n"
        },
    )
    env = dict(os.environ, DOCKER_BUILDKIT="1")
    env.pop("DOCKER_API_VERSION", None)
    subprocess.run(
        [exe, "build", "--network", "none", "-q", str(ctx)],
        check=True,
        env=env,
        capture_output=True,
    )
    records = docker_engine.api.df()["BuildCache"] or []
    assert records, "BuildKit left no cache records"
    plan = docker_engine.plan_prune(PruneRequest("builder", all=True))
    planned = {p.key for p in plan.cache}
    expected = {BUILDKIT_PREFIX + r["ID"] for r in records if not r.get("InUse")}
    assert planned == expected
    assert plan.reclaimable_bytes == sum(r["Size"] for r in records if not r.get("InUse"))
    result = docker_engine.apply_prune(plan)
    assert set(result.cache) == planned
    # BuildKit's SpaceReclaimed re-measures the snapshots and may differ by a few bytes
    # from the sizes system df reported (a documented difference).
    assert abs(result.reclaimed_bytes - plan.reclaimable_bytes) <= max(
        4096, plan.reclaimable_bytes // 100
    )
    assert not result.skipped
    assert not [r for r in docker_engine.api.df()["BuildCache"] or [] if not r.get("InUse")]
    assert docker_engine.plan_prune(PruneRequest("builder", all=True)).cache == ()
