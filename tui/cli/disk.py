"""``lamina system df|prune``, ``container prune``, ``volume prune``, ``image prune``,
``builder du|prune`` and ``fsck``.

Shaped like Docker's verbs, with what Docker lacks: every prune can print its plan
(``--dry-run``) and the plan is exactly what applying deletes; ``--format json`` gives
``reclaimable_bytes`` (``df`` and dry runs) and ``reclaimed_bytes`` (after a prune).
Without ``-f`` a prune asks for confirmation on the terminal; with no terminal on stdin
it refuses rather than guess.

lamina's own store has no containers and no volumes: there ``system df`` shows those
rows as 0, and ``container prune`` / ``volume prune`` print one line saying so and exit
0 (nothing is left to remove, which is what the command asks for), so a script can run
them on either engine.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from lamina.core import LocalStore, UsageError, default_home, parse_size, short_digest
from lamina.tui.cli.context import CliContext, local_only
from lamina.tui.format import ago, size

if TYPE_CHECKING:
    from lamina.core import DiskUsage, PrunePlan


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``system df``, ``system prune``, ``image prune``, ``builder du|prune``, ``fsck``."""
    system = _group(sub, "system", "disk usage and pruning of the whole store")
    p = system.add_parser("df", help="show disk usage and what pruning would reclaim")
    p.add_argument("-v", "--verbose", action="store_true", help="per image, layer and cache entry")
    p.add_argument(
        "--frees",
        action="append",
        default=[],
        metavar="REF",
        help="bytes removing this image, tag or cache entry would free (repeatable)",
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_df)

    p = system.add_parser(
        "prune", help="remove stopped containers, dangling images, build cache, unused layers"
    )
    p.add_argument("-a", "--all", action="store_true", help="all unused images and all build cache")
    p.add_argument("--volumes", action="store_true", help="also remove unused volumes")
    _prune_options(p, filters=True, keep_storage=False)
    p.set_defaults(func=cmd_prune, kind="system")

    container = _group(sub, "container", "manage containers (Docker Engine)")
    p = container.add_parser("prune", help="remove all stopped containers")
    _prune_options(p, filters=True, keep_storage=False)
    p.set_defaults(func=cmd_prune, kind="container", all=False)

    volume = _group(sub, "volume", "manage volumes (Docker Engine)")
    p = volume.add_parser("prune", help="remove unused local volumes")
    p.add_argument(
        "-a",
        "--all",
        action="store_true",
        help="named volumes too (Docker 23+; Docker 20.10 removes them without -a)",
    )
    _prune_options(p, filters=True, keep_storage=False)
    p.set_defaults(func=cmd_prune, kind="volume")

    image = _group(sub, "image", "manage images")
    p = image.add_parser("prune", help="remove dangling images (and their unused layers)")
    p.add_argument(
        "-a", "--all", action="store_true", help="remove all unused images, not only dangling"
    )
    _prune_options(p, filters=True, keep_storage=False)
    p.set_defaults(func=cmd_prune, kind="image")

    builder = _group(sub, "builder", "manage the build cache")
    p = builder.add_parser("du", help="the build cache record by record (`docker buildx du`)")
    p.add_argument(
        "--verbose", action="store_true", help="every field of every record, as buildx prints them"
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_builder_du)

    p = builder.add_parser("prune", help="remove build cache")
    p.add_argument("-a", "--all", action="store_true", help="also cache shared with images")
    _prune_options(p, filters=True, keep_storage=True)
    p.set_defaults(func=cmd_prune, kind="builder")

    p = sub.add_parser("fsck", help="check the store's consistency (and repair what is safe)")
    p.add_argument("--deep", action="store_true", help="also rehash every layer's contents")
    p.add_argument("--repair", action="store_true", help="sweep leftovers, drop dangling rows")
    p.add_argument(
        "--rebuild-index",
        action="store_true",
        help="move a lost or damaged index aside and rebuild it from the layers and configs",
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_fsck)


