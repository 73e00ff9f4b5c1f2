"""Sizes, durations and ``--filter`` values as the Docker CLI spells them.

``lamina images --filter`` takes the daemon's image-list filters (``dangling``,
``label``, ``before``, ``since``, ``reference``) with their semantics and error words
(moby 20.10's ``daemon/images/images.go``; ``reference`` is a Go ``path.Match`` glob over
``name:tag`` or ``name``); ``image prune --filter`` also takes ``dangling``, where
``false`` (or ``0``) means every unused image, as ``-a`` does.

Sizes follow docker/go-units ``RAMInBytes`` (what ``--keep-storage`` uses): the unit
letters are binary, so ``5GB`` and ``5GiB`` are both 5 x 1024**3 bytes. Durations
follow Go's ``time.ParseDuration`` (``90s``, ``1h30m``, ``1.5h``) plus ``d`` and ``w``
for the retention config (``30d``). ``until=`` takes a duration (that long before now)
or a timestamp (unix seconds, ``2006-01-02``, RFC 3339), like the daemon's
``GetTimestamp``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from lamina.core.errors import UsageError
from lamina.core.model import ImageSummary

_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp])?(i)?(b)?$", re.IGNORECASE)
_SIZE_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
}
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d|w)")
_UNIX_RE = re.compile(r"^\d+(?:\.\d+)?$")

# Filter keys each prune verb accepts (Docker's sets, minus what has no meaning here).
IMAGE_FILTERS = frozenset({"until", "label", "label!", "dangling"})
# What `lamina images --filter` takes (the daemon's image-list filters).
IMAGE_LIST_FILTERS = frozenset({"dangling", "label", "before", "since", "reference"})
# The values the daemon's image prune takes for dangling (its list takes true|false).
_PRUNE_DANGLING = {"true": True, "1": True, "false": False, "0": False}
BUILDER_FILTERS = frozenset({"until"})
SYSTEM_FILTERS = frozenset({"until", "label", "label!"})


def parse_size(text: str) -> int:
    """Bytes from a human size such as ``512MB``, ``5GiB``, ``1.5g`` or ``1024``.

    Args:
        text: the size; units are binary (k = 1024), as in ``docker builder prune``.

    Returns:
        The number of bytes (rounded down).

    Raises:
        UsageError: if ``text`` is not a size.
    """
    match = _SIZE_RE.match(text.strip())
    if not match:
        raise UsageError(f"invalid size {text!r} (expected e.g. 512MB, 5GB, 1.5GiB or bytes)")
    number, unit, _i, _b = match.groups()
    return int(float(number) * 1024 ** _SIZE_UNITS[(unit or "").lower()])


def parse_duration(text: str) -> float:
    """Seconds from a Go-style duration such as ``24h``, ``1h30m``, ``30d`` or ``0``.

    Args:
        text: the duration; units ns, us, ms, s, m, h, d (86400 s) and w (7 d).

    Returns:
        The duration in seconds (never negative).

    Raises:
        UsageError: if ``text`` is not a duration.
    """
    s = text.strip()
    if s == "0":
        return 0.0
    pos = 0
    total = 0.0
    for match in _DURATION_PART_RE.finditer(s):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(s):
        raise UsageError(f"invalid duration {text!r} (expected e.g. 90m, 24h, 1h30m or 30d)")
    return total


def parse_timestamp(text: str) -> float:
    """Unix time from ``1700000000[.5]``, ``2006-01-02`` or an RFC 3339 time.

    A time without a zone is read as UTC (the daemon reads it in its own zone, which
    is UTC in a container; UTC makes lamina's answer independent of the machine).

    Raises:
        UsageError: if ``text`` is not a timestamp.
    """
    s = text.strip()
    if _UNIX_RE.match(s):
        return float(s)
    candidate = s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s
    try:
        when = datetime.fromisoformat(candidate)
    except ValueError:
        raise UsageError(
            f"invalid timestamp {text!r} (expected unix seconds, 2006-01-02 or RFC 3339)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def parse_until(value: str, now: float) -> float:
    """The cut-off time of an ``until=`` filter: a duration before ``now``, or a timestamp.

    Raises:
        UsageError: if ``value`` is neither.
    """
    try:
        return now - parse_duration(value)
    except UsageError:
        pass
    try:
        return parse_timestamp(value)
    except UsageError:
        raise UsageError(
            f"invalid until filter {value!r} (expected a duration such as 24h or a timestamp)"
        ) from None


@dataclass(frozen=True)
class Filter:
    """One ``--filter key=value``.

    Attributes:
        key: ``until``, ``label`` or ``label!`` (Docker spells "not" as ``label!=``).
        value: the text after the first ``=``.
    """

    key: str
    value: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


def parse_filter(text: str) -> Filter:
    """Splits ``key=value`` at the first ``=`` (``label!=a=b`` gives key ``label!``).

    Raises:
        UsageError: if there is no ``=`` or no key.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"bad filter {text!r} (expected key=value, e.g. until=24h)")
    return Filter(key.lower(), value)


