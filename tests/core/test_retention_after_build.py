"""The cache retention policy of config.toml is applied after every successful build."""

from __future__ import annotations

from pathlib import Path

from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.engine import EmbeddedEngine
from lamina.core.events import BuildFailed, BuildFinished
from lamina.core.model import BuildRequest
from lamina.core.settings import config_path


def _build(engine: EmbeddedEngine, context: Path, tag: str) -> str:
    events = list(run_build(engine.store, BuildRequest(context=str(context), tags=(tag,))))
    failed = [e for e in events if isinstance(e, BuildFailed)]
    assert not failed, failed
    finished = [e for e in events if isinstance(e, BuildFinished)]
    assert finished and finished[0].image
    return finished[0].image


def _cache_keys(engine: EmbeddedEngine) -> set[str]:
    rows = engine.store.index.connection().execute("SELECT key FROM cache").fetchall()
    return {r[0] for r in rows}


def _context(root: Path, name: str, content: str) -> Path:
    ctx = root / name
    ctx.mkdir()
    (ctx / "data.txt").write_text(content * 5000)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY data.txt /data.txt\n")
    return ctx


def test_keep_storage_prunes_unshared_cache_after_a_build(
    lamina_home: Path, tmp_path: Path
) -> None:
    engine = EmbeddedEngine(lamina_home)
    try:
        _build(engine, _context(tmp_path, "a", "a"), "a:1")
        engine.rmi(["a:1"])
        orphaned = _cache_keys(engine)
        assert orphaned, "the first build recorded cache entries"

        # Without a policy the orphaned entries stay.
        _build(engine, _context(tmp_path, "b", "b"), "b:1")
        assert orphaned <= _cache_keys(engine)

        path = config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("[cache]\nkeep_storage = 0\n")
        _build(engine, _context(tmp_path, "c", "c"), "c:1")
        remaining = _cache_keys(engine)
        assert not (orphaned & remaining), "entries no image uses were pruned"
        assert engine.image("c:1").id and engine.image("b:1").id
    finally:
        engine.close()


def test_a_broken_config_does_not_fail_the_build(lamina_home: Path, tmp_path: Path) -> None:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[cache]\nkeep_storage = 'lots'\n")
    engine = EmbeddedEngine(lamina_home)
    try:
        image = _build(engine, _context(tmp_path, "a", "a"), "a:1")
        assert engine.image("a:1").id == image
    finally:
        engine.close()
