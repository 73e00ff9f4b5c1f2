"""Docker's JSON as lamina's records, without a daemon (lamina.core.docker.convert)."""

from __future__ import annotations

from typing import Any

import pytest

from lamina.core.digest import chain_ids
from lamina.core.docker import convert

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def _row(created_by: str, size: int = 0, row_id: str = "<missing>") -> dict[str, Any]:
    return {"Id": row_id, "CreatedBy": created_by, "Size": size, "Created": 100}


def test_times_are_rfc3339_strings_or_unix_seconds() -> None:
    assert convert.parse_time(" 1970-01-01T00:00:01.5Z ") == 1.5
    assert convert.parse_time(7) == 7.0
    assert convert.parse_time("") == convert.parse_time(None) == 0.0
    assert convert.parse_time("not a time") == 0.0


def test_tags_lose_dockers_placeholder_and_gain_latest() -> None:
    assert convert.repo_tags(["b:1", "<none>:<none>", "a:2", ""]) == ("a:2", "b:1")
    assert convert.repo_tags(None) == ()
    assert convert.normal_tag("localhost:5000/x") == "localhost:5000/x:latest"


@pytest.mark.parametrize(
    ("created_by", "size", "empty"),
    [
        ("/bin/sh -c #(nop)  ENV A=1", 0, True),
        ("/bin/sh -c #(nop) COPY file:abc in /a", 0, False),
        ("/bin/sh -c #(nop) WORKDIR /w", 0, False),
        ("/bin/sh -c true", 0, False),
        ("ENV A=1", 0, True),  # BuildKit writes metadata steps without #(nop)
        ("ENV A=1", 5, False),
    ],
)
def test_a_row_without_a_layer_is_known_by_its_text(
    created_by: str, size: int, empty: bool
) -> None:
    assert convert.looks_empty(created_by, size) is empty


def test_layer_counts_of_local_images_decide_and_the_layer_count_reconciles() -> None:
    rows = [_row("ADD rootfs", 10), _row("/bin/sh -c true"), _row("/bin/sh -c #(nop)  CMD x")]
    # The text guesses two layers; the image has one, so the zero-sized RUN is empty.
    assert convert.empty_rows("img", rows, [None, None, None], 1) == [False, True, True]
    # A local intermediate says exactly: the RUN made a layer.
    assert convert.empty_rows("img", rows, [1, 2, 2], 2) == [False, False, True]


def test_history_rows_become_layers_and_history_entries() -> None:
    data = {
        "Id": "sha256:" + "f" * 64,
        "RootFS": {"Layers": [D1, D2]},
        "Created": "1970-01-01T00:00:09Z",
    }
    rows = [_row("ADD rootfs", 10), _row("/bin/sh -c #(nop)  CMD x"), _row("RUN x", 20)]
    views = convert.layer_rows(data, rows, [False, True, False])
    chains = chain_ids([D1, D2])
    assert [chain for _row_, _empty, chain in views] == [chains[0], None, chains[1]]
    infos = convert.layer_infos(data, views)
    assert [(i.chain_id, i.parent, i.size) for i in infos] == [
        (chains[0], None, 10),
        (chains[1], chains[0], 20),
    ]
    entries = convert.history_entries(views)
    assert [e.created_by for e in entries] == ["RUN x", "/bin/sh -c #(nop)  CMD x", "ADD rootfs"]
    oci = convert.oci_inspect(data, views)
    assert oci["ChainIDs"] == chains and oci["history"][1]["empty_layer"] is True


def test_intermediates_and_buildkit_records_become_cache_rows() -> None:
    data = {"Id": "sha256:" + "e" * 64, "Parent": "", "RootFS": {"Layers": [D1]}, "Created": 5}
    row = convert.intermediate_row(data, [_row("ADD rootfs"), _row("RUN step")])
    assert (row.parent, row.instruction, row.top_layer) == (
        "scratch",
        "RUN step",
        chain_ids([D1])[0],
    )
    rec = convert.buildkit_record(
        {
            "ID": "abc",
            "Size": 3,
            "CreatedAt": "1970-01-01T00:00:02Z",
            "LastUsedAt": None,
            "Type": "regular",
        }
    )
    assert rec.key == convert.BUILDKIT_PREFIX + "abc"
    assert (rec.created, rec.last_used, rec.cache_row().instruction) == (2.0, 0.0, "regular")
    assert rec.layer_row().size == 3
