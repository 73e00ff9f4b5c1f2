"""``lamina images``, ``history``, ``inspect``, ``tag`` and ``rmi``, shaped like Docker's.

Tables use Docker's columns and decimal sizes (``1.43MB``); ``--format json`` prints one
JSON object per line like ``docker images --format json``; ``inspect`` always prints a
JSON array.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from lamina.core import NotFound, RmiError, short_digest
from lamina.tui.cli.context import CliContext
from lamina.tui.format import ago, size

if TYPE_CHECKING:
    from lamina.core import HistoryEntry, ImageSummary

NONE = "<none>"
CREATED_BY_WIDTH = 45


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``images``, ``history``, ``inspect``, ``tag`` and ``rmi``."""
    p = sub.add_parser("images", help="list images")
    p.add_argument("-a", "--all", action="store_true", help="also show untagged parent images")
    p.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--no-trunc", action="store_true", help="full image IDs")
    p.add_argument(
        "-f",
        "--filter",
        action="append",
        default=[],
        metavar="FILTER",
        help="dangling=true|false, label=<key>[=<value>], before=<image>, since=<image>,"
        " reference=<pattern>",
    )
    p.add_argument("repository", metavar="REPOSITORY[:TAG]", nargs="?", help="only these")
    p.set_defaults(func=cmd_images)

    p = sub.add_parser("history", help="show an image's instructions and layer sizes")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--no-trunc", action="store_true", help="do not shorten the output")
    p.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    p.add_argument("ref", metavar="IMAGE")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("inspect", help="an image's config, DiffIDs and ChainIDs as JSON")
    p.add_argument("--format", choices=("json",), default="json")
    p.add_argument("refs", metavar="IMAGE", nargs="+")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("tag", help="give an image another name")
    p.add_argument("source", metavar="SOURCE_IMAGE")
    p.add_argument("target", metavar="TARGET_IMAGE")
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser("rmi", help="untag or remove images (layers go at the next prune)")
    p.add_argument("-f", "--force", action="store_true", help="remove even with several tags")
    p.add_argument("refs", metavar="IMAGE", nargs="+")
    p.set_defaults(func=cmd_rmi)


def iso(ts: float) -> str:
    if not ts:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(ts))


def short_id(image_id: str, full: bool = False) -> str:
    return image_id if full else short_digest(image_id)


