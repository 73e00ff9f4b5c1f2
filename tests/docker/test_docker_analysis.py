"""dive's analysis of an image in a real Docker Engine matches dive's own numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lamina.core.docker.engine import DockerEngine

pytestmark = pytest.mark.docker


def test_analysis_of_the_dive_image_loaded_into_docker(conformance: Path) -> None:
    engine = DockerEngine()
    image_id = None
    try:
        archive = conformance / "images/dive/test-docker-image.tar"
        with archive.open("rb") as f:
            loaded = engine.client.images.load(f.read())
        image_id = loaded[0].id
        expected = json.loads(
            (conformance / "images/dive/expected/test-docker-image.analysis.json").read_text()
        )["analysis"]
        result = engine.analyze(image_id)
        assert result.efficiency == expected["efficiency"]
        assert result.size_bytes == expected["sizeBytes"]
        assert result.user_size_bytes == expected["userSizeBytes"]
        assert result.wasted_bytes == expected["wastedBytes"]
    finally:
        if image_id is not None:
            engine.client.images.remove(image_id, force=True)
        engine.close()
