"""Push and pull against a real registry: identity, only-what-is-missing, and the plan.

Blob transfers are counted from the registry's own request log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from lamina.core import PullFinished, TransferFinished
from lamina.core.embedded.engine import EmbeddedEngine
from lamina.core.embedded.pull import push as push_image
from lamina.core.registry.client import RegistryClient
from lamina.core.registry.manifests import MT_OCI_INDEX
from lamina.tui.cli import main

pytestmark = pytest.mark.slow

Engines = Callable[[str], EmbeddedEngine]
Base = Callable[[EmbeddedEngine, str], str]
AddLayer = Callable[[EmbeddedEngine, str, str, dict[str, bytes]], str]


def pulled(engine: EmbeddedEngine, ref: str) -> list[object]:
    return list(engine.pull(engine.plan_pull(ref)))


def test_push_then_pull_into_an_empty_store_gives_the_same_image(
    registry, make_engine: Engines, base_image: Base, repo: Callable[[str], str]
) -> None:
    ref = f"{registry.address}/{repo('bb')}:1"
    a = make_engine("a")
    image_id = base_image(a, ref)
    finished = list(a.push(ref))[-1]
    b = make_engine("b")
    events = pulled(b, ref)
    assert isinstance(events[-1], PullFinished) and events[-1].image_id == image_id
    assert b.image(ref).id == image_id
    assert b.inspect(ref)["ChainIDs"] == a.inspect(ref)["ChainIDs"]
    assert [layer.diff_id for layer in b.layers()] == [layer.diff_id for layer in a.layers()]
    assert finished.digest.startswith("sha256:")  # type: ignore[attr-defined]


def test_only_what_is_missing_moves(
    registry,
    make_engine: Engines,
    base_image: Base,
    add_layer: AddLayer,
    repo: Callable[[str], str],
) -> None:
    name = repo("share")
    base, child = f"{registry.address}/{name}:base", f"{registry.address}/{name}:child"
    a = make_engine("a")
    base_image(a, base)
    child_id = add_layer(a, base, child, {"hello.txt": b"hello\n"})
    list(a.push(base))
    list(a.push(child))

    b = make_engine("b")
    mark = registry.mark()
    pulled(b, base)
    first = registry.blob_fetches(mark, name)
    assert len(first) == 2  # the config and the one layer

    mark = registry.mark()
    events = pulled(b, base)
    assert registry.blob_fetches(mark, name) == []
    assert {e.outcome for e in events if isinstance(e, TransferFinished)} == {"present"}

    # Planning fetches the child's config (the store lacks it); pulling, its own layer.
    mark = registry.mark()
    plan = b.plan_pull(child)
    assert [layer.present for layer in plan.layers] == [True, False]
    assert plan.layers[0].shared_with == (base,)
    list(b.pull(plan))
    fetched = registry.blob_fetches(mark, name)
    assert sorted(fetched) == sorted([child_id, plan.layers[1].digest])
    assert b.image(child).id == child_id


def test_dry_run_lists_exactly_the_blobs_the_pull_then_fetches(
    registry,
    make_engine: Engines,
    base_image: Base,
    add_layer: AddLayer,
    repo: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = repo("dry")
    base, child = f"{registry.address}/{name}:base", f"{registry.address}/{name}:child"
    a = make_engine("a")
    base_image(a, base)
    add_layer(a, base, child, {"a.txt": b"a" * 5000, "b.txt": b"b"})
    list(a.push(base))
    list(a.push(child))
    a.close()

    monkeypatch.setenv("LAMINA_HOME", str(tmp_path / "cli-store"))
    assert main(["pull", "-q", base]) == 0
    capsys.readouterr()
    assert main(["pull", "--dry-run", "--format", "json", child]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["Layers"][0]["Present"] and not plan["Layers"][1]["Present"]
    assert plan["DownloadBytes"] == plan["Config"]["Size"] + plan["Layers"][1]["Size"]
    assert main(["pull", "--dry-run", child]) == 0
    text = capsys.readouterr().out
    assert "download" in text and "in store" in text

    mark = registry.mark()
    assert main(["pull", child]) == 0
    fetched = registry.blob_fetches(mark, name)
    assert sorted(fetched) == sorted(plan["Fetches"]) and len(fetched) == len(plan["Fetches"])


def test_push_uploads_only_what_the_registry_lacks_and_mounts_across_repositories(
    registry,
    make_engine: Engines,
    base_image: Base,
    add_layer: AddLayer,
    repo: Callable[[str], str],
) -> None:
    first, second = repo("src"), repo("dst")
    ref = f"{registry.address}/{first}:1"
    a = make_engine("a")
    base_image(a, ref)
    list(a.push(ref))

    mark = registry.mark()
    events = list(a.push(ref))
    assert registry.uploads(mark, first) == []
    assert [e.outcome for e in events if isinstance(e, TransferFinished)] == ["exists"]

    other = f"{registry.address}/{second}:1"
    a.tag(ref, other)
    mark = registry.mark()
    events = list(a.push(other))
    uploads = registry.uploads(mark, second)
    mounts = [u for u in uploads if "mount=" in u["uri"]]
    assert len(mounts) == 1 and mounts[0]["status"] == 201
    assert not [u for u in uploads if u["method"] in ("PATCH",)]
    # Only the config (POST + PUT) went up besides the mount.
    assert [u["method"] for u in uploads if "mount=" not in u["uri"]] == ["POST", "PUT"]
    assert [e.outcome for e in events if isinstance(e, TransferFinished)] == ["mounted"]

    child = f"{registry.address}/{first}:child"
    add_layer(a, ref, child, {"x": b"x" * 100})
    mark = registry.mark()
    list(a.push(child))
    put_blobs = [u for u in registry.uploads(mark, first) if u["method"] == "PUT"]
    assert len(put_blobs) == 2  # the new layer and the new config, not the base layer


def test_chunked_upload_and_deterministic_compression(
    registry, make_engine: Engines, base_image: Base, repo: Callable[[str], str]
) -> None:
    name = repo("chunks")
    ref = f"{registry.address}/{name}:1"
    a = make_engine("a")
    image_id = base_image(a, ref)
    mark = registry.mark()
    events = list(push_image(a.store, ref, upload_chunk=256 << 10))
    patches = [u for u in registry.uploads(mark, name) if u["method"] == "PATCH"]
    assert len(patches) >= 3  # the ~1 MB layer in 256 KiB chunks
    assert events[-1].digest.startswith("sha256:")  # type: ignore[attr-defined]

    # Another store compresses the same layer to the same bytes: the same blob digest.
    other = make_engine("other")
    base_image(other, ref.replace(":1", ":2"))
    list(push_image(other.store, ref.replace(":1", ":2")))
    with RegistryClient(registry.address) as client:
        layers = [
            json.loads(client.get_manifest(name, tag).data)["layers"][0]["digest"]
            for tag in ("1", "2")
        ]
    assert layers[0] == layers[1]
    b = make_engine("b")
    pulled(b, ref)
    assert b.image(ref).id == image_id


def test_an_index_is_followed_to_the_platform_asked_for(
    registry, make_engine: Engines, base_image: Base, repo: Callable[[str], str]
) -> None:
    name = repo("multi")
    ref = f"{registry.address}/{name}:amd64"
    a = make_engine("a")
    image_id = base_image(a, ref)
    pushed = list(a.push(ref))[-1]
    with RegistryClient(registry.address) as client:
        manifest = client.get_manifest(name, "amd64")
        index = {
            "schemaVersion": 2,
            "mediaType": MT_OCI_INDEX,
            "manifests": [
                {
                    "mediaType": manifest.media_type,
                    "digest": pushed.digest,  # type: ignore[attr-defined]
                    "size": len(manifest.data),
                    "platform": {"os": "linux", "architecture": "riscv64"},
                }
            ],
        }
        client.put_manifest(name, "multi", json.dumps(index).encode(), MT_OCI_INDEX)
    b = make_engine("b")
    multi = f"{registry.address}/{name}:multi"
    plan = b.plan_pull(multi, "linux/riscv64")
    assert plan.index_digest and plan.digest == pushed.digest  # type: ignore[attr-defined]
    list(b.pull(plan))
    assert b.image(multi).id == image_id
    from lamina.core import RegistryError

    with pytest.raises(RegistryError, match=r"no image for linux/s390x .*linux/riscv64"):
        b.plan_pull(multi, "linux/s390x")