def parse_filters(raw: Iterable[str | Filter], allowed: frozenset[str]) -> tuple[Filter, ...]:
    """Parses and checks every filter before anything is planned.

    Args:
        raw: ``key=value`` strings or already parsed filters.
        allowed: the keys this verb accepts.

    Returns:
        The filters, in the order given.

    Raises:
        UsageError: for an unknown key, a second ``until``, or a malformed value.
    """
    out: list[Filter] = []
    for item in raw:
        f = item if isinstance(item, Filter) else parse_filter(item)
        if f.key not in allowed:
            valid = ", ".join(sorted(k + "=" for k in allowed))
            raise UsageError(f"Invalid filter '{f.key}' (valid filters: {valid})")
        if f.key == "until":
            if any(o.key == "until" for o in out):
                raise UsageError("more than one until filter given")
            parse_until(f.value, 0.0)  # validate now, not halfway through a plan
        elif f.key == "dangling":
            if f.value not in _PRUNE_DANGLING:
                raise UsageError(f"Invalid filter 'dangling=[{f.value}]'")
        elif not f.value or f.value.startswith("="):
            raise UsageError(f"bad filter {str(f)!r} (expected {f.key}=KEY or {f.key}=KEY=VALUE)")
        out.append(f)
    return tuple(out)


def until_cutoff(filters: Iterable[Filter], now: float) -> float | None:
    """The ``until=`` cut-off among ``filters``, or None when there is none."""
    for f in filters:
        if f.key == "until":
            return parse_until(f.value, now)
    return None


def labels_match(filters: Iterable[Filter], labels: dict[str, str]) -> bool:
    """Whether ``labels`` pass the ``label=``/``label!=`` filters, as ``docker image prune``.

    ``label=k`` needs the key, ``label=k=v`` the key with that value, and every ``label=``
    filter must match. The ``label!=`` filters exclude an image only when all of them
    match (moby's ``MatchKVList("label!", ...)``), so ``label!=k`` alone keeps images
    that carry ``k``.
    """
    positive: list[bool] = []
    negative: list[bool] = []
    for f in filters:
        if f.key not in ("label", "label!"):
            continue
        key, sep, value = f.value.partition("=")
        hit = key in labels and (not sep or labels[key] == value)
        (positive if f.key == "label" else negative).append(hit)
    if not all(positive):
        return False
    return not (negative and all(negative))


def prunes_every_unused_image(filters: Iterable[Filter]) -> bool:
    """Whether an image prune's filters say ``dangling=false`` (or ``0``): then it
    removes every unused image, as ``-a`` does (one false among several values wins,
    as in the daemon's ``ExactMatch``)."""
    return any(f.key == "dangling" and not _PRUNE_DANGLING[f.value] for f in filters)


def has_label_filters(filters: Iterable[Filter]) -> bool:
    """Whether any filter needs the image labels (so configs must be read)."""
    return any(f.key in ("label", "label!") for f in filters)


# -- lamina images --filter --------------------------------------------------------------


def parse_image_list_filters(raw: Iterable[str]) -> tuple[Filter, ...]:
    """Parses ``lamina images --filter`` values, refusing what the daemon refuses.

    Raises:
        UsageError: an unknown key (``Invalid filter 'foo'``), a dangling value other
            than ``true`` or ``false`` (``Invalid filter 'dangling=[1]'``), or a
            malformed reference pattern (``syntax error in pattern``), in Docker's words.
    """
    out: list[Filter] = []
    for text in raw:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise UsageError(f"bad format of filter (expected name=value): {text!r}")
        f = Filter(key, value)
        if f.key not in IMAGE_LIST_FILTERS:
            raise UsageError(f"Invalid filter '{f.key}'")
        if f.key == "dangling" and f.value not in ("true", "false"):
            raise UsageError(f"Invalid filter 'dangling=[{f.value}]'")
        if f.key == "reference":
            go_path_match(f.value, "")  # a bad pattern fails before anything is listed
        out.append(f)
    return tuple(out)


