"""The demo workspace: a small store that shows everything lamina is about, built offline.

``create_demo`` writes three build contexts into a workspace and builds them with the
real builder on a busybox base made from the machine's static busybox:

1. ``demo-app`` (busybox + RUN + two COPY steps + CMD), ``demo-web`` on the same base
   (so the base layer is shared by every image);
2. ``demo-app`` again after touching ``app.sh`` (mtime only: the COPY still hits) and
   making ``data/run.sh`` executable (a mode change: that COPY misses);
3. ``demo-app`` again after editing the RUN line that writes the greeting (a miss that
   cascades);
4. ``demo-app`` again after editing the LABEL above its COPY steps: where the two
   builders part (BuildKit, the default, hits everywhere, since image settings enter no
   step's key; the classic builder misses from the LABEL down);
5. ``demo-tools`` FROM the final ``demo-app`` (shares all of its layers);
6. ``demo-release`` imported twice (``lamina import``): the first release is left
   dangling, and since no build cache holds its layer, pruning dangling images frees it.

Each rebuild moves the ``demo-app`` tag, so the earlier images become dangling, and
every step leaves build cache. Without a busybox binary (or without a sandbox for RUN),
the demo uses COPY-only Dockerfiles on ``scratch`` and says so in its notes.

Running it twice reuses what exists: the workspace marker and the three tags mean the
demo is complete, and nothing is rebuilt.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina.core.errors import BuildError, LaminaError, NotFound, UsageError
from lamina.core.events import BuildEvent, BuildFailed, BuildFinished, StepFinished
from lamina.core.model import BuildRequest, StepRecord

log = logging.getLogger(__name__)

MARKER = ".lamina-demo.json"
DEMO_VERSION = 2
BASE_TAG = "lamina-demo/busybox:latest"
APP_TAG = "demo-app:latest"
WEB_TAG = "demo-web:latest"
TOOLS_TAG = "demo-tools:latest"
RELEASE_TAG = "demo-release:latest"
TAGS = (APP_TAG, WEB_TAG, TOOLS_TAG, RELEASE_TAG)

APP_SH = '#!/bin/sh\n. /etc/demo.conf\necho "$greeting from the lamina demo"\n'
RUN_SH = "#!/bin/sh\ncat /app/data/words.txt\n"
WORDS = "layer\ncache\nhit\nmiss\nprune\n"
INDEX_HTML = (
    "<!doctype html>\n<title>lamina demo</title>\n<p>Served from a shared base layer.</p>\n"
)
TOOL_SH = "#!/bin/sh\nls -l /app\n"


APP_LABEL = "app"
EDITED_LABEL = "app, v2"


def _app_dockerfile(
    base: str,
    greeting: str,
    with_run: bool,
    label: str = APP_LABEL,
    conf_dest: str = "/etc/demo.conf",
) -> str:
    lines = [f"FROM {base}", f'LABEL org.lamina.demo="{label}"']
    if with_run:
        # A step that never changes comes first, so the rebuild after the greeting edit
        # shows hits above the edited line under both builders (BuildKit makes no step
        # of the LABEL).
        lines.append("RUN mkdir -p /app")
        lines.append(f'RUN echo "greeting={greeting}" > /etc/demo.conf')
    else:
        lines.append(f"COPY demo.conf {conf_dest}")
    lines += ["COPY app.sh /app/app.sh", "COPY data/ /app/data/"]
    if with_run:
        lines.append("RUN wc -c /app/data/* > /app/sizes.txt")
    lines.append('CMD ["/app/app.sh"]')
    return "\n".join(lines) + "\n"


def _web_dockerfile(base: str, with_run: bool) -> str:
    lines = [f"FROM {base}"]
    if with_run:
        lines.append("RUN mkdir -p /srv/www")
    lines += [
        "COPY index.html /srv/www/index.html",
        "EXPOSE 8080",
        'CMD ["httpd", "-f", "-h", "/srv/www"]',
    ]
    return "\n".join(lines) + "\n"


def _tools_dockerfile(with_run: bool) -> str:
    lines = [f"FROM {APP_TAG}", "COPY tool.sh /usr/local/bin/demo-tool"]
    if with_run:
        lines.append("RUN chmod 755 /usr/local/bin/demo-tool")
    return "\n".join(lines) + "\n"


@dataclass
class DemoBuild:
    """One build the demo ran."""

    name: str
    build_id: int
    image: str | None
    steps: list[StepRecord]

    @property
    def hits(self) -> int:
        return sum(1 for s in self.steps if s.cached is True)

    @property
    def misses(self) -> int:
        return sum(1 for s in self.steps if s.cached is False)


@dataclass
class DemoResult:
    """What the demo holds.

    Attributes:
        workspace: the directory with the build contexts.
        created: False when an existing, complete demo was reused.
        with_run: whether the Dockerfiles use RUN (busybox base) or COPY only (scratch).
        builds: the builds run this time, in order (empty when reused).
        notes: anything a user should know (e.g. the COPY-only fallback and why).
    """

    workspace: Path
    created: bool
    with_run: bool
    builds: list[DemoBuild] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        """What to print after ``lamina demo``."""
        if not self.created:
            lines = [f"demo already in place (workspace {self.workspace}); nothing rebuilt"]
        else:
            lines = [f"demo workspace: {self.workspace}"]
            for b in self.builds:
                lines.append(f"  build #{b.build_id} {b.name}: {b.hits} hit, {b.misses} miss")
        return lines + [f"note: {n}" for n in self.notes]


def _store_of(source: Any) -> Any:
    if hasattr(source, "images") and hasattr(source.images, "resolve"):
        return source
    store = getattr(source, "store", None)
    if store is not None and hasattr(getattr(store, "images", None), "resolve"):
        return store
    raise UsageError(
        f"the demo needs lamina's own store; the {getattr(source, 'name', '?')} engine has none "
        "(run `lamina demo` without --engine docker)"
    )


def _has_tag(store: Any, tag: str) -> bool:
    try:
        store.images.resolve(tag)
    except NotFound:
        return False
    return True


def _why_no_run(busybox: str | None) -> str | None:
    """None when RUN steps can work here, else why the COPY-only demo is used."""
    if busybox is None:
        return "no busybox binary found (install busybox-static): the demo uses COPY-only steps on scratch"
    try:
        from lamina.core.embedded.sandbox.runner import check_available

        check_available()
    except LaminaError as exc:
        return f"RUN cannot be isolated here ({exc}): the demo uses COPY-only steps on scratch"
    return None


def find_busybox() -> str | None:
    """A static busybox binary, if the machine has one."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(candidate):
            return candidate
    return shutil.which("busybox")


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def _write_contexts(ws: Path, base: str, with_run: bool) -> None:
    """Writes every context in its first-build state (overwriting earlier edits)."""
    app = ws / "app"
    _write(app / "Dockerfile", _app_dockerfile(base, "hello", with_run))
    _write(app / "app.sh", APP_SH, 0o755)
    _write(app / "data" / "run.sh", RUN_SH, 0o644)
    _write(app / "data" / "words.txt", WORDS)
    _write(app / ".dockerignore", "*.swp\nnotes/\n")
    if not with_run:
        _write(app / "demo.conf", "greeting=hello\n")
    web = ws / "web"
    _write(web / "Dockerfile", _web_dockerfile(base, with_run))
    _write(web / "index.html", INDEX_HTML)
    tools = ws / "tools"
    _write(tools / "Dockerfile", _tools_dockerfile(with_run))
    _write(tools / "tool.sh", TOOL_SH, 0o755)


