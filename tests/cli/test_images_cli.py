"""``lamina images/history/inspect/tag/rmi`` through the real dispatcher and store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lamina.tui.cli import main


@pytest.fixture
def loaded(lamina_home: Path, conformance: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["load", "-i", str(conformance / "images" / "dive" / "test-docker-image.tar")]) == 0
    assert (
        main(["load", "-i", str(conformance / "images" / "dive" / "test-oci-gzip-image.tar")]) == 0
    )
    capsys.readouterr()
    return lamina_home


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_images_table(loaded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "images")
    assert code == 0
    lines = out.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    rows = [re.split(r"\s{2,}", line) for line in lines[1:]]
    assert rows[0][:3] == ["<none>", "<none>", "3eaccc100f86"]  # newest first
    assert rows[1][:3] == ["dive-test", "latest", "75ae28b8ebf8"]
    assert rows[1][3].endswith("years ago")
    # Docker's size of dive's test image (`docker images` after `docker load`).
    assert rows[1][4] == "1.22MB"
    # Columns line up under the header.
    assert lines[1].index("3eaccc100f86") == lines[0].index("IMAGE ID")


def test_images_quiet_and_json(loaded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "images", "-q")
    assert out.split() == ["3eaccc100f86", "75ae28b8ebf8"]
    _, out, _ = run(capsys, "images", "--format", "json")
    docs = [json.loads(line) for line in out.splitlines()]
    assert [(d["Repository"], d["Tag"]) for d in docs] == [
        ("<none>", "<none>"),
        ("dive-test", "latest"),
    ]
    assert docs[1]["SizeBytes"] == 1220598 and docs[1]["Layers"] == 14
    assert docs[1]["FullID"].startswith("sha256:75ae28b8ebf8")


def test_images_filtered_by_repository(loaded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "tag", "dive-test", "dive-test:v2")
    run(capsys, "tag", "dive-test", "other:v2")
    _, out, _ = run(capsys, "images", "dive-test")
    rows = [re.split(r"\s{2,}", line)[:2] for line in out.splitlines()[1:]]
    assert rows == [["dive-test", "latest"], ["dive-test", "v2"]]
    _, out, _ = run(capsys, "images", "dive-test:v2")
    assert [re.split(r"\s{2,}", line)[:2] for line in out.splitlines()[1:]] == [["dive-test", "v2"]]
    _, out, _ = run(capsys, "images", "-q", "nothing")
    assert out == ""


def test_intermediate_images_need_all(loaded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lamina.core.embedded.store import Store

    store = Store(loaded)
    parent = store.images.resolve("3eaccc")
    config = store.images.get_config(parent)
    child = store.images.put_config(dict(config, created="2031-01-01T00:00:00Z"))
    store.images.add_image(child, parent=parent)
    store.images.tag(child, "child")
    store.close()
    _, out, _ = run(capsys, "images", "-q")
    assert out.split() == [child[7:19], "75ae28b8ebf8"]
    _, out, _ = run(capsys, "images", "-q", "-a")
    assert out.split() == [child[7:19], "3eaccc100f86", "75ae28b8ebf8"]


def _listed(capsys: pytest.CaptureFixture[str], *argv: str) -> list[tuple[str, str, str]]:
    code, out, err = run(capsys, "images", "--format", "json", *argv)
    assert code == 0, err
    return [(d["Repository"], d["Tag"], d["ID"]) for d in (json.loads(x) for x in out.splitlines())]


def test_images_filters_as_docker_applies_them(
    loaded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lamina.core.embedded.store import Store

    store = Store(loaded)
    dive = store.images.resolve("dive-test")
    config = store.images.get_config(dive)
    labelled = store.images.put_config(
        dict(
            config,
            created="2030-01-01T00:00:00Z",
            config=dict(config["config"], Labels={"team": "core", "tier": "web"}),
        )
    )
    store.images.add_image(labelled)
    store.images.tag(labelled, "registry.local:5000/team/app:v1")
    store.images.tag(labelled, "app:v1")
    store.close()
    app, gz = labelled[7:19], "3eaccc100f86"

    assert _listed(capsys, "--filter", "dangling=true") == [("<none>", "<none>", gz)]
    assert [r[0] for r in _listed(capsys, "--filter", "dangling=false")] == [
        "app",
        "registry.local:5000/team/app",
        "dive-test",
    ]
    assert _listed(capsys, "--filter", "label=team") == [
        ("app", "v1", app),
        ("registry.local:5000/team/app", "v1", app),
    ]
    assert _listed(capsys, "-f", "label=team=core", "-f", "label=tier") == _listed(
        capsys, "--filter", "label=team"
    )
    assert _listed(capsys, "--filter", "label=team=other") == []
    # A reference is a glob over name:tag, or over the name alone; tags are narrowed.
    assert _listed(capsys, "--filter", "reference=app") == [("app", "v1", app)]
    assert _listed(capsys, "--filter", "reference=*:v1") == [("app", "v1", app)]
    assert _listed(capsys, "--filter", "reference=registry.local:5000/*/*") == [
        ("registry.local:5000/team/app", "v1", app)
    ]
    assert _listed(capsys, "--filter", "reference=dive-*", "dive-test") == [
        ("dive-test", "latest", "75ae28b8ebf8")
    ]
    assert [r[2] for r in _listed(capsys, "--filter", "before=app:v1")] == [gz, "75ae28b8ebf8"]
    assert [r[2] for r in _listed(capsys, "--filter", "since=dive-test")] == [app, app, gz]


@pytest.mark.parametrize(
    ("filter_", "message"),
    [
        ("dangling=1", "Invalid filter 'dangling=[1]'"),
        ("dangling=TRUE", "Invalid filter 'dangling=[TRUE]'"),
        ("label!=team", "Invalid filter 'label!'"),
        ("foo=bar", "Invalid filter 'foo'"),
        ("reference=[", "syntax error in pattern"),
        ("before=nosuch", "no such image: nosuch"),
    ],
)
def test_images_refuses_the_filters_docker_refuses(
    loaded: Path, capsys: pytest.CaptureFixture[str], filter_: str, message: str
) -> None:
    code, out, err = run(capsys, "images", "--filter", filter_)
    assert code != 0 and out == ""
    assert err == f"lamina: {message}\n"


def test_history(loaded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "history", "dive-test")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["IMAGE", "CREATED", "CREATED"]
    assert lines[1].startswith("75ae28b8ebf8")
    assert all(line.startswith("<missing>") for line in lines[2:])
    assert any("…" in line for line in lines)
    _, full, _ = run(capsys, "history", "--no-trunc", "dive-test")
    assert "…" not in full and "sha256:75ae28b8ebf8" in full
    _, js, _ = run(capsys, "history", "--format", "json", "dive-test")
    docs = [json.loads(line) for line in js.splitlines()]
    assert len(docs) == len(lines) - 1
    assert any(d["EmptyLayer"] for d in docs)
    assert sum(d["SizeBytes"] for d in docs) == 1220598


def test_inspect_json(loaded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "inspect", "dive-test", "3eaccc")
    assert code == 0
    docs = json.loads(out)
    assert [d["Id"][:19] for d in docs] == ["sha256:75ae28b8ebf8", "sha256:3eaccc100f86"]
    assert len(docs[0]["DiffIDs"]) == len(docs[0]["ChainIDs"]) == 14
    assert docs[0]["ChainIDs"][0] == docs[0]["DiffIDs"][0]
    code, out, err = run(capsys, "inspect", "dive-test", "nope")
    assert code == 1 and len(json.loads(out)) == 1
    assert err == "lamina: no such image: nope\n"


def test_tag_and_rmi(loaded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "tag", "dive-test", "registry.local:5000/team/app:v1")[0] == 0
    _, out, _ = run(capsys, "images")
    assert "registry.local:5000/team/app   v1" in out
    code, out, _ = run(capsys, "rmi", "dive-test")
    assert (code, out) == (0, "Untagged: dive-test:latest\n")
    code, out, _ = run(capsys, "rmi", "75ae28b8ebf8", "3eaccc100f86")
    assert code == 0
    assert out.splitlines() == [
        "Untagged: registry.local:5000/team/app:v1",
        "Deleted: sha256:75ae28b8ebf89b203319069ddcbecdf5c3838503bbebc0d0d85e4b8589c5de3a",
        "Deleted: sha256:3eaccc100f866490f00ae82727b459a737af031dcf44c791d8aa714a70f24959",
    ]
    _, out, _ = run(capsys, "images", "-q")
    assert out == ""


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["tag", "dive-test", "Bad:Tag"], 2, "must be lowercase"),
        (["tag", "dive-test", "x@sha256:" + "a" * 64], 2, "digest reference"),
        (["rmi", "nope"], 1, "no such image: nope"),
        (["history", "nope"], 1, "no such image: nope"),
    ],
)
def test_errors_are_one_line(
    loaded: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    got, _, err = run(capsys, *argv)
    assert got == code
    assert err.startswith("lamina: ") and message in err and err.count("\n") == 1


def test_rmi_needs_force_for_several_tags(loaded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "tag", "dive-test", "two")
    code, _, err = run(capsys, "rmi", "75ae28b8ebf8")
    assert code == 1 and "must be forced" in err
    code, out, _ = run(capsys, "rmi", "-f", "75ae28b8ebf8")
    assert code == 0 and out.splitlines()[-1].startswith("Deleted: sha256:75ae28b8ebf8")
