"""The parity harness: one scenario, built on Docker's classic builder and on lamina.

A scenario is a build context, a Dockerfile and a sequence of edits with a build after
each. Every build runs on a real Docker Engine (``DOCKER_BUILDKIT=0``: the SDK's
``/build`` endpoint without a BuildKit session is the classic builder) and on a fresh
embedded store, and the harness asserts that

* both report the same HIT/MISS sequence over the non-FROM steps (and, where the
  scenario states one, that it is the sequence ``../shared/cache-semantics.md``
  predicts), and
* the final images have the same filesystem: paths, types, modes, sizes, content
  digests and link targets, mtimes and owners ignored.

Both engines get the same busybox base (lamina's reproducible rootfs tar), imported
under a tag of the scenario's own with a unique label, so Docker's shared cache from
earlier scenarios or runs can never answer for this one.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from docker_cleanup import remove_images_tagged

from lamina.core.demo.busybox import busybox_rootfs_tar
from lamina.core.docker.engine import DockerEngine
from lamina.core.docker.save import ChunkReader
from lamina.core.embedded.archive import import_rootfs
from lamina.core.embedded.engine import EmbeddedEngine
from lamina.core.events import BuildFailed, BuildFinished, StepFinished
from lamina.core.model import BuildRequest

RUN_ID = uuid.uuid4().hex[:8]
_created_tags: set[str] = set()

# -- scenario steps -------------------------------------------------------------------
#
# A step is a tuple: ("build", expect, options) with options among build_args, no_cache,
# target and dockerfile (relative to the context, may be outside it); ("write", rel,
# text-or-bytes), ("touch", rel), ("chmod", rel, mode), ("chown", rel, uid, gid),
# ("rm", rel), ("rename", old, new), ("mkdir", rel), ("symlink", target, rel),
# ("xattr", rel, name, value); ("refused", words, line): both engines refuse the build in
# those words (the classic harness only).
# "{BASE}" in written text is the scenario's base image, "{URL}" the address of an HTTP
# server on 127.0.0.1 serving the workspace's www/ directory ("../www/<name>").


class Workspace:
    """The scenario's directory: ``ctx/`` is the context, other files live beside it."""

    def __init__(self, root: Path, base: str, url: str = "") -> None:
        self.root = root
        self.ctx = root / "ctx"
        self.base = base
        self.url = url  # an HTTP server on 127.0.0.1 serving root/www (for ADD <url>)

    def path(self, rel: str) -> Path:
        return self.ctx / rel

    def apply(self, step: tuple[Any, ...]) -> None:
        """Carries out one edit step."""
        op, *args = step
        if op == "write":
            rel, content = args
            path = self.path(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content.replace("{BASE}", self.base).replace("{URL}", self.url))
        elif op == "touch":
            path = self.path(args[0])
            st = path.stat()
            os.utime(path, ns=(st.st_atime_ns + 3600 * 10**9, st.st_mtime_ns + 3600 * 10**9))
        elif op == "chmod":
            os.chmod(self.path(args[0]), args[1])
        elif op == "chown":
            os.lchown(self.path(args[0]), args[1], args[2])
        elif op == "rm":
            path = self.path(args[0])
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        elif op == "rename":
            self.path(args[1]).parent.mkdir(parents=True, exist_ok=True)
            os.rename(self.path(args[0]), self.path(args[1]))
        elif op == "rewrite-same-stat":
            # Same size, old mtime put back: what BuildKit's context transfer cannot see.
            path = self.path(args[0])
            st = path.stat()
            path.write_text(args[1])
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        elif op == "xattr":
            os.setxattr(self.path(args[0]), args[1], args[2], follow_symlinks=False)
        elif op == "mkdir":
            self.path(args[0]).mkdir(parents=True)
        elif op == "symlink":
            path = self.path(args[1])
            if path.is_symlink():
                path.unlink()
            path.symlink_to(args[0])
        else:
            raise AssertionError(f"unknown scenario step {op!r}")


# -- image filesystems -----------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One path of a flattened image (what parity compares)."""

    kind: str
    mode: int
    size: int
    digest: str
    link: str


def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return "/" + name.strip("/")