class _Builder:
    """Runs builds through the engine (or the builder over a bare store) to completion."""

    def __init__(self, source: Any, store: Any) -> None:
        self.source, self.store = source, store

    def events(self, request: BuildRequest) -> Iterator[BuildEvent]:
        if hasattr(self.source, "build") and self.source is not self.store:
            return iter(self.source.build(request, cancel=threading.Event()))
        from lamina.core.embedded.builder.walk import run_build

        return run_build(self.store, request, threading.Event())

    def build(self, name: str, context: Path, tag: str) -> DemoBuild:
        request = BuildRequest(
            context=str(context),
            dockerfile=str(context / "Dockerfile"),
            tags=(tag,),
            network="none",
        )
        steps: list[StepRecord] = []
        build_id, image = 0, None
        for event in self.events(request):
            if isinstance(event, StepFinished):
                steps.append(event.step)
            elif isinstance(event, BuildFinished):
                build_id, image = event.build_id, event.image
            elif isinstance(event, BuildFailed):
                raise BuildError(f"demo build {name} failed: {event.message}")
        log.info("demo build %s: %s", name, image)
        return DemoBuild(name, build_id, image, steps)


def _import_base(store: Any, ws: Path, busybox: str) -> None:
    from lamina.core.demo.busybox import busybox_rootfs_tar
    from lamina.core.embedded.archive import import_rootfs

    rootfs = busybox_rootfs_tar(ws / "busybox-rootfs.tar", busybox)
    try:
        import_rootfs(store, rootfs, BASE_TAG, message="busybox for the lamina demo")
    finally:
        rootfs.unlink(missing_ok=True)


