"""``lamina serve``: the same app in a web browser, through textual-serve.

For a class or a screen share: each browser tab that opens the page gets its own
``lamina app`` process on the same engine and store. It binds to loopback
(``127.0.0.1``) unless ``--host`` says otherwise, and says which it is: anyone who can
reach the address can use the app, and so the store.
"""

from __future__ import annotations

import argparse
import ipaddress
import shlex
import sys

from lamina.core import UsageError
from lamina.tui.cli.context import CliContext

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``lamina serve``."""
    p = sub.add_parser(
        "serve",
        help="serve the app to web browsers (textual-serve), on loopback by default",
        description=(
            "Serve the terminal app over HTTP: every browser tab gets its own app on the "
            "same engine. Binds to 127.0.0.1 unless --host says otherwise."
        ),
    )
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: 8000)")
    p.add_argument("image", metavar="IMAGE", nargs="?", help="open the app on this image")
    p.set_defaults(func=cmd_serve)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def app_command(args: argparse.Namespace, engine_kind: str | None) -> str:
    """The command each browser session runs: this lamina's ``app`` verb."""
    argv = [sys.executable, "-m", "lamina.tui"]
    if engine_kind:
        argv += ["--engine", engine_kind]
    argv.append("app")
    if args.image:
        argv.append(args.image)
    return shlex.join(argv)


def cmd_serve(args: argparse.Namespace, ctx: CliContext) -> int:
    """Serves the app until interrupted."""
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: expected 1-65535")
    try:
        from textual_serve.server import Server
    except ImportError as exc:
        raise UsageError("`lamina serve` needs textual-serve (pip install textual-serve)") from exc
    where = f"{args.host}:{args.port}" if ":" not in args.host else f"[{args.host}]:{args.port}"
    if is_loopback(args.host):
        note = "loopback only: give --host 0.0.0.0 to let other machines in"
    else:
        note = "open to the network: anyone who can reach it can use the app and its store"
    print(f"lamina: serving the app on http://{where} ({note})", file=sys.stderr, flush=True)
    server = Server(
        app_command(args, ctx.engine_kind), host=args.host, port=args.port, title="lamina"
    )
    server.serve()
    return 0
