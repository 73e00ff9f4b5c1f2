"""Fixtures for tests against real registries (Debian's docker-registry, distribution 2.8).

``.ci/run`` (or ``.ci/registry.sh start DIR`` on a laptop) starts two on loopback and
exports their addresses: ``LAMINA_TEST_REGISTRY`` (plain HTTP, no auth) and
``LAMINA_TEST_REGISTRY_TLS`` (HTTPS with a CA made for the run, htpasswd Basic auth),
each with the path of its JSON request log. Blob fetches are counted from those logs,
never from lamina's own output. Tests that need a registry skip without one and fail
in CI, like the Docker tests.

Some tests start a registry of their own (``private_registry``): one behind a token
server, and ones whose storage a test damages on purpose.

Every test runs with ``DOCKER_CONFIG`` and the certs.d root in its temp directory, so
nothing reads or writes the real ``~/.docker`` or ``/etc/docker``.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lamina.core.embedded.engine import EmbeddedEngine

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REGISTRY_BIN = os.environ.get("REGISTRY_BIN", "/usr/bin/docker-registry")
SESSION = uuid.uuid4().hex[:8]


def _gate(reason: str | None, what: str) -> None:
    """Skip with the reason on a laptop; fail in CI, where it must be provided."""
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"CI must provide {what}: {reason}")
    pytest.skip(reason)


@dataclass
class Registry:
    """A running registry and its JSON request log."""

    address: str
    log: Path
    ca: Path | None = None
    username: str = ""
    password: str = ""
    storage: Path | None = None

    def mark(self) -> int:
        """Where the log ends now; pass it to ``requests`` to see what came after."""
        return self.log.stat().st_size

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        """Every completed request after ``since`` (method, uri, status)."""
        # Log lines are written when a response completes; give the last one a moment.
        time.sleep(0.2)
        out = []
        with open(self.log, "rb") as f:
            f.seek(since)
            for line in f:
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                if doc.get("msg") == "response completed" and "http.request.uri" in doc:
                    out.append(
                        {
                            "method": doc["http.request.method"],
                            "uri": doc["http.request.uri"],
                            "status": int(doc.get("http.response.status", 0)),
                        }
                    )
        return out

    def blob_fetches(self, since: int, repo: str | None = None) -> list[str]:
        """Digests of the blobs served (GET 200/206) after ``since``, in order."""
        out = []
        for r in self.requests(since):
            path = urllib.parse.urlsplit(r["uri"]).path
            if r["method"] != "GET" or r["status"] not in (200, 206) or "/blobs/" not in path:
                continue
            name, _, digest = path.removeprefix("/v2/").rpartition("/blobs/")
            if repo is None or name == repo:
                out.append(digest)
        return out

    def uploads(self, since: int, repo: str) -> list[dict[str, Any]]:
        """Upload requests (POST/PATCH/PUT under ``blobs/uploads``) for ``repo``."""
        prefix = f"/v2/{repo}/blobs/uploads"
        return [
            r
            for r in self.requests(since)
            if r["method"] in ("POST", "PATCH", "PUT") and r["uri"].startswith(prefix)
        ]


def _env_registry(prefix: str, what: str) -> Registry:
    address = os.environ.get(prefix)
    log = os.environ.get(f"{prefix}_LOG")
    if not address or not log:
        _gate(f"{prefix} is not set (start one with .ci/registry.sh start DIR)", what)
    assert address and log
    ca = os.environ.get(f"{prefix}_CA")
    return Registry(
        address,
        Path(log),
        Path(ca) if ca else None,
        os.environ.get(f"{prefix}_USER", ""),
        os.environ.get(f"{prefix}_PASSWORD", ""),
    )


@pytest.fixture(scope="session")
def registry() -> Registry:
    """The plain-HTTP registry .ci/run started."""
    return _env_registry("LAMINA_TEST_REGISTRY", "a loopback registry (LAMINA_TEST_REGISTRY)")


@pytest.fixture(scope="session")
def tls_registry() -> Registry:
    """The TLS + Basic auth registry .ci/run started."""
    reg = _env_registry(
        "LAMINA_TEST_REGISTRY_TLS", "a TLS registry with Basic auth (LAMINA_TEST_REGISTRY_TLS)"
    )
    if reg.ca is None or not reg.username:
        _gate("LAMINA_TEST_REGISTRY_TLS_CA/_USER/_PASSWORD are not set", "the TLS registry")
    return reg


@pytest.fixture(autouse=True)
def _private_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials and certificates live in the test's temp dir, never the real ones."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.setenv("LAMINA_CERTS_D", str(tmp_path / "certs.d"))
    monkeypatch.delenv("LAMINA_INSECURE_REGISTRIES", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


@pytest.fixture
def trust(tmp_path: Path) -> Callable[[Registry], None]:
    """Puts a registry's CA in the test's certs.d, where Docker would look for it."""

    def install(reg: Registry) -> None:
        assert reg.ca is not None
        folder = tmp_path / "certs.d" / reg.address
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(reg.ca, folder / "ca.crt")

    return install


@pytest.fixture
def repo() -> Callable[[str], str]:
    """Unique repository names, so each test counts only its own requests."""

    def make(name: str = "img") -> str:
        return f"lamina-test-{SESSION}/{name}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def make_engine(tmp_path: Path) -> Iterator[Callable[[str], EmbeddedEngine]]:
    """Embedded engines on stores under tmp_path (several machines sharing a registry)."""
    engines: list[EmbeddedEngine] = []

    def make(name: str) -> EmbeddedEngine:
        engine = EmbeddedEngine(tmp_path / "stores" / name)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def _add_layer(engine: EmbeddedEngine, base: str, tag: str, files: dict[str, bytes]) -> str:
    """Builds ``FROM base`` + one COPY of ``files`` (a tiny layer); returns the image ID."""
    from lamina.core import BuildFinished, BuildRequest

    context = engine.home.parent / f"ctx-{uuid.uuid4().hex[:8]}"
    context.mkdir(parents=True)
    for name, data in files.items():
        (context / name).write_bytes(data)
    (context / "Dockerfile").write_text(f"FROM {base}\nCOPY {' '.join(files)} /data/\n")
    events = list(engine.build(BuildRequest(context=str(context), tags=(tag,))))
    finished = [e for e in events if isinstance(e, BuildFinished)]
    assert finished and finished[0].image, events[-1]
    return finished[0].image


@pytest.fixture
def add_layer() -> Callable[[EmbeddedEngine, str, str, dict[str, bytes]], str]:
    """``add_layer(engine, base, tag, files)``: an image one tiny layer above ``base``."""
    return _add_layer


@pytest.fixture
def base_image(busybox_tar: Path) -> Callable[[EmbeddedEngine, str], str]:
    """Imports the busybox rootfs into a store under a tag; returns the image ID."""

    def make(engine: EmbeddedEngine, tag: str) -> str:
        return engine.import_rootfs(busybox_tar, tag).id

    return make


# -- a registry of the test's own ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivateRegistry(Registry):
    process: subprocess.Popen[bytes] | None = None


def start_registry(root: Path, extra: str = "") -> PrivateRegistry:
    """Starts docker-registry on a free loopback port with storage in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n  formatter: json\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: lamina-test\n" + extra
    )
    log = root / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=out, stderr=out)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    return PrivateRegistry(f"127.0.0.1:{port}", log, storage=root / "data", process=proc)


