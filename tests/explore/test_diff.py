"""``lamina diff`` against a real unpacking: two images built on one base in a real
store, both saved and unpacked layer by layer with GNU tar, both trees walked; the
diff must list exactly the paths the walks differ in, and say why."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from rootfs_walk import differing, unpack, walk

from lamina.core import BuildFinished, BuildRequest, Engine, diff_images, open_engine
from lamina.tui.cli import main

pytestmark = [pytest.mark.root, pytest.mark.slow]

COMMON = """FROM busybox:latest
COPY base/ /app/
RUN mkdir -p /data/keep /data/wipe && echo keep > /data/keep/k && echo w > /data/wipe/w1 \\
    && ln -s /app/one.txt /app/link
"""

# A: the base plus its own files. B: the same base layers, then every kind of change.
DOCKERFILE_A = (
    COMMON
    + """COPY a/ /srv/
RUN echo same-size-a > /app/two.txt && chmod 600 /app/three.txt
"""
)
DOCKERFILE_B = (
    COMMON
    + """COPY b/ /srv/
RUN echo same-size-b > /app/two.txt && chmod 755 /app/three.txt \\
    && chown 1000:1000 /app/one.txt && rm /app/four.txt && ln -sf /etc/hostname /app/link \\
    && rm -rf /data/wipe && mkdir /data/wipe && echo new > /data/wipe/w2 \\
    && ln /app/one.txt /app/one-hard
"""
)


@pytest.fixture
def engine(tmp_path: Path, busybox_tar: Path, lamina_home: Path) -> Iterator[Engine]:
    engine = open_engine("embedded", lamina_home)
    assert hasattr(engine, "import_rootfs")
    engine.import_rootfs(busybox_tar, "busybox:latest")  # type: ignore[attr-defined]
    yield engine
    engine.close()


def _build(engine: Engine, ctx: Path, dockerfile: str, tag: str) -> str:
    (ctx / f"{tag}.Dockerfile").write_text(dockerfile)
    request = BuildRequest(context=str(ctx), dockerfile=str(ctx / f"{tag}.Dockerfile"), tags=(tag,))
    events = list(engine.build(request))
    done = [e for e in events if isinstance(e, BuildFinished)]
    assert done, events[-1]
    assert done[0].image
    return done[0].image


@pytest.fixture
def pair(engine: Engine, tmp_path: Path) -> tuple[str, str]:
    ctx = tmp_path / "ctx"
    for rel, text in {
        "base/one.txt": "one\n",
        "base/two.txt": "same-size-0\n",
        "base/three.txt": "three\n",
        "base/four.txt": "four\n",
        "a/only-a.txt": "a" * 1000,
        "a/both.txt": "from a\n",
        "b/only-b.txt": "b" * 2000,
        "b/both.txt": "from b\n",
    }.items():
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_text(text)
    return _build(engine, ctx, DOCKERFILE_A, "diff-a:1"), _build(
        engine, ctx, DOCKERFILE_B, "diff-b:1"
    )


def test_the_diff_lists_exactly_what_a_real_unpacking_differs_in(
    engine: Engine, pair: tuple[str, str], tmp_path: Path
) -> None:
    trees = []
    for ref in ("diff-a:1", "diff-b:1"):
        archive = tmp_path / f"{ref.replace(':', '_')}.tar"
        engine.save_archive([ref], archive)  # type: ignore[attr-defined]
        trees.append(walk(unpack(archive, tmp_path / f"root-{ref}", tmp_path / "work")))
    expected = differing(trees[0], trees[1])
    result = diff_images(engine.image_files("diff-a:1"), engine.image_files("diff-b:1"))
    assert {f.path for f in result.files} == expected
    # The walk saw every kind of change the Dockerfiles make.
    assert {"/srv/only-a.txt", "/srv/only-b.txt", "/app/four.txt", "/data/wipe/w1"} <= expected
    by_path = {f.path: f for f in result.files}
    assert by_path["/srv/only-a.txt"].change == "removed"
    assert (
        by_path["/srv/only-b.txt"].change == "added" and by_path["/srv/only-b.txt"].size_b == 2000
    )
    assert by_path["/srv/both.txt"].what == ("content",)
    assert by_path["/app/two.txt"].what == ("content",)  # same size, other bytes
    assert "mode" in by_path["/app/three.txt"].what
    assert by_path["/app/one.txt"].what == ("owner",)
    assert by_path["/app/link"].what == ("link target",)
    assert by_path["/app/one-hard"].change == "added" and by_path["/app/one-hard"].kind_b == "file"
    # The history line behind each difference: B's layer that deleted the file.
    gone = by_path["/app/four.txt"]
    assert gone.change == "removed" and gone.b is not None and gone.b.deleted
    assert "rm /app/four.txt" in gone.b.created_by
    assert gone.a is not None and "COPY" in gone.a.created_by.upper()
    # Shared layers: busybox, COPY base/, the first RUN; they part at the fourth.
    assert len(result.shared) == 3 and result.parted_at == 3
    assert [x.index for x in result.only_b] == [3, 4]


def test_the_cli_prints_the_same_diff_as_json_and_text(
    engine: Engine, pair: tuple[str, str]
) -> None:
    engine.close()  # the CLI opens the store itself
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["diff", "diff-a:1", "diff-b:1", "--format", "json"]) == 0
    doc = json.loads(out.getvalue())
    assert doc["parted_at"] == 3 and len(doc["shared_layers"]) == 3
    paths = {f["path"]: f for f in doc["files"]}
    assert paths["/srv/only-b.txt"]["change"] == "added"
    assert "COPY dir:" in paths["/srv/only-b.txt"]["b"]["created_by"]
    text = io.StringIO()
    with redirect_stdout(text):
        assert main(["diff", "diff-a:1", "diff-b:1", "--exit-code"]) == 1
    lines = text.getvalue().splitlines()
    assert "Parted at layer #3:" in lines
    assert any(line.startswith("+ /srv/only-b.txt") for line in lines)
    assert any(line.startswith("- /app/four.txt") and "deleted by" in line for line in lines)
    same = io.StringIO()
    with redirect_stdout(same):
        assert main(["diff", "diff-a:1", "diff-a:1", "--exit-code"]) == 0
    assert "The images have the same layers." in same.getvalue()
