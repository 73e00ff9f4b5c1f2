"""The rules: each reads the :class:`~lamina.core.advice.facts.Facts` and returns its
advice, with a rewrite where one is safe.

* ``apt-update-alone``: a package-index update in a RUN of its own;
* ``group-runs``: consecutive RUNs that can be one layer without losing cache value;
* ``volatile-copy-first``: a COPY whose sources change often, before slow steps; with a
  dependency manifest in the context, the rewrite copies it first;
* ``arg-too-early``: an ARG whose changing value busts steps that do not use it;
* ``wasted-space``: files a layer adds and a later one removes or overwrites;
* ``missing-dockerignore``: volatile or heavy paths sent and copied by ``COPY .``;
* ``cache-mount`` (BuildKit): an install that could keep its downloads in a cache mount.

A rule that rests on the build history stays silent without one, except where the
Dockerfile alone shows the problem; the rules proved by replay say so when the history
is too short.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import replace

from lamina.core.advice.commands import (
    CLEANUP,
    Command,
    chain,
    family,
    has_cleanup,
    installs_packages,
    is_index_update,
    joinable,
    split_commands,
)
from lamina.core.advice.ecosystems import NPM, PIP, PNPM, POETRY, UV, YARN, install_of, manifests_in
from lamina.core.advice.facts import MIN_HISTORY, Facts
from lamina.core.advice.findings import Advice, Saving
from lamina.core.advice.replay import normalized, select
from lamina.core.advice.rewrite import Edit, instruction_text, lines_of, source_lines, unified_diff
from lamina.core.dockerfile.instructions import Instruction, Stage, sources_and_dest
from lamina.core.errors import LaminaError

# A step that takes at least this long (median, when it runs) is worth not rerunning.
SLOW_SECONDS = 1.0
# A COPY whose sources changed in at least this many rebuilds is volatile.
MIN_CHANGES = 2
# Files smaller than this wasted in an image are not worth a finding.
MIN_WASTE = 1024
LAYER_KEYWORDS = frozenset({"RUN", "COPY", "ADD"})
# Instructions that may stand between a COPY and the install moved above it.
_SETTINGS = frozenset({"ENV", "ARG", "LABEL", "EXPOSE", "USER", "STOPSIGNAL", "HEALTHCHECK"})
# Programs a moved install RUN may also call: they read nothing the COPY brings.
_HARMLESS = frozenset({"rm", "echo", "mkdir", "true", "sleep", "printf", "ln", "touch"})


def _shell_text(ins: Instruction) -> str | None:
    """A RUN's shell-form text, None for exec form or a heredoc."""
    if ins.keyword != "RUN" or ins.json_form or ins.heredocs:
        return None
    return " ".join(ins.args)


def _commands(ins: Instruction) -> list[Command]:
    text = _shell_text(ins)
    return (split_commands(text) or []) if text is not None else []


def _clip(text: str, width: int = 50) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _layers(stage: Stage) -> int:
    return sum(1 for ins in stage.instructions if ins.keyword in LAYER_KEYWORDS)


def _run_line(flags: str, texts: list[str]) -> tuple[str, ...]:
    return lines_of("RUN " + (flags + " " if flags else "") + chain(texts))


def _between(lines: list[str], start: int, end: int) -> list[str]:
    """Lines ``start..end`` (1-based, inclusive; empty when end < start)."""
    return lines[start - 1 : end] if end >= start else []


def _ending(lines: list[str]) -> list[str]:
    """Lines with the last one given a newline, for moving them within a file."""
    out = list(lines)
    if out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    return out


def _history_note(facts: Facts, ins: Instruction) -> str:
    """How often the recorded builds ran ``ins``."""
    had = facts.appearances(ins)
    ran = facts.executions(ins)
    if not had:
        return "no recorded build of this Dockerfile ran this step yet"
    seconds = facts.duration(ins.original)
    each = f" ({seconds:.1f} s each)" if seconds else ""
    return f"ran in {len(ran)} of {len(had)} recorded builds{each}"


def _advice(
    facts: Facts,
    rule: str,
    ins: Instruction,
    message: str,
    evidence: list[str],
    *,
    last: Instruction | None = None,
    edits: list[Edit] | None = None,
    saving: Saving | None = None,
) -> Advice:
    rewritten = diff = None
    if edits:
        rewritten, diff = facts.diff(edits)
    end = (last or ins).end_line
    return Advice(
        rule,
        ins.line,
        tuple(range(ins.line, end + 1)),
        message,
        tuple(evidence),
        saving or Saving(),
        diff or None,
        rewritten=rewritten,
        edits=tuple(edits or ()),
    )


