"""dive-compatible analysis against dive's own numbers for test-docker-image.tar."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from lamina.core.accounting.dive import Analysis, analyze_layer_tars
from lamina.core.embedded.analysis import analyze
from lamina.core.errors import ArchiveError


def _expected(conformance: Path) -> dict[str, Any]:
    path = conformance / "images/dive/expected/test-docker-image.analysis.json"
    return json.loads(path.read_text())


def _export(conformance: Path) -> dict[str, Any]:
    path = conformance / "images/dive/expected/test-docker-image.export.json"
    return json.loads(path.read_text())


def _analyze_archive(archive: Path) -> Analysis:
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        streams = [outer.extractfile(name) for name in manifest[0]["Layers"]]
        return analyze_layer_tars([s for s in streams if s is not None], archive.name)


def _check_against_dive(result: Analysis, conformance: Path) -> None:
    expected = _expected(conformance)["analysis"]
    # dive compares the floats exactly upstream; so do we.
    assert result.efficiency == expected["efficiency"]
    assert result.size_bytes == expected["sizeBytes"]
    assert result.user_size_bytes == expected["userSizeBytes"]
    assert result.wasted_bytes == expected["wastedBytes"]
    assert result.wasted_user_percent == expected["wastedUserPercent"]
    refs = _export(conformance)["image"]["fileReference"]
    assert sorted((w.path, w.count, w.size) for w in result.inefficiencies) == sorted(
        (r["file"], r["count"], r["sizeBytes"]) for r in refs
    )
    sizes = [w.size for w in result.inefficiencies]
    assert sizes == sorted(sizes, reverse=True)


def test_layer_tars_match_dive(conformance: Path) -> None:
    result = _analyze_archive(conformance / "images/dive/test-docker-image.tar")
    _check_against_dive(result, conformance)
    assert len(result.layer_sizes) == 14


def test_store_analysis_matches_dive(conformance: Path, lamina_home: Path) -> None:
    archive = pytest.importorskip(
        "lamina.core.embedded.archive", reason="lamina.core.embedded.archive not built yet"
    )
    from lamina.core.embedded.store import Store

    load_archive = archive.load_archive

    store = Store(lamina_home)
    try:
        loaded = load_archive(store, conformance / "images/dive/test-docker-image.tar")
        assert len(loaded) == 1
        result = analyze(store, loaded[0].id)
    finally:
        store.close()
    _check_against_dive(result, conformance)


def _tar(entries: list[tuple[str, bytes | None]]) -> io.BytesIO:
    """A layer tar: (name, content) for files, (name, None) for directories."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    buf.seek(0)
    return buf


def test_deleting_a_directory_counts_its_subtree() -> None:
    base = _tar([("d", None), ("d/a", b"x" * 100), ("d/b", b"y" * 50), ("keep", b"k" * 10)])
    upper = _tar([(".wh.d", b"")])
    result = analyze_layer_tars([base, upper])
    # /d/a and /d/b are leaves of layer 0; the whiteout is a leaf at /d counting 150.
    # Paths: /d/a 100, /d/b 50, /keep 10, /d 150 (min 150, seen once).
    assert result.wasted_bytes == 0
    assert result.efficiency == 1.0
    assert result.size_bytes == 160
    assert result.user_size_bytes == 0


def test_overwritten_and_deleted_file_is_wasted() -> None:
    base = _tar([("f", b"a" * 1000), ("g", b"b" * 10)])
    rewrite = _tar([("f", b"c" * 400)])
    delete = _tar([(".wh.f", b"")])
    result = analyze_layer_tars([base, rewrite, delete])
    # /f: 1000 + 400 + 0 (file whiteout), min 0; /g: 10.
    assert [(w.path, w.count, w.size) for w in result.inefficiencies] == [("/f", 3, 1400)]
    assert result.wasted_bytes == 1400
    assert result.efficiency == 10 / 1410
    assert result.user_size_bytes == 400


def test_opaque_markers_are_ignored() -> None:
    base = _tar([("d", None), ("d/a", b"x" * 8)])
    upper = _tar([("d", None), ("d/.wh..wh..opq", b""), ("d/b", b"y" * 4)])
    result = analyze_layer_tars([base, upper])
    assert result.inefficiencies == ()
    assert result.efficiency == 1.0


def test_no_layers_scores_one() -> None:
    result = analyze_layer_tars([])
    assert result.efficiency == 1.0
    assert result.size_bytes == 0


def test_not_a_tar_names_the_layer() -> None:
    with pytest.raises(ArchiveError, match="img layer 1"):
        analyze_layer_tars([_tar([("f", b"1")]), io.BytesIO(b"not a tar at all" * 64)], "img")