@pytest.fixture
def private_registry(tmp_path: Path) -> Iterator[Callable[[str], PrivateRegistry]]:
    """Starts registries of the test's own (stopped by PID at the end)."""
    _gate(
        None if os.access(REGISTRY_BIN, os.X_OK) else f"{REGISTRY_BIN} is not installed",
        "docker-registry (apt-get install docker-registry)",
    )
    started: list[PrivateRegistry] = []

    def start(extra: str = "") -> PrivateRegistry:
        reg = start_registry(tmp_path / f"registry-{len(started)}", extra)
        started.append(reg)
        return reg

    yield start
    for reg in started:
        assert reg.process is not None
        reg.process.terminate()
        try:
            reg.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            reg.process.kill()
            reg.process.wait()


def _blob_file(reg: Registry, digest: str) -> Path:
    assert reg.storage is not None
    hex_ = digest.split(":", 1)[1]
    return reg.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


@pytest.fixture
def blob_file() -> Callable[[Registry, str], Path]:
    """``blob_file(registry, digest)``: where distribution's filesystem driver keeps it."""
    return _blob_file


class _QuietServer(http.server.ThreadingHTTPServer):
    """A client hanging up on a hostile answer is the point, not an error to print."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


# -- a token server ------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass
class TokenServer:
    """A small real token server (Docker's token spec), signing RS256 JWTs with openssl.

    Anonymous clients may pull ``public/*``; ``alice`` may pull and push anything;
    ``mallory`` is refused with 403. Every request is recorded.
    """

    root: Path
    users: dict[str, str] = field(default_factory=lambda: {"alice": "wonderland", "mallory": "x"})
    issuer: str = "lamina-test-issuer"
    service: str = "lamina-test-registry"
    seen: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _server: _QuietServer | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.key = self.root / "token.key"
        self.cert = self.root / "token.crt"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
            + ["-subj", "/CN=lamina token", "-keyout", str(self.key), "-out", str(self.cert)],
            check=True,
            capture_output=True,
        )
        der = subprocess.run(
            ["openssl", "rsa", "-in", str(self.key), "-pubout", "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        # libtrust's key ID: base32 of the first 240 bits of sha256(DER public key).
        b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
        self.kid = ":".join(b32[i : i + 4] for i in range(0, 48, 4))

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        head = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=head.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return head + "." + _b64url(sig)

    def grant(self, user: str, scopes: list[str]) -> list[dict[str, Any]]:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a]
            if user == "alice":
                allowed = wanted
            elif not user and name.startswith("public/"):
                allowed = [a for a in wanted if a == "pull"]
            else:
                allowed = []
            access.append({"type": kind, "name": name, "actions": allowed})
        return access

    def start(self) -> None:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                user = ""
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if server.users.get(name) != password:
                        return self.answer(401, {"details": "incorrect username or password"})
                    user = name
                server.seen.append({"user": user, "scope": query.get("scope", [])})
                if user == "mallory":
                    return self.answer(403, {"details": "access to the resource is denied"})
                now = int(time.time())
                token = server.sign(
                    {
                        "iss": server.issuer,
                        "sub": user,
                        "aud": query.get("service", [""])[0],
                        "exp": now + 300,
                        "nbf": now - 10,
                        "iat": now,
                        "jti": uuid.uuid4().hex,
                        "access": server.grant(user, query.get("scope", [])),
                    }
                )
                self.answer(200, {"token": token, "expires_in": 300})

            def answer(self, status: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def registry_config(self) -> str:
        return (
            "auth:\n  token:\n"
            f"    realm: http://127.0.0.1:{self.port}/token\n"
            f"    service: {self.service}\n"
            f"    issuer: {self.issuer}\n"
            f"    rootcertbundle: {self.cert}\n"
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[TokenServer]:
    server = TokenServer(tmp_path / "token")
    server.start()
    yield server
    server.stop()


# -- a proxy that misbehaves ---------------------------------------------------------------


@dataclass
class Proxy:
    """An HTTP proxy in front of a real registry that can cut blob downloads short,
    or answer with what no honest registry sends. Records every request's headers."""

    upstream: str
    cut_blobs_after: int | None = None
    redirect_loop: bool = False
    huge_manifest: bool = False
    seen: list[dict[str, str]] = field(default_factory=list)
    port: int = 0
    _server: _QuietServer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        import http.client

        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def forward(self) -> None:
                proxy.seen.append({"method": self.command, "path": self.path, **self.headers})
                if proxy.redirect_loop and "/manifests/" in self.path:
                    self.send_response(307)
                    self.send_header("Location", self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if proxy.huge_manifest and "/manifests/" in self.path:
                    body = b'{"schemaVersion":2,"layers":[' + b" " * (5 << 20) + b"]}"
                    self.send_response(200)
                    self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                cut = (
                    proxy.cut_blobs_after is not None
                    and self.command == "GET"
                    and "/blobs/sha256:" in self.path
                    and resp.status in (200, 206)
                    and len(data) > proxy.cut_blobs_after
                )
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Connection", "close" if cut else "keep-alive")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data[: proxy.cut_blobs_after] if cut else data)
                self.wfile.flush()
                conn.close()
                if cut:
                    self.close_connection = True

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = forward

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def proxy() -> Iterator[Callable[[str], Proxy]]:
    started: list[Proxy] = []

    def start(upstream: str) -> Proxy:
        p = Proxy(upstream)
        p.start()
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()