def _proved(
    facts: Facts,
    advice: Advice,
    edits: list[Edit],
    focus_now: list[str],
    focus_after: list[str],
    *,
    exclude: Callable[[str], bool] | None = None,
    extra: Saving | None = None,
    joined: list[Instruction] | None = None,
) -> Advice:
    """``advice`` with the replay's saving, proof and the evidence it gives (``joined``:
    RUNs the rewrite makes one, timed as the sum of their parts)."""
    timed = {}
    if joined:
        timed["RUN " + chain([_shell_text(i) or "" for i in joined])] = sum(
            facts.duration(i.original) or 0.0 for i in joined
        )
    saving, proof, note = facts.prove(edits, focus_now, focus_after, exclude=exclude, timed=timed)
    if extra is not None:
        saving = replace(
            saving,
            bytes=extra.bytes,
            layers_now=extra.layers_now,
            layers_after=extra.layers_after,
        )
    evidence = list(advice.evidence)
    if note is not None:
        evidence.append(note)
    elif proof is not None:
        names = ", ".join(_clip(f, 40) for f in focus_now)
        seconds = ""
        if saving.seconds_now is not None and saving.seconds_after is not None:
            seconds = f"; {saving.seconds_now:.1f} s of steps → {saving.seconds_after:.1f} s"
        evidence.append(
            f"replayed the last {saving.builds} builds: {names} ran {saving.reruns_now} times"
            f" as it is, {saving.reruns_after} rewritten ({saving.executions_now} → "
            f"{saving.executions_after} step executions{seconds})"
        )
        if proof.compared:
            evidence.append(
                f"the cache model reproduces {proof.agreed} of the {proof.compared} recorded"
                " builds of this Dockerfile"
            )
    return replace(advice, saving=saving, proof=proof, evidence=tuple(evidence))


# -- apt-update-alone -------------------------------------------------------------------


def apt_update_alone(facts: Facts) -> list[Advice]:
    """A package-index update in a RUN of its own: once cached it never refreshes, and
    the installs below read the cached lists. Rewrite: one RUN with the update, the
    install and the cleanup."""
    out = []
    lines = source_lines(facts.text)
    for stage in facts.dockerfile.stages:
        instructions = list(stage.instructions)
        for k, ins in enumerate(instructions):
            commands = _commands(ins)
            if not commands or not all(is_index_update(c) for c in commands):
                continue
            fam = family(commands[0]) or ""
            update = _shell_text(ins) or ""
            install = _install_after(instructions, k, fam)
            evidence = [f"line {ins.line}: RUN {_clip(update)}"]
            made = facts.executions(ins)
            had = facts.appearances(ins)
            if made:
                last_build, _step = made[-1]
                reused = sum(1 for b, _ in had if b.id > last_build.id)
                evidence.append(
                    f"its package lists were fetched by build #{last_build.id} and reused by"
                    f" {reused} build{'s' if reused != 1 else ''} since"
                )
            edits: list[Edit] = []
            last = None
            if install is not None and not ins.flags and not install.flags:
                text = _shell_text(install) or ""
                if joinable(text) and joinable(update):
                    texts = [update, text]
                    if fam in CLEANUP and not has_cleanup(text, fam):
                        texts.append(CLEANUP[fam])
                    kept = _between(lines, ins.end_line + 1, install.line - 1)
                    edits = [Edit(ins.line, install.end_line, (*kept, *_run_line("", texts)))]
                    last = install
            target = (
                f"the install on line {install.line}"
                if install is not None
                else "any install below"
            )
            message = (
                f"`{_clip(update, 30)}` runs in a RUN of its own: once cached it is never"
                f" refreshed, and {target} reads old package lists"
            )
            stage_layers = _layers(stage)
            saving = Saving(
                layers_now=stage_layers, layers_after=stage_layers - 1 if edits else None
            )
            out.append(
                _advice(
                    facts,
                    "apt-update-alone",
                    ins,
                    message,
                    evidence,
                    last=last,
                    edits=edits,
                    saving=saving,
                )
            )
    return out


def _install_after(instructions: list[Instruction], k: int, fam: str) -> Instruction | None:
    """The first RUN after ``k`` that installs with ``fam``, if no RUN between uses it."""
    for ins in instructions[k + 1 :]:
        commands = _commands(ins)
        if any(installs_packages(c) and family(c) == fam for c in commands):
            return ins
        if any(family(c) == fam for c in commands):
            return None
    return None


# -- group-runs --------------------------------------------------------------------------


def _groupable(ins: Instruction) -> bool:
    text = _shell_text(ins)
    if text is None or ins.flags or not joinable(text):
        return False
    commands = split_commands(text) or []
    return not (commands and all(is_index_update(c) for c in commands))


