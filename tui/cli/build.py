"""``lamina build``: build an image from a Dockerfile, with the cache decision of every
step and the reason for every miss.

Progress formats:

* ``plain`` (and ``auto``): Docker-like lines, ``---> CACHED`` on hits, the reason on
  misses, RUN output indented.
* ``json``: one object per line: ``{"type": "step", "stage", "index", "instruction",
  "cached", "reason"}`` per instruction in execution order, then ``{"type": "result",
  "image", "tags"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from lamina.core import (
    BuildEvent,
    BuildFailed,
    BuildFinished,
    BuildRequest,
    BuildStarted,
    CacheExport,
    StepFinished,
    StepOutput,
    StepStarted,
    UsageError,
    short_digest,
)
from lamina.tui.cli.context import CliContext
from lamina.tui.format import ago


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``lamina build``."""
    p = sub.add_parser("build", help="build an image from a Dockerfile")
    p.add_argument("-t", "--tag", action="append", default=[], help="name:tag for the image")
    p.add_argument("-f", "--file", help="the Dockerfile (default: CONTEXT/Dockerfile)")
    p.add_argument(
        "--build-arg", action="append", default=[], metavar="K=V", help="set a build arg"
    )
    p.add_argument("--target", help="build up to this stage")
    p.add_argument("--no-cache", action="store_true", help="skip cache lookups")
    p.add_argument("--dry-run", action="store_true", help="predict hits and misses, build nothing")
    p.add_argument("--network", choices=("host", "none"), default="host")
    p.add_argument(
        "--builder",
        choices=("buildkit", "classic"),
        help="whose cache rules to follow (default: config.toml's [build] builder, else buildkit)",
    )
    p.add_argument(
        "--no-cache-filter",
        action="append",
        default=[],
        metavar="STAGE",
        help="skip cache lookups for this stage (repeatable; BuildKit rules)",
    )
    p.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="id=ID,src=PATH",
        help="a secret for RUN --mount=type=secret (never stored)",
    )
    p.add_argument(
        "--ssh",
        action="append",
        default=[],
        metavar="ID=SOCKET",
        help="an ssh agent socket for RUN --mount=type=ssh (default: $SSH_AUTH_SOCK)",
    )
    p.add_argument(
        "--base-substitute",
        action="append",
        default=[],
        metavar="REF=IMAGE",
        help="use IMAGE of the store where FROM or --from names REF, which the store lacks"
        " ('*=IMAGE'"
        " for any missing base); for checking Dockerfiles whose bases cannot be had offline",
    )
    p.add_argument(
        "--cache-to",
        metavar="type=registry,ref=REF[,mode=min|max]",
        help="export the build cache to a registry (mode=min: the target stage's steps,"
        " max: every stage's)",
    )
    p.add_argument(
        "--cache-from",
        action="append",
        default=[],
        metavar="type=registry,ref=REF",
        help="also look steps up in a build cache a registry holds (repeatable)",
    )
    p.add_argument("--progress", choices=("auto", "plain", "json"), default="auto")
    p.add_argument(
        "--open",
        action="store_true",
        help="then open the app on the built image, its build selected (like `dive build`)",
    )
    p.add_argument("context", metavar="CONTEXT")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("builds", help="list recorded builds with their steps")
    p.add_argument("-n", "--last", type=int, default=50, metavar="N", help="at most N builds")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_builds)


