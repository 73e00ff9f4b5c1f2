"""Fuzzing the archive loader, Dockerfiles and the command line: whatever the bytes or
the words, the answer is a result or one line of ``LaminaError``, never a traceback.

Budgets are fixed (``max_examples``, derandomized), so CI time does not vary; the seed
corpus is lamina's own archives, ``../shared/conformance/images``, BuildKit's parser
test files and the real Dockerfiles of ``../shared/conformance``.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamina.core.embedded.archive import load_archive, save_archive
from lamina.core.embedded.store import Store, schema
from lamina.core.errors import LaminaError

FUZZ = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _tar(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_500_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory, conformance: Path) -> list[bytes]:
    """lamina's own save of a two-layer image, and the conformance docker-archive."""
    root = tmp_path_factory.mktemp("seeds")
    store = Store(root / "store")
    try:
        parent = None
        for i in range(2):
            data = _tar([(f"f{i}", b"x" * 700), (f"d{i}/g", b"y")])
            parent = store.layers.commit_tar(io.BytesIO(data), parent).chain_id
        diff_ids = [info.diff_id for info in store.layers.chain(parent)]
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["A=b"], "Labels": {"k": "v"}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "a"}, {"created_by": "b"}],
        }
        image_id = store.images.put_config(config)
        store.images.add_image(image_id)
        store.images.tag(image_id, "seed:1")
        save_archive(store, ["seed:1"], root / "seed.tar")
    finally:
        store.close()
    almost = conformance / "images" / "containers-image" / "docker-archive" / "almostempty.tar"
    return [(root / "seed.tar").read_bytes(), almost.read_bytes()]


def one_line_or_nothing(call: Any) -> None:
    message = None
    try:
        call()
    except LaminaError as exc:
        message = str(exc)
    assert message is None or (message and "\n" not in message), repr(message)


@FUZZ
@given(
    pick=st.integers(0, 1),
    flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 1 << 20)),
)
def test_mutated_archives_load_or_fail_in_one_line(
    tmp_path_factory: pytest.TempPathFactory,
    seeds: list[bytes],
    pick: int,
    flips: list[tuple[int, int]],
    cut: int | None,
) -> None:
    data = bytearray(seeds[pick])
    for offset, value in flips:
        data[offset % len(data)] = value
    if cut is not None:
        del data[cut % len(data) :]
    root = tmp_path_factory.mktemp("mut")
    path = root / "a.tar"
    path.write_bytes(bytes(data))
    store = Store(root / "store")
    try:
        one_line_or_nothing(lambda: load_archive(store, path))
        store.images.list()
    finally:
        store.close()


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
CONFIG_KEYS = sorted(schema.CONFIG_FIELDS)
RUN_KEYS = sorted(schema.RUN_CONFIG_FIELDS)


@FUZZ
@given(
    top=st.dictionaries(st.sampled_from(CONFIG_KEYS), JSON_VALUES, max_size=3),
    run=st.dictionaries(st.sampled_from(RUN_KEYS), JSON_VALUES, max_size=3),
)
def test_configs_of_any_shape_load_or_fail_and_never_break_readers(
    tmp_path_factory: pytest.TempPathFactory, top: dict[str, Any], run: dict[str, Any]
) -> None:
    from lamina.core.embedded.engine import EmbeddedEngine
    from lamina.core.embedded.fsck import fsck

    layer = _tar([("f", b"x")])
    import hashlib

    config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    config.update({k: v for k, v in top.items() if k != "rootfs"})
    root = tmp_path_factory.mktemp("cfg")
    raw = json.dumps(config).encode()
    manifest = [{"Config": "c.json", "RepoTags": ["f:1"], "Layers": ["l.tar"]}]
    path = root / "a.tar"
    path.write_bytes(
        _tar([("l.tar", layer), ("c.json", raw), ("manifest.json", json.dumps(manifest).encode())])
    )
    engine = EmbeddedEngine(root / "store")
    try:
        one_line_or_nothing(lambda: load_archive(engine.store, path))
        # Stored anyway, as an older lamina could have: every reader still works.
        engine.store.layers.commit_tar(io.BytesIO(layer), None)
        image_id = engine.store.images.put_blob(raw)
        engine.store.images.add_image(image_id)
        engine.images()
        engine.inspect(image_id)
        engine.history(image_id)
        fsck(engine.store)
    finally:
        engine.close()


def _schema(name: str, conformance: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        (conformance / "images" / "oci-image-spec-schema" / name).read_text()
    )
    return doc


def test_every_field_of_the_oci_schemas_is_checked(conformance: Path) -> None:
    config = _schema("config-schema.json", conformance)["properties"]
    assert set(config) <= set(schema.CONFIG_FIELDS)
    assert set(config["config"]["properties"]) <= set(schema.RUN_CONFIG_FIELDS)
    assert set(_schema("content-descriptor.json", conformance)["properties"]) <= set(
        schema.DESCRIPTOR_FIELDS
    )
    index = _schema("image-index-schema.json", conformance)["properties"]
    platform = index["manifests"]["items"]["properties"]["platform"]["properties"]
    assert set(platform) <= set(schema.PLATFORM_FIELDS)


