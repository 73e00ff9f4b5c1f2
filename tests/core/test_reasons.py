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
        "message": "first build: nothing was cached at this step of this stage before",
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


LONG_RUN = (
    "RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates"
    " git make gcc && rm -rf /var/lib/apt/lists/* && echo built version one"
)


@pytest.mark.parametrize(
    ("old", "new", "shown_old", "shown_new"),
    [
        # Short: both whole.
        ("RUN echo a", "RUN echo b", "RUN echo a", "RUN echo b"),
        # An edit at the end of a long RUN: the same window over both, around the edit.
        (
            LONG_RUN,
            LONG_RUN.replace("version one", "version two"),
            "…* && echo built version one",
            "…* && echo built version two",
        ),
        # An edit at the start: no leading ellipsis, the rest cut.
        (
            LONG_RUN,
            LONG_RUN.replace("apt-get update", "apt update", 1),
            "RUN apt-get update && apt-get install -y --no-install-recomm…",
            "RUN apt update && apt-get install -y --no-install-recommends…",
        ),
        # One text a prefix of the other: the added tail shows.
        (
            LONG_RUN,
            LONG_RUN + " && true",
            "…&& echo built version one",
            "…&& echo built version one && true",
        ),
    ],
    ids=["short", "edit-at-the-end", "edit-at-the-start", "appended"],
)
def test_a_changed_instruction_shows_where_the_two_differ(
    old: str, new: str, shown_old: str, shown_new: str
) -> None:
    reason = reasons.compare(inputs(old), inputs(new))
    assert reason["kind"] == "instruction_changed"
    assert (reason.get("old"), reason.get("new")) == (old, new)
    assert reason["message"] == f"the instruction changed from '{shown_old}' to '{shown_new}'"
    assert shown_old != shown_new


def test_a_whitespace_change_says_so_and_line_breaks_show() -> None:
    reason = reasons.compare(inputs("RUN echo a"), inputs("RUN echo  a"))
    assert reason["message"].endswith("(only whitespace differs)")
    reason = reasons.compare(inputs("RUN a \\\n  b"), inputs("RUN a \\\n  c"))
    assert "\n" not in reason["message"] and "↵" in reason["message"]


@pytest.mark.parametrize(
    "reason",
    [
        reasons.no_cache(),
        reasons.instruction_changed("RUN a\nb", "RUN a\nc"),
        reasons.parent_missed("0/1", "RUN a"),
        reasons.first_build(),
        reasons.pruned(),
        reasons.result_pruned(),
        reasons.base_changed(OTHER, BASE, "FROM busybox now resolves elsewhere"),
        reasons.sources_unknown("build"),
        reasons.remote_cache("registry.example/team/cache:main"),
    ],
)
def test_every_constructor_makes_a_json_ready_reason_of_a_known_kind(reason: Reason) -> None:
    assert reason["kind"] in get_args(ReasonKind)
    assert reason["message"] and "\n" not in reason["message"]
    assert json.loads(json.dumps(reason)) == reason
