"""``lamina import``, ``load`` and ``save``: images in and out of the embedded store."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from lamina.core import UsageError
from lamina.tui.cli.context import CliContext

if TYPE_CHECKING:
    from lamina.core import LocalStore


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``import``, ``load`` and ``save``."""
    p = sub.add_parser("import", help="make a one-layer image from a root filesystem tar")
    p.add_argument("-m", "--message", default="", help="history comment for the image")
    p.add_argument(
        "file", metavar="FILE", help="a tar, optionally gzip or zstd compressed ('-' for stdin)"
    )
    p.add_argument("ref", metavar="REPOSITORY[:TAG]", nargs="?", default="")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("load", help="load images from a docker save archive or OCI layout")
    p.add_argument(
        "-i",
        "--input",
        default="-",
        metavar="FILE",
        help="a tar (optionally compressed) or an OCI layout directory (default: stdin)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("save", help="save images to a tar that `docker load` accepts")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("refs", metavar="IMAGE", nargs="+")
    p.set_defaults(func=cmd_save)


def _store(ctx: CliContext, verb: str) -> LocalStore:
    return ctx.local_store(f"`lamina {verb}`", f"with a Docker Engine use `docker {verb}`")


@contextmanager
def _input_path(store: LocalStore, name: str) -> Iterator[Path]:
    """``name`` as a path; ``-`` spools stdin into the store's tmp (tars need seeking)."""
    if name != "-":
        yield Path(name)
        return
    if sys.stdin.isatty():
        raise UsageError("no input: give a file, or pipe an archive into stdin")
    with store.tmpdir("stdin") as work:
        path = work / "stdin.tar"
        try:
            with open(path, "wb") as f:
                import shutil

                shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
        except OSError as exc:
            raise UsageError(f"cannot read the archive from stdin: {exc.strerror or exc}") from exc
        yield path


def cmd_import(args: argparse.Namespace, ctx: CliContext, out: TextIO | None = None) -> int:
    """``lamina import FILE [REF]``: prints the new image ID."""
    out = out or sys.stdout
    store = _store(ctx, "import")
    with _input_path(store, args.file) as path:
        image = store.import_rootfs(path, args.ref, args.message)
    print(image.id, file=out)
    return 0


def cmd_load(args: argparse.Namespace, ctx: CliContext, out: TextIO | None = None) -> int:
    """``lamina load -i FILE``: prints ``Loaded image: name:tag`` per tag (or the ID)."""
    out = out or sys.stdout
    store = _store(ctx, "load")
    with _input_path(store, args.input) as path:
        images = store.load_archive(path)
    if not args.quiet:
        for image in images:
            if image.tags:
                for tag in image.tags:
                    print(f"Loaded image: {tag}", file=out)
            else:
                print(f"Loaded image ID: {image.id}", file=out)
    return 0


def cmd_save(args: argparse.Namespace, ctx: CliContext, out: TextIO | None = None) -> int:
    """``lamina save -o FILE IMAGE...``."""
    _store(ctx, "save").save_archive(list(args.refs), Path(args.output))
    return 0