def select_images(
    images: Iterable[ImageSummary],
    filters: Iterable[Filter],
    *,
    all_images: bool,
    parents: set[str],
    created_of: Callable[[str], float],
) -> list[ImageSummary]:
    """The images ``docker images [-a] --filter ...`` would list, tags narrowed to the
    ones a ``reference`` filter matched.

    Args:
        images: every image, in the order to list them.
        filters: from :func:`parse_image_list_filters`.
        all_images: ``-a``: untagged images others were built FROM are listed too.
        parents: IDs of images another image was built FROM (intermediate ones).
        created_of: the creation time of the image a ``before``/``since`` names
            (raises ``NotFound`` for an unknown one).
    """
    filters = list(filters)
    dangling = [f.value for f in filters if f.key == "dangling"]
    dangling_only = "true" in dangling
    labels = [f.value for f in filters if f.key == "label"]
    patterns = [f.value for f in filters if f.key == "reference"]
    before = [created_of(f.value) for f in filters if f.key == "before"]
    since = [created_of(f.value) for f in filters if f.key == "since"]
    out: list[ImageSummary] = []
    for image in images:
        if labels and not all(_label_matches(v, image.labels) for v in labels):
            continue
        if any(image.created >= cut for cut in before) or any(
            image.created <= cut for cut in since
        ):
            continue
        tags = image.tags
        if patterns:
            tags = tuple(t for t in tags if any(reference_match(p, t) for p in patterns))
        if not tags:
            # Untagged, or no tag matched: listed as <none> only if no other image
            # stands on it (or with -a), and never under dangling=false or a reference.
            if image.tags or patterns or (dangling and not dangling_only):
                continue
            if not all_images and image.id in parents:
                continue
        elif dangling_only:
            continue
        out.append(image if tags == image.tags else replace(image, tags=tags))
    return out


def _label_matches(value: str, labels: dict[str, str]) -> bool:
    key, sep, want = value.partition("=")
    return key in labels and (not sep or labels[key] == want)


def reference_match(pattern: str, tag: str) -> bool:
    """docker/distribution's ``FamiliarMatch``: ``pattern`` against ``name:tag``, then
    against ``name`` alone (so ``busybox`` matches ``busybox:latest``)."""
    if go_path_match(pattern, tag):
        return True
    slash = tag.rfind("/")
    colon = tag.rfind(":")
    return colon > slash and go_path_match(pattern, tag[:colon])


def go_path_match(pattern: str, name: str) -> bool:
    """Go's ``path.Match``: ``*`` and ``?`` never match ``/``, ``[...]`` classes (``^``
    negates), ``\\`` escapes; the whole name must match.

    Raises:
        UsageError: a malformed pattern (``syntax error in pattern``, Go's words).
    """
    return _glob_regex(pattern).fullmatch(name) is not None


def _glob_regex(pattern: str) -> re.Pattern[str]:
    bad = UsageError("syntax error in pattern")
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            if i + 1 >= n:
                raise bad
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            i += 1
            negated = i < n and pattern[i] == "^"
            i += 1 if negated else 0
            ranges: list[tuple[str, str]] = []
            while True:
                if i < n and pattern[i] == "]" and ranges:
                    i += 1
                    break
                lo, i = _class_char(pattern, i, bad)
                hi = lo
                if pattern[i] == "-":
                    hi, i = _class_char(pattern, i + 1, bad)
                ranges.append((lo, hi))
            parts = "".join(f"{re.escape(lo)}-{re.escape(hi)}" for lo, hi in ranges if lo <= hi)
            if parts:
                out.append(f"[{'^' if negated else ''}{parts}]")
            else:
                out.append("(?s:.)" if negated else "(?!)")
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _class_char(pattern: str, i: int, bad: UsageError) -> tuple[str, int]:
    """One character of a ``[...]`` class (Go's ``getEsc``) and where the class goes on."""
    if i >= len(pattern) or pattern[i] in "-]":
        raise bad
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise bad
    if i + 1 >= len(pattern):
        raise bad  # the class never closes
    return pattern[i], i + 1