def _volatile_after(facts: Facts, before: Instruction, ins: Instruction) -> bool:
    """Whether a recorded build ran ``ins`` while the RUN before it hit."""
    wanted_a, wanted_b = normalized(before.original), normalized(ins.original)
    for build in facts.builds:
        a = next((s for s in build.steps if normalized(s.instruction) == wanted_a), None)
        b = next((s for s in build.steps if normalized(s.instruction) == wanted_b), None)
        if a is not None and b is not None and a.cached is True and b.cached is False:
            return True
    return False


def group_runs(facts: Facts) -> list[Advice]:
    """Consecutive RUNs that can be one layer without losing cache value: a slow RUN
    (from the recorded durations) keeps a layer of its own, so that editing a cheap one
    next to it never reruns it, and a group is cut where a recorded build reran a RUN
    while the slow part before it hit."""
    out = []
    lines = source_lines(facts.text)
    for stage in facts.dockerfile.stages:
        groups: list[list[Instruction]] = []
        current: list[Instruction] = []
        for ins in stage.instructions:
            if _groupable(ins) and (facts.duration(ins.original) or 0.0) < SLOW_SECONDS:
                if current:
                    slow = sum(facts.duration(i.original) or 0.0 for i in current)
                    if slow >= SLOW_SECONDS and _volatile_after(facts, current[-1], ins):
                        groups.append(current)
                        current = []
                current.append(ins)
            else:
                groups.append(current)
                current = []
        groups.append(current)
        for group in groups:
            if len(group) < 2:
                continue
            first, last = group[0], group[-1]
            texts = [_shell_text(i) or "" for i in group]
            spans = {n for i in group for n in range(i.line, i.end_line + 1)}
            kept = [
                line
                for n, line in enumerate(
                    _between(lines, first.line, last.end_line), start=first.line
                )
                if n not in spans
            ]
            merged = _run_line("", texts)
            edits = [Edit(first.line, last.end_line, (*_ending(kept), *merged))]
            layers_now = _layers(stage)
            layers_after = layers_now - len(group) + 1
            evidence = [
                f"lines {first.line}-{last.end_line}: {len(group)} RUNs in a row, each a layer",
                f"stage {stage.name or facts.dockerfile.stages.index(stage)}: {layers_now} layers;"
                f" with these as one RUN, {layers_after}",
            ]
            if facts.builds:
                evidence.append("no recorded build ran one of them on its own after a slow one hit")
            message = (
                f"{len(group)} consecutive RUNs make {len(group)} layers: as one RUN they make"
                " one, and no slow step reruns for it"
            )
            advice = _advice(facts, "group-runs", first, message, evidence, last=last, edits=edits)
            extra = Saving(layers_now=layers_now, layers_after=layers_after)
            merged_text = "RUN " + chain(texts)
            out.append(
                _proved(
                    facts,
                    advice,
                    edits,
                    [i.original for i in group],
                    [merged_text],
                    extra=extra,
                    joined=group,
                )
                if facts.builds
                else replace(advice, saving=extra)
            )
    return out


# -- volatile-copy-first -----------------------------------------------------------------


def _workdirs(stage: Stage) -> list[str]:
    """The working directory before each instruction of the stage (``/`` at its start,
    since the base's is unknown)."""
    cwd = "/"
    out = []
    for ins in stage.instructions:
        out.append(cwd)
        if ins.keyword == "WORKDIR" and ins.args:
            cwd = posixpath.normpath(posixpath.join(cwd, ins.args[0]))
    return out


def _context_copy(ins: Instruction) -> tuple[str, str] | None:
    """``(source, dest)`` of a COPY/ADD of one context path without variables."""
    if ins.keyword not in ("COPY", "ADD") or ins.flag("from") is not None or ins.heredocs:
        return None
    try:
        srcs, contents, dest = sources_and_dest(ins)
    except LaminaError:
        return None
    if len(srcs) != 1 or contents or "$" in srcs[0] or "$" in dest or "://" in srcs[0]:
        return None
    if any(c in srcs[0] for c in "*?["):
        return None
    src = "/".join(p for p in srcs[0].split("/") if p not in ("", "."))
    return src, dest


def _names_below(facts: Facts, root: str) -> set[str]:
    prefix = root + "/" if root else ""
    return {p[len(prefix) :] for p in facts.context if p.startswith(prefix) and p != root}


def _movable(commands: list[Command], facts: Facts, cwd: str, names: set[str]) -> bool:
    """Whether every command of a RUN reads nothing but manifests (or nothing at all)."""
    if not commands:
        return False
    for c in commands:
        install = install_of(c)
        if install is not None:
            if install.build or manifests_in(install, names, cwd) is None:
                return False
            continue
        if family(c) is not None:
            continue
        if c.program in _HARMLESS and all(w.startswith(("-", "/", "~", "$")) for w in c.words[1:]):
            continue
        return False
    return True


