"""A build cache shared through a real registry: a fleet of stores (one ``LAMINA_HOME``
each) with ``--cache-to`` / ``--cache-from type=registry``.

What moves is counted from the registry's request log, never from lamina's output.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lamina.core import BuildFailed, BuildFinished, BuildRequest, CacheExport, StepFinished
from lamina.core.embedded.engine import EmbeddedEngine
from lamina.core.registry.cache import MT_CACHE_CONFIG, parse_config
from lamina.core.registry.client import RegistryClient
from lamina.core.registry.manifests import MT_OCI_MANIFEST, Descriptor
from lamina.tui.cli import main

pytestmark = pytest.mark.slow

Engines = Callable[[str], EmbeddedEngine]
Base = Callable[[EmbeddedEngine, str], str]

SIMPLE = (
    "FROM busybox:latest\nCOPY a.txt /a.txt\nRUN echo one > /one\nENV STEP=two\nCOPY b.txt /b.txt\n"
)
MULTI = (
    "FROM busybox:latest AS build\n"
    "COPY a.txt /src/a.txt\n"
    "RUN cat /src/a.txt > /out\n"
    "FROM busybox:latest\n"
    "COPY b.txt /b.txt\n"
    "COPY --from=build /out /out\n"
)


def _context(tmp_path: Path, dockerfile: str, files: dict[str, str]) -> Path:
    ctx = tmp_path / f"ctx-{uuid.uuid4().hex[:8]}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (ctx / name).write_text(text)
    return ctx


def _build(engine: EmbeddedEngine, ctx: Path, **kw: Any) -> tuple[str, list[StepFinished]]:
    events = list(engine.build(BuildRequest(context=str(ctx), **kw)))
    last = events[-1]
    assert isinstance(last, BuildFinished) and last.image, last
    return last.image, [e for e in events if isinstance(e, StepFinished)]


def _cached(steps: list[StepFinished]) -> list[tuple[str, bool | None, str | None]]:
    return [
        (
            s.step.instruction,
            s.step.cached,
            (s.step.reason or {}).get("kind"),
        )
        for s in steps
        if s.step.cached is not None
    ]


def _layer_blobs(registry: Any, ref: str) -> dict[str, str]:
    """diffID -> blob digest of the cache artifact at ``ref``, read from the registry."""
    address, _, rest = ref.partition("/")
    path, _, tag = rest.rpartition(":")
    with RegistryClient(address) as client:
        fetched = client.get_manifest(path, tag, accept=MT_OCI_MANIFEST)
        doc = json.loads(fetched.data)
        assert doc["config"]["mediaType"] == MT_CACHE_CONFIG
        desc = Descriptor(MT_CACHE_CONFIG, doc["config"]["digest"], doc["config"]["size"])
        config = parse_config(client.get_blob(path, desc, 1 << 26), ref)
    return {layer.diff_id: layer.blob.digest for layer in config.layers}


def _diff_ids(engine: EmbeddedEngine, image: str) -> list[str]:
    return [
        layer.diff_id for layer in engine.store.layers.chain(engine.inspect(image)["ChainIDs"][-1])
    ]


@pytest.fixture
def fleet(
    registry, make_engine: Engines, base_image: Base, repo: Callable[[str], str]
) -> Callable[[str], EmbeddedEngine]:
    """Stores that pulled one busybox:latest from the registry and have nothing else,
    like fresh CI runners (the base has one image ID everywhere, as a pulled base has)."""
    seed = make_engine("seed")
    base = f"{registry.address}/{repo('busybox')}:latest"
    base_image(seed, base)
    list(seed.push(base))

    def make(name: str) -> EmbeddedEngine:
        engine = make_engine(name)
        list(engine.pull(engine.plan_pull(base)))
        engine.store.images.tag(engine.store.images.resolve(base), "busybox:latest")
        return engine

    return make


def test_a_second_store_hits_every_exported_step_and_fetches_only_their_layers(
    registry, fleet, repo, tmp_path: Path, isolation: None
) -> None:
    ref = f"{registry.address}/{repo('cache')}:main"
    files = {"a.txt": "a\n", "b.txt": "b\n"}
    a = fleet("a")
    image_a, _ = _build(a, _context(tmp_path, SIMPLE, files), cache_to=CacheExport(ref))
    exported = _layer_blobs(registry, ref)
    base_diff = _diff_ids(a, "busybox:latest")
    own = [d for d in _diff_ids(a, image_a) if d not in base_diff]
    assert len(own) == 3 and set(own) <= set(exported)

    b = fleet("b")
    mark = registry.mark()
    image_b, steps = _build(b, _context(tmp_path, SIMPLE, files), cache_from=(ref,))
    assert image_b == image_a
    decided = _cached(steps)
    assert [c for _, c, _ in decided] == [True] * 3  # ENV is no cached step
    assert {k for _, _, k in decided} == {"remote_cache"}
    assert all(s.step.reason["ref"] == ref for s in steps if s.step.cached)  # type: ignore[index]
    fetched = registry.blob_fetches(mark)
    # The cache config, then the three layers of the steps (busybox is in the store).
    assert sorted(fetched[1:]) == sorted(exported[d] for d in own)
    assert len(fetched) == 4

    # The remote hits became local entries: a rebuild in B moves nothing.
    mark = registry.mark()
    again, steps = _build(b, _context(tmp_path, SIMPLE, files), cache_from=(ref,))
    assert again == image_a
    assert {(c, k) for _, c, k in _cached(steps)} == {(True, None)}
    assert len(registry.blob_fetches(mark)) == 1  # the cache config alone


def test_a_changed_last_step_fetches_only_the_layers_beneath_it(
    registry, fleet, repo, tmp_path: Path, isolation: None
) -> None:
    ref = f"{registry.address}/{repo('cache')}:main"
    a = fleet("a")
    image_a, _ = _build(
        a, _context(tmp_path, SIMPLE, {"a.txt": "a\n", "b.txt": "b\n"}), cache_to=CacheExport(ref)
    )
    exported = _layer_blobs(registry, ref)
    base_diff = _diff_ids(a, "busybox:latest")
    own = [d for d in _diff_ids(a, image_a) if d not in base_diff]

    b = fleet("b")
    mark = registry.mark()
    _, steps = _build(
        b, _context(tmp_path, SIMPLE, {"a.txt": "a\n", "b.txt": "changed\n"}), cache_from=(ref,)
    )
    decided = _cached(steps)
    assert [(c, k) for _, c, k in decided] == [
        (True, "remote_cache"),
        (True, "remote_cache"),
        (False, "first_build"),
    ]
    # The miss runs on the two hits' layers; the exported last layer never moves.
    fetched = registry.blob_fetches(mark)
    assert sorted(fetched[1:]) == sorted(exported[d] for d in own[:2])


def test_a_changed_first_step_fetches_no_layer(
    registry, fleet, repo, tmp_path: Path, isolation: None
) -> None:
    ref = f"{registry.address}/{repo('cache')}:main"
    a = fleet("a")
    _build(
        a, _context(tmp_path, SIMPLE, {"a.txt": "a\n", "b.txt": "b\n"}), cache_to=CacheExport(ref)
    )
    b = fleet("b")
    mark = registry.mark()
    _, steps = _build(
        b, _context(tmp_path, SIMPLE, {"a.txt": "new\n", "b.txt": "b\n"}), cache_from=(ref,)
    )
    kinds = [(c, k) for _, c, k in _cached(steps)]
    # BuildKit's keys chain on the parent's: every later step misses too.
    assert kinds[0] == (False, "first_build")
    assert all(c is False for c, _ in kinds[1:]), kinds
    assert len(registry.blob_fetches(mark)) == 1  # the cache config alone


@pytest.mark.parametrize("mode", ["min", "max"])
def test_mode_min_exports_the_target_stage_and_max_every_stage(
    registry, fleet, repo, tmp_path: Path, isolation: None, mode: str
) -> None:
    ref = f"{registry.address}/{repo('cache')}:{mode}"
    files = {"a.txt": "a\n", "b.txt": "b\n"}
    a = fleet("a")
    image_a, _ = _build(a, _context(tmp_path, MULTI, files), cache_to=CacheExport(ref, mode))
    b = fleet("b")
    image_b, steps = _build(b, _context(tmp_path, MULTI, files), cache_from=(ref,))
    by_stage: dict[int, list[str | None]] = {}
    for s in steps:
        if s.step.cached is not None:
            by_stage.setdefault(s.step.stage, []).append(
                (s.step.reason or {}).get("kind") if s.step.cached else "miss"
            )
    assert by_stage[1] == ["remote_cache", "remote_cache"]
    if mode == "max":
        assert by_stage[0] == ["remote_cache", "remote_cache"]
    else:
        # Not exported: the build stage runs again, and the same content makes the
        # final stage's COPY --from hit all the same.
        assert by_stage[0] == ["miss", "miss"]
    assert image_b == image_a


def test_cli_flags_and_bad_inputs(
    registry, fleet, base_image, repo, tmp_path: Path, isolation: None, capsys, caplog, monkeypatch
) -> None:
    a = fleet("a")
    monkeypatch.setenv("LAMINA_HOME", str(a.home))
    a.close()
    ctx = _context(tmp_path, SIMPLE, {"a.txt": "a\n", "b.txt": "b\n"})
    ref = f"{registry.address}/{repo('cache')}:cli"
    assert main(["build", "--cache-to", f"type=registry,ref={ref},mode=max", str(ctx)]) == 0
    assert _layer_blobs(registry, ref)

    # Other types, unknown modes and attributes: one usage line each.
    for flags in (
        ["--cache-to", "type=local,dest=/tmp/x"],
        ["--cache-to", f"type=registry,ref={ref},mode=all"],
        ["--cache-from", f"type=registry,ref={ref},colour=red"],
        ["--cache-from", "type=gha"],
        ["--cache-to", "type=registry"],
    ):
        capsys.readouterr()
        assert main(["build", *flags, str(ctx)]) == 2, flags
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("lamina: --cache-"), err

    capsys.readouterr()
    assert main(["--engine", "docker", "build", "--cache-from", ref, str(ctx)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "embedded engine" in err[0], err

    # Unreadable caches: a warning in the registry's words, and the build goes on.
    not_cache = f"{registry.address}/{repo('cache')}:none"
    down = "127.0.0.1:9/nothing/here:latest"
    for bad, words in (
        (not_cache, "manifest unknown"),
        (down, "127.0.0.1:9"),
        ("Not A Ref", "invalid reference"),
    ):
        caplog.clear()
        capsys.readouterr()
        code = main(["build", "--cache-from", f"type=registry,ref={bad}", str(ctx)])
        assert code == 0, capsys.readouterr().err
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warned) == 1 and f"--cache-from {bad}:" in warned[0], warned
        assert words in warned[0].lower() or words in warned[0], warned[0]
        assert warned[0].endswith("building without it")

    # A ref that holds an image, not a cache, says so.
    image_ref = f"{registry.address}/{repo('img')}:1"
    b = fleet("b")
    base_image(b, image_ref)
    list(b.push(image_ref))
    caplog.clear()
    assert main(["build", "--cache-from", image_ref, str(ctx)]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "not a lamina build cache" in warned[0], warned

    # An export that cannot go through fails the build in one line (the image is
    # built), unless ignore-error=true.
    capsys.readouterr()
    assert main(["build", "--cache-to", f"type=registry,ref={down}", str(ctx)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lamina: --cache-to {down}:"), err
    assert "is built" in err[0]
    assert (
        main(["build", "--cache-to", f"type=registry,ref={down},ignore-error=true", str(ctx)]) == 0
    )


def test_a_failed_fetch_of_a_needed_layer_fails_the_build_in_one_line(
    private_registry, fleet, tmp_path: Path, isolation: None, blob_file
) -> None:
    reg = private_registry()
    ref = f"{reg.address}/fleet/cache:main"
    a = fleet("a")
    image_a, _ = _build(
        a, _context(tmp_path, SIMPLE, {"a.txt": "a\n", "b.txt": "b\n"}), cache_to=CacheExport(ref)
    )
    exported = _layer_blobs(reg, ref)
    first = next(d for d in _diff_ids(a, image_a) if d not in _diff_ids(a, "busybox:latest"))
    path = blob_file(reg, exported[first])
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    b = fleet("b")
    events = list(
        b.build(
            BuildRequest(
                context=str(_context(tmp_path, SIMPLE, {"a.txt": "a\n", "b.txt": "b\n"})),
                cache_from=(ref,),
            )
        )
    )
    last = events[-1]
    assert isinstance(last, BuildFailed), last
    assert "digest" in last.message and "\n" not in last.message
    # Nothing half-fetched is in the store.
    assert not [layer for layer in b.layers() if layer.diff_id == first]


def test_a_dry_run_predicts_the_remote_hits_and_fetches_no_layer(
    registry, fleet, repo, tmp_path: Path, isolation: None
) -> None:
    ref = f"{registry.address}/{repo('cache')}:main"
    files = {"a.txt": "a\n", "b.txt": "b\n"}
    a = fleet("a")
    _build(a, _context(tmp_path, SIMPLE, files), cache_to=CacheExport(ref))
    b = fleet("b")
    mark = registry.mark()
    events = list(
        b.build(
            BuildRequest(
                context=str(_context(tmp_path, SIMPLE, files)), cache_from=(ref,), dry_run=True
            )
        )
    )
    steps = [e for e in events if isinstance(e, StepFinished)]
    assert {(c, k) for _, c, k in _cached(steps)} == {(True, "remote_cache")}
    assert len(registry.blob_fetches(mark)) == 1  # the cache config alone
    assert b.builds() == []


def test_the_classic_rules_share_their_cache_too(
    registry, fleet, repo, tmp_path: Path, isolation: None
) -> None:
    ref = f"{registry.address}/{repo('cache')}:classic"
    files = {"a.txt": "a\n", "b.txt": "b\n"}
    a = fleet("a")
    image_a, _ = _build(
        a, _context(tmp_path, SIMPLE, files), cache_to=CacheExport(ref), builder="classic"
    )
    b = fleet("b")
    # A cache made under other rules is never hit: its keys mean something else.
    _, steps = _build(b, _context(tmp_path, SIMPLE, files), cache_from=(ref,))
    assert all(not c for _, c, _ in _cached(steps))
    c = fleet("c")
    image_c, steps = _build(
        c, _context(tmp_path, SIMPLE, files), cache_from=(ref,), builder="classic"
    )
    assert image_c == image_a
    assert {(c_, k) for _, c_, k in _cached(steps)} == {(True, "remote_cache")}
