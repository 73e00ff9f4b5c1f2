"""``RUN --mount`` and ``RUN --network`` as BuildKit's Dockerfile frontend reads them.

The expected values and messages were measured on Docker 20.10's BuildKit (the private
dockerd of ``.ci/run``, ``DOCKER_BUILDKIT=1``) by building ``FROM busybox`` and
``RUN --mount=<spec> true`` for each spec; ``size`` (tmpfs) is newer frontends' syntax,
checked against the Dockerfile reference instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lamina.core.dockerfile.mounts import Mount, parse_mount, parse_network
from lamina.core.embedded.builder.walk import run_build
from lamina.core.embedded.store import Store
from lamina.core.errors import DockerfileError
from lamina.core.events import BuildFailed, BuildFinished
from lamina.core.model import BuildRequest


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # bind: the default type, read-only unless rw; the context unless from.
        ("target=/b", Mount("bind", "/b", readonly=True)),
        ("type=bind,dst=/b,rw", Mount("bind", "/b", readonly=False)),
        ("type=bind,destination=/b,readwrite=true", Mount("bind", "/b", readonly=False)),
        ("type=bind,target=/b,rw=false", Mount("bind", "/b", readonly=True)),
        ("type=bind,target=/b,ro=0", Mount("bind", "/b", readonly=False)),
        ("type=bind,target=/b,readonly=False", Mount("bind", "/b", readonly=False)),
        (
            "type=bind,from=build,src=/out,target=/in",
            Mount("bind", "/in", source="/out", from_ref="build", readonly=True),
        ),
        ("type=bind,source=data,target=/src", Mount("bind", "/src", source="data", readonly=True)),
        ("TYPE=BIND,Target=/b", Mount("bind", "/b", readonly=True)),
        # cache: writable unless ro, shared by its id (the target when none is given).
        ("type=cache,target=/root/.cache", Mount("cache", "/root/.cache", id="/root/.cache")),
        ("type=Cache,target=/c,id=pip", Mount("cache", "/c", id="pip")),
        ("type=cache,target=/c,ro", Mount("cache", "/c", id="/c", readonly=True)),
        ("type=cache,target=/c,sharing=locked", Mount("cache", "/c", id="/c", sharing="locked")),
        ("type=cache,target=/c,sharing=Private", Mount("cache", "/c", id="/c", sharing="private")),
        (
            "type=cache,target=/c,mode=0700,uid=1000,gid=100",
            Mount("cache", "/c", id="/c", mode=0o700, uid=1000, gid=100),
        ),
        (
            "type=cache,target=/c,from=seed,source=/data",
            Mount("cache", "/c", source="/data", from_ref="seed", id="/c"),
        ),
        # tmpfs: writable; size in docker/go-units' binary units.
        ("type=tmpfs,target=/t", Mount("tmpfs", "/t")),
        ("type=tmpfs,target=/t,size=64m", Mount("tmpfs", "/t", size=64 << 20)),
        ("type=tmpfs,target=/t,size=1.5GiB", Mount("tmpfs", "/t", size=3 << 29)),
        ("type=tmpfs,target=/t,size=4096", Mount("tmpfs", "/t", size=4096)),
        # secret: read-only; the id is the source, else the target's base name; it lands
        # under /run/secrets/ by the id's base name unless the target says otherwise.
        ("type=secret,id=tok", Mount("secret", "/run/secrets/tok", id="tok", readonly=True)),
        (
            "type=secret,source=tok,target=/etc/x",
            Mount("secret", "/etc/x", source="tok", id="tok", readonly=True),
        ),
        (
            "type=secret,source=a/tok",
            Mount("secret", "/run/secrets/tok", source="a/tok", id="a/tok", readonly=True),
        ),
        ("type=secret,target=/etc/pw", Mount("secret", "/etc/pw", id="pw", readonly=True)),
        (
            "type=secret,id=tok,required,mode=0440,uid=1,gid=2",
            Mount(
                "secret",
                "/run/secrets/tok",
                id="tok",
                readonly=True,
                required=True,
                mode=0o440,
                uid=1,
                gid=2,
            ),
        ),
        (
            "type=secret,id=t,required=false",
            Mount("secret", "/run/secrets/t", id="t", readonly=True),
        ),
        # ssh: the default agent, at a numbered socket; required only when asked.
        (
            "type=ssh",
            Mount("ssh", "/run/buildkit/ssh_agent.0", id="default", readonly=True),
        ),
        (
            "type=ssh,id=deploy,target=/run/agent,required=true,mode=0600",
            Mount("ssh", "/run/agent", id="deploy", readonly=True, required=True, mode=0o600),
        ),
    ],
)
def test_every_type_and_option(spec: str, expected: Mount) -> None:
    assert parse_mount(spec) == expected


def test_ssh_sockets_are_numbered_by_the_ssh_mounts_before() -> None:
    assert parse_mount("type=ssh", ssh_index=2).target == "/run/buildkit/ssh_agent.2"
    assert parse_mount("type=ssh,target=/s", ssh_index=2).target == "/s"


def test_a_relative_target_is_kept_for_the_builder_to_join() -> None:
    assert parse_mount("type=cache,target=cache").target == "cache"


@pytest.mark.parametrize(
    ("mount", "spec"),
    [
        (Mount("bind", "/b", readonly=True), {"type": "bind", "target": "/b", "readonly": True}),
        (
            Mount("cache", "/c", id="pip", sharing="locked", uid=1),
            {"type": "cache", "target": "/c", "id": "pip", "uid": 1, "sharing": "locked"},
        ),
        (Mount("tmpfs", "/t", size=10), {"type": "tmpfs", "target": "/t", "size": 10}),
        (
            Mount("secret", "/run/secrets/t", id="t", readonly=True, required=True),
            {
                "type": "secret",
                "target": "/run/secrets/t",
                "id": "t",
                "readonly": True,
                "required": True,
            },
        ),
    ],
)
def test_the_keyed_spec_holds_what_was_asked_for(mount: Mount, spec: dict[str, Any]) -> None:
    assert mount.spec() == spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("type=nope,target=/x", 'unsupported mount type "nope"'),
        ("target", "invalid field 'target' must be a key=value pair"),
        ("type=bind,target=/b,bogus=1", "unexpected key 'bogus' in 'bogus=1'"),
        ("type=bind,target=/b,ro=maybe", "invalid value for ro: maybe"),
        ("type=bind,target=/b,rw=yes", "invalid value for rw: yes"),
        ("type=cache,target=/c,sharing=all", 'unsupported sharing value "all"'),
        ("type=bind,target=/b,sharing=shared", "invalid cache sharing set for bind mount"),
        ("type=tmpfs,target=/t,sharing=private", "invalid cache sharing set for tmpfs mount"),
        ("type=bind,target=/b,mode=0755", 'mode not allowed for "bind" type mounts'),
        ("type=tmpfs,target=/t,uid=1", 'uid not allowed for "tmpfs" type mounts'),
        ("type=bind,target=/b,gid=1", 'gid not allowed for "bind" type mounts'),
        ("type=cache,target=/c,mode=8", "invalid value 8 for mode"),
        ("type=cache,target=/c,uid=-1", "invalid value -1 for uid"),
        ("type=cache,target=/c,gid=4294967296", "invalid value 4294967296 for gid"),
        ("type=cache,target=/c,required", "unexpected key 'required' for mount type 'cache'"),
        ("type=bind,target=/b,required=false", "unexpected key 'required' for mount type 'bind'"),
        ("type=bind,target=/b,size=10m", "unexpected key 'size' for mount type 'bind'"),
        ("type=tmpfs,target=/t,size=lots", "invalid value for size: lots"),
        ("type=secret", "invalid secret mount. one of source, target required"),
        ("type=secret,id=a,from=x", "secret mount should not have a from"),
        ("type=secret,id=a,sharing=shared", "invalid cache sharing set for secret mount"),
        ("type=secret,id=a,source=b", "both source and id can't be set"),
        ("type=bind", "mount target is required"),
        ("type=cache", "mount target is required"),
        # 20.10's BuildKit parses this and fails at run time (the path is not in the
        # empty cache); lamina says why before anything runs.
        ("type=cache,target=/c,source=/x", "cache mount source requires from"),
    ],
)
def test_bad_specs_fail_in_buildkits_words(spec: str, message: str) -> None:
    with pytest.raises(DockerfileError) as caught:
        parse_mount(spec)
    assert str(caught.value) == message


@pytest.mark.parametrize("value", ["default", "none", "host"])
def test_network_modes(value: str) -> None:
    assert parse_network(value) == value


def test_an_unknown_network_mode_names_the_ones_there_are() -> None:
    with pytest.raises(DockerfileError, match="unsupported network mode 'bridge'"):
        parse_network("bridge")


# -- in a build: the error names the file and the line, on one line, before any write --


def _dry_run(store: Store, ctx: Path, text: str) -> list[Any]:
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(text)
    return list(run_build(store, BuildRequest(context=str(ctx), dry_run=True)))


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("RUN --mount=type=nope,target=/x true", 'RUN: unsupported mount type "nope"'),
        ("RUN --mount=type=bind,target=/b,mode=0755 true", 'mode not allowed for "bind"'),
        ("RUN --mount=type=secret,id=a,source=b true", "both source and id can't be set"),
        ("RUN --network=bridge true", "RUN: unsupported network mode 'bridge'"),
        # Quotes go with the flag word, as BuildKit's flag parser takes them off: the
        # comma inside them still separates fields.
        ('RUN --mount=type=bind,target=/b,"src=a,b" true', "invalid field 'b'"),
        ("RUN --mount=type=cache,target=${NOPE true", "RUN: "),
    ],
)
def test_a_bad_mount_in_a_dockerfile_names_its_line(
    store: Store, tmp_path: Path, line: str, reason: str
) -> None:
    ctx = tmp_path / "ctx"
    events = _dry_run(store, ctx, f"FROM scratch\n\n# the mount\n{line}\n")
    failed = events[-1]
    assert isinstance(failed, BuildFailed) and failed.build_id == 0
    assert failed.message.startswith(f"{ctx / 'Dockerfile'}:4: "), failed.message
    assert reason in failed.message and "\n" not in failed.message


def test_a_bad_mount_raises_a_dockerfile_error(store: Store, tmp_path: Path) -> None:
    from lamina.core.context.files import load_build_files
    from lamina.core.dockerfile.args import BuildArgs
    from lamina.core.dockerfile.instructions import load_dockerfile
    from lamina.core.embedded.builder.handlers import BuildingStage, Handlers
    from lamina.core.embedded.builder.rules import rules_for
    from lamina.core.embedded.builder.scratch import Scratch
    from lamina.core.embedded.builder.state import SCRATCH, State
    from lamina.core.embedded.builder.words import Words

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nRUN --mount=type=tmpfs,target=/t,uid=1 true\n")
    files = load_build_files(str(ctx), None)
    df = load_dockerfile(files.text, str(files.dockerfile))
    with Scratch() as scratch:
        handlers = Handlers(
            store,
            Words(files.dockerfile, df.escape),
            files.context,
            scratch,
            df.stages,
            {},
            rules_for("buildkit"),
        )
        state = State(SCRATCH, {"config": {}, "rootfs": {"type": "layers", "diff_ids": []}}, None)
        with pytest.raises(DockerfileError) as caught:
            handlers.prepare(
                BuildingStage(0, BuildArgs({}, {})), df.stages[0].instructions[0], state
            )
    assert caught.value.line == 2 and caught.value.path == str(files.dockerfile)
    assert caught.value.reason == 'RUN: uid not allowed for "tmpfs" type mounts'


def test_good_mounts_pass_a_dry_run(store: Store, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "data").mkdir()
    (ctx / "data" / "f").write_text("x")
    events = _dry_run(
        store,
        ctx,
        "FROM scratch AS seed\nCOPY data /data\n"
        "FROM scratch\n"
        "RUN --mount=type=cache,target=/c,sharing=locked,uid=1 "
        "--mount=type=bind,source=data,target=/d "
        "--mount=type=bind,from=seed,source=/data,target=/s "
        "--mount=type=tmpfs,target=/t,size=1m "
        "--mount=type=secret,id=tok --mount=type=ssh --network=none true\n",
    )
    assert isinstance(events[-1], BuildFinished), events[-1]
