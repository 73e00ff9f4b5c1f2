"""The demo workspace, built for real in a store on tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.core.demo import workspace as demo
from lamina.core.embedded.store import Store

# These tests state the classic builder's rules.
pytestmark = pytest.mark.usefixtures("classic_builder")


def _kinds(build: demo.DemoBuild) -> list[str | None]:
    return [(s.reason or {}).get("kind") if s.cached is False else None for s in build.steps]


@pytest.mark.root
def test_demo_shows_hits_misses_sharing_and_dangling(
    lamina_home: Path, tmp_path: Path, busybox: str
) -> None:
    store = Store(lamina_home)
    try:
        result = demo.create_demo(store, tmp_path / "ws")
        assert result.created and result.with_run, result.notes
        first, _web, touched, edited, label, _tools = result.builds
        assert first.hits == 0 and first.misses == len(first.steps) - 1
        # touched app.sh (mtime only) still hits; chmod +x data/run.sh misses on sources.
        by_text = {s.instruction: s for s in touched.steps}
        assert by_text["COPY app.sh /app/app.sh"].cached is True
        assert by_text["COPY data/ /app/data/"].cached is False
        assert by_text["COPY data/ /app/data/"].reason["kind"] == "sources_changed"
        assert "data/run.sh" in by_text["COPY data/ /app/data/"].reason["message"]
        # the edited RUN line misses for its instruction and everything after it cascades.
        kinds = _kinds(edited)
        first_miss = next(i for i, k in enumerate(kinds) if k)
        assert kinds[first_miss] == "instruction_changed"
        assert set(kinds[first_miss + 1 :]) == {"parent_missed"}
        # The edited LABEL misses under the classic rules, and everything below it; each
        # COPY says that BuildKit would have hit.
        assert label.hits == 0
        assert _kinds(label)[1] == "instruction_changed"
        assert set(_kinds(label)[2:]) == {"parent_missed"}
        copies = [s for s in label.steps if s.instruction.startswith("COPY")]
        assert len(copies) == 2
        for step in copies:
            assert step.other is not None
            assert (step.other["builder"], step.other["cached"]) == ("buildkit", True)
            assert "LABEL" in step.other["message"]
        # ...where the first build, which misses under both, claims nothing of the kind.
        assert all(s.other is None for s in first.steps if s.instruction.startswith("COPY"))

        images = store.images.list()
        tagged = {t for i in images for t in i.tags}
        assert {demo.APP_TAG, demo.WEB_TAG, demo.TOOLS_TAG, demo.BASE_TAG} <= tagged
        assert demo.RELEASE_TAG in tagged
        # three rebuilt demo-app images and the first imported release.
        assert sum(1 for i in images if i.dangling) == 4
        # every built image stands on the same busybox base layer.
        releases = {store.images.resolve(demo.RELEASE_TAG)} | {
            i.id for i in images if i.dangling and len(i.layers) == 1
        }
        bases = {i.layers[0] for i in images if i.id not in releases}
        assert len(bases) == 1
        # Pruning dangling images frees the old release's layer (no cache holds it).
        from lamina.core.accounting.plans import PruneRequest
        from lamina.core.embedded.prune import plan_prune

        plan = plan_prune(store, PruneRequest())
        assert plan.reclaimable_bytes >= 200_000
        # demo-tools shares every layer of demo-app.
        app = store.images.summary(store.images.resolve(demo.APP_TAG))
        tools_image = store.images.summary(store.images.resolve(demo.TOOLS_TAG))
        assert tools_image.layers[: len(app.layers)] == app.layers
        cache_rows = store.index.connection().execute("SELECT COUNT(*) FROM cache").fetchone()[0]
        assert cache_rows > 0

        again = demo.create_demo(store, tmp_path / "ws")
        assert not again.created and again.builds == []
        assert len(store.images.list()) == len(images)
    finally:
        store.close()


def test_demo_without_busybox_is_copy_only_on_scratch(
    lamina_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "find_busybox", lambda: None)
    store = Store(lamina_home)
    try:
        result = demo.create_demo(store, tmp_path / "ws")
        assert not result.with_run
        assert any("busybox" in n for n in result.notes)
        assert not any(s.instruction.startswith("RUN") for b in result.builds for s in b.steps)
        touched = {s.instruction: s for s in result.builds[2].steps}
        assert touched["COPY app.sh /app/app.sh"].cached is True
        assert touched["COPY data/ /app/data/"].cached is False
        assert any(i.dangling for i in store.images.list())
        assert "FROM scratch" in (tmp_path / "ws/app/Dockerfile").read_text()
    finally:
        store.close()


def test_demo_refuses_an_engine_without_a_store(tmp_path: Path) -> None:
    from lamina.core.errors import UsageError

    with pytest.raises(UsageError, match="own store"):
        demo.create_demo(object(), tmp_path / "ws")