def cmd_builds(args: argparse.Namespace, ctx: CliContext) -> int:
    """``lamina builds``: the builds the engine recorded, newest first (like ``docker
    buildx history ls``); ``--format json`` gives every build with its steps."""
    if args.last < 1:
        raise UsageError("--last must be at least 1")
    records = ctx.engine.builds(limit=args.last)
    if args.format == "json":
        print(json.dumps([asdict(r) for r in records], indent=2, sort_keys=True))
        return 0
    rows = [["BUILD ID", "NAME", "STATUS", "CREATED AT", "DURATION", "STEPS", "CACHED"]]
    for r in records:
        steps = [s for s in r.steps if s.cached is not None]
        rows.append(
            [
                str(r.id),
                ", ".join(r.tags) or r.context,
                r.status,
                ago(r.started, docker=True),
                f"{r.finished - r.started:.1f}s" if r.finished else "-",
                str(len(steps)),
                str(sum(1 for s in steps if s.cached)),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def parse_build_args(items: list[str]) -> dict[str, str]:
    """``K=V`` strings into a dict; a bare ``K`` takes its value from the environment
    (like ``docker build --build-arg K``) and is dropped when unset there."""
    import os

    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid --build-arg {item!r} (expected KEY=VALUE)")
        if sep:
            out[key] = value
        elif key in os.environ:
            out[key] = os.environ[key]
    return out


def parse_secrets(items: list[str]) -> dict[str, str]:
    """``--secret id=ID,src=PATH`` (also ``source=``; ``env=`` reads a variable)."""
    import os
    import tempfile

    out: dict[str, str] = {}
    for item in items:
        fields = dict(f.partition("=")[::2] for f in item.split(",") if f)
        ident = fields.get("id")
        src = fields.get("src") or fields.get("source")
        if not ident:
            raise UsageError(f"invalid --secret {item!r} (expected id=ID,src=PATH)")
        if src is None and "env" in fields:
            value = os.environ.get(fields["env"])
            if value is None:
                raise UsageError(f"--secret {item!r}: ${fields['env']} is not set")
            fd, src = tempfile.mkstemp(prefix="lamina-secret-")
            with os.fdopen(fd, "w") as fh:
                fh.write(value)
        if src is None:
            raise UsageError(f"invalid --secret {item!r} (expected id=ID,src=PATH)")
        out[ident] = str(Path(src).absolute())
    return out


def parse_pairs(items: list[str], flag: str, default_key: str | None = None) -> dict[str, str]:
    """``K=V`` items of a repeatable flag (a bare ``V`` is ``default_key=V``)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            if default_key is None:
                raise UsageError(f"invalid {flag} {item!r} (expected KEY=VALUE)")
            key, value = default_key, item
        if not key or not value:
            raise UsageError(f"invalid {flag} {item!r} (expected KEY=VALUE)")
        out[key] = value
    return out


def _cache_fields(flag: str, text: str, known: tuple[str, ...]) -> dict[str, str]:
    """``type=registry,ref=REF,...`` as buildx reads it (a bare ``REF`` is the ref)."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep:
            if "=" not in text and part:
                return {"type": "registry", "ref": part}
            raise UsageError(f"invalid {flag} {text!r} (expected type=registry,ref=REF)")
        fields[key] = value.strip()
    kind = fields.get("type", "registry")
    if kind != "registry":
        raise UsageError(f"{flag} type={kind}: only type=registry is supported")
    unknown = sorted(set(fields) - {"type", "ref", *known})
    if unknown:
        raise UsageError(f"{flag} {text!r}: unknown attribute {unknown[0]!r}")
    if not fields.get("ref"):
        raise UsageError(f"{flag} {text!r}: ref=REF is required")
    return fields


def parse_cache_to(text: str | None) -> CacheExport | None:
    """``--cache-to type=registry,ref=REF[,mode=min|max][,ignore-error=true]``."""
    if text is None:
        return None
    fields = _cache_fields("--cache-to", text, ("mode", "ignore-error"))
    mode = fields.get("mode", "min").lower()
    if mode not in ("min", "max"):
        raise UsageError(f"--cache-to mode={mode}: expected min or max")
    ignore = fields.get("ignore-error", "false").lower()
    if ignore not in ("true", "false"):
        raise UsageError(f"--cache-to ignore-error={ignore}: expected true or false")
    return CacheExport(fields["ref"], mode, ignore == "true")


def parse_cache_from(items: list[str]) -> tuple[str, ...]:
    """``--cache-from type=registry,ref=REF`` (repeatable): the refs, in order."""
    return tuple(_cache_fields("--cache-from", item, ())["ref"] for item in items)


def request_from_args(args: argparse.Namespace) -> BuildRequest:
    """The :class:`BuildRequest` a command line asks for (``-f`` relative to the cwd)."""
    import os

    context = Path(args.context)
    cache = getattr(args, "cache_to", None) or getattr(args, "cache_from", None)
    engine = getattr(args, "engine", None) or os.environ.get("LAMINA_ENGINE")
    if cache and engine == "docker":
        raise UsageError(
            "--cache-to/--cache-from: the embedded engine's cache only"
            " (with Docker, use docker buildx build --cache-to/--cache-from)"
        )
    dockerfile = str(Path(args.file).absolute()) if args.file else None
    return BuildRequest(
        context=str(context.absolute()),
        dockerfile=dockerfile,
        tags=tuple(args.tag),
        build_args=parse_build_args(args.build_arg),
        target=args.target,
        no_cache=args.no_cache,
        dry_run=args.dry_run,
        network=args.network,
        builder=args.builder,
        no_cache_filter=tuple(args.no_cache_filter),
        secrets=parse_secrets(args.secret),
        ssh=_ssh(args.ssh),
        base_substitutes=parse_pairs(args.base_substitute, "--base-substitute"),
        cache_to=parse_cache_to(getattr(args, "cache_to", None)),
        cache_from=parse_cache_from(getattr(args, "cache_from", [])),
    )


def _ssh(items: list[str]) -> dict[str, str]:
    import os

    out = {}
    for item in items:
        if item == "default" and os.environ.get("SSH_AUTH_SOCK"):
            out["default"] = os.environ["SSH_AUTH_SOCK"]
        else:
            out.update(parse_pairs([item], "--ssh", "default"))
    return out


# Whose decisions a dry run predicts, and why those: the builder asked for (or configured).
PREDICTS = {
    "buildkit": "BuildKit's decisions (the builder `docker build` runs since Docker 23)",
    "classic": "the classic builder's decisions (`DOCKER_BUILDKIT=0 docker build`)",
}


class _Plain:
    def __init__(self, out: TextIO, dry_run: bool = False) -> None:
        self.out = out
        self.total = 0
        self.count = 0
        self.dry_run = dry_run

    def event(self, ev: BuildEvent) -> None:
        w = self.out.write
        if isinstance(ev, BuildStarted):
            self.total = ev.steps_total
            if self.dry_run and ev.builder in PREDICTS:
                # The two builders decide differently on the same edit: say whose these are.
                w(f"Dry run: predicting {PREDICTS[ev.builder]}\n")
        elif isinstance(ev, StepStarted):
            # Numbered like `docker build`: 1-based over every step of every stage.
            self.count += 1
            w(f"Step {self.count}/{self.total} : {ev.instruction}\n")
        elif isinstance(ev, StepOutput):
            w(f"  | {ev.line}\n")
        elif isinstance(ev, StepFinished):
            step = ev.step
            if step.cached is True:
                note = step.reason
                w(f" ---> CACHED ({note.get('message')})\n" if note else " ---> CACHED\n")
            elif step.cached is False and step.reason is not None:
                w(f" ---> MISS ({step.reason.get('kind')}): {step.reason.get('message')}\n")
            elif step.reason is not None and step.reason.get("kind") == "stage_skipped":
                w(f" ---> {step.reason.get('message')}\n")
            elif step.cached is None and step.reason is not None:
                # A what-if that cannot say: the reason names the step and why.
                w(f" ---> UNKNOWN ({step.reason.get('kind')}): {step.reason.get('message')}\n")
            if step.layer:
                w(f" ---> layer {short_digest(step.layer)}\n")
        elif isinstance(ev, BuildFinished):
            if ev.image is None:
                w("Dry run: nothing was built\n")
            else:
                w(f"Successfully built {short_digest(ev.image)}\n")
                for tag in ev.tags:
                    w(f"Successfully tagged {tag}\n")
        self.out.flush()


class _Json:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.builder: str | None = None

    def emit(self, doc: dict[str, Any]) -> None:
        self.out.write(json.dumps(doc, ensure_ascii=False) + "\n")
        self.out.flush()

    def event(self, ev: BuildEvent) -> None:
        if isinstance(ev, BuildStarted):
            self.builder = ev.builder
        elif isinstance(ev, StepFinished):
            s = ev.step
            doc: dict[str, Any] = {
                "type": "step",
                "stage": s.stage,
                "index": s.index,
                "instruction": s.instruction,
                "cached": s.cached,
                "reason": s.reason,
            }
            if s.other is not None:
                # What the other builder would have decided here.
                doc["other"] = s.other
            self.emit(doc)
        elif isinstance(ev, BuildFinished):
            # The builder whose rules decided (or, dry run, were predicted).
            doc = {"type": "result", "image": ev.image, "tags": list(ev.tags)}
            self.emit(doc | {"builder": self.builder})


def cmd_build(args: argparse.Namespace, ctx: CliContext) -> int:
    """Runs ``lamina build``; returns the exit code."""
    request = request_from_args(args)
    printer: _Plain | _Json = (
        _Json(sys.stdout) if args.progress == "json" else _Plain(sys.stdout, request.dry_run)
    )
    cancel = threading.Event()
    events = ctx.engine.build(request, cancel)
    failed: BuildFailed | None = None
    finished: BuildFinished | None = None
    interrupted = False
    while True:
        # SIGINT may land anywhere in this loop: while the engine works or while a line
        # is printed. Either way the engine is asked to stop and its events drained.
        try:
            ev = next(events)
            if isinstance(ev, BuildFailed):
                failed = ev
            else:
                if isinstance(ev, BuildFinished):
                    finished = ev
                printer.event(ev)
        except StopIteration:
            break
        except KeyboardInterrupt:
            cancel.set()
            interrupted = True
    if failed is not None:
        print(f"lamina: {failed.message}", file=sys.stderr)
        return 130 if failed.cancelled else 1
    if interrupted:
        print("lamina: build cancelled", file=sys.stderr)
        return 130
    if getattr(args, "open", False) and finished is not None:
        return open_built(finished, ctx)
    return 0


def open_built(finished: BuildFinished, ctx: CliContext) -> int:
    """Opens the app on the built image with its build selected (``build --open``)."""
    from lamina.tui.cli.app import Opening, needs_terminal, run_app

    refused = needs_terminal()
    if refused is not None:
        return refused
    return run_app(Opening(ctx.engine, finished.image, finished.build_id))
