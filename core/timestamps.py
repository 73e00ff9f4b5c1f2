"""RFC 3339 times as unix time: how image configs and the Docker Engine write them.

Both engines read the same shape: ``2006-01-02T15:04:05.999999999Z`` (Go's
``RFC3339Nano``), or with a numeric zone. Python's ``datetime`` stops at microseconds,
so the fraction is added to the whole seconds here instead, keeping Go's nanoseconds.
"""

from __future__ import annotations

import re
from datetime import datetime

_RFC3339_RE = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?(Z|z|[+-]\d{2}:\d{2})?$"
)


def parse_rfc3339(value: object) -> float:
    """An RFC 3339 time as unix seconds.

    A time without a zone is read as UTC (configs written by hand sometimes omit it).

    Args:
        value: the text; anything that is not a non-empty string counts as absent.

    Returns:
        Unix time, or 0.0 when ``value`` is absent or not an RFC 3339 time.
    """
    if not isinstance(value, str) or not value:
        return 0.0
    m = _RFC3339_RE.match(value)
    if not m:
        return 0.0
    date, clock, frac, zone = m.groups()
    zone = "+00:00" if zone in (None, "Z", "z") else zone
    try:
        dt = datetime.fromisoformat(f"{date}T{clock}{zone}")
    except ValueError:
        return 0.0
    seconds = dt.timestamp()
    if frac:
        seconds += float("0" + frac)
    return seconds
