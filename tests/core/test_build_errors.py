"""Bad inputs: one line naming the file, line or step, and a store left as described.

A malformed Dockerfile, a missing or unreadable COPY source and an unknown base fail
the preflight and leave the store byte for byte as it was (a listing plus an index
dump compared before and after). A failing RUN keeps the cache entries of the steps
that succeeded, creates no image and moves no tag.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lamina.core.embedded.archive import import_rootfs
from lamina.core.embedded.builder.records import list_builds
from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.store import Store
from lamina.core.errors import NotFound
from lamina.core.events import BuildFailed, BuildFinished, StepOutput
from lamina.core.model import BuildRequest

pytestmark = pytest.mark.usefixtures("busybox_store", "classic_builder")


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    d = tmp_path / "ctx"
    d.mkdir()
    (d / "a.txt").write_text("a")
    return d


def events_of(store: Store, ctx: Path, text: str, **kw: Any) -> list[Any]:
    (ctx / "Dockerfile").write_text(text)
    return list(run_build(store, BuildRequest(context=str(ctx), **kw)))


def snapshot(home: Path) -> tuple[list[tuple[str, int, int]], list[str]]:
    import sqlite3

    listing = []
    for root, dirs, files in os.walk(home):
        for name in dirs + files:
            p = Path(root) / name
            if name in ("index.db-wal", "index.db-shm"):
                continue
            st = p.lstat()
            listing.append((str(p.relative_to(home)), st.st_size if p.is_file() else 0, st.st_mode))
    conn = sqlite3.connect(home / "index.db")
    try:
        dump = list(conn.iterdump())
    finally:
        conn.close()
    return sorted(listing), dump


def seeded(store: Store, ctx: Path) -> None:
    """Gives the store a build's worth of cache, records and stat cache."""
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY a.txt /a\n")
    end = list(run_build(store, BuildRequest(context=str(ctx), tags=("seed",))))[-1]
    assert isinstance(end, BuildFinished)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM busybox\nCOPY a.txt\n", "Dockerfile:2: COPY requires at least two arguments"),
        ("FROM busybox\nFROB x\n", "Dockerfile:2: unknown instruction: FROB"),
        ("FROM busybox\nCOPY nope.txt /x\n", "Dockerfile:2: COPY: nope.txt: no such file"),
        ("FROM busybox\nCOPY *.md /x/\n", "Dockerfile:2: COPY: no source files were specified"),
        ("FROM nosuchimage\nRUN true\n", "Dockerfile:1: FROM nosuchimage: no such image"),
        (
            "FROM busybox\nCOPY --from=ghost /a /a\n",
            "Dockerfile:2: COPY: --from=ghost: no such stage or image",
        ),
        (
            "FROM busybox\nCOPY --chown=ghost a.txt /a\n",
            "Dockerfile:2: COPY: unknown user 'ghost'",
        ),
        (
            "FROM busybox\nRUN true\nCOPY missing/ /m/\nRUN false\n",
            "Dockerfile:3: COPY: missing/: no such file",
        ),
        (
            "FROM busybox\nRUN --mount=type=cache,target=/c true\n",
            "Dockerfile:2: RUN: the --mount option requires BuildKit",
        ),
        # The classic builder's refusals, in Docker 20.10's words (DOCKER_BUILDKIT=0):
        # a flag its parser does not know, --chmod at its step, and a heredoc whose
        # lines it reads as instructions.
        ("FROM busybox\nCOPY --exclude=*.log a.txt /x/\n", "Dockerfile:2: Unknown flag: exclude"),
        ("FROM busybox\nCOPY --link a.txt /a\n", "Dockerfile:2: Unknown flag: link"),
        ("FROM busybox\nCOPY --link=false a.txt /a\n", "Dockerfile:2: Unknown flag: link"),
        ("FROM busybox\nRUN --network=none true\n", "Dockerfile:2: Unknown flag: network"),
        (
            "FROM busybox\nCOPY --chmod=755 a.txt /a\n",
            "Dockerfile:2: COPY: the --chmod option requires BuildKit",
        ),
        (
            "FROM busybox\nADD --chmod=755 a.txt /a\n",
            "Dockerfile:2: ADD: the --chmod option requires BuildKit",
        ),
        (
            "FROM busybox\nRUN <<EOF\necho hi\nEOF\n",
            "Dockerfile:3: unknown instruction: ECHO",
        ),
        (
            "FROM busybox\nCOPY <<EOF /x\n\n# note\nhi there\nEOF\n",
            "Dockerfile:5: unknown instruction: HI",
        ),
        ("FROM busybox\nRUN cat <<EOF\nEOF\n", "Dockerfile:3: unknown instruction: EOF"),
        # Docker's own words for a port it refuses (go-connections' nat), after expansion.
        ("FROM busybox\nEXPOSE 80 abc\n", "Dockerfile:2: EXPOSE: Invalid containerPort: abc"),
        (
            "FROM busybox\nARG P=80/xyz\nEXPOSE $P\n",
            "Dockerfile:3: EXPOSE: Invalid proto: xyz",
        ),
        # A FROM that expands to nothing says which variable is empty.
        (
            "ARG BASE\nFROM ${BASE}\n",
            "Dockerfile:2: FROM ${BASE}: base name (${BASE}) should not be blank:"
            " BASE is not set (no default and no --build-arg)",
        ),
        (
            "ARG BASE=\nFROM $BASE AS build\n",
            "Dockerfile:2: FROM $BASE: base name ($BASE) should not be blank: BASE is empty",
        ),
        (
            "FROM ${BASE}\n",
            "Dockerfile:1: FROM ${BASE}: base name (${BASE}) should not be blank:"
            " BASE is not an ARG declared before the first FROM",
        ),
        (
            "ARG TAG\nFROM busybox:${TAG}\n",
            "Dockerfile:2: FROM busybox:${TAG}: invalid reference format: 'busybox:':"
            " TAG is not set",
        ),
    ],
)
def test_preflight_failures_leave_the_store_untouched(
    store: Store, ctx: Path, text: str, expected: str
) -> None:
    seeded(store, ctx)
    before = snapshot(store.home)
    events = events_of(store, ctx, text, tags=("seed",))
    assert len(events) == 1 and isinstance(events[0], BuildFailed)
    message = events[0].message
    assert "\n" not in message
    assert expected in message, message
    # The location is said once, however deep the error was found.
    assert message.count("Dockerfile:") == 1, message
    assert snapshot(store.home) == before


