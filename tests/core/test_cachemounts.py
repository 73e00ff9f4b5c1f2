"""Cache mounts (``RUN --mount=type=cache``): kept between builds, shared by id, sized,
pruned by ``builder prune``, emptied by ``--no-cache``; and fsck on marks a dead build
left. The store's part on real directories and a real index; the builder's part through
real builds (RUN: root or user namespaces)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from lamina.core.accounting.plans import PruneRequest
from lamina.core.embedded.fsck import fsck
from lamina.core.embedded.prune import apply_prune, plan_prune
from lamina.core.embedded.store import Store
from lamina.core.embedded.store.cachemounts import CacheMounts
from lamina.core.events import BuildFailed, BuildFinished, StepOutput
from lamina.core.model import BuildRequest


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def test_a_mount_keeps_its_files_and_is_shared_by_id(store: Store) -> None:
    mounts = store.cache_mounts
    with mounts.use("pip", "shared") as path:
        _write(path / "wheel", b"w" * 10_000)
    with mounts.use("pip", "shared") as again:
        assert again == path and (again / "wheel").read_bytes() == b"w" * 10_000
    # Another id, or the same id seeded from another stage, is another directory.
    with mounts.use("npm", "shared") as other:
        assert other != path and not any(other.iterdir())
    with mounts.use("pip", "shared", scope="builder") as seeded:
        assert seeded != path
    assert CacheMounts.identity("pip") != CacheMounts.identity("pip", "builder")
    (entry,) = [m for m in mounts.entries() if m.mount_id == "pip" and m.path == path]
    assert entry.use_count == 2 and not entry.in_use
    assert entry.size >= 10_000  # blocks on disk, as du counts them
    assert entry.sharing == "shared" and entry.created <= entry.last_used


def test_in_use_while_a_run_holds_it_and_sized_after(store: Store) -> None:
    mounts = store.cache_mounts
    with mounts.use("go", "shared", build_id=0) as path:
        (held,) = mounts.entries()
        assert held.in_use and held.size == 0
        _write(path / "mod", b"m" * 50_000)
    (done,) = mounts.entries()
    assert not done.in_use and done.size >= 50_000


def test_a_new_mount_directory_gets_the_mode_and_owner_asked_for(store: Store) -> None:
    with store.cache_mounts.use("owned", "shared", mode=0o700, uid=1234, gid=4321) as path:
        st = path.stat()
    assert st.st_mode & 0o777 == 0o700
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (1234, 4321)


def test_empty_starts_from_nothing(store: Store) -> None:
    mounts = store.cache_mounts
    with mounts.use("apt", "shared") as path:
        _write(path / "old", b"x")
    with mounts.use("apt", "shared", empty=True) as path:
        assert not any(path.iterdir())
        _write(path / "new", b"y")
    with mounts.use("apt", "shared") as path:
        assert [p.name for p in path.iterdir()] == ["new"]


def test_locked_makes_runs_take_turns(store: Store) -> None:
    mounts = store.cache_mounts
    order: list[str] = []
    inside = threading.Event()

    def second() -> None:
        with mounts.use("lk", "locked"):
            order.append("second")

    with mounts.use("lk", "locked"):
        order.append("first in")
        thread = threading.Thread(target=second)
        thread.start()
        inside.wait(0.3)  # the second RUN would be inside by now if it did not wait
        order.append("first out")
    thread.join(5)
    assert order == ["first in", "first out", "second"]


def test_private_gives_a_busy_mount_a_directory_of_its_own(store: Store) -> None:
    mounts = store.cache_mounts
    main_use = mounts.use("pv", "private")
    main = main_use.__enter__()
    _write(main / "kept", b"k" * 20_000)
    a_use, b_use = mounts.use("pv", "private"), mounts.use("pv", "private")
    a, b = a_use.__enter__(), b_use.__enter__()
    assert len({main, a, b}) == 3, "each RUN that finds it busy gets its own"
    assert not any(a.iterdir()) and not any(b.iterdir())
    _write(a / "scratch", b"s")
    # The RUN that held the mount ends first; the private ones after it.
    main_use.__exit__(None, None, None)
    a_use.__exit__(None, None, None)
    b_use.__exit__(None, None, None)
    assert not a.exists() and not b.exists(), "a private directory goes with its RUN"
    (entry,) = mounts.entries()
    # Three uses, and the size is the mount's own, not that of a private directory.
    assert entry.use_count == 3 and entry.size >= 20_000 and not entry.in_use
    with mounts.use("pv", "private") as again:
        assert again == main and (again / "kept").exists()


def test_remove_frees_what_it_held_and_spares_a_mount_in_use(store: Store) -> None:
    mounts = store.cache_mounts
    with mounts.use("a", "shared") as a:
        _write(a / "f", b"a" * 30_000)
    (entry,) = mounts.entries()
    with mounts.use("b", "shared"):
        busy = next(m for m in mounts.entries() if m.mount_id == "b")
        freed = mounts.remove([entry.id, busy.id])
        assert freed == entry.size and not a.exists()
        assert [m.mount_id for m in mounts.entries()] == ["b"]


def test_builder_prune_plans_and_removes_idle_mounts(store: Store) -> None:
    mounts = store.cache_mounts
    with mounts.use("old", "shared") as old:
        _write(old / "f", b"o" * 8_000)
    plan = plan_prune(store, PruneRequest(kind="builder"))
    assert [m.mount_id for m in plan.cache_mounts] == ["old"]
    assert plan.reclaimable_bytes >= plan.cache_mounts[0].bytes >= 8_000
    # Image prune never takes them; --keep-storage keeps them; until= spares recent ones.
    assert plan_prune(store, PruneRequest(kind="image")).cache_mounts == ()
    keep = PruneRequest(kind="builder", keep_storage=0)
    assert plan_prune(store, keep).cache_mounts == ()
    recent = PruneRequest(kind="builder", filters=("until=1h",))
    assert plan_prune(store, recent).cache_mounts == ()
    with mounts.use("busy", "shared"):
        busy_plan = plan_prune(store, PruneRequest(kind="builder"))
        assert [m.mount_id for m in busy_plan.cache_mounts] == ["old"]
        result = apply_prune(store, busy_plan)
    assert result.cache_mounts == ("old",) and not old.exists()
    assert [m.mount_id for m in mounts.entries()] == ["busy"]
    assert fsck(store).ok


def test_fsck_clears_the_marks_a_dead_build_left(store: Store, tmp_path: Path) -> None:
    mounts = store.cache_mounts
    # A build whose process died in a RUN: its mount is still marked in use.
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys\n"
            "from pathlib import Path\n"
            "from lamina.core.embedded.store import Store\n"
            "s = Store(Path(sys.argv[1]))\n"
            "held = s.cache_mounts.use('crashed', 'shared')\n"
            "held.__enter__()\n"
            "os._exit(0)\n",
            str(store.home),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert child.returncode == 0, child.stderr
    (entry,) = mounts.entries()
    assert entry.in_use
    assert plan_prune(store, PruneRequest(kind="builder")).cache_mounts == ()
    report = fsck(store)
    # Left by interrupted work, like the build itself: a note, not damage.
    assert [(p.kind, p.subject, p.repairable, p.note) for p in report.problems] == [
        ("stuck-cache-mount", entry.id, True, True)
    ]
    assert "crashed" in report.problems[0].message and report.ok
    repaired = fsck(store, repair=True)
    assert [(p.kind, p.repaired) for p in repaired.problems] == [("stuck-cache-mount", True)]
    assert fsck(store).problems == () and not mounts.entries()[0].in_use
    assert [m.mount_id for m in plan_prune(store, PruneRequest(kind="builder")).cache_mounts] == [
        "crashed"
    ]


def test_no_mount_is_called_stuck_while_a_build_runs(store: Store) -> None:
    from lamina.core.embedded.builder.records import BuildLog

    record = BuildLog.start(store, BuildRequest(context="."), Path("Dockerfile"), "buildkit")
    with store.cache_mounts.use("live", "shared", build_id=record.build_id):
        assert store.cache_mounts.stuck() == []
        assert fsck(store).ok
    record.finish("ok", None)


# -- through real builds -----------------------------------------------------------------


def _build(store: Store, ctx: Path, **kw: Any) -> tuple[BuildFinished | BuildFailed, list[str]]:
    from lamina.core.embedded.builder.walk import run_build

    events = list(run_build(store, BuildRequest(context=str(ctx), network="none", **kw)))
    lines = [e.line for e in events if isinstance(e, StepOutput)]
    end = events[-1]
    assert isinstance(end, BuildFinished | BuildFailed)
    return end, lines


COUNTER = (
    "FROM busybox\nARG N\n"
    "RUN --mount=type=cache,id=counter,target=/c "
    'sh -c \'n=$(cat /c/n 2>/dev/null || echo 0); echo "seen $n"; echo $((n+1)) > /c/n;'
    " head -c 20000 /dev/zero > /c/blob'\n"
)


@pytest.mark.usefixtures("busybox_store", "isolation")
def test_a_cache_mount_survives_builds_and_no_cache_empties_it(
    store: Store, tmp_path: Path, lamina_home: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(COUNTER)
    for n, seen in ((1, "seen 0"), (2, "seen 1"), (3, "seen 2")):
        end, lines = _build(store, ctx, build_args={"N": str(n)})
        assert isinstance(end, BuildFinished), end
        assert seen in lines, lines
    # The mount's files never enter the layer.
    image = store.images.summary(store.images.resolve(end.image or ""))
    base = store.images.summary(store.images.resolve("busybox"))
    assert len(image.layers) == len(base.layers) + 1
    (entry,) = store.cache_mounts.entries()
    assert entry.mount_id == "counter" and entry.use_count == 3 and entry.size >= 20_000
    assert not entry.in_use
    # --no-cache reruns the step from nothing, its cache mount too.
    end, lines = _build(store, ctx, build_args={"N": "3"}, no_cache=True)
    assert isinstance(end, BuildFinished) and "seen 0" in lines, lines
    end, lines = _build(store, ctx, build_args={"N": "4"})
    assert "seen 1" in lines, lines
    assert fsck(store).ok


@pytest.mark.usefixtures("busybox_store", "isolation")
def test_a_failed_run_releases_its_mount(store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nRUN --mount=type=cache,target=/c sh -c 'echo x > /c/f; exit 4'\n"
    )
    end, _ = _build(store, ctx)
    assert isinstance(end, BuildFailed) and "status 4" in end.message
    (entry,) = store.cache_mounts.entries()
    assert not entry.in_use and (entry.path / "f").read_text() == "x\n"
    assert fsck(store).ok


@pytest.mark.usefixtures("busybox_store", "isolation")
def test_system_df_lists_and_builder_prune_removes_it(
    store: Store, tmp_path: Path, lamina_home: Path
) -> None:
    assert store.home == lamina_home
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(COUNTER)
    end, _ = _build(store, ctx, build_args={"N": "1"})
    assert isinstance(end, BuildFinished)
    (entry,) = store.cache_mounts.entries()
    store.close()

    def lamina(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "lamina.tui", *args],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "LAMINA_HOME": str(lamina_home)},
        )
        return out.stdout

    df = lamina("system", "df", "-v")
    (row,) = [line for line in df.splitlines() if line.endswith(" counter")]
    assert row.split()[1] == "exec.cachemount" and "false" in row.split()
    pruned = lamina("builder", "prune", "-f")
    assert "counter" in pruned
    assert not entry.path.exists()
    after = lamina("system", "df", "-v").splitlines()
    assert not [line for line in after if "exec.cachemount" in line or line.endswith(" counter")]
