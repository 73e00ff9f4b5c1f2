"""Why a build step missed the cache, as data and in plain words.

Every miss gets a :class:`~lamina.core.model.Reason` ``{"kind": ..., "message": ..., ...}``,
made here and nowhere else:

* ``no_cache``: ``--no-cache`` skipped the lookup.
* ``parent_missed``: an earlier step of the stage ran, so this one runs on a new state
  (``step`` = ``"<stage>/<index>"``, ``instruction``).
* ``pruned``: this exact step was cached once but its entry (or its result) was pruned.
* ``base_changed``: ``FROM`` resolved to another image than last time (``old``, ``new``).
* ``first_build``: nothing ran at this step of this stage before.
* ``instruction_changed``: the last step run here on this state was another instruction
  (``old``, ``new``; the message shows where they differ).
* ``build_arg_changed``: a build arg in scope has another value (``name``, ``old``,
  ``new``; a missing value is None).
* ``sources_changed``: COPY/ADD sources differ (``added``, ``removed``, ``changed``,
  each change ``{"path", "what": [...]}`` with ``content``, ``mode``, ``type``,
  ``link target`` or ``owner``; ``unknown`` when they cannot be known yet; ``step``
  and ``instruction`` of the step that ran again in a stage ``COPY --from`` reads).
* ``config_changed``: the resulting image config differs (``field``, ``old``, ``new``).

A miss is explained against the cache entries the engine remembers (:class:`History`)
at the same step of the same stage: the most recent entry with the same parent state,
preferring one with the same instruction text. Another stage's steps never explain it,
even when they ran on the same state. This module only reads that data; the engine
fetches it.
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
        on_parent: entries recorded on the same parent state at the same step of the
            same stage, newest first (empty when the parent is not known, as in a dry
            run over a stage that runs again).
        same_instruction: entries of the same instruction text at that step on any
            parent, newest first; only consulted for the first step of a stage, to tell
            a changed base.
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


def first_build(
    message: str = "first build: nothing was cached at this step of this stage before",
) -> Reason:
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


def git_unfetched(ref: str) -> Reason:
    """The reason a dry run gives for ``ADD <git ref>``, which lamina does not fetch.

    Args:
        ref: the git reference as the ADD names it (variables expanded).
    """
    return {
        "kind": "sources_changed",
        "message": f"adds the git repository {ref}, which lamina does not fetch: its files"
        " are not known",
        "added": [],
        "removed": [],
        "changed": [],
        "unknown": True,
    }


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


def _window(old: str, new: str, width: int = 60, before: int = 24) -> tuple[str, str]:
    """The two texts as a reader can tell them apart: whole when both are short, else
    both cut to the same window, which starts a little before their first difference
    (so an edit at the end of a long RUN shows, never two identical clipped strings).
    Line breaks show as ``↵``.
    """
    if len(old) <= width and len(new) <= width:
        return _visible(old), _visible(new)
    first = next(
        (i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b),
        min(len(old), len(new)),
    )
    start = max(0, first - before)
    if start:
        # Begin at the start of a word, a little earlier rather than mid-word.
        space = old.rfind(" ", max(0, start - 12), start)
        start = space + 1 if space >= 0 else start
    return _cut(old, start, width), _cut(new, start, width)


def _cut(text: str, start: int, width: int) -> str:
    stop = min(len(text), start + width)
    return ("…" if start else "") + _visible(text[start:stop]) + ("…" if stop < len(text) else "")


def _visible(text: str) -> str:
    return text.replace("\r\n", "↵").replace("\n", "↵")


def instruction_changed(old: str, new: str) -> Reason:
    """The reason for a step whose instruction text differs from the one cached here.

    Args:
        old: the cached step's instruction as written.
        new: this step's.
    """
    shown_old, shown_new = _window(old, new)
    hint = " (only whitespace differs)" if old.split() == new.split() else ""
    return {
        "kind": "instruction_changed",
        "message": f"the instruction changed from '{shown_old}' to '{shown_new}'{hint}",
        "old": old,
        "new": new,
    }


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
        return instruction_changed(prev.get("instruction", ""), cur.get("instruction", ""))
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


# -- BuildKit's decisions, and where the two builders part --------------------------------

# Config fields that only describe the image: BuildKit's steps never read them, so a
# change there misses under the classic builder and hits under BuildKit.
IMAGE_SETTINGS = frozenset(
    {
        "Labels",
        "ExposedPorts",
        "Cmd",
        "Entrypoint",
        "Healthcheck",
        "StopSignal",
        "Volumes",
        "OnBuild",
    }
)
# Instructions BuildKit makes no step of.
SETTING_INSTRUCTIONS = frozenset(
    {
        "ENV", "ARG", "LABEL", "USER", "EXPOSE", "CMD", "ENTRYPOINT", "HEALTHCHECK",
        "SHELL", "STOPSIGNAL", "ONBUILD", "VOLUME", "MAINTAINER",
    }
)  # fmt: skip
_FIELD_INSTRUCTION = {
    "Labels": "LABEL",
    "ExposedPorts": "EXPOSE",
    "Cmd": "CMD",
    "Entrypoint": "ENTRYPOINT",
    "Healthcheck": "HEALTHCHECK",
    "StopSignal": "STOPSIGNAL",
    "Volumes": "VOLUME",
    "OnBuild": "ONBUILD",
    "Env": "ENV",
    "User": "USER",
    "WorkingDir": "WORKDIR",
    "Shell": "SHELL",
}
STALE_REUSE_ISSUE = "moby/buildkit#7176"


def stage_skipped(stage: str) -> Reason:
    """The note on the FROM of a stage BuildKit does not build.

    Args:
        stage: the stage's name (or number).
    """
    return {
        "kind": "stage_skipped",
        "message": f"the stage `{stage}` is not needed by the target and was skipped",
        "stage": stage,
    }


def merged(step: str, instruction: str) -> Reason:
    """The note on a step identical to one of another stage of the same build.

    Args:
        step: ``"<stage>/<index>"`` of the step that ran (or hit) first.
        instruction: that step's instruction.
    """
    return {
        "kind": "merged",
        "message": "this step ran once for both stages (the same step on the same"
        f" state as {step}, so one result serves both)",
        "step": step,
        "instruction": instruction,
    }


def remote_cache(ref: str) -> Reason:
    """The note on a step that hit in a cache imported with ``--cache-from``.

    Args:
        ref: the ref as given to ``--cache-from``.
    """
    return {
        "kind": "remote_cache",
        "message": f"from the remote cache {ref}",
        "ref": ref,
    }


def no_cache_filter(stage: str) -> Reason:
    """The reason for a step of a stage named by ``--no-cache-filter``."""
    return {
        "kind": "no_cache",
        "message": f"--no-cache-filter {stage}: the cache was not consulted for this stage",
        "stage": stage,
    }


def _changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return [f for f in sorted(set(old) | set(new)) if old.get(f) != new.get(f)]


def settings_not_keyed(
    keyword: str, old: Mapping[str, Any], new: Mapping[str, Any]
) -> Reason | None:
    """The note on a BuildKit hit whose image settings changed since its entry was made
    (the classic builder, which compares the whole config, would have missed).

    Args:
        keyword: the step's instruction (``COPY``, ``RUN``, ...).
        old: the config recorded with the entry (``compared_config``).
        new: this build's config at the step.

    Returns:
        None when nothing changed.
    """
    fields = _changed_fields(old, new)
    if not fields:
        return None
    names = sorted({_FIELD_INSTRUCTION.get(f, f) for f in fields})
    what = " and ".join(names)
    return {
        "kind": "settings_not_keyed",
        "message": f"hit: the {what} above changed, but under BuildKit image settings"
        f" don't enter a {keyword}'s key",
        "field": fields[0],
        "old": old.get(fields[0]),
        "new": new.get(fields[0]),
        "builder": "classic",
    }


def other_builder(builder: str, cached: bool | None, message: str) -> Reason:
    """What the other builder would have decided at a step.

    Args:
        builder: the other builder (``classic`` or ``buildkit``).
        cached: its decision: True hit, False miss, None no step at all.
        message: why, in plain words.
    """
    return {"kind": "other_builder", "message": message, "builder": builder, "cached": cached}


def contrast(
    builder: str,
    keyword: str,
    cached: bool | None,
    reason: Reason | None,
    first_miss_keyword: str | None = None,
) -> Reason | None:
    """What the other builder would have decided, where the step alone tells it.

    Args:
        builder: the builder this build followed.
        keyword: the step's instruction.
        cached: this build's decision (None: no cached step).
        reason: its reason or note.
        first_miss_keyword: classic: the instruction of the stage's first miss, when
            this step missed because of it and that miss was a change of the instruction
            or its config (a first build misses under both builders).

    Returns:
        None when the step alone does not tell (or the builders agree).
    """
    kind = reason.get("kind") if reason else None
    if builder == "buildkit":
        if kind == "stage_skipped":
            return other_builder(
                "classic", False, "the classic builder builds every stage up to the target"
            )
        if kind == "merged":
            return other_builder(
                "classic",
                True,
                "the classic builder runs the step in each stage; the second one hits",
            )
        if kind == "settings_not_keyed" and reason is not None:
            return other_builder(
                "classic",
                False,
                f"the classic builder compares the whole image config: {reason.get('field')}"
                " changed, so it misses here and at every later step of the stage",
            )
        if kind == "stale_reuse":
            return None
        if cached is None and keyword in SETTING_INSTRUCTIONS:
            return other_builder(
                "classic",
                None,
                f"the classic builder makes a cached step of {keyword}: a change here would"
                " make every later step of the stage miss",
            )
        return None
    if keyword in SETTING_INSTRUCTIONS:
        # Whatever the classic builder decided, BuildKit has no step here to decide.
        return other_builder(
            "buildkit", None, f"BuildKit makes no step of {keyword}: it only sets the image config"
        )
    if cached is False and kind == "config_changed" and reason is not None:
        field = str(reason.get("field") or "")
        if field in IMAGE_SETTINGS:
            return other_builder(
                "buildkit",
                True,
                f"BuildKit would not miss for this: {field} is an image setting, and image"
                f" settings don't enter a {keyword}'s key",
            )
    if cached is False and kind == "parent_missed" and first_miss_keyword in (
        "LABEL", "EXPOSE", "CMD", "ENTRYPOINT", "HEALTHCHECK", "STOPSIGNAL", "MAINTAINER"
    ):  # fmt: skip
        return other_builder(
            "buildkit",
            True,
            f"BuildKit would not miss for this: it makes no step of {first_miss_keyword},"
            " so a change there does not cascade",
        )
    return None


def stale_reuse(base: Reason, stale: list[str]) -> Reason:
    """A sources change BuildKit's context transfer would have missed.

    BuildKit compares its copy of the context with the client's by size, mtime and
    mode and sends only what differs, and an existing directory's new metadata never
    reaches its checksum: a rewrite with the same size and mtime, or a changed
    directory mode, leaves the old checksum, so BuildKit reuses the old layer.
    lamina decides by content.

    Args:
        base: the ``sources_changed`` reason.
        stale: the paths BuildKit would not have seen change.
    """
    shown = ", ".join(stale[:3]) + (" …" if len(stale) > 3 else "")
    out: Reason = dict(base)  # type: ignore[assignment]
    out["kind"] = "stale_reuse"
    out["stale"] = list(stale)
    out["builder"] = "buildkit"
    out["message"] = (
        f"{base['message']}; decided by content: BuildKit would have reused the old layer"
        f" here, since its context transfer does not see {shown} change ({STALE_REUSE_ISSUE})"
    )
    return out


def stale_paths(prev: Mapping[str, Any], cur: Mapping[str, Any], reason: Reason) -> list[str]:
    """The changed paths BuildKit's context transfer would not have sent again.

    Args:
        prev: the inputs of the entry the miss is explained against.
        cur: this step's inputs.
        reason: the ``sources_changed`` reason ``compare`` gave.
    """
    old_src, new_src = prev.get("sources") or {}, cur.get("sources") or {}
    old_m, new_m = old_src.get("manifest", {}), new_src.get("manifest", {})
    old_t, new_t = old_src.get("mtimes", {}), new_src.get("mtimes", {})
    out = []
    for change in reason.get("changed", []):
        path, what = change["path"], change["what"]
        old, new = old_m.get(path), new_m.get(path)
        if not old or not new:
            continue
        if (old[0] == "dir" and new[0] == "dir" and set(what) <= {"mode", "owner"}) or (
            "content" in what
            and old[0] == new[0] == "file"
            and old[2] == new[2]
            and path in old_t
            and old_t.get(path) == new_t.get(path)
        ):
            out.append(path)
    return out
