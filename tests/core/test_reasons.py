"""Miss reasons from data alone: ``accounting.reasons`` never sees the index."""

from __future__ import annotations

import json
from typing import Any, get_args

import pytest

from lamina.core.accounting import reasons
from lamina.core.accounting.reasons import History, Prior
from lamina.core.model import Reason, ReasonKind

BASE = "sha256:" + "1" * 64
OTHER = "sha256:" + "2" * 64


def prior(instruction: str, **inputs: Any) -> Prior:
    return Prior(instruction, json.dumps({"instruction": instruction, **inputs}))


def inputs(instruction: str, **more: Any) -> dict[str, Any]:
    return {"instruction": instruction, **more}


def test_a_tombstone_says_pruned_before_anything_else() -> None:
    history = History(pruned=True, on_parent=(prior("RUN a"),))
    reason = reasons.explain_miss(inputs("RUN a"), history, first_in_stage=False)
    assert reason["kind"] == "pruned"


def test_an_entry_of_the_same_instruction_on_the_parent_is_preferred() -> None:
    history = History(
        on_parent=(prior("RUN other"), prior("RUN a", args={"V": "1"})),
    )
    reason = reasons.explain_miss(inputs("RUN a", args={"V": "2"}), history, first_in_stage=False)
    assert reason == {
        "kind": "build_arg_changed",
        "message": 'build arg V changed from "1" to "2"',
        "name": "V",
        "old": "1",
        "new": "2",
    }


def test_without_the_same_instruction_the_newest_entry_on_the_parent_is_compared() -> None:
    history = History(on_parent=(prior("RUN new"), prior("RUN old")))
    reason = reasons.explain_miss(inputs("RUN a"), history, first_in_stage=False)
    assert (reason["kind"], reason.get("old"), reason.get("new")) == (
        "instruction_changed",
        "RUN new",
        "RUN a",
    )


def test_the_first_step_on_another_base_says_the_base_changed() -> None:
    history = History(same_instruction=(prior("RUN a", **{"from": "FROM busybox", "base": OTHER}),))
    cur = inputs("RUN a", **{"from": "FROM busybox", "base": BASE})
    reason = reasons.explain_miss(cur, history, first_in_stage=True)
    assert reason["kind"] == "base_changed"
    assert (reason.get("old"), reason.get("new")) == (OTHER, BASE)
    # Only the first step of a stage can tell: later ones ran on another parent anyway.
    assert reasons.explain_miss(cur, history, first_in_stage=False)["kind"] == "first_build"


def test_nothing_remembered_is_a_first_build() -> None:
    reason = reasons.explain_miss(inputs("RUN a"), History(), first_in_stage=True)
    assert reason == {
        "kind": "first_build",
        "message": "no step has been cached on this state before",
    }


def test_only_the_compared_entry_is_parsed() -> None:
    # A COPY's recorded manifest can be large: entries not compared stay text.
    history = History(on_parent=(prior("RUN a"), Prior("RUN b", "not json")))
    assert reasons.explain_miss(inputs("RUN a"), history, first_in_stage=False)["kind"] == (
        "config_changed"
    )


def test_sources_changed_names_what_differs() -> None:
    old = {"checksum": "dir:1", "manifest": {"a": ["file", 420, 1, "x", "", 0, 0]}}
    new = {"checksum": "dir:2", "manifest": {"a": ["file", 493, 1, "x", "", 0, 0], "b": []}}
    reason = reasons.compare(inputs("COPY . /", sources=old), inputs("COPY . /", sources=new))
    assert reason["kind"] == "sources_changed"
    assert reason.get("added") == ["b"]
    assert reason.get("changed") == [{"path": "a", "what": ["mode"]}]


@pytest.mark.parametrize(
    "reason",
    [
        reasons.no_cache(),
        reasons.parent_missed("0/1", "RUN a"),
        reasons.first_build(),
        reasons.pruned(),
        reasons.result_pruned(),
        reasons.base_changed(OTHER, BASE, "FROM busybox now resolves elsewhere"),
        reasons.sources_unknown("build"),
    ],
)
def test_every_constructor_makes_a_json_ready_reason_of_a_known_kind(reason: Reason) -> None:
    assert reason["kind"] in get_args(ReasonKind)
    assert reason["message"] and "\n" not in reason["message"]
    assert json.loads(json.dumps(reason)) == reason