CORPUS_VALID = {
    "configs": ["oci1-config.json", "schema2-config.json"],
    "manifests": [
        "oci1.index.everything.json",
        "oci1index.json",
        "ociv1.image.index.json",
        "ociv1.manifest.json",
        "schema2list.json",
        "v2list.manifest.json",
    ],
}


@pytest.mark.parametrize("name", [f"{k}/{n}" for k, names in CORPUS_VALID.items() for n in names])
def test_the_conformance_documents_pass_the_checks(conformance: Path, name: str) -> None:
    path = conformance / "images" / "containers-image" / name
    doc = schema.parse(path.read_bytes())
    if name.startswith("configs/"):
        schema.check_config(doc)
    elif "manifests" in doc:
        schema.check_index(doc)
    else:
        schema.check_manifest(doc)


VOCABULARY = [
    "images",
    "image",
    "ls",
    "inspect",
    "history",
    "rmi",
    "tag",
    "import",
    "load",
    "save",
    "build",
    "fsck",
    "system",
    "df",
    "prune",
    "builder",
    "debug",
    "parse",
    "-f",
    "-a",
    "-q",
    "--repair",
    "--deep",
    "--rebuild-index",
    "--format",
    "json",
    "--filter",
    "until=x",
    "label=a",
    "-o",
    "out.tar",
    "-i",
    "nope.tar",
    "--frees",
    "busybox",
    "a:1",
    "sha256:",
    "--no-cache",
    "-t",
    "x:1",
    ".",
    "--keep-storage",
    "1e9",
    "--engine",
    "docker",
    "embedded",
    "\x1b[2J",
    "é",
    "--",
    "-",
    "%s",
    "",
]


@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(argv=st.lists(st.sampled_from(VOCABULARY) | st.text(max_size=8), max_size=6))
def test_the_command_line_never_prints_a_traceback(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    from lamina.tui.cli import main

    if not argv or argv[0] in ("app", "demo") or "-" in argv or "--help" in argv:
        return  # the app, the demo and stdin are not command-line parsing
    monkeypatch.setenv("LAMINA_HOME", str(tmp_path / "store"))
    monkeypatch.setenv("LAMINA_ENGINE", "embedded")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    assert "\x1b" not in err
    assert code in (0, 1, 2), (argv, code, err)


# -- Dockerfiles ---------------------------------------------------------------------------

DOCKERFILE_BYTES = [b"\xff", b"\x00", b"\\", b"$", b"${", b"}", b'"', b"'", b"\n", b"\x1b", b"["]


@pytest.fixture(scope="module")
def dockerfile_seeds(conformance: Path) -> list[bytes]:
    """BuildKit's parser test files and the real Dockerfiles, every base made scratch
    so that a dry run reaches the instructions after FROM."""
    import re

    paths = sorted((conformance / "buildkit-parser").glob("*/Dockerfile"))
    paths += sorted(p for p in (conformance / "real-dockerfiles").iterdir() if p.suffix != ".json")
    from_line = re.compile(rb"(?im)^(\s*from\s+)(\S+)")
    return [from_line.sub(rb"\1scratch", p.read_bytes()) for p in paths if p.is_file()]


@FUZZ
@given(
    pick=st.integers(0, 1_000),
    edits=st.lists(
        st.tuples(
            st.integers(0, 1 << 16),
            st.sampled_from(["insert", "replace", "delete"]),
            st.sampled_from(DOCKERFILE_BYTES) | st.binary(min_size=1, max_size=3),
        ),
        max_size=6,
    ),
)
def test_mutated_dockerfiles_build_or_fail_in_one_line(
    tmp_path_factory: pytest.TempPathFactory,
    dockerfile_seeds: list[bytes],
    pick: int,
    edits: list[tuple[int, str, bytes]],
) -> None:
    from lamina.core.embedded.builder.walk import run_build
    from lamina.core.events import BuildFailed, BuildFinished
    from lamina.core.model import BuildRequest

    data = bytearray(dockerfile_seeds[pick % len(dockerfile_seeds)])
    for offset, op, value in edits:
        at = offset % (len(data) + 1)
        if op == "insert":
            data[at:at] = value
        elif op == "replace":
            data[at : at + len(value)] = value
        else:
            del data[at : at + len(value)]
    root = tmp_path_factory.mktemp("df")
    ctx = root / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_bytes(bytes(data))
    store = Store(root / "store")
    try:
        # A dry run walks every instruction (expansion, keys, records) and runs nothing.
        end = list(run_build(store, BuildRequest(context=str(ctx), dry_run=True)))[-1]
    finally:
        store.close()
    assert isinstance(end, BuildFinished | BuildFailed), end
    if isinstance(end, BuildFailed):
        assert end.message and "\n" not in end.message, repr(end.message)
        assert "internal error" not in end.message, end.message
