"""Cache keys: sha256 of canonical JSON with a version field.

A key holds everything Docker's classic builder compares when it looks for a cached
result: the parent state (the config digest the step runs on) and the step's
configuration (for RUN the shell and command text with the active build args, for
COPY/ADD the keyword, ``--chown``, the expanded destination and the source checksum,
for ARG its Dockerfile default, and for every step the resulting config fields the
builder compares). Anything left out of the key (comments, blank lines, mtimes, owners
of context files) can never cause a miss.

Bump :data:`KEY_VERSION` whenever what goes into a key changes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from lamina.core.dockerfile.quote import go_bytes

KEY_VERSION = 1

# The config fields the classic builder compares between a candidate's config and the
# step's config (moby's image/cache compare()), in a fixed order.
COMPARED_FIELDS = (
    "Env",
    "Cmd",
    "Entrypoint",
    "Shell",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "OnBuild",
    "User",
    "WorkingDir",
    "StopSignal",
    "Healthcheck",
)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def compared_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of an image's ``config`` a cache lookup compares.

    Empty values are normalised away so ``{"Labels": {}}`` and no labels compare equal,
    as they do in Docker.
    """
    out: dict[str, Any] = {}
    for name in COMPARED_FIELDS:
        value = config.get(name)
        if value in (None, "", [], {}):
            continue
        out[name] = value
    return out


def step_key(parent: str, step: dict[str, Any]) -> str:
    """The cache key of one step.

    Args:
        parent: the state the step runs on (``sha256:<hex>`` config digest, or
            ``"scratch"``).
        step: the step's configuration (what each instruction puts in it:
            :mod:`lamina.core.embedded.builder.handlers` and
            :class:`lamina.core.embedded.builder.rules.ClassicRules`).

    Returns:
        ``sha256:<hex>``.
    """
    doc = {"v": KEY_VERSION, "parent": parent, "step": step}
    # Bytes that are not UTF-8 count as themselves, as in BuildKit's LLB digests.
    return "sha256:" + hashlib.sha256(go_bytes(canonical_json(doc))).hexdigest()