def apply_layer(fs: dict[str, Entry], layer: IO[bytes]) -> None:
    """Applies one layer tar (AUFS whiteouts) on top of ``fs``."""
    pending_links: list[tuple[str, str]] = []
    with tarfile.open(fileobj=layer, mode="r|") as tar:
        for info in tar:
            path = _norm(info.name)
            parent, _, base = path.rpartition("/")
            parent = parent or "/"
            if base == ".wh..wh..opq":
                prefix = parent.rstrip("/") + "/"
                for p in [p for p in fs if p.startswith(prefix)]:
                    del fs[p]
                continue
            if base.startswith(".wh."):
                gone = (parent.rstrip("/") + "/" + base[4:]) if parent != "/" else "/" + base[4:]
                for p in [p for p in fs if p == gone or p.startswith(gone + "/")]:
                    del fs[p]
                continue
            if path == "/":
                continue
            mode = stat.S_IMODE(info.mode)
            if info.isdir():
                fs[path] = Entry("dir", mode, 0, "", "")
            elif info.issym():
                fs[path] = Entry("symlink", mode, 0, "", info.linkname)
            elif info.islnk():
                pending_links.append((path, _norm(info.linkname)))
            elif info.isreg():
                member = tar.extractfile(info)
                digest = hashlib.sha256(member.read() if member else b"").hexdigest()
                fs[path] = Entry("file", mode, info.size, digest, "")
            else:
                fs[path] = Entry("other", mode, 0, "", f"{info.devmajor}:{info.devminor}")
    # A hard link is its target's content under another name: compare it as a file.
    for path, target in pending_links:
        if target in fs:
            fs[path] = fs[target]


def docker_fs(engine: DockerEngine, image_id: str) -> dict[str, Entry]:
    """Flattens a Docker image from its saved stream (legacy or OCI layout)."""
    diff_ids = engine.inspect(image_id)["DiffIDs"]
    layers: dict[str, bytes] = {}
    stream = ChunkReader(engine.api.get_image(image_id))
    with tarfile.open(fileobj=stream, mode="r|") as outer:
        for info in outer:
            if not info.isreg():
                continue
            if not (info.name.endswith("/layer.tar") or info.name.startswith("blobs/sha256/")):
                continue
            member = outer.extractfile(info)
            assert member is not None
            data = member.read()
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            if digest in diff_ids:
                layers[digest] = data
    fs: dict[str, Entry] = {}
    for diff_id in diff_ids:
        apply_layer(fs, io.BytesIO(layers[diff_id]))
    return fs


def embedded_fs(engine: EmbeddedEngine, image_id: str) -> dict[str, Entry]:
    """Flattens an embedded image from its regenerated layer tars."""
    fs: dict[str, Entry] = {}
    for chain_id in engine.image(image_id).layers:
        buf = io.BytesIO()
        engine.store.layers.write_tar(chain_id, buf)
        buf.seek(0)
        apply_layer(fs, buf)
    return fs


def fs_diff(docker: dict[str, Entry], lamina: dict[str, Entry]) -> list[str]:
    """Human-readable differences, at most 20."""
    out: list[str] = []
    for path in sorted(set(docker) | set(lamina)):
        a, b = docker.get(path), lamina.get(path)
        if a != b:
            out.append(f"{path}: docker={a} lamina={b}")
        if len(out) >= 20:
            break
    return out


# -- running a scenario ----------------------------------------------------------------


@dataclass
class Outcome:
    """One engine's result of one build."""

    steps: list[tuple[int, int, str, str]]  # (stage, index, HIT/MISS, instruction)
    image: str | None
    error: str | None

    @property
    def pattern(self) -> str:
        return "".join("H" if s[2] == "HIT" else "M" for s in self.steps)


def outcome(events: Iterable[Any]) -> Outcome:
    steps: list[tuple[int, int, str, str]] = []
    image = error = None
    for event in events:
        if isinstance(event, StepFinished) and event.step.index > 0:
            s = event.step
            steps.append((s.stage, s.index, "HIT" if s.cached else "MISS", s.instruction))
        elif isinstance(event, BuildFinished):
            image = event.image
        elif isinstance(event, BuildFailed):
            error = event.message
    return Outcome(steps, image, error)