def print_table(rows: list[list[str]], out: TextIO) -> None:
    """Columns padded like Docker's tabwriter (three spaces between columns)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths[:-1], strict=False)] + [r[-1]]
        print("   ".join(cells).rstrip(), file=out)


def _parents(ctx: CliContext) -> set[str]:
    """IDs of images another image was built FROM (only lamina's own store records it)."""
    engine = ctx.engine
    from lamina.core import LocalStore

    return engine.parent_images() if isinstance(engine, LocalStore) else set()


def _image_rows(images: list[ImageSummary]) -> list[tuple[str, str, ImageSummary]]:
    rows = []
    for image in images:
        if not image.tags:
            rows.append((NONE, NONE, image))
        for tag in image.tags:
            repo, _, name = tag.rpartition(":")
            rows.append((repo, name, image))
    return rows


def cmd_images(args: argparse.Namespace, ctx: CliContext, out: TextIO | None = None) -> int:
    """``lamina images``."""
    from lamina.core import parse_image_list_filters, select_images

    out = out or sys.stdout
    # Like the docker CLI, a REPOSITORY[:TAG] argument is one more reference filter.
    raw = list(args.filter) + ([f"reference={args.repository}"] if args.repository else [])
    filters = parse_image_list_filters(raw)  # bad filters fail before anything is read
    engine = ctx.engine
    # Like Docker, untagged images that others were built FROM are intermediate.
    images = select_images(
        engine.images(),
        filters,
        all_images=args.all,
        parents=_parents(ctx),
        created_of=lambda ref: engine.image(ref).created,
    )
    if args.quiet:
        seen: set[str] = set()
        for image in images:
            if image.id not in seen:
                seen.add(image.id)
                print(short_id(image.id, args.no_trunc), file=out)
        return 0
    rows = _image_rows(images)
    if args.format == "json":
        for repo, tag, image in rows:
            print(
                json.dumps(
                    {
                        "ID": short_id(image.id, args.no_trunc),
                        "FullID": image.id,
                        "Repository": repo,
                        "Tag": tag,
                        "CreatedAt": iso(image.created),
                        "CreatedSince": ago(image.created, docker=True),
                        "Size": size(image.size, docker=True),
                        "SizeBytes": image.size,
                        "Layers": len(image.layers),
                        "Labels": image.labels,
                    }
                ),
                file=out,
            )
        return 0
    table = [["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]]
    for repo, tag, image in rows:
        table.append(
            [
                repo,
                tag,
                short_id(image.id, args.no_trunc),
                ago(image.created, docker=True),
                size(image.size, docker=True),
            ]
        )
    print_table(table, out)
    return 0


def _created_by(entry: HistoryEntry, full: bool) -> str:
    text = entry.created_by.replace("\n", " ").replace("\t", " ")
    if not full and len(text) > CREATED_BY_WIDTH:
        text = text[: CREATED_BY_WIDTH - 1] + "…"
    return text


def cmd_history(args: argparse.Namespace, ctx: CliContext, out: TextIO | None = None) -> int:
    """``lamina history IMAGE``: newest instruction first."""
    out = out or sys.stdout
    image = ctx.engine.image(args.ref)
    entries = ctx.engine.history(args.ref)
    ids = [short_id(image.id, args.no_trunc)] + ["<missing>"] * (len(entries) - 1)
    if args.quiet:
        for i in ids:
            print(i, file=out)
        return 0
    if args.format == "json":
        for i, e in zip(ids, entries, strict=False):
            print(
                json.dumps(
                    {
                        "ID": i,
                        "CreatedAt": iso(e.created),
                        "CreatedSince": ago(e.created, docker=True),
                        "CreatedBy": e.created_by,
                        "Size": size(e.size, docker=True),
                        "SizeBytes": e.size,
                        "EmptyLayer": e.empty_layer,
                        "ChainID": e.chain_id,
                        "Comment": e.comment,
                    }
                ),
                file=out,
            )
        return 0
    table = [["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]]
    for i, e in zip(ids, entries, strict=False):
        table.append(
            [
                i,
                ago(e.created, docker=True),
                _created_by(e, args.no_trunc),
                size(e.size, docker=True),
                e.comment,
            ]
        )
    print_table(table, out)
    return 0


def cmd_inspect(args: argparse.Namespace, ctx: CliContext, out: TextIO | None = None) -> int:
    """``lamina inspect IMAGE...``: a JSON array, like ``docker image inspect``."""
    out = out or sys.stdout
    docs: list[dict[str, Any]] = []
    missing: list[str] = []
    for ref in args.refs:
        try:
            docs.append(ctx.engine.inspect(ref))
        except NotFound:
            missing.append(ref)
    print(json.dumps(docs, indent=4), file=out)
    if missing:
        raise NotFound("no such image: " + ", ".join(missing))
    return 0


def cmd_tag(args: argparse.Namespace, ctx: CliContext, out: TextIO | None = None) -> int:
    """``lamina tag SOURCE TARGET``."""
    out = out or sys.stdout
    ctx.engine.tag(args.source, args.target)
    return 0


def cmd_rmi(args: argparse.Namespace, ctx: CliContext, out: TextIO | None = None) -> int:
    """``lamina rmi [-f] IMAGE...``: prints ``Untagged:`` / ``Deleted:`` lines."""
    out = out or sys.stdout
    try:
        lines = ctx.engine.rmi(list(args.refs), force=args.force)
    except RmiError as exc:
        for line in exc.done:
            print(line, file=out)
        raise
    for line in lines:
        print(line, file=out)
    return 0
