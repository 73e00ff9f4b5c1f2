"""``lamina pull``, ``push``, ``login`` and ``logout``: images to and from registries.

``pull`` always works out the plan first; ``--dry-run`` prints it and stops (as JSON
with ``--format json``). The transfer prints Docker-shaped lines, redrawn as progress
bars on a terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, TextIO

from lamina.core import UsageError, short_digest
from lamina.tui.cli.context import CliContext
from lamina.tui.format import size

if TYPE_CHECKING:
    # The registry client (urllib3, ssl, http.client) loads only for a verb that talks
    # to a registry, never for `lamina --help` or a build.
    from lamina.core import PullFinished, PullPlan, PushFinished, TransferEvent

OUTCOMES = {
    "downloaded": "Pull complete",
    "resumed": "Pull complete (resumed)",
    "copied": "Copied from a stored layer",
    "present": "Already exists",
    "exists": "Layer already exists",
    "mounted": "Mounted",
    "uploaded": "Pushed",
}
HAVE = {"layer": "in store", "diff": "copy (same tar in store)", "": "download"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``pull``, ``push``, ``login`` and ``logout``."""
    p = sub.add_parser("pull", help="download an image from a registry (only what is missing)")
    p.add_argument("--dry-run", action="store_true", help="print the pull plan; move nothing")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="default: this machine's")
    p.add_argument("--format", choices=("table", "json"), default="table", help="plan format")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    p.add_argument("ref", metavar="NAME[:TAG|@DIGEST]")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("push", help="upload an image to a registry (only what it lacks)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the digest")
    p.add_argument("ref", metavar="NAME:TAG")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("login", help="log in to a registry (saved in Docker's config.json)")
    p.add_argument("-u", "--username", default="")
    p.add_argument("-p", "--password", default="", help="prefer --password-stdin")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("server", metavar="SERVER", nargs="?", default=None)
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("logout", help="forget a registry's credentials")
    p.add_argument("server", metavar="SERVER", nargs="?", default=None)
    p.set_defaults(func=cmd_logout)


def plan_lines(plan: PullPlan) -> list[str]:
    """The plan as the text ``--dry-run`` prints."""
    lines = [f"Pull plan for {plan.reference} ({plan.platform}) on the {plan.engine} engine"]
    lines.append(f"  manifest {plan.digest}")
    if plan.image_present:
        lines.append(f"  image {plan.image_id} is already here: nothing to download")
    lines.append(f"  {'BLOB':<14}{'SIZE':>10}  ACTION")
    config_action = "in store" if plan.config_present else "download"
    lines.append(f"  {'config':<14}{size(plan.config_size):>10}  {config_action}")
    for layer in plan.layers:
        action = HAVE.get(layer.have, layer.have)
        if layer.shared_with:
            action += f" (shared with {', '.join(layer.shared_with[:3])})"
        lines.append(f"  {short_digest(layer.digest):<14}{size(layer.size):>10}  {action}")
    lines.append(
        f"Download {size(plan.download_bytes)} of {size(plan.image_bytes)} "
        f"({len(plan.fetches)} of {len(plan.layers) + 1} blobs)"
    )
    return lines


class _Lines:
    """Per-blob progress: redrawn bars on a terminal, final lines only otherwise."""

    def __init__(self, out: TextIO, quiet: bool) -> None:
        self.out = out
        self.quiet = quiet
        self.tty = out.isatty() and not quiet
        self.rows: dict[str, str] = {}
        self.drawn = 0

    def _draw(self) -> None:
        # The cursor moves are lamina's own: past the stream that escapes what data says.
        raw: TextIO = getattr(self.out, "unescaped", self.out)
        if self.drawn:
            raw.write(f"\x1b[{self.drawn}A")
        for text in self.rows.values():
            raw.write("\x1b[2K")
            self.out.write(f"{text}\n")
        self.drawn = len(self.rows)
        self.out.flush()

    def show(self, event: TransferEvent) -> None:
        from lamina.core import TransferFinished, TransferProgressed, TransferStarted

        if self.quiet:
            return
        if isinstance(event, TransferStarted):
            self.rows[event.digest] = f"{short_digest(event.digest)}: Waiting"
        elif isinstance(event, TransferProgressed):
            verb = "Downloading" if event.digest in self.rows else "Working"
            bar = _bar(event.done, event.total)
            self.rows[event.digest] = (
                f"{short_digest(event.digest)}: {verb} {bar} {size(event.done)}/{size(event.total)}"
            )
        elif isinstance(event, TransferFinished):
            text = OUTCOMES.get(event.outcome, event.outcome)
            if event.outcome == "mounted" and event.detail:
                text = f"Mounted {event.detail}"
            self.rows[event.digest] = f"{short_digest(event.digest)}: {text}"
            if not self.tty:
                print(self.rows[event.digest], file=self.out)
        else:
            return
        if self.tty:
            self._draw()


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = int(width * done / total) if total > 0 else 0
    return "[" + "=" * max(filled - 1, 0) + (">" if filled else "") + " " * (width - filled) + "]"