class Parity:
    """Runs a scenario on both engines and checks that they agree."""

    def __init__(
        self, docker: DockerEngine, embedded: EmbeddedEngine, ws: Workspace, tag: str
    ) -> None:
        self.docker = docker
        self.embedded = embedded
        self.ws = ws
        self.tag = tag

    def request(self, options: dict[str, Any]) -> BuildRequest:
        df = None
        if options.get("dockerfile") is not None:
            df = str((self.ws.ctx / options["dockerfile"]).resolve())
        return BuildRequest(
            context=str(self.ws.ctx),
            dockerfile=df,
            tags=(self.tag,),
            build_args=dict(options.get("build_args") or {}),
            target=options.get("target"),
            no_cache=bool(options.get("no_cache")),
            network="none",
            builder="classic",
        )

    def run(self, name: str, steps: list[tuple[Any, ...]]) -> None:
        n = 0
        last: tuple[Outcome, Outcome] | None = None
        refused = 0
        for step in steps:
            if step[0] == "refused":
                self.refused(name, step[1], step[2])
                refused += 1
                continue
            if step[0] != "build":
                self.ws.apply(step)
                continue
            _, expect, options = step
            n += 1
            request = self.request(options)
            theirs = outcome(self.docker.build(request))
            ours = outcome(self.embedded.build(request))
            where = f"{name}, build {n}"
            assert theirs.error is None, f"{where}: Docker failed: {theirs.error}"
            assert ours.error is None, f"{where}: lamina failed: {ours.error}"
            docker_seq = [(s[0], s[1], s[2]) for s in theirs.steps]
            lamina_seq = [(s[0], s[1], s[2]) for s in ours.steps]
            assert lamina_seq == docker_seq, (
                f"{where}: HIT/MISS differ\n  docker: {_fmt(theirs)}\n  lamina: {_fmt(ours)}"
            )
            if expect is not None:
                assert theirs.pattern == expect, (
                    f"{where}: Docker did not behave as cache-semantics.md says "
                    f"(expected {expect}): {_fmt(theirs)}"
                )
            last = (theirs, ours)
        if last is None and refused:
            return
        assert last is not None, f"{name} has no build"
        theirs, ours = last
        assert theirs.image is not None and ours.image is not None
        diff = fs_diff(docker_fs(self.docker, theirs.image), embedded_fs(self.embedded, ours.image))
        assert not diff, f"{name}: final filesystems differ:\n  " + "\n  ".join(diff)

    def refused(self, name: str, words: str, line: int | None) -> None:
        """Both engines refuse the build, in the same words (and, for a parse error,
        at the same line), and lamina leaves no image."""
        request = self.request({})
        theirs = outcome(self.docker.build(request))
        ours = outcome(self.embedded.build(request))
        assert theirs.error is not None and words in theirs.error, (
            f"{name}: Docker did not refuse with {words!r}: {theirs.error}"
        )
        assert ours.error is not None and words in ours.error, (
            f"{name}: lamina did not refuse with {words!r}: {ours.error}"
        )
        assert "\n" not in ours.error and ours.image is None
        if line is not None:
            assert f"line {line}:" in theirs.error, f"{name}: Docker: {theirs.error}"
            assert f"Dockerfile:{line}:" in ours.error, f"{name}: lamina: {ours.error}"


def _fmt(o: Outcome) -> str:
    return " ".join(f"{s[0]}/{s[1]}:{s[2]}" for s in o.steps) or "(no steps)"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the scenario's www/ directory for ADD <url>, without request logs."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(www: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """An HTTP server on 127.0.0.1 serving ``www`` (created), and its address. The
    daemon fetches ``ADD <url>`` itself, in the host's network namespace, so both
    builders reach it even with ``--network=none`` builds."""
    www.mkdir(parents=True)
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, name="parity-http", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="session")
def rootfs_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lamina's reproducible busybox rootfs, the base of every scenario."""
    return busybox_rootfs_tar(tmp_path_factory.mktemp("rootfs") / "busybox.tar")


