"""Cache keys: canonical JSON, versioned, sensitive to exactly what they hold."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lamina.core.embedded.builder.keys import KEY_VERSION, canonical_json, compared_config, step_key

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def test_key_is_sha256_of_versioned_canonical_json() -> None:
    step = {"cmd": ["/bin/sh", "-c", "echo a"], "config": {"Env": ["A=1"]}}
    doc = {"parent": "scratch", "step": step, "v": KEY_VERSION}
    expected = hashlib.sha256(
        json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert step_key("scratch", step) == "sha256:" + expected


@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6))
def test_key_ignores_dict_order(step: dict[str, Any]) -> None:
    reordered = dict(reversed(list(step.items())))
    assert step_key("p", step) == step_key("p", reordered)


@given(st.text(max_size=10), st.text(max_size=10))
def test_command_text_is_exact(a: str, b: str) -> None:
    same = step_key("p", {"cmd": [a]}) == step_key("p", {"cmd": [b]})
    assert same == (a == b)


def test_parent_and_whitespace_count() -> None:
    step = {"cmd": ["/bin/sh", "-c", "echo a"]}
    assert step_key("sha256:" + "0" * 64, step) != step_key("sha256:" + "1" * 64, step)
    assert step_key("p", {"cmd": ["echo a"]}) != step_key("p", {"cmd": ["echo  a"]})


def test_canonical_json_is_compact_and_sorted() -> None:
    assert (
        canonical_json({"b": 1, "a": [1, {"d": 2, "c": "é"}]}) == '{"a":[1,{"c":"é","d":2}],"b":1}'
    )


def test_compared_config_keeps_the_compared_fields_and_drops_empty_ones() -> None:
    config = {
        "Env": ["PATH=/bin"],
        "Labels": {},
        "Cmd": None,
        "User": "",
        "Hostname": "abc",  # never compared (Docker sets it per container)
        "WorkingDir": "/app",
        "OnBuild": [],
    }
    assert compared_config(config) == {"Env": ["PATH=/bin"], "WorkingDir": "/app"}
