"""Hostile Dockerfiles: bytes that are not UTF-8, chains and nests as deep as the text
makes them, numbers out of range, NUL bytes, unparsable URLs. Each builds as BuildKit
builds it or fails in one line naming the line, and the build is recorded as ended.

Regression tests of the tracebacks (and of builds left "running") that these inputs
gave; docs/limits.md states the bounds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from lamina.core.dockerfile.parser import parse
from lamina.core.dockerfile.shell import MAX_NESTING, Lexer
from lamina.core.embedded.builder.records import list_builds
from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.store import Store
from lamina.core.errors import DockerfileError
from lamina.core.events import BuildFailed, BuildFinished, StepFinished
from lamina.core.model import BuildRequest

NOT_UTF8 = b"\xff\xfe"


def build(store: Store, ctx: Path, text: bytes, **kw: Any) -> list[Any]:
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_bytes(text)
    (ctx / "f.txt").write_text("f")
    return list(run_build(store, BuildRequest(context=str(ctx), **kw)))


def failed_in_one_line(events: list[Any], *words: str) -> str:
    """The build failed with one line (no internal error) holding ``words``."""
    end = events[-1]
    assert isinstance(end, BuildFailed), end
    assert "\n" not in end.message and "internal error" not in end.message, end.message
    for word in words:
        assert word in end.message, end.message
    return end.message


def strings(doc: Any) -> str:
    """Every key and string value of a JSON document, joined."""
    if isinstance(doc, dict):
        return "".join(k + strings(v) for k, v in doc.items())
    if isinstance(doc, list):
        return "".join(strings(v) for v in doc)
    return doc if isinstance(doc, str) else ""


def assert_recorded(store: Store, status: str, message: str | None = None) -> None:
    record = list_builds(store, 1)[0]
    assert record.status == status, record
    if message is not None:
        assert record.error == message


def assert_none_running(store: Store) -> None:
    """A build refused at its preflight is not recorded; none is left "running"."""
    assert [b.status for b in list_builds(store) if b.status == "running"] == []


# -- bytes that are not UTF-8 -----------------------------------------------------------

# Every instruction that takes text, with bytes that are not UTF-8 in it. None of them
# needs RUN, so they build FROM scratch.
NOT_UTF8_LINES = {
    "LABEL value": b"LABEL a=" + NOT_UTF8,
    "LABEL key": b"LABEL " + NOT_UTF8 + b"=1",
    "ENV": b"ENV A=" + NOT_UTF8,
    "ARG": b"ARG A=" + NOT_UTF8 + b"\nLABEL a=$A",
    "COPY destination": b"COPY f.txt /d" + NOT_UTF8,
    "ADD destination": b"ADD f.txt /d" + NOT_UTF8,
    "WORKDIR": b"WORKDIR /w" + NOT_UTF8,
    "USER": b"USER " + NOT_UTF8,
    "CMD shell": b"CMD echo " + NOT_UTF8,
    "CMD exec": b'CMD ["echo", "' + NOT_UTF8 + b'"]',
    "ENTRYPOINT": b'ENTRYPOINT ["' + NOT_UTF8 + b'"]',
    "VOLUME": b"VOLUME /v" + NOT_UTF8,
    "STOPSIGNAL": b"STOPSIGNAL " + NOT_UTF8,
    "HEALTHCHECK": b"HEALTHCHECK CMD " + NOT_UTF8,
    "SHELL": b'SHELL ["/bin/sh", "-c' + NOT_UTF8 + b'"]',
    "ONBUILD": b"ONBUILD RUN " + NOT_UTF8,
    "MAINTAINER": b"MAINTAINER " + NOT_UTF8,
    "comment": b"# " + NOT_UTF8 + b"\nLABEL a=b",
}


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "build"])
@pytest.mark.parametrize("case", sorted(NOT_UTF8_LINES))
def test_bytes_that_are_not_utf8_build_in_any_instruction(
    store: Store, tmp_path: Path, case: str, dry_run: bool
) -> None:
    events = build(
        store, tmp_path / "ctx", b"FROM scratch\n" + NOT_UTF8_LINES[case] + b"\n", dry_run=dry_run
    )
    assert isinstance(events[-1], BuildFinished), events[-1]
    if dry_run:
        return
    assert_recorded(store, "ok")
    # The config holds them as Go's JSON writes them, U+FFFD for each byte: valid
    # UTF-8 that every reader (and `docker load`) takes.
    image = events[-1].image
    raw = store.images.get_blob(image).decode("utf-8")
    assert not any("\ud800" <= c <= "\udfff" for c in strings(json.loads(raw)))
    if case not in ("comment", "COPY destination", "ADD destination"):
        assert "\ufffd\ufffd" in raw
    assert [r.instruction for r in list_builds(store, 1)[0].steps][-1].isprintable()


def test_a_copy_destination_that_is_not_utf8_keeps_its_bytes(store: Store, tmp_path: Path) -> None:
    events = build(store, tmp_path / "ctx", b"FROM scratch\nCOPY f.txt /d" + NOT_UTF8 + b"\n")
    assert isinstance(events[-1], BuildFinished), events[-1]
    top = store.images.chain_of(store.images.get_config(events[-1].image))[-1]
    assert os.listdir(os.fsencode(store.layers.diff_path(top))) == [b"d" + NOT_UTF8]


@pytest.mark.root
@pytest.mark.usefixtures("busybox_store")
def test_a_run_gets_the_bytes_and_its_key_tells_them_apart(store: Store, tmp_path: Path) -> None:
    # BuildKit keeps a Dockerfile's bytes in the command and in the step's digest.
    def run_printf(byte: bytes) -> tuple[list[bool | None], bytes]:
        text = b"FROM busybox\nRUN printf '" + byte + b"' > /f\n"
        events = build(store, tmp_path / "ctx", text)
        assert isinstance(events[-1], BuildFinished), events[-1]
        top = store.images.chain_of(store.images.get_config(events[-1].image))[-1]
        cached = [e.step.cached for e in events if isinstance(e, StepFinished)]
        return cached, (store.layers.diff_path(top) / "f").read_bytes()

    assert run_printf(b"\xff") == ([None, False], b"\xff")
    assert run_printf(b"\xfe") == ([None, False], b"\xfe")
    assert run_printf(b"\xff") == ([None, True], b"\xff")


# -- depth ------------------------------------------------------------------------------


def test_500_chained_onbuilds_are_refused_in_one_line(store: Store, tmp_path: Path) -> None:
    text = "FROM scratch\n" + "ONBUILD " * 500 + "LABEL a=b\n"
    # The parser reads the chain (BuildKit's does) without recursing...
    result = parse(text)
    assert result.dump().count("(onbuild") == 500
    # ...and the build refuses it, as BuildKit's instructions do.
    events = build(store, tmp_path / "ctx", text.encode())
    failed_in_one_line(events, "Dockerfile:2:", "Chaining ONBUILD via `ONBUILD ONBUILD`")


def nested(depth: int) -> str:
    word = "x"
    for _ in range(depth):
        word = "${a:-" + word + "}"
    return word


def test_substitutions_nest_up_to_the_documented_limit() -> None:
    lexer = Lexer()
    assert lexer.process_word(nested(MAX_NESTING), {}) == "x"
    with pytest.raises(DockerfileError, match=f"nested more than {MAX_NESTING} deep"):
        lexer.process_word(nested(MAX_NESTING + 1), {})
    limits = (Path(__file__).parents[2] / "docs" / "limits.md").read_text()
    assert f"| variable substitutions nested in one word | {MAX_NESTING} |" in limits


def test_substitutions_nested_1000_deep_fail_in_one_line(store: Store, tmp_path: Path) -> None:
    text = f"FROM scratch\nARG a\nLABEL l={nested(1000)}\n"
    events = build(store, tmp_path / "ctx", text.encode())
    failed_in_one_line(events, "Dockerfile:3:", f"nested more than {MAX_NESTING} deep")
    assert_none_running(store)


# -- values out of range, NUL bytes, URLs ------------------------------------------------


@pytest.mark.usefixtures("busybox_store")
@pytest.mark.parametrize(
    ("chown", "words"),
    [
        ("99999999999:1", "unknown user '99999999999'"),
        ("1:99999999999", "unknown group '99999999999'"),
        ("4294967296", "unknown user '4294967296'"),
        ("-5:1", "unknown user '-5'"),
        ("١:1", "unknown user"),  # an Arabic-Indic digit is a name, not an id
    ],
)
def test_chown_out_of_range_fails_in_one_line(
    store: Store, tmp_path: Path, chown: str, words: str
) -> None:
    text = f"FROM busybox\nCOPY --chown={chown} f.txt /x\n"
    message = failed_in_one_line(build(store, tmp_path / "ctx", text.encode()), words)
    assert message.startswith(f"{tmp_path / 'ctx' / 'Dockerfile'}:2: COPY:")
    assert_none_running(store)


@pytest.mark.usefixtures("busybox_store")
def test_the_largest_id_is_an_id(store: Store, tmp_path: Path) -> None:
    # strconv.ParseUint(s, 10, 32) takes 2³² − 1, so BuildKit does too.
    text = b"FROM busybox\nCOPY --chown=4294967295:7 f.txt /x\n"
    assert isinstance(build(store, tmp_path / "ctx", text)[-1], BuildFinished)


@pytest.mark.parametrize(
    "lines",
    [
        'COPY ["f.txt", "/a\\u0000b"]',
        "COPY f.txt /a\0b",
        'ADD ["f.txt", "/a\\u0000b"]',
        "WORKDIR /a\0b",
        "COPY --from=first /a\0b /x",
    ],
)
def test_a_nul_in_a_path_fails_in_one_line(store: Store, tmp_path: Path, lines: str) -> None:
    text = f"FROM scratch AS first\nCOPY f.txt /\nFROM scratch\n{lines}\n"
    events = build(store, tmp_path / "ctx", text.encode())
    failed_in_one_line(events, "Dockerfile:4:", '\\x00b": a path cannot hold a NUL byte')
    assert_none_running(store)


@pytest.mark.parametrize("url", ["http://[::1/x", "http://[fe80::1%25/x", "https://[x]:99999/"])
def test_an_unparsable_url_fails_in_one_line(store: Store, tmp_path: Path, url: str) -> None:
    events = build(store, tmp_path / "ctx", f"FROM scratch\nADD {url} /x\n".encode())
    failed_in_one_line(events, "Dockerfile:2: ADD: cannot download", url)
    assert_none_running(store)


@pytest.mark.root
@pytest.mark.usefixtures("busybox_store")
def test_a_failing_run_is_named_by_its_line_not_step_0(store: Store, tmp_path: Path) -> None:
    text = b"FROM busybox\nLABEL a=b\nRUN exit 3\n"
    message = failed_in_one_line(build(store, tmp_path / "ctx", text))
    assert message == f"{tmp_path / 'ctx' / 'Dockerfile'}:3: 'RUN exit 3' exited with status 3"


# -- what the terminal is shown ------------------------------------------------------------

ESCAPES = "\x1b]0;owned\x07\x1b[2J\r\x9b1m\u202e"


def test_control_characters_never_reach_the_terminal(
    lamina_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lamina.tui.cli import main

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f.txt").write_text("f")
    copy = json.dumps(["f.txt", f"/{ESCAPES}"])
    (ctx / "Dockerfile").write_bytes(
        f'FROM scratch\nLABEL a="{ESCAPES}"\nCOPY {copy}\n'.encode() + b"LABEL b=\xff\n"
    )
    assert main(["build", "-t", "esc:1", str(ctx)]) == 0
    (ctx / "Dockerfile").write_text(f"FROM scratch\nCOPY {ESCAPES} /x\n")
    assert main(["build", str(ctx)]) == 1
    for argv in (["history", "--no-trunc", "esc:1"], ["builds"], ["system", "df", "-v"]):
        assert main(argv) == 0
    out, err = capsys.readouterr()
    for stream in (out, err):
        assert not any(c in stream for c in "\x1b\x07\r\x9b\u202e\udcff"), stream
    assert "\\x1b]0;owned\\x07\\x1b[2J\\x0d\\x9b1m\\u202e" in out
    assert "LABEL b=\\xff" in out
    assert "COPY: bad wildcard pattern '\\x1b]0;owned\\x07\\x1b[2J'" in err
    # Data that is not for a terminal stays as it is.
    assert main(["inspect", "esc:1"]) == 0
    labels = json.loads(capsys.readouterr().out)[0]["config"]["Labels"]
    assert labels == {"a": ESCAPES, "b": "\ufffd"}