@pytest.fixture
def parity(
    docker_available: None,
    isolation: None,
    rootfs_tar: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., None]]:
    """``parity(name, files, steps)`` runs the scenario on Docker and on a fresh embedded store."""
    docker = DockerEngine(home=tmp_path / "lamina-home")
    embedded = EmbeddedEngine(tmp_path / "store")
    nonce = uuid.uuid4().hex[:12]
    base = f"lamina-parity-{RUN_ID}/base-{nonce}:latest"
    with open(rootfs_tar, "rb") as fh:
        docker.api.import_image_from_data(
            fh.read(),
            repository=base.rsplit(":", 1)[0],
            tag="latest",
            changes=[f"LABEL lamina.parity={nonce}"],
        )
    _created_tags.add(base)
    import_rootfs(embedded.store, rootfs_tar, base)
    tag = f"lamina-parity-{RUN_ID}/result-{nonce}:latest"
    _created_tags.add(tag)

    server, url = _serve(tmp_path / "ws" / "www")

    def run(name: str, files: dict[str, str | bytes], steps: list[tuple[Any, ...]]) -> None:
        ws = Workspace(tmp_path / "ws", base, url)
        ws.ctx.mkdir(parents=True)
        for rel, content in files.items():
            ws.apply(("write", rel, content))
        Parity(docker, embedded, ws, tag).run(name, steps)

    try:
        yield run
    finally:
        server.shutdown()
        server.server_close()
        docker.close()
        embedded.close()


# -- BuildKit ---------------------------------------------------------------------------
#
# The same workspaces, built by the BuildKit inside the private dockerd through Debian's
# docker CLI 20.10 (named explicitly: a newer CLI earlier on PATH speaks buildx), its
# `--progress=plain` lines parsed into one decision per vertex.

DOCKER_CLI = "/usr/bin/docker"
_VERTEX = re.compile(r"^#(\d+) \[(?:(\S+) )?(\d+)/(\d+)\] (.*)$")
_STATUS = re.compile(r"^#(\d+) (CACHED|DONE|ERROR)")
BUILDKIT_STEPS = ("RUN", "COPY", "ADD", "WORKDIR")


@dataclass
class Vertex:
    """One step BuildKit reported: ``[label pos/total] text``, and whether it hit."""

    label: str | None
    pos: int
    text: str
    cached: bool


def buildkit_vertices(output: str) -> list[Vertex]:
    """The Dockerfile steps of a ``--progress=plain`` log (FROM and internals left out)."""
    names: dict[str, tuple[str | None, int, str]] = {}
    cached: set[str] = set()
    for line in output.splitlines():
        m = _VERTEX.match(line)
        if m:
            names[m.group(1)] = (m.group(2), int(m.group(3)), m.group(5))
            continue
        m = _STATUS.match(line)
        if m and m.group(2) == "CACHED":
            cached.add(m.group(1))
    out = []
    for num, (label, pos, text) in names.items():
        if text.startswith("FROM "):
            continue
        out.append(Vertex(label, pos, text, num in cached))
    return out


