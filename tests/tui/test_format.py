"""How the front ends show sizes, times and digests: the app like dive, the CLI like Docker."""

from __future__ import annotations

import pytest

from lamina.tui.format import ago, digest, duration, size

NOW = 1_767_225_600.0


def clock() -> float:
    return NOW


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0B"),
        (999, "999B"),
        (1000, "1kB"),
        (12288, "12.3kB"),
        (1433600, "1.43MB"),
        (5_000_000_000, "5GB"),
    ],
)
def test_docker_sizes_are_decimal_with_three_digits(n: int, text: str) -> None:
    assert size(n, docker=True) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.5, "Less than a second"),
        (30, "30 seconds"),
        (61, "About a minute"),
        (600, "10 minutes"),
        (3600, "About an hour"),
        (5 * 3600, "5 hours"),
        (3 * 86400, "3 days"),
        (20 * 86400, "2 weeks"),
        (90 * 86400, "3 months"),
        (800 * 86400, "2 years"),
    ],
)
def test_durations_in_dockers_words(seconds: float, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (None, "-"),
        (0, "0 Bytes"),
        (999, "999 Bytes"),
        (1000, "1.0 kB"),
        (12288, "12.3 kB"),
        (1433600, "1.4 MB"),
        (5_000_000_000, "5.0 GB"),
    ],
)
def test_app_sizes_are_decimal_with_one_decimal_like_dive(n: int | None, text: str) -> None:
    assert size(n) == text


@pytest.mark.parametrize(
    ("when", "app", "docker"),
    [
        (0.0, "-", "N/A"),
        (NOW - 3600, "an hour ago", "About an hour ago"),
        (NOW - 20 * 86400, "a month ago", "2 weeks ago"),
        (NOW + 60, "now", "Less than a second ago"),  # a clock behind the record
    ],
)
def test_relative_times_in_each_front_ends_words(when: float, app: str, docker: str) -> None:
    assert ago(when, clock) == app
    assert ago(when, clock, docker=True) == docker


def test_digests_are_shortened_to_twelve_hex_characters() -> None:
    assert digest("sha256:" + "ab" * 32) == "ab" * 6
    assert digest(None) == digest("") == "-"