def _import_releases(store: Any, ws: Path) -> None:
    """Imports two releases under one tag; the first is then dangling and prunable."""
    from lamina.core.embedded.archive import import_rootfs

    for version in (1, 2):
        tar = ws / f"release-{version}.tar"
        with tarfile.open(tar, "w") as out:
            for name, data in (
                ("release/VERSION", f"{version}\n".encode()),
                # Sized so that the prune's bytes are visible next to the rest of the demo.
                ("release/payload.bin", bytes([version]) * 200_000),
            ):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
                out.addfile(info, io.BytesIO(data))
        try:
            import_rootfs(store, tar, RELEASE_TAG, message=f"demo release {version}")
        finally:
            tar.unlink(missing_ok=True)


def create_demo(source: Any, workspace: Path) -> DemoResult:
    """Creates the demo workspace and builds it into the engine's store, offline.

    Args:
        source: the embedded engine (or a ``lamina.core.embedded.store.Store``).
        workspace: where to write the build contexts (created if missing).

    Returns:
        What was built, or that a complete demo was already there.

    Raises:
        UsageError: ``source`` has no lamina store (the Docker backend).
        BuildError: a demo build failed (names the build and step).
    """
    store = _store_of(source)
    ws = Path(workspace).expanduser().resolve()
    marker = ws / MARKER
    if marker.is_file() and all(_has_tag(store, t) for t in TAGS):
        info = json.loads(marker.read_text())
        return DemoResult(
            ws,
            created=False,
            with_run=bool(info.get("with_run")),
            notes=list(info.get("notes", [])),
        )
    ws.mkdir(parents=True, exist_ok=True)
    busybox = find_busybox()
    why_not = _why_no_run(busybox)
    with_run = why_not is None
    notes = [why_not] if why_not else []
    base = "scratch"
    if busybox is not None:
        if not _has_tag(store, BASE_TAG):
            _import_base(store, ws, busybox)
        if with_run:
            base = BASE_TAG
    _write_contexts(ws, base, with_run)
    builder = _Builder(source, store)
    result = DemoResult(ws, created=True, with_run=with_run, notes=notes)
    app, web, tools = ws / "app", ws / "web", ws / "tools"

    result.builds.append(builder.build("demo-app (first build)", app, APP_TAG))
    result.builds.append(builder.build("demo-web", web, WEB_TAG))

    # Touch a file (mtime only: still cached) and change a mode (a miss).
    stat = (app / "app.sh").stat()
    os.utime(app / "app.sh", ns=(stat.st_atime_ns, stat.st_mtime_ns + 60_000_000_000))
    os.chmod(app / "data" / "run.sh", 0o755)
    result.builds.append(
        builder.build("demo-app (touched app.sh, chmod +x data/run.sh)", app, APP_TAG)
    )

    # Change a line: the edited step misses and every step after it follows. Without
    # RUN, the first COPY's line changes (same file, same place: only the text differs).
    greeting = "hi" if with_run else "hello"
    conf_dest = "/etc/demo.conf" if with_run else "/etc/"
    _write(app / "Dockerfile", _app_dockerfile(base, greeting, with_run, conf_dest=conf_dest))
    result.builds.append(builder.build("demo-app (edited a line)", app, APP_TAG))

    # Edit the LABEL above the COPY steps: where BuildKit and the classic builder part.
    _write(
        app / "Dockerfile",
        _app_dockerfile(base, greeting, with_run, label=EDITED_LABEL, conf_dest=conf_dest),
    )
    result.builds.append(builder.build("demo-app (edited the LABEL)", app, APP_TAG))
    result.builds.append(builder.build("demo-tools", tools, TOOLS_TAG))
    _import_releases(store, ws)

    marker.write_text(
        json.dumps({"version": DEMO_VERSION, "with_run": with_run, "notes": notes}, indent=2) + "\n"
    )
    return result
