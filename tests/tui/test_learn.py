"""The Learn view's words on where BuildKit and the classic builder part, from the step
records each builder's walk makes (``StepRecord.other``), without an app."""

from __future__ import annotations

import pytest

from lamina.core import BuildRecord, StepRecord
from lamina.core.accounting import reasons
from lamina.tui.widgets.learn import TOUR, LearnView, parting_topic


def _build(builder: str | None, *steps: StepRecord) -> BuildRecord:
    return BuildRecord(
        7, 0.0, 1.0, "Dockerfile", ".", (), {}, None, None, "ok", None, steps, builder
    )


def _step(
    instruction: str,
    cached: bool | None,
    reason: reasons.Reason | None,
    other: reasons.Reason | None,
) -> StepRecord:
    return StepRecord(0, 2, instruction, cached, reason, other=other)


def _classic_cascade() -> StepRecord:
    """A COPY the classic builder missed because the LABEL above it changed."""
    reason = reasons.parent_missed("0/1", 'LABEL a="2"')
    return _step(
        "COPY app.sh /app/",
        False,
        reason,
        reasons.contrast("classic", "COPY", False, reason, "LABEL"),
    )


def _buildkit_label_hit() -> StepRecord:
    note = reasons.settings_not_keyed("COPY", {"Labels": {"a": "1"}}, {"Labels": {"a": "2"}})
    return _step("COPY app.sh /app/", True, note, reasons.contrast("buildkit", "COPY", True, note))


def test_a_buildkit_hit_on_a_changed_label_names_the_classic_miss() -> None:
    step = _buildkit_label_hit()
    text = LearnView().builders_text(_build("buildkit", step), step)
    assert text.startswith("[b]And under the classic builder?[/b]")
    assert "decided by BuildKit's rules. Hit: the LABEL above changed" in text
    assert "Under the classic builder: [b $error]MISS[/]" in text
    assert "Labels changed" in text
    assert "Why they part here:" in text and "whole config" in text
    assert parting_topic(step) == "settings"


def test_a_classic_cascade_from_a_label_names_the_buildkit_hit() -> None:
    step = _classic_cascade()
    text = LearnView().builders_text(_build("classic", step), step)
    assert text.startswith("[b]And under BuildKit?[/b]")
    assert "decided by the classic builder's rules." in text
    assert "Under BuildKit: [b $success]HIT[/]" in text and "does not cascade" in text
    assert parting_topic(step) == "settings"


def test_a_first_build_cascade_claims_no_buildkit_hit() -> None:
    # The LABEL missed because nothing ran there before: BuildKit misses too.
    reason = reasons.parent_missed("0/1", 'LABEL a="1"')
    other = reasons.contrast("classic", "COPY", False, reason, None)
    assert other is None
    step = _step("COPY app.sh /app/", False, reason, other)
    text = LearnView().builders_text(_build("classic", step), step)
    assert "BuildKit would decide the same here" in text
    assert "Why they part" not in text
    assert parting_topic(step) is None


@pytest.mark.parametrize(
    ("builder", "keyword", "verdict"),
    [("buildkit", "LABEL", "a step of its own"), ("classic", "EXPOSE", "[dim]no step[/]")],
)
def test_an_image_setting_is_a_step_under_one_builder_only(
    builder: str, keyword: str, verdict: str
) -> None:
    cached = None if builder == "buildkit" else True
    step = _step(f"{keyword} x", cached, None, reasons.contrast(builder, keyword, cached, None))
    text = LearnView().builders_text(_build(builder, step), step)
    assert f": {verdict}." in text and f"of {keyword}" in text
    assert parting_topic(step) == "settings"


def test_a_classic_step_of_a_setting_is_no_step_under_buildkit_even_after_a_miss() -> None:
    # A CMD below a changed LABEL: the classic builder misses it, BuildKit has no step.
    reason = reasons.parent_missed("0/1", 'LABEL a="2"')
    other = reasons.contrast("classic", "CMD", False, reason, "LABEL")
    assert other is not None and other["cached"] is None


@pytest.mark.parametrize(
    ("note", "topic", "words"),
    [
        (reasons.stage_skipped("test"), "stages", "every stage up to the target"),
        (reasons.merged("1/1", "RUN make"), "merged", "one graph"),
    ],
)
def test_skipped_stages_and_merged_steps_say_why_the_builders_part(
    note: reasons.Reason, topic: str, words: str
) -> None:
    cached = None if note["kind"] == "stage_skipped" else True
    keyword = "FROM" if cached is None else "RUN"
    step = _step(f"{keyword} x", cached, note, reasons.contrast("buildkit", keyword, cached, note))
    text = LearnView().builders_text(_build("buildkit", step), step)
    assert parting_topic(step) == topic
    assert words in text
    assert note["message"][1:] in text  # the note, opened as a sentence


def test_a_record_that_does_not_say_its_builder_shows_nothing() -> None:
    # Docker's classic builder records no builder and no contrast.
    step = _step("COPY a /a", True, None, None)
    assert LearnView().builders_text(_build(None, step), step) == ""
    assert LearnView().builders_text(None, None) == ""


def test_the_tour_ends_where_the_builders_part() -> None:
    stop = TOUR[-1]
    assert stop.parting and "LABEL" in stop.title
    view = LearnView()
    hit = _buildkit_label_hit()
    first = StepRecord(0, 1, "COPY a /a", False, reasons.first_build())
    view.builds = [_build("buildkit", first, hit)]
    assert view.example_for(stop) == (view.builds[0], hit)
    # A classic store shows it too: the cascade is its example, hits or none.
    cascade = _classic_cascade()
    view.builds = [_build("classic", cascade)]
    assert view.example_for(stop) == (view.builds[0], cascade)
    view.builds = [_build("classic", first)]
    assert view.example_for(stop) is None
