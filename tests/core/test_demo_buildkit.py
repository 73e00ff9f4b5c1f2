"""The demo workspace under the default rules, BuildKit's: where they part from the
classic builder's (``test_demo.py`` states the classic story)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.core.demo import workspace as demo
from lamina.core.embedded.store import Store


def _by_name(result: demo.DemoResult) -> dict[str, demo.DemoBuild]:
    return {b.name.split(" (")[-1].rstrip(")"): b for b in result.builds}


def _check_label_edit(label: demo.DemoBuild) -> None:
    """The LABEL edit: no step misses; every COPY hits with the note saying why, and
    knows the classic builder would have missed."""
    assert label.misses == 0 and label.hits > 0
    (setting,) = [s for s in label.steps if s.instruction.startswith("LABEL")]
    assert setting.cached is None
    assert f'"{demo.EDITED_LABEL}"' in setting.instruction
    copies = [s for s in label.steps if s.instruction.startswith("COPY")]
    assert copies
    for step in copies:
        assert step.cached is True
        assert step.reason is not None and step.reason["kind"] == "settings_not_keyed"
        assert "LABEL above changed" in step.reason["message"]
        assert step.other is not None
        assert (step.other["builder"], step.other["cached"]) == ("classic", False)


@pytest.mark.root
def test_label_edit_hits_under_buildkit_where_the_classic_builder_misses(
    lamina_home: Path, tmp_path: Path, busybox: str
) -> None:
    store = Store(lamina_home)
    try:
        result = demo.create_demo(store, tmp_path / "ws")
        assert result.with_run, result.notes
        builds = _by_name(result)
        assert list(builds) == [
            "first build",
            "demo-web",
            "touched app.sh, chmod +x data/run.sh",
            "edited a line",
            "edited the LABEL",
            "demo-tools",
        ]
        # The rest of the story holds under BuildKit too: the edited RUN line cascades
        # with hits above it, and the mode change misses on the file.
        edited = [s for s in builds["edited a line"].steps if s.cached is not None]
        assert edited[0].cached is True
        assert edited[1].reason is not None and edited[1].reason["kind"] == "instruction_changed"
        assert all(s.cached is False for s in edited[1:])
        touched = {s.instruction: s for s in builds["touched app.sh, chmod +x data/run.sh"].steps}
        assert touched["COPY app.sh /app/app.sh"].cached is True
        assert touched["COPY data/ /app/data/"].cached is False
        _check_label_edit(builds["edited the LABEL"])
        # Every step hit, so the LABEL edit made no layer: demo-app's layers are those
        # of the build before it, and demo-tools stands on them.
        app = store.images.summary(store.images.resolve(demo.APP_TAG))
        tools = store.images.summary(store.images.resolve(demo.TOOLS_TAG))
        assert tools.layers[: len(app.layers)] == app.layers
        assert store.images.get_config(app.id)["config"]["Labels"] == {
            "org.lamina.demo": demo.EDITED_LABEL
        }
    finally:
        store.close()


def test_copy_only_demo_cascades_and_parts_under_buildkit(
    lamina_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without RUN the edited line is the first COPY's: BuildKit makes no step of a LABEL,
    # so a LABEL edit could not show a cascade there.
    monkeypatch.setattr(demo, "find_busybox", lambda: None)
    store = Store(lamina_home)
    try:
        result = demo.create_demo(store, tmp_path / "ws")
        assert not result.with_run
        builds = _by_name(result)
        edited = [s for s in builds["edited a line"].steps if s.cached is not None]
        assert edited[0].instruction == "COPY demo.conf /etc/"
        assert edited[0].reason is not None and edited[0].reason["kind"] == "instruction_changed"
        assert [s.cached for s in edited] == [False] * len(edited)
        assert {s.reason["kind"] for s in edited[1:] if s.reason} == {"parent_missed"}
        _check_label_edit(builds["edited the LABEL"])
    finally:
        store.close()
