"""Why a build step missed the cache, as data and in plain words.

Every miss gets a :class:`~lamina.core.model.Reason` ``{"kind": ..., "message": ..., ...}``,
made here and nowhere else:

* ``no_cache``: ``--no-cache`` skipped the lookup.
* ``parent_missed``: an earlier step of the stage ran, so this one runs on a new state
  (``step`` = ``"<stage>/<index>"``, ``instruction``).
* ``pruned``: this exact step was cached once but its entry (or its result) was pruned.
* ``base_changed``: ``FROM`` resolved to another image than last time (``old``, ``new``).
* ``first_build``: nothing has ever run on this state.
* ``instruction_changed``: the last step run on this state was another instruction
  (``old``, ``new``).
* ``build_arg_changed``: a build arg in scope has another value (``name``, ``old``,
  ``new``; a missing value is None).
* ``sources_changed``: COPY/ADD sources differ (``added``, ``removed``, ``changed``,
  each change ``{"path", "what": [...]}`` with ``content``, ``mode``, ``type``,
  ``link target`` or ``owner``; ``unknown`` when they cannot be known yet; ``step``
  and ``instruction`` of the step that ran again in a stage ``COPY --from`` reads).
* ``config_changed``: the resulting image config differs (``field``, ``old``, ``new``).

A miss is explained against the cache entries the engine remembers (:class:`History`):
the most recent entry with the same parent state, preferring one with the same
instruction text. This module only reads that data; the engine fetches it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lamina.core.context.checksum import diff_manifests
from lamina.core.digest import short
from lamina.core.model import Reason


@dataclass(frozen=True)
class Prior:
    """A cache entry a miss is explained against.

    Attributes:
        instruction: its instruction as written.
        recorded: what its key was made of, as the JSON recorded with it (parsed only
            for the entry a miss is compared with: a COPY's manifest can be large).
    """

    instruction: str
    recorded: str

    def inputs(self) -> dict[str, Any]:
        """The recorded inputs."""
        doc = json.loads(self.recorded)
        return doc if isinstance(doc, dict) else {}


@dataclass(frozen=True)
class History:
    """What the cache remembers around a missed step.

    Attributes:
        pruned: this exact key had an entry that was pruned (a tombstone remains).
        on_parent: entries recorded on the same parent state, newest first (empty when
            the parent is not known, as in a dry run over a stage that runs again).
        same_instruction: entries of the same instruction text on any parent, newest
            first; only consulted for the first step of a stage, to tell a changed base.
    """

    pruned: bool = False
    on_parent: tuple[Prior, ...] = ()
    same_instruction: tuple[Prior, ...] = ()


# -- one constructor per kind -------------------------------------------------------------


def unpredictable(message: str) -> Reason:
    """A what-if step lamina cannot predict (``cached`` is None); ``message`` says why."""
    return {"kind": "unpredictable", "message": message}


def no_cache() -> Reason:
    """The reason for a step built with ``--no-cache``."""
    return {"kind": "no_cache", "message": "--no-cache: the cache was not consulted"}


def parent_missed(step: str, instruction: str) -> Reason:
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


def first_build(message: str = "no step has been cached on this state before") -> Reason:
    """The reason for a step that nothing comparable ever ran before.

    Args:
        message: the words, when an engine knows more precisely what it lacks.
    """
    return {"kind": "first_build", "message": message}


def pruned(
    message: str = "this exact step was cached before, but its cache entry was pruned",
) -> Reason:
    """The reason for a step whose cache entry was removed.

    Args:
        message: the words, when an engine knows more precisely what went.
    """
    return {"kind": "pruned", "message": message}


def result_pruned() -> Reason:
    """The reason for a step whose entry survived but whose result (a config or layer)
    was removed, so it runs again."""
    return pruned("this step was cached, but its result is no longer in the store")


def base_changed(old: str | None, new: str | None, message: str) -> Reason:
    """The reason for the first step of a stage whose ``FROM`` names another image.

    Args:
        old: the base the cached entry ran on.
        new: the base this build runs on.
        message: the words (the engines know the base by different names).
    """
    return {"kind": "base_changed", "message": message, "old": old, "new": new}


def sources_unknown(stage: str) -> Reason:
    """The reason a dry run gives for a ``COPY --from`` a stage that runs again first.

    Args:
        stage: the stage as ``--from`` names it.
    """
    return {
        "kind": "sources_changed",
        "message": f"copies from stage {stage}, which runs again first: its files are not"
        " known before it runs",
        "added": [],
        "removed": [],
        "changed": [],
        "unknown": True,
    }


def stage_sources_changed(stage: str, step: str, instruction: str) -> Reason:
    """The reason for a ``COPY --from`` a stage that ran again and made other files
    (with the same files, a content-keyed copy would still hit).

    Args:
        stage: the stage as ``--from`` names it.
        step: ``"<stage>/<index>"`` of the first step of that stage that ran again.
        instruction: that step's instruction.
    """
    return {
        "kind": "sources_changed",
        "message": f"the files copied from stage {stage} changed: its step"
        f" {_clip(instruction)!r} ran again and made other files",
        "added": [],
        "removed": [],
        "changed": [],
        "step": step,
        "instruction": instruction,
    }


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _first_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            return name
    return None


def _fmt(value: Any) -> str:
    return "unset" if value is None else json.dumps(value, ensure_ascii=False)


# -- explaining -----------------------------------------------------------------------------


def compare(prev: Mapping[str, Any], cur: Mapping[str, Any]) -> Reason:
    """The reason a step with the same parent and instruction text differs from ``prev``.

    Args:
        prev: the ``inputs`` stored with the previous cache entry.
        cur: this step's ``inputs``.

    Returns:
        The first difference, in the order instruction, sources, build args, config,
        then the step's own fields.
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


def explain_miss(inputs: Mapping[str, Any], history: History, *, first_in_stage: bool) -> Reason:
    """Why a lookup found nothing, against what the cache remembers.

    Args:
        inputs: what the step's key was made of (stored with the entry once it is built).
        history: the remembered entries around the key (see :class:`History`).
        first_in_stage: the step runs directly on the stage's base (the FROM image, or
            its ONBUILD triggers); a miss there may mean FROM resolved differently.

    Returns:
        ``pruned`` for a tombstoned key, else the difference from the newest entry on
        the same parent (one of the same instruction preferred), else ``base_changed``
        when the same first step ran on another base, else ``first_build``.
    """
    if history.pruned:
        return pruned()
    if history.on_parent:
        same = [p for p in history.on_parent if p.instruction == inputs.get("instruction")]
        return compare((same or list(history.on_parent))[0].inputs(), inputs)
    if first_in_stage:
        for prior in history.same_instruction:
            prev = prior.inputs()
            if prev.get("from") == inputs.get("from") and prev.get("base") != inputs.get("base"):
                old, new = prev.get("base"), inputs.get("base")
                new_word = (
                    short(new) if new and new.startswith("sha256:") else (new or "a new image")
                )
                old_word = short(old) if old and old.startswith("sha256:") else str(old)
                return base_changed(
                    old, new, f"{inputs.get('from')} now resolves to {new_word} (was {old_word})"
                )
    return first_build()
