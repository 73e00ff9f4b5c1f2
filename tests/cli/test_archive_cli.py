"""``lamina import``, ``load`` and ``save`` through the real dispatcher and store."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from lamina.tui.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_load_prints_tags_and_ids(
    lamina_home: Path, conformance: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "load", "-i", str(conformance / "images" / "dive" / "test-kaniko-image.tar")
    )
    assert (code, out) == (0, "Loaded image: dive-test:kaniko-latest\n")
    code, out, _ = run(
        capsys, "load", "-i", str(conformance / "images" / "dive" / "test-oci-zstd-image.tar")
    )
    assert code == 0 and out.startswith("Loaded image ID: sha256:3eaccc100f86")


def test_load_rejects_a_rootfs_tar(
    lamina_home: Path, conformance: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = conformance / "images" / "dive" / "test-uncompressed-image.tar"
    code, out, err = run(capsys, "load", "-i", str(path))
    assert code == 1 and out == ""
    assert err == (
        f"lamina: {path}: not an image archive (no manifest.json or index.json); "
        "use `lamina import` to make an image from a root filesystem tar\n"
    )


def test_import_then_save_then_load(
    lamina_home: Path,
    conformance: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rootfs = conformance / "images" / "dive" / "test-uncompressed-image.tar"
    code, out, _ = run(capsys, "import", "-m", "readme only", str(rootfs), "readme:1")
    assert code == 0 and out.startswith("sha256:")
    image_id = out.strip()
    _, out, _ = run(capsys, "history", "readme:1")
    assert "readme only" in out
    saved = tmp_path / "out.tar"
    assert run(capsys, "save", "-o", str(saved), "readme:1")[0] == 0
    with tarfile.open(saved) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["readme:1"]
    assert manifest[0]["Config"] == "blobs/sha256/" + image_id[7:]
    # Into a second store.
    monkeypatch.setenv("LAMINA_HOME", str(tmp_path / "second"))
    code, out, _ = run(capsys, "load", "-i", str(saved))
    assert (code, out) == (0, "Loaded image: readme:1\n")
    _, out, _ = run(capsys, "inspect", "readme:1")
    assert json.loads(out)[0]["Id"] == image_id


def test_save_needs_output_and_known_images(
    lamina_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["save", "busybox"])
    assert exc.value.code == 2
    capsys.readouterr()
    code, _, err = run(capsys, "save", "-o", str(tmp_path / "x.tar"), "busybox")
    assert code == 1 and err == "lamina: no such image: busybox\n"
    assert not (tmp_path / "x.tar").exists()


def test_import_refuses_escaping_symlink(
    lamina_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("etc/link")
        ti.type, ti.linkname = tarfile.SYMTYPE, "../../../../root"
        tf.addfile(ti)
    path = tmp_path / "evil.tar.gz"
    path.write_bytes(gzip.compress(buf.getvalue()))
    code, _, err = run(capsys, "import", str(path), "evil")
    assert code == 1
    assert err == (
        f"lamina: {path}: etc/link: symlink target '../../../../root' escapes the root\n"
    )
    _, out, _ = run(capsys, "images", "-q")
    assert out == ""


def test_load_and_import_from_stdin(lamina_home: Path, conformance: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    archive = conformance / "images" / "containers-image" / "docker-archive" / "almostempty.tar"
    cli = [sys.executable, "-m", "lamina.tui"]
    with open(archive, "rb") as f:
        done = subprocess.run(
            [*cli, "load"], stdin=f, capture_output=True, text=True, timeout=120, check=False
        )
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "Loaded image: emptyimage:latest\n",
        "",
    )
    rootfs = conformance / "images" / "dive" / "test-uncompressed-image.tar"
    with open(rootfs, "rb") as f:
        done = subprocess.run(
            [*cli, "import", "-", "piped:1"],
            stdin=f,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0 and done.stdout.startswith("sha256:"), done.stderr
    assert not list((lamina_home / "tmp").iterdir())
