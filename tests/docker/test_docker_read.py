"""The Docker backend's read side against a real daemon, checked against the docker CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lamina.core.digest import chain_ids
from lamina.core.docker.engine import DockerEngine
from lamina.core.errors import NotFound
from lamina.core.events import BuildFinished, StepFinished
from lamina.core.model import BuildRequest

pytestmark = pytest.mark.docker


def build(engine: DockerEngine, context: Path, tag: str, **kw: Any) -> tuple[str, list[Any]]:
    events = list(engine.build(BuildRequest(context=str(context), tags=(tag,), **kw)))
    done = [e for e in events if isinstance(e, BuildFinished)]
    assert done, f"build failed: {events[-1]}"
    image = done[0].image
    assert image is not None
    return image, [e.step for e in events if isinstance(e, StepFinished)]


def docker_cli(*args: str) -> str:
    exe = shutil.which("docker")
    if exe is None:
        pytest.fail("the docker CLI is needed to compare lamina with Docker's own output")
    return subprocess.run(
        [exe, *args], check=True, capture_output=True, text=True, env=dict(os.environ)
    ).stdout


@pytest.fixture
def two_images(
    docker_engine: DockerEngine,
    docker_base: str,
    docker_tag: Callable[[str], str],
    tmp_path: Path,
    tree: Any,
) -> tuple[str, str, str, str]:
    """Two images on one base sharing their first two layers."""
    shared = (
        f"FROM {docker_base}\nRUN mkdir -p /app && echo shared > /app/shared.txt\nENV MODE=prod\n"
    )
    a = tree(
        tmp_path / "a",
        {
            "Dockerfile": shared
            + "RUN echo a > /app/a.txt && rm /etc/group && ln -s /app/a.txt /app/link\n"
            + "LABEL which=a\n",
        },
    )
    b = tree(
        tmp_path / "b", {"Dockerfile": shared + "COPY data /data\n", "data/x.bin": b"x" * 5000}
    )
    tag_a, tag_b = docker_tag("a"), docker_tag("b")
    id_a, _ = build(docker_engine, a, tag_a)
    id_b, _ = build(docker_engine, b, tag_b)
    return tag_a, id_a, tag_b, id_b


def test_images_lists_tags_sizes_and_chain_ids(
    docker_engine: DockerEngine, two_images: tuple[str, str, str, str]
) -> None:
    tag_a, id_a, tag_b, id_b = two_images
    images = {i.id: i for i in docker_engine.images()}
    a, b = images[id_a], images[id_b]
    # Builds are reproducible, so earlier tests' tags may point at the same images.
    assert tag_a in a.tags and tag_b in b.tags
    assert a.labels == {"which": "a"}
    # Both share the base and the RUN layer above it: the same chainIDs.
    assert a.layers[:2] == b.layers[:2] and a.layers[2] != b.layers[2]
    raw = docker_engine.api.inspect_image(id_a)
    assert list(a.layers) == chain_ids(raw["RootFS"]["Layers"])
    assert a.size == raw["Size"]
    # docker images agrees on the ID and tag.
    out = docker_cli("images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    assert f"{tag_a} {id_a}" in out.splitlines()


def test_layer_graph_shares_base_layers(
    docker_engine: DockerEngine, two_images: tuple[str, str, str, str]
) -> None:
    _, id_a, _, id_b = two_images
    layers = {layer.chain_id: layer for layer in docker_engine.layers()}
    a, b = docker_engine.image(id_a), docker_engine.image(id_b)
    for chain in set(a.layers) | set(b.layers):
        assert chain in layers
    # Each layer's parent is the chainID below it in every image that holds it.
    for image in (a, b):
        for below, above in zip(image.layers, image.layers[1:], strict=False):
            assert layers[above].parent == below
    assert layers[a.layers[0]].parent is None
    assert layers[b.layers[-1]].size >= 5000  # the COPY of a 5000-byte file


def test_history_matches_docker_history(
    docker_engine: DockerEngine, two_images: tuple[str, str, str, str]
) -> None:
    tag_a, id_a, _, _ = two_images
    ours = docker_engine.history(tag_a)
    out = docker_cli("history", "--no-trunc", "--human=false", "--format", "{{json .}}", tag_a)
    theirs = [json.loads(line) for line in out.splitlines()]
    assert len(ours) == len(theirs)
    for entry, row in zip(ours, theirs, strict=False):
        assert entry.created_by == row["CreatedBy"]
        assert entry.size == int(row["Size"])
    # Newest first: LABEL, RUN, ENV, RUN, then the imported base.
    assert [e.empty_layer for e in ours] == [True, False, True, False, False]
    chains = docker_engine.image(id_a).layers
    assert [e.chain_id for e in ours if not e.empty_layer] == list(reversed(chains))


def test_inspect_adds_diff_ids_chain_ids_and_oci_history(
    docker_engine: DockerEngine, two_images: tuple[str, str, str, str]
) -> None:
    tag_a, id_a, _, _ = two_images
    data = docker_engine.inspect(tag_a)
    assert data["Id"] == id_a and tag_a in data["RepoTags"]
    assert data["ChainIDs"] == chain_ids(data["DiffIDs"])
    assert data["rootfs"]["diff_ids"] == data["DiffIDs"]
    assert sum(1 for h in data["history"] if not h.get("empty_layer")) == len(data["DiffIDs"])
    assert data["config"]["Labels"] == {"which": "a"}


def test_layer_changes_read_lazily_from_saved_stream(
    docker_engine: DockerEngine, two_images: tuple[str, str, str, str]
) -> None:
    _, id_a, _, id_b = two_images
    top = docker_engine.image(id_a).layers[-1]
    changes = {c.path: c for c in docker_engine.layer_changes(top)}
    assert changes["/app/a.txt"].change == "added" and changes["/app/a.txt"].size == 2
    assert changes["/etc/group"].change == "deleted" and changes["/etc/group"].kind == "file"
    assert changes["/app/link"].kind == "symlink"
    assert changes["/app/link"].link_target == "/app/a.txt"
    # /app existed below (the shared RUN made it): the directory is modified, not added.
    assert changes["/app"].change == "modified"
    copied = {c.path: c for c in docker_engine.layer_changes(docker_engine.image(id_b).layers[-1])}
    assert copied["/data/x.bin"].size == 5000 and copied["/data/x.bin"].mode == 0o644
    with pytest.raises(NotFound):
        docker_engine.layer_changes("sha256:" + "0" * 64)


def test_rebuilt_tag_leaves_a_dangling_image(
    docker_engine: DockerEngine,
    docker_base: str,
    docker_tag: Callable[[str], str],
    tmp_path: Path,
    tree: Any,
) -> None:
    ctx = tree(tmp_path / "c", {"Dockerfile": f"FROM {docker_base}\nRUN echo 1 > /v\n"})
    tag = docker_tag("moved")
    first, _ = build(docker_engine, ctx, tag)
    (ctx / "Dockerfile").write_text(f"FROM {docker_base}\nRUN echo 2 > /v\n")
    second, _ = build(docker_engine, ctx, tag)
    images = {i.id: i for i in docker_engine.images()}
    assert images[second].tags == (tag,)
    assert images[first].dangling
    dangling = docker_cli(
        "images", "--no-trunc", "--filter", "dangling=true", "--format", "{{.ID}}"
    )
    assert first in dangling.splitlines()


def test_tag_and_rmi(
    docker_engine: DockerEngine,
    two_images: tuple[str, str, str, str],
    docker_tag: Callable[[str], str],
) -> None:
    _, id_a, _, _ = two_images
    extra = docker_tag("extra")
    docker_engine.tag(id_a, extra)
    assert extra in docker_engine.image(extra).tags
    lines = docker_engine.rmi([extra])
    assert lines == [f"Untagged: {extra}"]
    with pytest.raises(NotFound, match="no such image"):
        docker_engine.image(extra)
    with pytest.raises(NotFound):
        docker_engine.rmi([extra])


def _saved_config(engine: DockerEngine, ref: str) -> dict[str, Any]:
    """The image config exactly as Docker stores it, from ``docker save``."""
    import io
    import tarfile

    data = b"".join(engine.api.get_image(ref))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        return json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]


def test_empty_layers_match_the_stored_config_for_buildkit_images(
    docker_engine: DockerEngine,
    docker_base: str,
    docker_tag: Callable[[str], str],
    tmp_path: Path,
    tree: Any,
) -> None:
    """BuildKit images have no local intermediates: empty layers come from the history text."""
    exe = "/usr/bin/docker"
    if not os.path.exists(exe):
        pytest.fail("Debian's docker.io CLI (/usr/bin/docker) is needed to build with BuildKit")
    ctx = tree(
        tmp_path / "bk",
        {
            "Dockerfile": f"FROM {docker_base}\nENV A=1\nWORKDIR /work\nCOPY f /work/f\n"
            f'RUN echo {os.urandom(4).hex()} > /r\nLABEL l=1\nRUN true\nCMD ["sh"]\n',
            "f": "x",
        },
    )
    tag = docker_tag("buildkit")
    env = dict(os.environ, DOCKER_BUILDKIT="1")
    env.pop("DOCKER_API_VERSION", None)
    subprocess.run(
        [exe, "build", "--network", "none", "-q", "-t", tag, str(ctx)],
        check=True,
        env=env,
        capture_output=True,
    )
    config = _saved_config(docker_engine, tag)
    truth = [bool(h.get("empty_layer")) for h in config["history"]]
    ours = [e.empty_layer for e in reversed(docker_engine.history(tag))]
    assert ours == truth
    chains = chain_ids(config["rootfs"]["diff_ids"])
    assert [e.chain_id for e in reversed(docker_engine.history(tag)) if not e.empty_layer] == chains
