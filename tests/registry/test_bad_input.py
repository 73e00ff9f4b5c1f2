"""Bad input: one clear line each, a non-zero exit, and the store as it was (plus at most
a resumable partial download under ``tmp/``, which GC sweeps)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lamina.core import PruneRequest, RegistryError
from lamina.core.embedded.engine import EmbeddedEngine
from lamina.tui.cli import main

pytestmark = pytest.mark.slow

Engines = Callable[[str], EmbeddedEngine]
Base = Callable[[EmbeddedEngine, str], str]


def state(engine: EmbeddedEngine) -> tuple[object, ...]:
    """What the store records and holds (tmp/ aside)."""
    home = engine.home
    return (
        [i.id for i in engine.images()],
        [layer.chain_id for layer in engine.layers()],
        sorted(p.name for p in (home / "layers").iterdir()),
        sorted(p.name for p in (home / "blobs" / "sha256").iterdir()),
    )


def one_line_failure(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lamina: "), err
    assert expected in err, err
    return err


@pytest.fixture
def pushed(
    registry, make_engine: Engines, base_image: Base, repo: Callable[[str], str]
) -> tuple[str, str]:
    """(repository, reference) of a busybox image in the shared registry."""
    name = repo("bad")
    ref = f"{registry.address}/{name}:1"
    a = make_engine("source")
    base_image(a, ref)
    list(a.push(ref))
    return name, ref


def test_registry_down(
    lamina_home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        one_line_failure(
            capsys, ["pull", f"127.0.0.1:{port}/x:1"], f"cannot reach the registry 127.0.0.1:{port}"
        )


def test_manifest_unknown(registry, lamina_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one_line_failure(
        capsys,
        ["pull", f"{registry.address}/lamina-test/none:nope"],
        "manifest unknown (MANIFEST_UNKNOWN)",
    )
    one_line_failure(
        capsys,
        ["pull", "--dry-run", f"{registry.address}/lamina-test/none:nope"],
        "manifest unknown",
    )


def test_a_blob_that_does_not_match_its_digest(
    private_registry: Callable[[str], object],
    make_engine: Engines,
    base_image: Base,
    blob_file: Callable[[object, str], Path],
) -> None:
    reg = private_registry("")
    ref = f"{reg.address}/x/corrupt:1"  # type: ignore[attr-defined]
    a = make_engine("a")
    base_image(a, ref)
    list(a.push(ref))
    b = make_engine("b")
    plan = b.plan_pull(ref)
    data = blob_file(reg, plan.layers[0].digest)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, one byte different: only the digest tells
    data.write_bytes(bytes(raw))
    before = state(b)
    with pytest.raises(RegistryError, match="do not match the digest"):
        list(b.pull(plan))
    assert state(b) == before
    # Bytes that failed their digest are not kept for a resume.
    downloads = b.home / "tmp" / "downloads"
    assert not (downloads / plan.layers[0].digest.split(":")[1]).exists()


def test_a_truncated_download_fails_then_resumes(
    registry,
    pushed: tuple[str, str],
    proxy: Callable[[str], object],
    make_engine: Engines,
) -> None:
    name, _ref = pushed
    front = proxy(registry.address)
    front.cut_blobs_after = 300_000  # type: ignore[attr-defined]
    ref = f"{front.address}/{name}:1"  # type: ignore[attr-defined]
    b = make_engine("b")
    plan = b.plan_pull(ref)
    before = state(b)
    with pytest.raises(RegistryError, match=r"truncated download \(300000 of \d+ bytes"):
        list(b.pull(plan))
    assert state(b) == before
    partial = b.home / "tmp" / "downloads" / plan.layers[0].digest.split(":")[1]
    assert partial.stat().st_size == 300_000

    front.cut_blobs_after = None  # type: ignore[attr-defined]
    mark = registry.mark()
    list(b.pull(plan))
    ranges = [s.get("Range") for s in front.seen if "/blobs/" in s["path"] and s["method"] == "GET"]  # type: ignore[attr-defined]
    assert ranges[-1] == "bytes=300000-"
    served = [r for r in registry.requests(mark) if "/blobs/" in r["uri"] and r["method"] == "GET"]
    assert [r["status"] for r in served] == [206]
    assert b.image(ref).id == plan.image_id
    assert not partial.exists()


def test_leftover_downloads_are_swept_by_gc(
    registry, pushed: tuple[str, str], proxy: Callable[[str], object], make_engine: Engines
) -> None:
    name, _ = pushed
    front = proxy(registry.address)
    front.cut_blobs_after = 1000  # type: ignore[attr-defined]
    b = make_engine("b")
    with pytest.raises(RegistryError, match="truncated"):
        list(b.pull(b.plan_pull(f"{front.address}/{name}:1")))  # type: ignore[attr-defined]
    assert (b.home / "tmp" / "downloads").is_dir()
    # Fresh partial downloads are kept (a pull may resume them) ...
    assert "tmp/downloads" not in [x.path for x in b.plan_prune(PruneRequest(kind="gc")).leftovers]
    # ... and swept once older than the grace period.
    plan = b.plan_prune(PruneRequest(kind="gc", grace=0))
    assert "tmp/downloads" in [x.path for x in plan.leftovers]
    b.apply_prune(plan)
    assert not (b.home / "tmp" / "downloads").exists()


def test_hostile_registries_are_cut_short(
    registry,
    pushed: tuple[str, str],
    proxy: Callable[[str], object],
    lamina_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, _ = pushed
    front = proxy(registry.address)
    front.redirect_loop = True  # type: ignore[attr-defined]
    one_line_failure(
        capsys,
        ["pull", f"{front.address}/{name}:1"],
        "redirected more than 5 times",  # type: ignore[attr-defined]
    )
    front.redirect_loop = False  # type: ignore[attr-defined]
    front.huge_manifest = True  # type: ignore[attr-defined]
    one_line_failure(
        capsys,
        ["pull", f"{front.address}/{name}:1"],
        "manifest larger than",  # type: ignore[attr-defined]
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """tmpfs mounts of a given size (a disk that really fills); unmounted afterwards."""
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        path = tmp_path / f"disk-{len(mounts)}"
        path.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True
        )
        mounts.append(path)
        return path

    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.root
@pytest.mark.parametrize(
    ("size", "where"),
    [("700k", "cannot write the download"), ("1800k", "No space left on device")],
    ids=["while-downloading", "while-extracting"],
)
def test_a_disk_that_fills_mid_pull(
    pushed: tuple[str, str],
    small_disk: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    size: str,
    where: str,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    _name, ref = pushed
    home = small_disk(size) / "store"
    engine = EmbeddedEngine(home)
    before = state(engine)
    engine.close()
    monkeypatch.setenv("LAMINA_HOME", str(home))
    one_line_failure(capsys, ["pull", ref], where)
    engine = EmbeddedEngine(home)
    try:
        assert state(engine) == before
    finally:
        engine.close()


def test_a_cancelled_pull_leaves_the_store_as_it_was(
    pushed: tuple[str, str], make_engine: Engines
) -> None:
    import threading

    from lamina.core import TransferCancelled

    _name, ref = pushed
    b = make_engine("b")
    plan = b.plan_pull(ref)
    before = state(b)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(TransferCancelled):
        list(b.pull(plan, cancel))
    assert state(b) == before