@pytest.mark.parametrize(
    "text",
    [
        "FROM busybox\nCOPY --from=nostage /a /a\n",
        "FROM busybox AS one\nFROM busybox\nCOPY --from=nostage /a /a\n",
        "FROM busybox\nCOPY ${X:?set X} /a\n",
    ],
)
def test_a_copy_error_names_its_location_once(store: Store, ctx: Path, text: str) -> None:
    events = events_of(store, ctx, text)
    assert isinstance(events[-1], BuildFailed)
    message = events[-1].message
    assert message.count(str(ctx / "Dockerfile")) == 1, message


def test_expose_is_read_as_docker_reads_it(store: Store, ctx: Path) -> None:
    events = events_of(
        store, ctx, "FROM busybox\nARG P=8080-8081/udp\nEXPOSE 80/TCP $P 1.2.3.4:81:81 82/\n"
    )
    assert isinstance(events[-1], BuildFinished), events[-1]
    config = store.images.get_config(events[-1].image or "")
    assert set(config["config"]["ExposedPorts"]) == {
        "80/tcp",
        "8080/udp",
        "8081/udp",
        "81/tcp",
        "82/tcp",
    }
    # The words as written, sorted as Docker's parser sorts them ("$P" first), then
    # expanded: what Docker 20.10's classic builder records for this Dockerfile.
    assert config["history"][-1]["created_by"] == (
        "/bin/sh -c #(nop)  EXPOSE 8080-8081/udp 1.2.3.4:81:81 80/TCP 82/"
    )