def _install_cwd(commands: list[Command], until: Command, cwd: str) -> str:
    for c in commands:
        if c is until:
            break
        if c.program == "cd" and len(c.words) == 2:
            cwd = posixpath.normpath(posixpath.join(cwd, c.words[1]))
    return cwd


def volatile_copy_first(facts: Facts) -> list[Advice]:
    """A COPY whose sources change often placed before slow steps; with a dependency
    manifest in the context, copy it first, install, then copy the rest."""
    out = []
    for number, stage in enumerate(facts.dockerfile.stages):
        instructions = list(stage.instructions)
        cwds = _workdirs(stage)
        for k, ins in enumerate(instructions):
            copied = _context_copy(ins)
            if copied is None:
                continue
            src, dest = copied
            if src and not any(p.startswith(src + "/") for p in facts.context):
                continue  # a single file: nothing else to copy later
            dest_abs = posixpath.normpath(posixpath.join(cwds[k], dest))
            plan = _manifest_plan(facts, instructions, k, cwds, src, dest, dest_abs)
            changes, paths = _source_changes(facts, ins, number, k + 1, src)
            slow = [
                later
                for later in instructions[k + 1 :]
                if later.keyword == "RUN" and (facts.duration(later.original) or 0) >= SLOW_SECONDS
            ]
            volatile = changes >= MIN_CHANGES and bool(slow)
            # Without the history to judge, the Dockerfile alone shows the pattern.
            unjudged = plan is not None and len(facts.builds) < MIN_HISTORY
            if not volatile and not unjudged:
                continue
            evidence = []
            if facts.builds:
                top = ", ".join(f"{p} {n}×" for p, n in paths[:3])
                evidence.append(
                    f"its sources changed in {changes} of {max(0, len(facts.builds) - 1)} rebuilds"
                    + (f" ({top})" if top else "")
                )
                for later in slow[:3]:
                    evidence.append(
                        f"line {later.line}: RUN {_clip(' '.join(later.args), 40)} {_history_note(facts, later)}"
                    )
            if not volatile:
                evidence.append(
                    "every change to a copied file reruns the install after it"
                    + ("" if facts.builds else " (no build recorded yet)")
                )
            if plan is None:
                message = (
                    f"COPY {src or '.'} changes often and the slow steps after it rerun each"
                    " time: copy what they need first, the rest after them"
                )
                out.append(_advice(facts, "volatile-copy-first", ins, message, evidence))
                continue
            edits, focus, focus_after, manifests, last = plan
            shown = " ".join(manifests)
            message = (
                f"COPY {src or '.'} before `{_clip(focus[0], 40)}`: copy {shown} first and"
                " install, then the rest, so an edit of the sources reruns no install"
            )
            advice = _advice(
                facts, "volatile-copy-first", ins, message, evidence, last=last, edits=edits
            )
            out.append(_proved(facts, advice, edits, focus, focus_after))
    return out


def _manifest_plan(
    facts: Facts,
    instructions: list[Instruction],
    k: int,
    cwds: list[str],
    src: str,
    dest: str,
    dest_abs: str,
) -> tuple[list[Edit], list[str], list[str], list[str], Instruction] | None:
    """The rewrite copying the manifests first: edits, the focus (today, rewritten),
    the manifests, the last instruction it touches."""
    lines = source_lines(facts.text)
    copy_ins = instructions[k]
    copy_lines = _ending(instruction_text(lines, copy_ins))
    flags = " ".join(
        f"--{name}={value}" for name in ("chown", "chmod") for value in copy_ins.flags.get(name, ())
    )
    # COPY even for an ADD: a manifest is never an archive to extract.
    keyword = "COPY"
    for j in range(k + 1, len(instructions)):
        later = instructions[j]
        between = instructions[k + 1 : j]
        commands = _commands(later)
        for command in commands:
            install = install_of(command)
            if install is None:
                continue
            cwd = _install_cwd(commands, command, cwds[j])
            rel = posixpath.relpath(cwd, dest_abs)
            if rel.startswith(".."):
                return None
            root = posixpath.normpath(posixpath.join(src, rel)) if rel != "." else src
            root = "" if root == "." else root
            names = _names_below(facts, root)
            manifests = manifests_in(install, names, cwd)
            if manifests is None:
                return None
            if not manifests:
                continue  # reads nothing the COPY brings: not the install to move
            sources = [posixpath.join(root, m) if root else m for m in manifests]
            by_dir: dict[str, list[str]] = {}
            for m, s in zip(manifests, sources, strict=True):
                target = posixpath.join(
                    dest if rel == "." else posixpath.join(dest, rel), posixpath.dirname(m)
                )
                target = target.rstrip("/") + "/" if target not in (".", "./") else "./"
                by_dir.setdefault(target, []).append(s)
            manifest_copies = [
                f"{keyword} {flags + ' ' if flags else ''}{' '.join(s)} {d}"
                for d, s in by_dir.items()
            ]
            manifest_lines = tuple(line + "\n" for line in manifest_copies)
            if install.build:
                prefetch = install.ecosystem.prefetch or ""
                new = (*manifest_lines, *lines_of(f"RUN {prefetch}"), *copy_lines)
                edits = [Edit(copy_ins.line, copy_ins.end_line, new)]
                return edits, [later.original], [f"RUN {prefetch}"], sources, copy_ins
            for offset, b in enumerate(between, start=k + 1):
                if b.keyword in _SETTINGS:
                    continue
                # A RUN reading nothing the COPY brings may move up with the install.
                if b.keyword != "RUN" or not _movable(_commands(b), facts, cwds[offset], names):
                    return None
            if not _movable(commands, facts, cwds[j], names):
                return None
            moved = _ending(instruction_text(lines, later))
            kept = _ending(_between(lines, copy_ins.end_line + 1, later.line - 1))
            new = (*manifest_lines, *kept, *moved, *copy_lines)
            edits = [Edit(copy_ins.line, later.end_line, new)]
            return edits, [later.original], [later.original], sources, later
    return None


