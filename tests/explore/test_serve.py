"""``lamina serve`` in a real headless Chromium: the page loads the app, a key press in
the browser switches to the Builds view, and a screenshot of it is taken.

Chromium is Debian's (``.ci/run`` installs it) and is driven over the Chrome DevTools
Protocol with aiohttp's websocket client; nothing is downloaded. xterm.js draws on a
canvas, so what the page shows is read from the terminal output the page receives
(a script added before the page's own records every websocket frame), not the DOM.
Every process the test starts is stopped by its process group at the end.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest

from lamina.core import BuildFinished, BuildRequest, LocalStore, open_engine

pytestmark = pytest.mark.slow

# Records what the app sends, before textual.js opens its websocket.
HOOK = """
window.__frames = [];
(() => {
  const Native = window.WebSocket;
  const decoder = () => new TextDecoder("utf-8");
  function Hooked(url, protocols) {
    const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    ws.addEventListener("message", (event) => {
      const data = event.data;
      if (typeof data === "string") {
        window.__frames.push(data);
      } else if (data instanceof ArrayBuffer) {
        window.__frames.push(decoder().decode(new Uint8Array(data)));
      } else if (data instanceof Blob) {
        data.arrayBuffer().then((b) => window.__frames.push(decoder().decode(new Uint8Array(b))));
      }
    });
    return ws;
  }
  Hooked.prototype = Native.prototype;
  for (const k of ["CONNECTING", "OPEN", "CLOSING", "CLOSED"]) Hooked[k] = Native[k];
  window.WebSocket = Hooked;
})();
"""

ANSI = re.compile(
    r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]"
)
DEADLINE = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait(predicate: Any, what: str, timeout: float = DEADLINE) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stops a process this test started, and its children, by its process group."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=15)


@pytest.fixture
def served_store(lamina_home: Path, busybox_tar: Path, tmp_path: Path) -> Path:
    """A store with one recorded build (COPY only: no sandbox needed)."""
    engine = open_engine("embedded", lamina_home)
    assert isinstance(engine, LocalStore)
    try:
        engine.import_rootfs(busybox_tar, "busybox:latest")
        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "hello.txt").write_text("hello\n")
        (ctx / "Dockerfile").write_text("FROM busybox:latest\nCOPY hello.txt /\n")
        events = list(engine.build(BuildRequest(context=str(ctx), tags=("served-app:1",))))
        assert any(isinstance(e, BuildFinished) for e in events)
    finally:
        engine.close()
    return lamina_home


@pytest.fixture
def server(served_store: Path, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "LAMINA_HOME": str(served_store), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lamina.tui", "serve", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                return False

        _wait(up, "lamina serve to listen")
        yield port, log
    finally:
        _stop(proc)
        # The app processes the server started for the page are gone with it.
        assert proc.returncode is not None


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[int]:
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    proc = subprocess.Popen(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            # The page links a web font; no name but loopback resolves, so nothing leaves.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=1280,800",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        active = profile / "DevToolsActivePort"
        _wait(lambda: active.is_file() and active.read_text().strip(), "Chromium's DevTools port")
        yield int(active.read_text().split()[0])
    finally:
        _stop(proc)


class Cdp:
    """The Chrome DevTools Protocol over one page's websocket."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        my_id = self.next_id
        await self.ws.send_json({"id": my_id, "method": method, "params": params})
        while True:
            msg = await asyncio.wait_for(self.ws.receive_json(), DEADLINE)
            if msg.get("id") == my_id:
                assert "error" not in msg, msg
                result: dict[str, Any] = msg.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def screen_text(self, since: int = 0) -> str:
        """What the app drew after frame ``since``, escape sequences removed."""
        frames = await self.evaluate(f"window.__frames.slice({since}).join('')")
        return ANSI.sub("", frames or "")

    async def until(self, what: str, since: int = 0) -> str:
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            text = await self.screen_text(since)
            if what in text:
                return text
            await asyncio.sleep(0.2)
        raise AssertionError(f"the page never showed {what!r}: {text[-2000:]!r}")

    async def key(self, char: str) -> None:
        code = {"3": "Digit3"}.get(char, f"Key{char.upper()}")
        vk = ord(char.upper())
        for kind in ("keyDown", "keyUp"):
            await self.call(
                "Input.dispatchKeyEvent",
                type=kind,
                key=char,
                code=code,
                text=char if kind == "keyDown" else "",
                windowsVirtualKeyCode=vk,
                nativeVirtualKeyCode=vk,
            )


async def _drive(devtools: int, port: int, shot: Path) -> str:
    import aiohttp

    with urllib.request.urlopen(f"http://127.0.0.1:{devtools}/json/list", timeout=10) as r:
        pages = [t for t in json.load(r) if t.get("type") == "page"]
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            cdp = Cdp(ws)
            await cdp.call("Page.enable")
            await cdp.call("Runtime.enable")
            await cdp.call("Page.addScriptToEvaluateOnNewDocument", source=HOOK)
            await cdp.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
            assert await cdp.evaluate("document.title") is not None
            # The app started and drew its views and footer.
            await cdp.until("Layers")
            await cdp.until("Quit")
            await cdp.evaluate("document.querySelector('.xterm-helper-textarea').focus()")
            mark = await cdp.evaluate("window.__frames.length")
            await cdp.key("3")
            # Only the Builds view's footer has Rebuild; its table lists the build.
            await cdp.until("Rebuild", mark)
            text = await cdp.until("served-app:1", mark)
            await asyncio.sleep(1.0)  # let xterm paint the last frames
            data = await cdp.call("Page.captureScreenshot", format="png")
            import base64

            shot.write_bytes(base64.b64decode(data["data"]))
            await cdp.call("Browser.close")
            return text


def test_the_app_in_a_real_browser(server: tuple[int, Path], browser: int, tmp_path: Path) -> None:
    port, log = server
    # It says where it listens, and that it is loopback only.
    said = _wait(lambda: "serving the app on" in log.read_text() and log.read_text(), "the banner")
    assert f"http://127.0.0.1:{port} (loopback only" in said
    proc = next(p for p in psutil.process_iter() if str(port) in " ".join(p.cmdline() or []))
    listening = {c.laddr.ip for c in proc.net_connections(kind="inet") if c.status == "LISTEN"}
    assert listening == {"127.0.0.1"}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
        assert "lamina" in r.read().decode()

    shot = tmp_path / "builds.png"
    text = asyncio.run(_drive(browser, port, shot))
    assert "What if" in text  # the Builds view's keys, drawn after the key press

    from PIL import Image

    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        assert width == 1280 and height > 400  # the window, less headless Chrome's chrome
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 8  # text drawn, not a blank page


def test_loopback_unless_told_otherwise() -> None:
    import argparse

    from lamina.tui.cli import make_parser
    from lamina.tui.cli.serve import DEFAULT_HOST, app_command, is_loopback

    args = make_parser().parse_args(["serve"])
    assert args.host == DEFAULT_HOST == "127.0.0.1" and args.port == 8000
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7")
    command = app_command(argparse.Namespace(image="busybox:latest"), "docker")
    assert command.endswith("-m lamina.tui --engine docker app busybox:latest")