def buildkit_build(ws: Workspace, tag: str, options: dict[str, Any]) -> tuple[str, list[Vertex]]:
    """One build on the daemon's BuildKit: the image ID and the vertices."""
    iid = ws.root / "iid"
    if iid.exists():
        iid.unlink()
    cmd = [DOCKER_CLI, "build", "--progress=plain", "--network=none", "-t", tag]
    cmd += ["--iidfile", str(iid)]
    if options.get("dockerfile") is not None:
        cmd += ["-f", str((ws.ctx / options["dockerfile"]).resolve())]
    for k, v in (options.get("build_args") or {}).items():
        cmd += ["--build-arg", f"{k}={v}"]
    if options.get("target"):
        cmd += ["--target", options["target"]]
    if options.get("no_cache"):
        cmd.append("--no-cache")
    for secret_id, path in (options.get("secrets") or {}).items():
        cmd += ["--secret", f"id={secret_id},src={ws.root / path}"]
    cmd.append(str(ws.ctx))
    env = dict(os.environ, DOCKER_BUILDKIT="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"BuildKit failed:\n{output[-3000:]}"
    return iid.read_text().strip(), buildkit_vertices(output)


@dataclass
class Decided:
    """One of lamina's cached steps, placed as BuildKit names it."""

    stage: int
    index: int
    label: str
    pos: int
    cached: bool
    merged_into: str | None  # "<stage>/<index>" of the step it ran once with
    instruction: str


def lamina_decisions(
    events: list[Any], stage_names: list[str | None], on_stage: set[int] | None = None
) -> tuple[list[Decided], set[int], str | None, str | None]:
    """lamina's cached steps, the stages it skipped, its image and its error
    (``on_stage``: stages whose FROM names another stage, which BuildKit does not count
    as a step)."""
    out: list[Decided] = []
    skipped: set[int] = set()
    pos: dict[int, int] = {}
    image = error = None
    for event in events:
        if isinstance(event, StepFinished):
            s = event.step
            kind = (s.reason or {}).get("kind")
            if s.index == 0:
                pos[s.stage] = 0 if s.stage in (on_stage or set()) else 1
                if kind == "stage_skipped":
                    skipped.add(s.stage)
                continue
            if s.cached is None:
                continue
            pos[s.stage] = pos.get(s.stage, 1) + 1
            label = stage_names[s.stage] or f"stage-{s.stage}"
            merged = (s.reason or {}).get("step") if kind == "merged" else None
            out.append(
                Decided(
                    s.stage, s.index, label, pos[s.stage], bool(s.cached), merged, s.instruction
                )
            )
        elif isinstance(event, BuildFinished):
            image = event.image
        elif isinstance(event, BuildFailed):
            error = event.message
    # Patterns read in Dockerfile order; parallel stages finish in any order.
    out.sort(key=lambda d: (d.stage, d.index))
    return out, skipped, image, error


def compare_decisions(where: str, ours: list[Decided], theirs: list[Vertex]) -> str:
    """Asserts both builders made the same decision per step; returns lamina's H/M."""
    labels = {v.label for v in theirs}
    unlabelled = labels == {None}

    def vertex(d: Decided) -> Vertex | None:
        for v in theirs:
            if v.pos == d.pos and (v.label == d.label or (unlabelled and v.label is None)):
                return v
        return None

    by_step = {f"{d.stage}/{d.index}": d for d in ours}
    used: set[int] = set()
    for d in ours:
        owner = by_step.get(d.merged_into) if d.merged_into else d
        assert owner is not None
        members = [m for m in ours if m.merged_into == f"{owner.stage}/{owner.index}"]
        group = [owner, *members]
        found = [v for v in (vertex(g) for g in group) if v is not None]
        assert found, f"{where}: BuildKit has no step for {d.label} {d.pos}: {d.instruction}"
        v = found[0]
        decided = group[0].cached
        assert v.cached == decided, (
            f"{where}: {d.label} {d.pos} ({d.instruction}): BuildKit "
            f"{'HIT' if v.cached else 'MISS'}, lamina {'HIT' if decided else 'MISS'}"
        )
        used.add(id(v))
    extra = [v for v in theirs if id(v) not in used]
    assert not extra, f"{where}: BuildKit ran steps lamina did not: {extra}"
    return "".join("H" if d.cached else "M" for d in ours)


class BuildKitParity:
    """Runs a scenario on the daemon's BuildKit and on lamina under BuildKit's rules."""

    def __init__(self, docker: DockerEngine, embedded: EmbeddedEngine, ws: Workspace, tag: str):
        self.docker = docker
        self.embedded = embedded
        self.ws = ws
        self.tag = tag

    def request(self, options: dict[str, Any]) -> BuildRequest:
        df = None
        if options.get("dockerfile") is not None:
            df = str((self.ws.ctx / options["dockerfile"]).resolve())
        return BuildRequest(
            context=str(self.ws.ctx),
            dockerfile=df,
            tags=(self.tag,),
            build_args=dict(options.get("build_args") or {}),
            target=options.get("target"),
            no_cache=bool(options.get("no_cache")),
            network="none",
            builder="buildkit",
            no_cache_filter=tuple(options.get("no_cache_filter") or ()),
            secrets={k: str(self.ws.root / v) for k, v in (options.get("secrets") or {}).items()},
        )

    def stage_names(self, options: dict[str, Any]) -> list[str | None]:
        return [s.name or None for s in self._stages(options)]

    def on_stage(self, options: dict[str, Any]) -> set[int]:
        stages = self._stages(options)
        names = {s.name: i for i, s in enumerate(stages) if s.name}
        return {
            i
            for i, s in enumerate(stages)
            if s.base.lower() in names or (s.base.isdigit() and int(s.base) < i)
        }

    def _stages(self, options: dict[str, Any]) -> list[Any]:
        from lamina.core.dockerfile.instructions import load_dockerfile

        rel = options.get("dockerfile") or "Dockerfile"
        return list(load_dockerfile((self.ws.ctx / rel).read_text()).stages)

    def run(self, name: str, steps: list[tuple[Any, ...]], *, docker: bool = True) -> list[Any]:
        """Every build on both (``docker=False``: lamina alone, for syntax 20.10's
        BuildKit cannot parse); returns lamina's events of each build."""
        n = 0
        last: tuple[str | None, str | None] | None = None
        every: list[Any] = []
        for step in steps:
            if step[0] != "build":
                self.ws.apply(step)
                continue
            _, expect, options = step
            n += 1
            where = f"{name}, build {n}"
            events = list(self.embedded.build(self.request(options)))
            every.append(events)
            ours, skipped, image, error = lamina_decisions(
                events, self.stage_names(options), self.on_stage(options)
            )
            assert error is None, f"{where}: lamina failed: {error}"
            pattern = "".join("H" if d.cached else "M" for d in ours)
            theirs_image = None
            if docker:
                theirs_image, vertices = buildkit_build(self.ws, self.tag, options)
                pattern = compare_decisions(where, ours, vertices)
                for number in skipped:
                    label = self.stage_names(options)[number] or f"stage-{number}"
                    assert not [v for v in vertices if v.label == label], (
                        f"{where}: BuildKit ran steps of the skipped stage {label}"
                    )
            if expect is not None:
                assert pattern == expect, f"{where}: expected {expect}, lamina decided {pattern}"
            last = (theirs_image, image)
        assert last is not None, f"{name} has no build"
        theirs_image, ours_image = last
        assert ours_image is not None
        if docker:
            assert theirs_image is not None
            diff = fs_diff(
                docker_fs(self.docker, theirs_image), embedded_fs(self.embedded, ours_image)
            )
            assert not diff, f"{name}: final filesystems differ:\n  " + "\n  ".join(diff)
        return every


def _with_nonce(tar: Path, out: Path, nonce: str) -> Path:
    """The rootfs tar with one more file, ``/.parity``, holding ``nonce``."""
    shutil.copyfile(tar, out)
    with tarfile.open(out, "a") as archive:
        data = nonce.encode()
        info = tarfile.TarInfo(".parity")
        info.size, info.mode, info.mtime = len(data), 0o644, 1_000_000_000
        archive.addfile(info, io.BytesIO(data))
    return out


@pytest.fixture
def buildkit_parity(
    docker_available: None,
    isolation: None,
    rootfs_tar: Path,
    tmp_path: Path,
) -> Iterator[Callable[..., list[Any]]]:
    """``buildkit_parity(name, files, steps, docker=True)``: the scenario on the daemon's
    BuildKit and on a fresh embedded store under BuildKit's rules."""
    docker = DockerEngine(home=tmp_path / "lamina-home")
    embedded = EmbeddedEngine(tmp_path / "store")
    nonce = uuid.uuid4().hex[:12]
    base = f"lamina-parity-{RUN_ID}/bk-base-{nonce}:latest"
    # BuildKit keys a local base by its layers, not its config: a file of the
    # scenario's own keeps Docker's cache of earlier scenarios from answering.
    rootfs_tar = _with_nonce(rootfs_tar, tmp_path / "base.tar", nonce)
    with open(rootfs_tar, "rb") as fh:
        docker.api.import_image_from_data(
            fh.read(),
            repository=base.rsplit(":", 1)[0],
            tag="latest",
            changes=[f"LABEL lamina.parity={nonce}"],
        )
    _created_tags.add(base)
    import_rootfs(embedded.store, rootfs_tar, base)
    tag = f"lamina-parity-{RUN_ID}/bk-result-{nonce}:latest"
    _created_tags.add(tag)
    server, url = _serve(tmp_path / "ws" / "www")

    def run(
        name: str,
        files: dict[str, str | bytes],
        steps: list[tuple[Any, ...]],
        docker_too: bool = True,
    ) -> list[Any]:
        ws = Workspace(tmp_path / "ws", base, url)
        ws.ctx.mkdir(parents=True)
        for rel, content in files.items():
            ws.apply(("write", rel, content))
        return BuildKitParity(docker, embedded, ws, tag).run(name, steps, docker=docker_too)

    try:
        yield run
    finally:
        server.shutdown()
        server.server_close()
        docker.close()
        embedded.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Removes the scenarios' images from Docker (and what they leave dangling)."""
    if _created_tags:
        remove_images_tagged(f"lamina-parity-{RUN_ID}/")