def _source_changes(
    facts: Facts, ins: Instruction, stage: int, index: int, src: str
) -> tuple[int, list[tuple[str, int]]]:
    """In how many rebuilds the COPY's sources changed, and the paths that changed
    most, from the per-path records (else from the recorded reasons)."""
    counts: dict[str, int] = {}
    changes = 0
    if len(facts.replayable) >= 2:
        previous = None
        for replayed in facts.replayable:
            current = select(replayed.paths, src)
            if previous is not None and current != previous:
                changes += 1
                for p in set(current) | set(previous):
                    if current.get(p) != previous.get(p) and not p.endswith("/"):
                        counts[p] = counts.get(p, 0) + 1
            previous = current
    else:
        wanted = normalized(ins.original)
        for build in facts.builds:
            for s in build.steps:
                if normalized(s.instruction) != wanted or s.reason is None:
                    continue
                if s.reason.get("kind") in ("sources_changed", "stale_reuse"):
                    changes += 1
                    for c in s.reason.get("changed", []):
                        counts[c["path"]] = counts.get(c["path"], 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return changes, ranked


# -- arg-too-early -----------------------------------------------------------------------


def _mentions(ins: Instruction, name: str) -> bool:
    return (
        re.search(r"\$(\{" + re.escape(name) + r"\b|" + re.escape(name) + r"\b)", ins.original)
        is not None
    )


def _insertion_line(lines: list[str], ins: Instruction) -> int:
    """The line before which to insert above ``ins``, keeping its comments above it."""
    line = ins.line
    while line > 1 and lines[line - 2].lstrip().startswith("#"):
        line -= 1
    return line


def arg_too_early(facts: Facts) -> list[Advice]:
    """An ARG whose value changes between builds and busts RUNs that never mention it:
    declare it just before its first use."""
    out = []
    lines = source_lines(facts.text)
    for stage in facts.dockerfile.stages:
        instructions = list(stage.instructions)
        for k, ins in enumerate(instructions):
            if ins.keyword != "ARG" or len(ins.env_pairs) != 1:
                continue
            name = ins.env_pairs[0][0]
            changed = _arg_changes(facts, name)
            if not changed:
                continue
            use = next(
                (j for j in range(k + 1, len(instructions)) if _mentions(instructions[j], name)),
                None,
            )
            until = instructions[k + 1 : use] if use is not None else instructions[k + 1 :]
            busted = [i for i in until if i.keyword == "RUN"]
            if not busted:
                continue
            evidence = [
                f"{name} changed in {len(changed)} recorded builds ({', '.join(f'#{b}' for b in changed[:5])})",
                f"{len(busted)} RUN{'s' if len(busted) != 1 else ''} between line {ins.line} and"
                f" {'its first use' if use is not None else 'the end of the stage'} never mention it"
                f" and rerun each time: {', '.join(f'line {b.line}' for b in busted[:4])}",
            ]
            missed = _arg_misses(facts, name)
            if missed:
                evidence.append(f"recorded: {missed}")
            if use is None:
                message = (
                    f"ARG {name} changes between builds and busts {len(busted)} RUNs that never"
                    f" mention it; no instruction uses it (a script may: declare it just before"
                    " that step)"
                )
                out.append(_advice(facts, "arg-too-early", ins, message, evidence))
                continue
            target = instructions[use]
            at = _insertion_line(lines, target)
            arg_lines = _ending(instruction_text(lines, ins))
            kept = _ending(_between(lines, ins.end_line + 1, at - 1))
            edits = [Edit(ins.line, at - 1, (*kept, *arg_lines))]
            message = (
                f"ARG {name} is declared on line {ins.line} but first used on line"
                f" {target.line}: its changes bust {len(busted)} RUNs in between; declare it"
                " just before its first use"
            )
            advice = _advice(
                facts, "arg-too-early", ins, message, evidence, last=target, edits=edits
            )
            focus = [b.original for b in busted]
            out.append(_proved(facts, advice, edits, focus, focus))
    return out


def _arg_changes(facts: Facts, name: str) -> list[int]:
    """The recorded builds where the value of ``name`` differs from the build before."""
    out = []
    previous: dict[str, str] | None = None
    for build in facts.builds:
        if previous is not None and previous.get(name) != build.build_args.get(name):
            out.append(build.id)
        previous = dict(build.build_args)
    return out


def _arg_misses(facts: Facts, name: str) -> str:
    for build in reversed(facts.builds):
        for s in build.steps:
            r = s.reason
            if (
                s.cached is False
                and r is not None
                and r.get("kind") == "build_arg_changed"
                and r.get("name") == name
            ):
                return f"build #{build.id}: {_clip(s.instruction, 40)} missed: {r['message']}"
    return ""


# -- wasted-space ------------------------------------------------------------------------


def wasted_space(facts: Facts) -> list[Advice]:
    """Files one step adds that a later step of the stage removes or overwrites: they
    stay in the image, in the earlier layer. Rewrite: the RUNs as one."""
    out: list[Advice] = []
    lines = source_lines(facts.text)
    stages = facts.dockerfile.stages
    if not stages:
        return out
    stage = stages[-1]
    instructions = list(stage.instructions)
    found: set[tuple[int, int]] = set()
    if facts.layers:
        by_line = {i.line: i for i in instructions}
        layered = [(i, facts.layers[i.line]) for i in instructions if i.line in facts.layers]
        for a, (first, added) in enumerate(layered):
            files = {c.path: c.size for c in added if c.change != "deleted" and c.kind != "dir"}
            if not files:
                continue
            for second, later in layered[a + 1 :]:
                hit: dict[str, int] = {}
                for c in later:
                    if c.change == "deleted":
                        for p, size in files.items():
                            if p == c.path or p.startswith(c.path.rstrip("/") + "/"):
                                hit[p] = size
                    elif c.change == "modified" and c.path in files and c.kind != "dir":
                        hit[c.path] = files[c.path]
                wasted = sum(hit.values())
                if wasted < MIN_WASTE:
                    continue
                for p in hit:
                    files.pop(p, None)
                found.add((first.line, second.line))
                out.append(
                    _wasted(
                        facts, lines, instructions, by_line[first.line], by_line[second.line], hit
                    )
                )
    for first, second in _static_cleanups(instructions):
        if (first.line, second.line) in found or facts.layers:
            continue
        out.append(_wasted(facts, lines, instructions, first, second, {}))
    return out


def _static_cleanups(instructions: list[Instruction]) -> list[tuple[Instruction, Instruction]]:
    """RUNs that ``rm`` an absolute path an earlier RUN of the stage names."""
    out = []
    for j, ins in enumerate(instructions):
        for c in _commands(ins):
            if c.program != "rm":
                continue
            for path in (w for w in c.words[1:] if w.startswith("/") and "*" not in w):
                earlier = next(
                    (
                        i
                        for i in reversed(instructions[:j])
                        if i.keyword == "RUN" and path in " ".join(i.args)
                    ),
                    None,
                )
                if earlier is not None:
                    out.append((earlier, ins))
                    break
    return out


def _wasted(
    facts: Facts,
    lines: list[str],
    instructions: list[Instruction],
    first: Instruction,
    second: Instruction,
    hit: dict[str, int],
) -> Advice:
    wasted = sum(hit.values())
    biggest = sorted(hit.items(), key=lambda kv: -kv[1])[:3]
    shown = ", ".join(f"/{p.lstrip('/')} ({size} B)" for p, size in biggest)
    a, b = instructions.index(first), instructions.index(second)
    block = instructions[a : b + 1]
    edits: list[Edit] = []
    if all(_groupable(i) for i in block):
        texts = [_shell_text(i) or "" for i in block]
        spans = {n for i in block for n in range(i.line, i.end_line + 1)}
        kept = [
            line
            for n, line in enumerate(_between(lines, first.line, second.end_line), start=first.line)
            if n not in spans
        ]
        edits = [Edit(first.line, second.end_line, (*_ending(kept), *_run_line("", texts)))]
    if hit:
        evidence = [
            f"build #{facts.layers_build}: line {first.line}'s layer holds {wasted} bytes that line"
            f" {second.line} removes or overwrites: {shown}"
        ]
        message = (
            f"line {second.line} removes what line {first.line} added: {wasted} bytes stay in the"
            " image's earlier layer; do both in one RUN"
        )
    else:
        evidence = [
            f"line {second.line} removes a path line {first.line} creates (no recorded layers to"
            " measure the bytes: build it once)"
        ]
        message = (
            f"line {second.line} removes what line {first.line} created: the bytes stay in the"
            " earlier layer; do both in one RUN"
        )
    return _advice(
        facts,
        "wasted-space",
        first,
        message,
        evidence,
        last=second,
        edits=edits,
        saving=Saving(bytes=wasted if hit else None),
    )


# -- missing-dockerignore ----------------------------------------------------------------

# Paths that are never meant for an image, and those that are only when nothing installs
# them in the build (then the build's own copy is what counts).
_ALWAYS = {".git": ".git", ".hg": ".hg", ".svn": ".svn", "__pycache__": "**/__pycache__",
           ".pytest_cache": "**/.pytest_cache", ".mypy_cache": "**/.mypy_cache",
           ".ruff_cache": "**/.ruff_cache", ".tox": ".tox", ".DS_Store": "**/.DS_Store"}  # fmt: skip
_INSTALLED = {"node_modules": ("**/node_modules", (NPM, YARN, PNPM)),
              ".venv": (".venv", (PIP, UV, POETRY)), "venv": ("venv", (PIP, UV, POETRY))}  # fmt: skip
_SUFFIXES = {".pyc": "**/*.pyc", ".pyo": "**/*.pyo"}


def _ignorable(facts: Facts) -> dict[str, list[str]]:
    """Pattern to the context paths (top-most) it would leave out."""
    ecosystems = {
        install.ecosystem.name
        for stage in facts.dockerfile.stages
        for ins in stage.instructions
        for c in _commands(ins)
        if (install := install_of(c)) is not None
    }
    out: dict[str, list[str]] = {}
    for path in sorted(facts.context):
        parts = path.split("/")
        pattern = None
        for depth, part in enumerate(parts):
            if part in _ALWAYS and (depth == 0 or _ALWAYS[part].startswith("**")):
                pattern = _ALWAYS[part]
            elif part in _INSTALLED:
                pat, ecos = _INSTALLED[part]
                if any(e.name in ecosystems for e in ecos) and (depth == 0 or pat.startswith("**")):
                    pattern = pat
            if pattern is not None:
                top = "/".join(parts[: depth + 1])
                if top not in out.setdefault(pattern, []):
                    out[pattern].append(top)
                break
        if pattern is None:
            for suffix, pat in _SUFFIXES.items():
                if path.endswith(suffix):
                    out.setdefault(pat, []).append(path)
    return {p: tops for p, tops in out.items() if tops}


def missing_dockerignore(facts: Facts) -> list[Advice]:
    """Paths no image needs (``.git``, ``node_modules`` an install remakes, caches of
    ``__pycache__``...) sent in the context and copied by a COPY of a directory."""
    copies = [
        ins
        for stage in facts.dockerfile.stages
        for ins in stage.instructions
        if (c := _context_copy(ins)) is not None
        and (not c[0] or any(p.startswith(c[0] + "/") for p in facts.context))
    ]
    if not copies:
        return []
    found = _ignorable(facts)
    copied = {
        pattern: tops
        for pattern, tops in found.items()
        if any(_under(top, (_context_copy(ins) or ("", ""))[0]) for ins in copies for top in tops)
    }
    if not copied:
        return []
    tops = [t for ts in copied.values() for t in ts]

    def excluded(path: str) -> bool:
        return any(path == t or path.startswith(t + "/") for t in tops)

    size = sum(e.size for p, e in facts.context.items() if excluded(p) and not e.is_dir)
    patterns = sorted(copied)
    first = copies[0]
    evidence = [
        f"{len(tops)} path{'s' if len(tops) != 1 else ''} sent in the context and copied:"
        f" {', '.join(tops[:4])}{' …' if len(tops) > 4 else ''} ({size} bytes)"
    ]
    changes, alone = _ignored_changes(facts, excluded)
    if facts.replayable:
        evidence.append(
            f"they changed the copied files in {changes} of {max(0, len(facts.replayable) - 1)}"
            f" rebuilds, and were the only change in {alone}"
        )
    old = facts.ignore_text or ""
    new = (
        old + ("" if not old or old.endswith("\n") else "\n") + "".join(p + "\n" for p in patterns)
    )
    diff = unified_diff(old, new, facts.ignore_name, new_file=facts.ignore_text is None)
    message = (
        f"{', '.join(patterns[:3])}{' …' if len(patterns) > 3 else ''} reach the image through"
        f" COPY on line {first.line}: add {'them' if len(patterns) > 1 else 'it'} to .dockerignore"
    )
    advice = Advice(
        "missing-dockerignore",
        first.line,
        tuple(range(first.line, first.end_line + 1)),
        message,
        tuple(evidence),
        Saving(bytes=size),
        diff,
        dockerignore=tuple(patterns),
    )
    return [
        _proved(
            facts,
            advice,
            [],
            [c.original for c in copies],
            [c.original for c in copies],
            exclude=excluded,
            extra=Saving(bytes=size),
        )
    ]


def _under(path: str, root: str) -> bool:
    return not root or path == root or path.startswith(root + "/")


def _ignored_changes(facts: Facts, excluded: Callable[[str], bool]) -> tuple[int, int]:
    changes = alone = 0
    previous = None
    for build in facts.replayable:
        if previous is not None:
            differ = {
                p for p in set(build.paths) | set(previous) if build.paths.get(p) != previous.get(p)
            }
            ignored = {p for p in differ if excluded(p.rstrip("/"))}
            if ignored:
                changes += 1
                if ignored == differ:
                    alone += 1
        previous = build.paths
    return changes, alone


# -- cache-mount -------------------------------------------------------------------------


def _user_is_root(stage: Stage, before: Instruction) -> bool:
    user = "root"
    for ins in stage.instructions:
        if ins is before:
            break
        if ins.keyword == "USER" and ins.args:
            user = ins.args[0].split(":")[0]
    return user in ("root", "0")


def cache_mount(facts: Facts) -> list[Advice]:
    """Under BuildKit, an install that downloads again every time it reruns, where a
    ``RUN --mount=type=cache`` would keep the downloads across builds."""
    if facts.builder != "buildkit":
        return []
    out = []
    lines = source_lines(facts.text)
    for stage in facts.dockerfile.stages:
        for ins in stage.instructions:
            commands = _commands(ins)
            if not commands or any("type=cache" in m for m in ins.flags.get("mount", ())):
                continue
            targets: list[str] = []
            names: list[str] = []
            apt = False
            for c in commands:
                install = install_of(c)
                if install is not None and install.ecosystem.caches:
                    for t in install.ecosystem.caches:
                        if t not in targets:
                            targets.append(t)
                    if install.ecosystem.name not in names:
                        names.append(install.ecosystem.name)
                elif installs_packages(c) and family(c) == "apt":
                    apt = True
            if not targets and not apt:
                continue
            evidence = [
                f"line {ins.line}: {_history_note(facts, ins)}, downloading everything each time"
                if facts.appearances(ins)
                else f"line {ins.line}: every rerun downloads everything again (no build recorded yet)"
            ]
            ran = facts.executions(ins)
            seconds = sum(s.duration for _b, s in ran)
            saving = (
                Saving(reruns_now=len(ran), seconds_now=round(seconds, 3))
                if facts.builds
                else Saving()
            )
            edits: list[Edit] = []
            if targets and _user_is_root(stage, ins):
                mounts = " ".join(f"--mount=type=cache,target={t}" for t in targets)
                first = lines[ins.line - 1]
                match = re.match(r"(\s*RUN\s+)", first, re.IGNORECASE)
                if match:
                    new = [first[: match.end()] + mounts + " " + first[match.end() :]]
                    new += lines[ins.line : ins.end_line]
                    # The cache now lives outside the layer: pip's opt-out only slows it.
                    new = [re.sub(r"\s--no-cache-dir\b", "", line) for line in new]
                    edits = [Edit(ins.line, ins.end_line, tuple(_ending(new)))]
            what = " and ".join(names) if names else "apt"
            if apt and not targets:
                message = (
                    "apt downloads every package again whenever this RUN reruns: mount"
                    " /var/cache/apt and /var/lib/apt with type=cache,sharing=locked (and remove"
                    " /etc/apt/apt.conf.d/docker-clean, which empties the cache)"
                )
            else:
                message = (
                    f"{what} downloads everything again whenever this RUN reruns: a"
                    f" --mount=type=cache,target={targets[0]} keeps the downloads across builds"
                )
            out.append(
                _advice(facts, "cache-mount", ins, message, evidence, edits=edits, saving=saving)
            )
    return out


RULES: tuple[Callable[[Facts], list[Advice]], ...] = (
    apt_update_alone,
    group_runs,
    volatile_copy_first,
    arg_too_early,
    wasted_space,
    missing_dockerignore,
    cache_mount,
)
