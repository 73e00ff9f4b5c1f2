"""Why a build step missed the cache, as data and in plain words.

Every miss gets a reason ``{"kind": ..., "message": ..., ...}``:

* ``no_cache``: ``--no-cache`` skipped the lookup.
* ``parent_missed``: an earlier step of the stage ran, so this one runs on a new state
  (``step`` = ``"<stage>/<index>"``, ``instruction``).
* ``pruned``: this exact step was cached once but its entry was pruned.
* ``base_changed``: ``FROM`` resolved to another image than last time (``old``, ``new``).
* ``first_build``: nothing has ever run on this state.
* ``instruction_changed``: the last step run on this state was another instruction
  (``old``, ``new``).
* ``build_arg_changed``: a build arg in scope has another value (``name``, ``old``,
  ``new``; a missing value is None).
* ``sources_changed``: COPY/ADD sources differ (``added``, ``removed``, ``changed``,
  each change ``{"path", "what": [...]}`` with ``content``, ``mode``, ``type``,
  ``link target`` or ``owner``).
* ``config_changed``: the resulting image config differs (``field``, ``old``, ``new``).

A miss is explained against the most recent cache entry with the same parent state,
preferring one with the same instruction text.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from lamina.core.context.checksum import diff_manifests
from lamina.core.digest import short

KINDS = (
    "first_build",
    "parent_missed",
    "instruction_changed",
    "sources_changed",
    "build_arg_changed",
    "config_changed",
    "no_cache",
    "pruned",
    "base_changed",
)


def no_cache() -> dict[str, Any]:
    """The reason for a step built with ``--no-cache``."""
    return {"kind": "no_cache", "message": "--no-cache: the cache was not consulted"}


def parent_missed(step: str, instruction: str) -> dict[str, Any]:
    """The reason for a step after a miss in the same stage.

    Args:
        step: ``"<stage>/<index>"`` of the first step that missed.
        instruction: that step's instruction as written.
    """
    return {
        "kind": "parent_missed",
        "message": (
            f"the earlier step {_clip(instruction)!r} was not cached, "
            "so this step runs on a new state"
        ),
        "step": step,
        "instruction": instruction,
    }


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _first_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            return name
    return None


def _fmt(value: Any) -> str:
    return "unset" if value is None else json.dumps(value, ensure_ascii=False)


def compare(prev: dict[str, Any], cur: dict[str, Any]) -> dict[str, Any]:
    """The reason a step with the same parent and instruction text differs from ``prev``.

    Args:
        prev: the ``inputs`` stored with the previous cache entry.
        cur: this step's ``inputs``.

    Returns:
        A reason dict.
    """
    if prev.get("instruction") != cur.get("instruction"):
        old, new = prev.get("instruction", ""), cur.get("instruction", "")
        return {
            "kind": "instruction_changed",
            "message": f"the instruction changed from '{_clip(old)}' to '{_clip(new)}'",
            "old": old,
            "new": new,
        }
    old_src, new_src = prev.get("sources"), cur.get("sources")
    if new_src is not None and (old_src or {}).get("checksum") != new_src.get("checksum"):
        added, removed, changed = diff_manifests(
            (old_src or {}).get("manifest", {}), new_src.get("manifest", {})
        )
        parts = []
        if added:
            parts.append(f"added {', '.join(added[:3])}" + (" …" if len(added) > 3 else ""))
        if removed:
            parts.append(f"removed {', '.join(removed[:3])}" + (" …" if len(removed) > 3 else ""))
        for c in changed[:3]:
            parts.append(f"{c['path']} ({', '.join(c['what'])})")
        if len(changed) > 3:
            parts.append(f"{len(changed) - 3} more changed")
        detail = "; ".join(parts) or "their checksum differs"
        return {
            "kind": "sources_changed",
            "message": f"the copied files changed: {detail}",
            "added": added,
            "removed": removed,
            "changed": changed,
        }
    old_args, new_args = prev.get("args", {}), cur.get("args", {})
    name = _first_difference(old_args, new_args)
    if name is not None:
        old, new = old_args.get(name), new_args.get(name)
        return {
            "kind": "build_arg_changed",
            "message": f"build arg {name} changed from {_fmt(old)} to {_fmt(new)}",
            "name": name,
            "old": old,
            "new": new,
        }
    old_cfg, new_cfg = prev.get("config", {}), cur.get("config", {})
    field = _first_difference(old_cfg, new_cfg)
    if field is not None:
        return {
            "kind": "config_changed",
            "message": f"the image config's {field} changed from {_fmt(old_cfg.get(field))}"
            f" to {_fmt(new_cfg.get(field))}",
            "field": field,
            "old": old_cfg.get(field),
            "new": new_cfg.get(field),
        }
    old_step, new_step = prev.get("step", {}), cur.get("step", {})
    field = _first_difference(old_step, new_step) or "step"
    return {
        "kind": "config_changed",
        "message": f"the step's {field} changed from {_fmt(old_step.get(field))}"
        f" to {_fmt(new_step.get(field))}",
        "field": field,
        "old": old_step.get(field),
        "new": new_step.get(field),
    }


def explain_miss(
    conn: sqlite3.Connection,
    key: str,
    parent: str,
    inputs: dict[str, Any],
    *,
    first_in_stage: bool,
    parent_known: bool = True,
) -> dict[str, Any]:
    """Why a lookup of ``key`` found nothing.

    Args:
        conn: a connection on the index.
        key: the step's cache key.
        parent: the state the step runs on.
        inputs: what the key was made of (stored with the entry once it is built).
        first_in_stage: the step runs directly on the stage's base (the FROM image, or
            its ONBUILD triggers); a miss there may mean FROM resolved differently.
        parent_known: False in a dry run whose base stage will be rebuilt (its state
            is not known yet).

    Returns:
        A reason dict.
    """
    tomb = conn.execute("SELECT pruned_at FROM pruned_cache WHERE key = ?", (key,)).fetchone()
    if tomb is not None:
        return {
            "kind": "pruned",
            "message": "this exact step was cached before, but its cache entry was pruned",
        }
    rows = (
        conn.execute(
            "SELECT instruction, inputs FROM cache WHERE parent = ? ORDER BY created DESC, rowid DESC",
            (parent,),
        ).fetchall()
        if parent_known
        else []
    )
    if rows:
        same = [r for r in rows if r[0] == inputs.get("instruction")]
        prev = json.loads((same or rows)[0][1])
        return compare(prev, inputs)
    if first_in_stage:
        for row in conn.execute(
            "SELECT inputs FROM cache WHERE instruction = ? ORDER BY created DESC, rowid DESC",
            (inputs.get("instruction", ""),),
        ):
            prev = json.loads(row[0])
            if prev.get("from") == inputs.get("from") and prev.get("base") != inputs.get("base"):
                old, new = prev.get("base"), inputs.get("base")
                new_word = (
                    short(new) if new and new.startswith("sha256:") else (new or "a new image")
                )
                old_word = short(old) if old and old.startswith("sha256:") else str(old)
                return {
                    "kind": "base_changed",
                    "message": f"{inputs.get('from')} now resolves to {new_word} (was {old_word})",
                    "old": old,
                    "new": new,
                }
    return {
        "kind": "first_build",
        "message": "no step has been cached on this state before",
    }
