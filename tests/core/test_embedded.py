"""EmbeddedEngine over a real store: listing, inspect, history, changes, tag and rmi."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lamina.core.digest import chain_ids
from lamina.core.embedded.archive import load_archive
from lamina.core.embedded.engine import EmbeddedEngine, RmiError
from lamina.core.embedded.store import Store
from lamina.core.engine import Engine
from lamina.core.errors import InUse, NotFound
from lamina.core.open import open_engine


@pytest.fixture
def engine(tmp_path: Path) -> EmbeddedEngine:
    e = EmbeddedEngine(tmp_path / "home")
    yield e  # type: ignore[misc]
    e.close()


@pytest.fixture(scope="module")
def dive_template(conformance: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store holding the dive image, loaded once and copied per test."""
    home = tmp_path_factory.mktemp("template") / "home"
    engine = EmbeddedEngine(home)
    (image,) = load_archive(engine.store, conformance / "images" / "dive" / "test-docker-image.tar")
    engine.close()
    return home, image.id


@pytest.fixture
def dive(engine: EmbeddedEngine, dive_template: tuple[Path, str]) -> str:
    home, image_id = dive_template
    engine.close()
    shutil.rmtree(engine.home)
    # cp -a keeps whiteout devices, xattrs and hardlinks, which copytree would not.
    subprocess.run(["cp", "-a", str(home), str(engine.home)], check=True)
    engine.store = Store(engine.home)
    return image_id


def child_image(engine: EmbeddedEngine, parent: str, created: str) -> str:
    """An image recorded as built FROM ``parent`` (same layers, new config)."""
    config = engine.store.images.get_config(parent)
    config = dict(config, created=created)
    image_id = engine.store.images.put_config(config)
    engine.store.images.add_image(image_id, parent=parent)
    return image_id


def test_is_an_engine_and_opens_from_env(lamina_home: Path) -> None:
    engine: Engine = open_engine("embedded")
    assert isinstance(engine, EmbeddedEngine) and engine.name == "embedded"
    assert engine.store.home == lamina_home  # type: ignore[attr-defined]
    assert engine.images() == []
    engine.close()


def test_images_and_image(engine: EmbeddedEngine, dive: str) -> None:
    (summary,) = engine.images()
    assert summary.id == dive and summary.tags == ("dive-test:latest",)
    assert engine.image("dive-test") == summary
    assert engine.image(dive[7:14]) == summary
    with pytest.raises(NotFound):
        engine.image("missing")


def test_inspect(engine: EmbeddedEngine, dive: str, conformance: Path) -> None:
    doc = engine.inspect("dive-test:latest")
    config = engine.store.images.get_config(dive)
    assert doc["Id"] == dive
    assert doc["RepoTags"] == ["dive-test:latest"]
    assert doc["DiffIDs"] == config["rootfs"]["diff_ids"]
    assert doc["ChainIDs"] == chain_ids(config["rootfs"]["diff_ids"])
    assert doc["ChainIDs"] == list(engine.image(dive).layers)
    assert doc["Size"] == sum(engine.store.layers.get(c).size for c in doc["ChainIDs"])
    assert doc["history"] == config["history"]
    assert doc["Created"] == config["created"]
    json.dumps(doc)  # serialisable as is


def test_history_newest_first_with_layer_sizes(engine: EmbeddedEngine, dive: str) -> None:
    entries = engine.history("dive-test")
    config = engine.store.images.get_config(dive)
    assert len(entries) == len(config["history"])
    assert entries[0].created_by == config["history"][-1]["created_by"]
    with_layers = [e for e in reversed(entries) if not e.empty_layer]
    assert [e.chain_id for e in with_layers] == list(engine.image(dive).layers)
    for e in with_layers:
        assert e.size == engine.store.layers.get(e.chain_id).size  # type: ignore[arg-type]
    empties = [e for e in entries if e.empty_layer]
    assert empties and all(e.size == 0 and e.chain_id is None for e in empties)
    assert entries[0].created >= entries[-1].created > 0


def test_layers_and_changes(engine: EmbeddedEngine, dive: str) -> None:
    layers = engine.layers()
    assert len(layers) == 14
    top = engine.image(dive).layers[-1]
    changes = engine.layer_changes(top)
    assert changes == engine.layer_changes(top[7:20])
    assert changes and {c.change for c in changes} <= {"added", "modified", "deleted"}
    base_changes = engine.layer_changes(engine.image(dive).layers[0])
    assert {c.change for c in base_changes} == {"added"}
    assert any(c.path == "/bin/busybox" for c in base_changes)


def test_tag_and_rmi_untags_while_other_tags_remain(engine: EmbeddedEngine, dive: str) -> None:
    engine.tag("dive-test", "other:1")
    assert engine.rmi(["dive-test"]) == ["Untagged: dive-test:latest"]
    assert engine.image(dive).tags == ("other:1",)
    assert engine.rmi(["other:1"]) == ["Untagged: other:1", f"Deleted: {dive}"]
    assert engine.images() == []
    # The layers stay until GC.
    assert len(engine.layers()) == 14


def test_rmi_by_id_with_several_tags_needs_force(engine: EmbeddedEngine, dive: str) -> None:
    engine.tag(dive, "other:1")
    with pytest.raises(InUse, match="must be forced"):
        engine.rmi([dive[7:19]])
    assert engine.image(dive).tags == ("dive-test:latest", "other:1")
    assert engine.rmi([dive], force=True) == [
        "Untagged: dive-test:latest",
        "Untagged: other:1",
        f"Deleted: {dive}",
    ]


def test_rmi_refuses_a_parent_image(engine: EmbeddedEngine, dive: str) -> None:
    child = child_image(engine, dive, "2030-01-01T00:00:00Z")
    with pytest.raises(InUse, match="dependent child images"):
        engine.rmi([dive])
    # By tag: untagged only, the image stays for its child.
    assert engine.rmi(["dive-test"]) == ["Untagged: dive-test:latest"]
    assert engine.image(dive).dangling
    assert engine.rmi([dive], force=True) == [f"Deleted: {dive}"]
    assert [i.id for i in engine.images()] == [child]


def test_rmi_reports_partial_progress(engine: EmbeddedEngine, dive: str) -> None:
    engine.tag(dive, "other:1")
    child_image(engine, dive, "2030-01-01T00:00:00Z")
    with pytest.raises(RmiError) as exc:
        engine.rmi(["other:1", dive])
    assert exc.value.done == ["Untagged: other:1"]
    assert "dependent child images" in str(exc.value)


def test_rmi_of_a_missing_image_removes_nothing(engine: EmbeddedEngine, dive: str) -> None:
    engine.tag(dive, "other:1")
    with pytest.raises(NotFound, match="missing:tag"):
        engine.rmi(["other:1", "missing:tag"])
    assert engine.image("other:1").id == dive


def test_delegates_to_disk_usage(engine: EmbeddedEngine, dive: str) -> None:
    usage = engine.disk_usage()
    assert [i.id for i in usage.images] == [dive]
    assert usage.layers_size == sum(layer.size for layer in engine.layers())
    assert usage.dangling == ()