def test_unreadable_file_fails_the_preflight(busybox_tar: Path) -> None:
    """Root reads everything, so the build runs as nobody over a store nobody owns
    (in a fresh directory: pytest's own tmp tree is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="lamina-unreadable-"))
    try:
        store = Store(base / "store")
        import_rootfs(store, busybox_tar, "busybox:latest")
        ctx = base / "ctx"
        ctx.mkdir()
        (ctx / "a.txt").write_text("a")
        seeded(store, ctx)
        store.close()
        secret = ctx / "secret.txt"
        secret.write_text("no")
        (ctx / "Dockerfile").write_text("FROM busybox\nCOPY a.txt secret.txt /x/\n")
        for root, dirs, files in os.walk(base):
            for name in dirs + files + ["."]:
                os.lchown(os.path.join(root, name), 65534, 65534)
        os.chown(secret, 0, 0)
        os.chmod(secret, 0o600)
        before = snapshot(store.home)
        code = (
            "import os, sys\n"
            "from pathlib import Path\n"
            "from lamina.core.embedded.store import Store\n"
            "from lamina.core.embedded.builder.walk import run_build\n"
            "from lamina.core.model import BuildRequest\n"
            "import lamina.core.embedded.builder.copy, lamina.core.context.dockerignore\n"
            "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
            "s = Store(Path(sys.argv[1]))\n"
            "for e in run_build(s, BuildRequest(context=sys.argv[2])):\n"
            "    print(type(e).__name__, getattr(e, 'message', ''))\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, str(store.home), str(ctx)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == [
            f"BuildFailed {ctx}/Dockerfile:2: COPY: cannot read secret.txt: Permission denied"
        ]
        assert snapshot(store.home) == before
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.root
def test_failing_run_names_the_step_and_keeps_earlier_cache(store: Store, ctx: Path) -> None:
    seeded(store, ctx)
    seed_image = store.images.resolve("seed")
    text = "FROM busybox\nCOPY a.txt /a\nRUN echo first && echo 'it broke' && exit 3\nLABEL x=y\n"
    events = events_of(store, ctx, text, tags=("seed",))
    end = events[-1]
    assert isinstance(end, BuildFailed) and not end.cancelled
    assert end.message == (
        f"{ctx}/Dockerfile:3: 'RUN echo first && echo 'it broke' && exit 3' exited with"
        " status 3: it broke"
    )
    assert [e.line for e in events if isinstance(e, StepOutput)] == ["first", "it broke"]
    assert store.images.resolve("seed") == seed_image
    assert len(store.images.list()) == 2  # busybox and seed, nothing new
    record = list_builds(store, 1)[0]
    assert (record.status, record.image, record.error) == ("failed", None, end.message)
    # The COPY hit is still there; the fixed Dockerfile reuses it.
    fixed = events_of(store, ctx, text.replace(" && exit 3", ""))
    assert isinstance(fixed[-1], BuildFinished)
    cached = [e.step.cached for e in fixed if type(e).__name__ == "StepFinished"]
    assert cached == [None, True, False, False]


@pytest.mark.root
def test_cancel_stops_the_running_step(store: Store, ctx: Path) -> None:
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo started && sleep 30\n")
    cancel = threading.Event()
    events = []
    for event in run_build(store, BuildRequest(context=str(ctx), tags=("never",)), cancel):
        events.append(event)
        if isinstance(event, StepOutput) and event.line == "started":
            cancel.set()
    end = events[-1]
    assert isinstance(end, BuildFailed) and end.cancelled
    assert list_builds(store, 1)[0].status == "cancelled"
    with pytest.raises(NotFound):
        store.images.resolve("never")


@pytest.mark.root
def test_concurrent_builds_from_two_processes(store: Store, tmp_path: Path) -> None:
    store.close()
    contexts = []
    for n in range(2):
        c = tmp_path / f"c{n}"
        c.mkdir()
        (c / "f.txt").write_text(f"file {n}")
        (c / "Dockerfile").write_text(
            f"FROM busybox\nRUN echo shared > /shared\nCOPY f.txt /f\nRUN echo {n} > /n\n"
        )
        contexts.append(c)
    code = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from lamina.core.embedded.store import Store\n"
        "from lamina.core.embedded.builder.walk import run_build\n"
        "from lamina.core.model import BuildRequest\n"
        "s = Store(Path(sys.argv[1]))\n"
        "end = list(run_build(s, BuildRequest(context=sys.argv[2], tags=(sys.argv[3],))))[-1]\n"
        "print(json.dumps([type(end).__name__, getattr(end, 'image', None) or end.message]))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "store"), str(c), f"img{n}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n, c in enumerate(contexts)
    ]
    results = [json.loads(p.communicate(timeout=180)[0]) for p in procs]
    assert [r[0] for r in results] == ["BuildFinished", "BuildFinished"]
    s = Store(tmp_path / "store")
    try:
        a, b = s.images.summary(results[0][1]), s.images.summary(results[1][1])
        assert a.layers[0] == b.layers[0]
        assert s.images.resolve("img0") == results[0][1]
        assert s.images.resolve("img1") == results[1][1]
    finally:
        s.close()


def test_a_build_whose_process_died_is_listed_as_failed(store: Store, ctx: Path) -> None:
    seeded(store, ctx)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with store.index.transaction() as conn:
        conn.execute(
            "INSERT INTO builds (started, dockerfile, context, tags, build_args, status, pid)"
            " VALUES (1, 'Dockerfile', '.', '[]', '{}', 'running', ?)",
            (int(dead),),
        )
    newest = list_builds(store, 1)[0]
    assert (newest.status, newest.error) == ("failed", "interrupted: the building process is gone")
    assert list_builds(store)[1].status == "ok"


def test_a_build_whose_process_is_a_zombie_is_listed_as_failed(store: Store) -> None:
    # A process that exited but was not reaped yet still answers kill(pid, 0): it is
    # gone all the same, and fsck and GC already say so.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{child.pid}/stat").read_bytes().rsplit(b")", 1)[-1].split()[0] != b"Z":
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.01)
        with store.index.transaction() as conn:
            conn.execute(
                "INSERT INTO builds (started, dockerfile, context, tags, build_args, status, pid)"
                " VALUES (1, 'Dockerfile', '.', '[]', '{}', 'running', ?)",
                (child.pid,),
            )
        build = list_builds(store, 1)[0]
        assert (build.status, build.error) == (
            "failed",
            "interrupted: the building process is gone",
        )
        assert [b for b, _pid in store.builds.interrupted()] == [build.id]
    finally:
        child.wait()
