"""CLI verbs that open the Textual app: ``lamina app`` and ``lamina demo``.

``lamina`` with no arguments calls :func:`open_app` on the default store, and
``lamina SOURCE`` (anything that is not a verb) is ``lamina app SOURCE``:

* ``lamina IMAGE``: a tag or ID in the current engine;
* ``lamina docker-archive:PATH``, ``lamina oci-archive:PATH``, ``lamina oci:DIR``: an
  archive, read where it lies (nothing enters the store) unless ``--load``;
* ``lamina docker://REF``: an image in a registry, fetched into a temporary layout
  (removed on exit) unless ``--load`` pulls it into the current engine.

The app opens on the Images view with that image selected.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lamina.core import UsageError
from lamina.tui.cli.context import CliContext

if TYPE_CHECKING:
    from lamina.core import Engine


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``lamina app`` and ``lamina demo``."""
    app = sub.add_parser(
        "app",
        help="open the terminal app (on the store, an image, an archive or a registry image)",
        description=(
            "Open the terminal app (also what `lamina` alone does). With IMAGE, open it on "
            "that image: a tag or ID, docker-archive:PATH, oci-archive:PATH, oci:DIR or "
            "docker://REF. Archives and registry images are read without entering the "
            "store unless --load is given."
        ),
    )
    app.add_argument("image", metavar="IMAGE", nargs="?", help="the image to open the app on")
    app.add_argument(
        "--load",
        action="store_true",
        help="load the archive (or pull the registry image) into the store first",
    )
    app.set_defaults(func=open_app)

    demo = sub.add_parser(
        "demo",
        help="create a demo workspace and store offline, then open the app on it",
        description=(
            "Build a demo offline with the real builder: a busybox base, images sharing "
            "layers, an edited rebuild with hits and misses, a dangling image and build "
            "cache. Safe to run twice."
        ),
    )
    demo.add_argument(
        "--workspace",
        type=Path,
        default=None,
        help="where to write the demo's Dockerfiles and context (default: <store>/../lamina-demo)",
    )
    demo.add_argument(
        "--no-open",
        action="store_true",
        help="create the demo and print what was built, without opening the app",
    )
    demo.set_defaults(func=run_demo)


@dataclass
class Opening:
    """What the app opens on.

    Attributes:
        engine: the engine to show.
        focus_image: the image to select, if any.
        focus_build: the build to select, if any.
        owned: the engine was opened for this app alone (an archive): close it after.
    """

    engine: Engine
    focus_image: str | None = None
    focus_build: int | None = None
    owned: bool = False

    def close(self) -> None:
        if self.owned:
            self.engine.close()


def opening_for(target: str, ctx: CliContext, *, load: bool = False) -> Opening:
    """The engine and image ``lamina TARGET`` opens the app on.

    Raises:
        NotFound: no such image in the engine.
        ArchiveError, RegistryError: the archive or registry image cannot be read.
        UsageError: ``--load`` where the engine cannot load archives.
    """
    from lamina.core import LocalStore, open_archive, open_remote, source_of

    source = source_of(target)
    if source is None:
        return Opening(ctx.engine, ctx.engine.image(target).id)
    kind, rest = source
    if not rest:
        raise UsageError(f"{target!r}: give a path or reference after '{kind}:'")
    if not load:
        engine = open_remote(rest) if kind == "docker" else open_archive(Path(rest), target)
        images = engine.images()
        return Opening(engine, images[0].id if images else None, owned=True)
    if kind == "docker":
        plan = ctx.engine.plan_pull(rest)
        for _event in ctx.engine.pull(plan):
            pass
        return Opening(ctx.engine, plan.image_id)
    store = ctx.engine
    if not isinstance(store, LocalStore):
        raise UsageError("--load works on lamina's own store; with Docker use `docker load`")
    loaded = store.load_archive(Path(rest))
    return Opening(store, loaded[0].id if loaded else None)


def run_app(opening: Opening) -> int:
    """Runs the app on ``opening`` until the user quits."""
    from lamina.core import load_config

    # Textual loads only when the app opens, never for the other verbs.
    from lamina.tui.app import make_app

    try:
        app = make_app(
            opening.engine,
            focus_image=opening.focus_image,
            focus_build=opening.focus_build,
            keymap=load_config().keymap,
        )
        app.run()
        return int(app.return_code or 0)
    finally:
        opening.close()


def _run_app(ctx: CliContext) -> int:
    from lamina.core import EngineUnavailable
    from lamina.tui.app import make_app

    try:
        engine = ctx.engine
    except EngineUnavailable as exc:
        # One line in the terminal, and an error view rather than no app at all.
        print(f"lamina: {exc}", file=sys.stderr)
        make_app(None, engine_error=str(exc)).run()
        return 1
    return run_app(Opening(engine))


def needs_terminal() -> int | None:
    """2 with a one-line message when stdout is not a terminal, else None."""
    # Under `lamina serve` the app draws through Textual's web driver, not a terminal.
    if sys.stdout.isatty() or os.environ.get("TEXTUAL_DRIVER"):
        return None
    print(
        "lamina: the app needs a terminal; use `lamina --help` for the commands",
        file=sys.stderr,
    )
    return 2


def open_app(args: argparse.Namespace, ctx: CliContext) -> int:
    """Opens the app on the selected engine (``--engine``, ``$LAMINA_ENGINE``), or on
    the image, archive or registry image ``args.image`` names."""
    refused = needs_terminal()
    if refused is not None:
        return refused
    target = getattr(args, "image", None)
    if not target:
        if getattr(args, "load", False):
            raise UsageError("--load needs an archive or a docker://REF to load")
        return _run_app(ctx)
    return run_app(opening_for(target, ctx, load=args.load))


def run_demo(args: argparse.Namespace, ctx: CliContext) -> int:
    """Creates (or reuses) the demo in the embedded store, then opens the app."""
    from lamina.core import create_demo, default_home

    store = ctx.local_store("`lamina demo`", "run it without --engine docker")
    workspace = args.workspace or default_home().parent / "lamina-demo"
    result = create_demo(store, workspace)
    for line in result.summary_lines():
        print(line)
    if args.no_open:
        return 0
    if not sys.stdout.isatty():
        print(
            "lamina: not a terminal, so the app was not opened (use --no-open to silence this)",
            file=sys.stderr,
        )
        return 0
    return _run_app(ctx)
