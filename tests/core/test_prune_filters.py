"""Sizes, durations, timestamps and --filter values, as the Docker CLI spells them."""

from __future__ import annotations

import pytest

from lamina.core.errors import UsageError
from lamina.core.filters import (
    BUILDER_FILTERS,
    IMAGE_FILTERS,
    Filter,
    labels_match,
    parse_duration,
    parse_filters,
    parse_size,
    parse_timestamp,
    parse_until,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1024", 1024),
        ("1k", 1024),
        ("1KB", 1024),
        ("1KiB", 1024),
        ("512MB", 512 * 1024**2),
        ("5GB", 5 * 1024**3),
        ("5g", 5 * 1024**3),
        ("1.5GiB", int(1.5 * 1024**3)),
        ("2 TB", 2 * 1024**4),
        ("10b", 10),
    ],
)
def test_sizes_are_binary_like_go_units_ram_in_bytes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "-5GB", "5XB", "five", "1e3", "5GBB"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(UsageError, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("90s", 90.0),
        ("10m", 600.0),
        ("24h", 86400.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("500ms", 0.5),
        ("30d", 30 * 86400.0),
        ("2w", 14 * 86400.0),
        ("1d12h", 1.5 * 86400.0),
    ],
)
def test_durations_are_go_durations_plus_days_and_weeks(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "h", "10", "10x", "1h 30m", "-1h", "1hh", "abc"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "ts"),
    [
        ("1700000000", 1_700_000_000.0),
        ("1700000000.5", 1_700_000_000.5),
        ("2024-01-02", 1_704_153_600.0),
        ("2024-01-02T03:04:05Z", 1_704_164_645.0),
        ("2024-01-02T03:04:05+01:00", 1_704_161_045.0),
        ("2024-01-02T03:04:05", 1_704_164_645.0),
    ],
)
def test_timestamps(text: str, ts: float) -> None:
    assert parse_timestamp(text) == ts


def test_until_is_a_duration_before_now_or_a_timestamp() -> None:
    assert parse_until("1h", 10_000.0) == 6_400.0
    assert parse_until("2024-01-02", 10_000.0) == 1_704_153_600.0
    with pytest.raises(UsageError, match="invalid until filter 'tomorrow'"):
        parse_until("tomorrow", 0.0)


def test_filters_parse_at_the_first_equals_sign() -> None:
    got = parse_filters(["until=24h", "label=a=b", "label!=c"], IMAGE_FILTERS)
    assert got == (Filter("until", "24h"), Filter("label", "a=b"), Filter("label!", "c"))
    assert str(got[1]) == "label=a=b"


@pytest.mark.parametrize(
    ("raw", "allowed", "message"),
    [
        (["dangling=TRUE"], IMAGE_FILTERS, r"Invalid filter 'dangling=\[TRUE\]'"),
        (["dangling=true"], BUILDER_FILTERS, "Invalid filter 'dangling'"),
        (["label=x"], BUILDER_FILTERS, "Invalid filter 'label'"),
        (["until"], IMAGE_FILTERS, "expected key=value"),
        (["=x"], IMAGE_FILTERS, "expected key=value"),
        (["until=1h", "until=2h"], IMAGE_FILTERS, "more than one until"),
        (["until=later"], IMAGE_FILTERS, "invalid until filter"),
        (["label="], IMAGE_FILTERS, "expected label=KEY"),
    ],
)
def test_bad_filters(raw: list[str], allowed: frozenset[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_filters(raw, allowed)


@pytest.mark.parametrize(
    ("filters", "labels", "match"),
    [
        ([], {}, True),
        (["label=a"], {"a": "1"}, True),
        (["label=a"], {}, False),
        (["label=a=1"], {"a": "1"}, True),
        (["label=a=1"], {"a": "2"}, False),
        (["label=a", "label=b"], {"a": "1"}, False),
        (["label!=a"], {"a": "1"}, False),
        (["label!=a"], {"b": "1"}, True),
        (["label!=a=1"], {"a": "2"}, True),
        (["label!=a=1"], {"a": "1"}, False),
        # moby excludes only when every label!= filter matches (MatchKVList).
        (["label!=a", "label!=b"], {"a": "1"}, True),
        (["label!=a", "label!=b"], {"a": "1", "b": "2"}, False),
    ],
)
def test_label_filters_follow_docker_image_prune(
    filters: list[str], labels: dict[str, str], match: bool
) -> None:
    assert labels_match(parse_filters(filters, IMAGE_FILTERS), labels) is match
