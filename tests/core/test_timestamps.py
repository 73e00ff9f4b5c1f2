"""RFC 3339 times as both engines read them (image configs, Docker's API)."""

from __future__ import annotations

import pytest

from lamina.core.timestamps import parse_rfc3339


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:01Z", 1.0),
        ("1970-01-01T00:00:01z", 1.0),
        ("1970-01-01 00:00:01Z", 1.0),
        ("1970-01-01T00:00:01", 1.0),  # no zone: UTC
        ("1970-01-01T01:00:01+01:00", 1.0),
        ("1969-12-31T23:00:01-01:00", 1.0),
        # Go's nanoseconds survive (datetime alone would stop at microseconds).
        ("1970-01-01T00:00:01.000000500Z", 1.0000005),
        ("2026-11-28T00:36:38.055906675Z", 1795826198.055906675),
    ],
)
def test_rfc3339_times(text: str, expected: float) -> None:
    assert parse_rfc3339(text) == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize(
    "value", [None, "", 12, "yesterday", "2026-11-28", "2026-13-40T00:00:00Z", "2026-11-28T00:00Z"]
)
def test_what_is_not_an_rfc3339_time_is_zero(value: object) -> None:
    assert parse_rfc3339(value) == 0.0