def cmd_pull(args: argparse.Namespace, ctx: CliContext, out: TextIO | None = None) -> int:
    """``lamina pull [--dry-run] [--platform P] [--format json] REF``."""
    from lamina.core import PullFinished

    out = out or sys.stdout
    plan = ctx.engine.plan_pull(args.ref, args.platform)
    if args.dry_run:
        if args.format == "json":
            print(json.dumps(plan.to_json(), indent=2), file=out)
        else:
            print("\n".join(plan_lines(plan)), file=out)
        return 0
    lines = _Lines(out, args.quiet)
    if not args.quiet:
        print(
            f"{plan.tag or plan.digest}: Pulling from {plan.registry}/{plan.repository}", file=out
        )
    finished: PullFinished | None = None
    for event in ctx.engine.pull(plan):
        if isinstance(event, PullFinished):
            finished = event
        lines.show(event)
    if finished is None:
        raise UsageError("the pull ended without a result")
    if args.quiet:
        print(finished.image_id, file=out)
        return 0
    print(f"Digest: {plan.digest}", file=out)
    status = "Image is up to date" if plan.image_present else "Downloaded newer image"
    print(f"Status: {status} for {plan.reference}", file=out)
    print(f"Downloaded {size(finished.downloaded)} of {size(plan.image_bytes)}", file=out)
    return 0


def cmd_push(args: argparse.Namespace, ctx: CliContext, out: TextIO | None = None) -> int:
    """``lamina push NAME:TAG``."""
    from lamina.core import PushFinished

    out = out or sys.stdout
    lines = _Lines(out, args.quiet)
    finished: PushFinished | None = None
    for event in ctx.engine.push(args.ref):
        if isinstance(event, PushFinished):
            finished = event
        lines.show(event)
    if finished is None:
        raise UsageError("the push ended without a result")
    if args.quiet:
        print(finished.digest, file=out)
    else:
        tag = finished.reference.rsplit(":", 1)[-1]
        print(f"{tag}: digest: {finished.digest} size: {finished.size}", file=out)
    return 0


def cmd_login(args: argparse.Namespace, ctx: CliContext, out: TextIO | None = None) -> int:
    """``lamina login [-u USER] [-p PASS | --password-stdin] [SERVER]``."""
    import getpass

    from lamina.core import registry_login

    out = out or sys.stdout
    username, password = args.username, args.password
    if args.password_stdin:
        if password:
            raise UsageError("--password and --password-stdin are mutually exclusive")
        if not username:
            raise UsageError("--password-stdin needs --username")
        password = sys.stdin.read().rstrip("\r\n")
    if not username:
        if not sys.stdin.isatty():
            raise UsageError("no username: give --username")
        username = input("Username: ").strip()
    if not password:
        if not sys.stdin.isatty():
            raise UsageError("no password: give --password-stdin")
        password = getpass.getpass("Password: ")
    if args.password:
        print(
            "WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
            file=sys.stderr,
        )
    where = registry_login(args.server, username, password)
    print(f"Login Succeeded (credentials saved in {where})", file=out)
    return 0


def cmd_logout(args: argparse.Namespace, ctx: CliContext, out: TextIO | None = None) -> int:
    """``lamina logout [SERVER]``."""
    from lamina.core import registry_logout

    out = out or sys.stdout
    domain, found = registry_logout(args.server)
    if found:
        print(f"Removing login credentials for {domain}", file=out)
    else:
        print(f"Not logged in to {domain}", file=out)
    return 0
