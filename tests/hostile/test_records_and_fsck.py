"""fsck that users can trust, and builds that always end: a plain ``fsck`` exits 0 right
after a prune (configs inside the grace period are not orphans to report), and a build
that meets an error no check foresaw is recorded failed with one line, never left
"running".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lamina.core.embedded.builder import execute
from lamina.core.embedded.builder.records import list_builds
from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.fsck import fsck
from lamina.core.embedded.store import Store
from lamina.core.events import BuildFailed
from lamina.core.model import BuildRequest
from lamina.tui.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_fsck_exits_0_right_after_a_prune(
    lamina_home: Path, tmp_path: Path, busybox_tar: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "import", str(busybox_tar), "busybox:latest")[0] == 0
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("f")
    (ctx / "Dockerfile").write_text("FROM busybox\nLABEL a=b\nCOPY f /f\n")
    assert run(capsys, "build", "-t", "app:1", str(ctx))[0] == 0
    assert run(capsys, "rmi", "app:1")[0] == 0
    for argv in (("image", "prune", "-a", "-f"), ("builder", "prune", "--all", "-f")):
        assert run(capsys, *argv)[0] == 0
        code, out, err = run(capsys, "fsck")
        assert code == 0 and err == "", out + err


def test_an_unexpected_error_ends_the_build_recorded_failed(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A defect is simulated where one would surface: in the step's execution, after
    # the preflight and once the build is recorded as running.
    def defect(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a defect\nwith a second line")

    monkeypatch.setattr(execute.Executor, "execute", defect)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("f")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY f /f\n")
    end = list(run_build(store, BuildRequest(context=str(ctx))))[-1]
    assert isinstance(end, BuildFailed)
    assert end.message == "internal error: RuntimeError: a defect"
    record = list_builds(store, 1)[0]
    assert (record.status, record.error) == ("failed", end.message)
    report = fsck(store)
    assert report.ok and report.problems == (), report.problems
    monkeypatch.undo()
    # The next process finds nothing to recover.
    again = Store(store.home)
    try:
        assert again.recovered_builds == []
    finally:
        again.close()