def _group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The sub-verbs of ``name``, reusing the group if another module created it."""
    parser = sub.choices.get(name)
    if parser is None:
        parser = sub.add_parser(name, help=help_)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)


def _prune_options(p: argparse.ArgumentParser, filters: bool, keep_storage: bool) -> None:
    if filters:
        p.add_argument(
            "--filter",
            action="append",
            default=[],
            metavar="FILTER",
            help="until=<duration|timestamp>, label=<key>[=<value>], label!=<key>[=<value>] "
            "(volumes: labels only)",
        )
    if keep_storage:
        p.add_argument("--keep-storage", metavar="SIZE", help="keep this much cache (e.g. 5GB)")
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be removed, remove nothing"
    )
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    p.add_argument("--format", choices=("table", "json"), default="table")


def _percent(part: int, whole: int) -> str:
    # docker/cli's formatter: integer division, and no percentage of nothing.
    return f" ({part * 100 // whole}%)" if whole > 0 else ""


_NAMES = {
    "images": "Images",
    "containers": "Containers",
    "volumes": "Local Volumes",
    "build_cache": "Build Cache",
    "orphan_layers": "Unused layers",
    "leftovers": "Leftovers",
}


def category_rows(usage: DiskUsage) -> list[list[str]]:
    """The ``system df`` table, written as ``docker system df`` writes its rows
    (go-units sizes of 4 digits; Build Cache has no percentage)."""
    rows = [["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]]
    for c in usage.categories:
        percent = "" if c.name == "build_cache" else _percent(c.reclaimable, c.size)
        rows.append(
            [
                _NAMES.get(c.name, c.name),
                str(c.count),
                str(c.active),
                size(c.size, docker=True, precision=4),
                size(c.reclaimable, docker=True, precision=4) + percent,
            ]
        )
    return rows


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip()
        for row in rows
    )


def cmd_df(args: argparse.Namespace, ctx: CliContext) -> int:
    if args.frees:
        return _frees(args, ctx)
    usage = ctx.engine.disk_usage()
    if args.format == "json":
        print(json.dumps(usage.to_json(), indent=2, sort_keys=True))
        return 0
    print(_table(category_rows(usage)))
    print()
    print(
        f"Reclaimable by `system prune`: {size(usage.reclaimable, docker=True)}"
        f" (with -a: {size(usage.reclaimable_all, docker=True)})"
    )
    if usage.prunes:
        print("\nWhat each prune would free now:")
        width = max(len(p.command) for p in usage.prunes)
        for p in usage.prunes:
            print(
                f"  lamina {p.command.ljust(width)}  {size(p.bytes, docker=True):>8}  ({p.items} items)"
            )
    if usage.fs_total:
        print(
            f"Store {usage.home}: {size(usage.fs_free, docker=True)} free of {size(usage.fs_total, docker=True)}"
        )
    if usage.dedup_saved:
        print(
            f"Identical files stored once: {size(usage.shared_disk, docker=True)} that layers"
            f" share saves {size(usage.dedup_saved, docker=True)} on disk"
        )
    if args.verbose:
        _df_verbose(usage)
    _print_differences(ctx)
    return 0


def _print_differences(ctx: CliContext) -> None:
    """Where the engine's own numbers differ from lamina's (the Docker backend says why)."""
    differences = ctx.engine.differences
    if differences:
        print("\nWhere Docker's own numbers differ from lamina's:")
        for line in differences:
            print(f"  - {line}")


def _frees(args: argparse.Namespace, ctx: CliContext) -> int:
    store = ctx.local_store("`--frees`")
    # Resolve every ref first: a missing one fails before anything is printed.
    answers = {ref: store.frees(ref) for ref in args.frees}
    if args.format == "json":
        print(json.dumps({"frees": answers}, indent=2, sort_keys=True))
    else:
        for ref, n in answers.items():
            print(f"{ref}: removing it frees {size(n, docker=True)} ({n} bytes)")
    return 0


def _df_verbose(usage: DiskUsage) -> None:
    if usage.layers_disk:
        # Sizes above are Docker's (the files' bytes); the filesystem counts blocks.
        print(
            f"\nOn disk (blocks, hard links once): layers {size(usage.layers_disk, docker=True)};"
            f" `system prune` frees {size(usage.reclaimable_disk, docker=True)}"
            f" (with -a: {size(usage.reclaimable_all_disk, docker=True)})"
        )
    print("\nImages space usage:\n")
    rows = [
        ["REPOSITORY:TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "FREES"]
    ]
    for i in usage.images:
        for tag in i.tags or ("<none>:<none>",):
            rows.append(
                [
                    tag,
                    short_digest(i.id),
                    ago(i.created, docker=True),
                    size(i.size, docker=True),
                    size(i.shared_size, docker=True),
                    size(i.unique_size, docker=True),
                    size(i.frees, docker=True),
                ]
            )
    print(_table(rows))
    print("\nLayers space usage:\n")
    # The blocks column only where the engine knows them (lamina's own store).
    on_disk = bool(usage.layers_disk)
    rows = [["LAYER", "SIZE", *(["ON DISK"] if on_disk else []), "IMAGES", "CACHE", "CREATED BY"]]
    for layer in usage.layers:
        rows.append(
            [
                short_digest(layer.chain_id),
                size(layer.size, docker=True),
                *([size(layer.disk, docker=True)] if on_disk else []),
                str(len(layer.images)),
                str(len(layer.cache)),
                (layer.created_by or "")[:45],
            ]
        )
    print(_table(rows))
    if usage.containers:
        print("\nContainers space usage:\n")
        rows = [["CONTAINER ID", "IMAGE", "LOCAL VOLUMES", "SIZE", "CREATED", "STATUS", "NAMES"]]
        for ctr in usage.containers:
            rows.append(
                [
                    ctr.id[:12],
                    ctr.image,
                    str(len(ctr.volumes)),
                    size(ctr.size, docker=True),
                    ago(ctr.created, docker=True),
                    ctr.state,
                    ctr.name,
                ]
            )
        print(_table(rows))
    if usage.volumes:
        print("\nLocal Volumes space usage:\n")
        rows = [["VOLUME NAME", "LINKS", "SIZE", "KIND", "CONTAINERS"]]
        for vol in usage.volumes:
            rows.append(
                [
                    vol.name,
                    str(vol.links),
                    "N/A" if vol.size < 0 else size(vol.size, docker=True),
                    "anonymous" if vol.anonymous else "named",
                    ", ".join(c[:12] for c in vol.containers) or "-",
                ]
            )
        print(_table(rows))
    # The total and the CACHE TYPE column as `docker system df -v` prints them, the type
    # only where the engine keeps BuildKit's records (a Docker Engine's build cache).
    cache = next((c for c in usage.categories if c.name == "build_cache"), None)
    total = f" {size(cache.size, docker=True, precision=4)}" if cache is not None else ""
    print(f"\nBuild cache usage:{total}\n")
    typed = any(c.record_type for c in usage.cache)
    rows = [
        [
            "CACHE ID",
            *(["CACHE TYPE"] if typed else []),
            "SIZE",
            "CREATED",
            "LAST USED",
            "USAGE",
            "SHARED",
            "FREES",
            "STEP",
        ]
    ]
    for c in usage.cache:
        rows.append(
            [
                short_digest(c.key),
                # "-": a classic builder's intermediate image, no BuildKit record.
                *([c.record_type or "-"] if typed else []),
                size(c.size, docker=True),
                ago(c.created, docker=True),
                ago(c.last_used, docker=True),
                str(c.use_count),
                "true" if c.shared else "false",
                size(c.frees, docker=True),
                c.instruction[:45],
            ]
        )
    print(_table(rows))
    if usage.cache_mounts:
        # BuildKit lists these among its build cache records as exec.cachemount.
        print("\nCache mounts (exec.cachemount):\n")
        rows = [["CACHE ID", "TYPE", "SIZE", "CREATED", "LAST USED", "USAGE", "IN USE", "ID"]]
        for m in usage.cache_mounts:
            rows.append(
                [
                    short_digest(m.id),
                    "exec.cachemount",
                    size(m.size, docker=True),
                    ago(m.created, docker=True),
                    ago(m.last_used, docker=True),
                    str(m.use_count),
                    "true" if m.in_use else "false",
                    m.mount_id[:45],
                ]
            )
        print(_table(rows))


def cmd_builder_du(args: argparse.Namespace, ctx: CliContext) -> int:
    """``lamina builder du [--verbose]``: the build cache as ``docker buildx du`` lists it.

    On a Docker Engine these are BuildKit's own records (with the classic builder's
    intermediate images, which buildx does not list); on lamina's store, its cache
    entries and its ``RUN --mount=type=cache`` directories (BuildKit's
    ``exec.cachemount``).
    """
    records = cache_records(ctx.engine.disk_usage())
    if args.format == "json":
        print(json.dumps({"records": [asdict(r) for r in records]}, indent=2, sort_keys=True))
        return 0
    if args.verbose:
        for record in records:
            print(buildkit_record_lines(record) + "\n")
    else:
        rows = [["ID", "RECLAIMABLE", "SIZE", "LAST ACCESSED"]]
        for r in records:
            rows.append(
                [
                    r.id,
                    "false" if r.in_use else "true",
                    # buildx marks what shares storage with images with an asterisk.
                    size(r.size, docker=True, precision=4) + ("*" if r.shared else ""),
                    ago(r.last_used, docker=True) if r.last_used else "",
                ]
            )
        print(_table(rows))
    print("\n".join(f"{name + ':':<16}{value}" for name, value in du_summary(records)))
    return 0


@dataclass(frozen=True)
class CacheRecord:
    """One build cache record with the fields ``docker buildx du --verbose`` prints.

    Attributes:
        id: BuildKit's record ID (a key or cache mount ID for lamina's own store).
        parents: the records it stands on.
        created: a unix time.
        in_use: a running build holds it (buildx: not ``Reclaimable``).
        shared: it shares storage with image layers.
        size: its bytes.
        description: what made it ("" for none).
        use_count: how often it was used.
        last_used: a unix time (0 for never).
        type: BuildKit's record type ("" where there is none: lamina's own cache
            entries, a classic builder's intermediate image).
    """

    id: str
    parents: tuple[str, ...]
    created: float
    in_use: bool
    shared: bool
    size: int
    description: str
    use_count: int
    last_used: float
    type: str


def cache_records(usage: DiskUsage) -> list[CacheRecord]:
    """The build cache of ``usage`` as records: its cache entries, then its cache mounts."""
    out = [
        CacheRecord(
            id=c.key.split(":", 1)[1] if c.key.startswith("buildkit:") else c.key,
            parents=c.parents,
            created=c.created,
            in_use=c.in_use,
            shared=c.shared,
            size=c.size,
            # lamina's own entries say what made them by their step.
            description=c.description if c.record_type else c.instruction,
            use_count=c.use_count,
            last_used=c.last_used,
            type=c.record_type,
        )
        for c in usage.cache
    ]
    out += [
        CacheRecord(
            id=m.id,
            parents=(),
            created=m.created,
            in_use=m.in_use,
            shared=False,
            size=m.size,
            description=f"cached mount {m.mount_id}",
            use_count=m.use_count,
            last_used=m.last_used,
            type="exec.cachemount",
        )
        for m in usage.cache_mounts
    ]
    return out


def buildkit_record_lines(record: CacheRecord) -> str:
    """One record, field by field as ``docker buildx du --verbose`` prints it.

    buildx also prints ``Mutable``, which the Engine API does not report; its
    ``Created at`` has nanoseconds, of which lamina keeps microseconds.
    """
    when = datetime.fromtimestamp(record.created, tz=timezone.utc)
    # Go's time.Time String(): the fraction without its trailing zeros.
    fraction = f"{when:%f}".rstrip("0")
    fields = [("ID", record.id)]
    if record.parents:
        fields.append(("Parent", ",".join(record.parents)))
    fields += [
        ("Created at", f"{when:%Y-%m-%d %H:%M:%S}{'.' + fraction if fraction else ''} +0000 UTC"),
        ("Reclaimable", "false" if record.in_use else "true"),
        ("Shared", "true" if record.shared else "false"),
        ("Size", size(record.size, docker=True, precision=4)),
    ]
    if record.description:
        fields.append(("Description", record.description))
    fields.append(("Usage count", str(record.use_count)))
    if record.last_used:
        fields.append(("Last used", ago(record.last_used, docker=True)))
    if record.type:
        fields.append(("Type", record.type))
    return "\n".join(f"{name + ':':<16}{value}" for name, value in fields)


def du_summary(records: list[CacheRecord]) -> list[tuple[str, str]]:
    """The totals ``docker buildx du`` ends with: shared and private (when anything is
    shared), reclaimable (not in use) and total."""
    total = sum(r.size for r in records if r.size > 0)
    reclaimable = sum(r.size for r in records if r.size > 0 and not r.in_use)
    shared = sum(r.size for r in records if r.shared)
    rows = []
    if shared > 0:
        rows += [
            ("Shared", size(shared, docker=True, precision=4)),
            ("Private", size(total - shared, docker=True, precision=4)),
        ]
    rows += [
        ("Reclaimable", size(reclaimable, docker=True, precision=4)),
        ("Total", size(total, docker=True, precision=4)),
    ]
    return rows


def cmd_prune(args: argparse.Namespace, ctx: CliContext) -> int:
    from lamina.core import PruneRequest, PruneResult

    keep = getattr(args, "keep_storage", None)
    request = PruneRequest(
        kind=args.kind,
        all=args.all,
        filters=tuple(args.filter),
        keep_storage=parse_size(keep) if keep is not None else None,
        volumes=bool(getattr(args, "volumes", False)),
    )
    request.checked()  # bad input fails before the store is read
    engine = ctx.engine
    if args.kind in ("container", "volume") and isinstance(engine, LocalStore):
        # One line, exit 0: there is nothing of the kind, so nothing is left to remove.
        things = "containers" if args.kind == "container" else "volumes"
        if args.format == "json":
            doc = (
                engine.plan_prune(request).to_json() | {"dry_run": True}
                if args.dry_run
                else PruneResult().to_json()
            )
            print(json.dumps(doc, indent=2, sort_keys=True))
        else:
            print(
                f"lamina's own store has no {things} (they exist on --engine docker): nothing to prune"
            )
        return 0
    plan = engine.plan_prune(request)
    if args.dry_run:
        if args.format == "json":
            print(json.dumps(plan.to_json() | {"dry_run": True}, indent=2, sort_keys=True))
        else:
            lines = plan.describe()
            print("Would remove:" if lines else "Nothing to remove.")
            for line in lines:
                print(f"  {line}")
            print(f"Total reclaimable space: {size(plan.reclaimable_bytes, docker=True)}")
            _print_differences(ctx)
        return 0
    if not args.force and not plan.empty:
        _confirm(plan)
    result = engine.apply_prune(plan)
    if args.format == "json":
        print(json.dumps(result.to_json(), indent=2, sort_keys=True))
        return 0
    if result.containers:
        print("Deleted Containers:")
        for container_id in result.containers:
            print(container_id)
        print()
    if result.volumes:
        print("Deleted Volumes:")
        for name in result.volumes:
            print(name)
        print()
    if result.images:
        print("Deleted Images:")
        for tag in result.untagged:
            print(f"untagged: {tag}")
        for image_id in result.images:
            print(f"deleted: {image_id}")
        print()
    if result.cache_mounts:
        print("Deleted cache mounts:")
        for mount_id in result.cache_mounts:
            print(mount_id)
    if result.cache:
        print("Deleted build cache objects:")
        for key in result.cache:
            print(key)
        print()
    if result.layers:
        print(f"Deleted layers: {len(result.layers)}")
    if result.leftovers:
        print(f"Swept leftovers: {len(result.leftovers)}")
    for s in result.skipped:
        print(f"kept {s.kind} {s.id}: {s.reason}", file=sys.stderr)
    print(f"Total reclaimed space: {size(result.reclaimed_bytes, docker=True)}")
    return 0


def _confirm(plan: PrunePlan) -> None:
    """Asks on the terminal; refuses when stdin is not one."""
    if not sys.stdin or not sys.stdin.isatty():
        raise UsageError(
            "not removing anything without confirmation: stdin is not a terminal (use -f)"
        )
    print("WARNING! This will remove:")
    for line in plan.describe():
        print(f"  - {line}")
    print(f"and free {size(plan.reclaimable_bytes, docker=True)}.")
    print("Are you sure you want to continue? [y/N] ", end="", flush=True)
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise UsageError("prune cancelled; nothing was removed")


def cmd_fsck(args: argparse.Namespace, ctx: CliContext) -> int:
    if args.rebuild_index:
        return _rebuild_index(args, ctx)
    report = ctx.local_store("`lamina fsck`").fsck(deep=args.deep, repair=args.repair)
    if args.format == "json":
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        for p in report.problems:
            mark = " [repaired]" if p.repaired else ""
            print(f"{'note: ' if p.note else ''}{p.kind}: {p.message}{mark}")
        remaining = len(report.remaining)
        checked = f"{report.layers} layers, {report.images} images, {report.cache} cache entries"
        if report.ok:
            repaired = sum(p.repaired and not p.note for p in report.problems)
            notes = sum(p.note and not p.repaired for p in report.problems)
            print(
                f"ok: {checked}"
                + (f"; {repaired} repaired" if repaired else "")
                + (f"; {notes} note(s) (the next prune sweeps leftovers)" if notes else "")
            )
        else:
            hint = "" if args.repair else " (--repair fixes what is safe)"
            print(f"{remaining} problem(s) in {checked}{hint}")
    return 0 if report.ok else 1


def _rebuild_index(args: argparse.Namespace, ctx: CliContext) -> int:
    from lamina.core import rebuild_index

    # Not through ctx.engine: the store refuses to open while its index is lost.
    if ctx.wants_docker:
        raise local_only("`lamina fsck`")
    if args.repair or args.deep:
        raise UsageError("--rebuild-index cannot be combined with --repair or --deep")
    report = rebuild_index(default_home())
    if args.format == "json":
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
        return 0
    if report.kept_index:
        print(f"the previous index was kept as {report.kept_index}")
    for path, reason in report.unplaced:
        print(f"not recovered: {path}: {reason}")
    print(
        f"rebuilt the index: {report.layers} layers, {report.images} images, "
        f"{report.tags} tags (build cache and build history are not recoverable)"
    )
    return 0
