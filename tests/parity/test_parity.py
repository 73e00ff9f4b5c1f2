"""Parity scenarios: every cache rule of ``../shared/cache-semantics.md`` on both engines.

Each scenario builds after every edit on Docker's classic builder and on lamina's
embedded engine; both must report the same HIT/MISS sequence (and the one the rule
predicts, given as ``expect`` over the non-FROM steps), and the final images must hold
the same files. A disagreement is a bug in lamina unless listed in ``DELIBERATE``.
"""

from __future__ import annotations

import io
import struct
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

Step = tuple[Any, ...]


@dataclass(frozen=True)
class Scenario:
    """A context, then edits and builds (see ``conftest.Parity.run`` for the step forms)."""

    name: str
    files: dict[str, str | bytes]
    steps: list[Step]
    rule: str = ""


def Build(expect: str | None = None, **options: Any) -> Step:
    """A build on both engines; ``expect`` is Docker's predicted H/M over non-FROM steps."""
    return ("build", expect, options)


def Refused(words: str, line: int | None = None) -> Step:
    """A build both engines refuse with ``words`` (at ``line``, for a parse error)."""
    return ("refused", words, line)


def write(rel: str, content: str | bytes) -> Step:
    return ("write", rel, content)


def dockerfile(content: str, rel: str = "Dockerfile") -> Step:
    return ("write", rel, content)


def touch(rel: str) -> Step:
    return ("touch", rel)


def chmod(rel: str, mode: int) -> Step:
    return ("chmod", rel, mode)


def chown(rel: str, uid: int, gid: int) -> Step:
    return ("chown", rel, uid, gid)


def rm(rel: str) -> Step:
    return ("rm", rel)


def rename(old: str, new: str) -> Step:
    return ("rename", old, new)


def mkdir(rel: str) -> Step:
    return ("mkdir", rel)


def symlink(target: str, rel: str) -> Step:
    return ("symlink", target, rel)


def setcap(rel: str) -> Step:
    """Gives a file a file capability (cap_net_bind_service, permitted)."""
    return (
        "xattr",
        rel,
        "security.capability",
        struct.pack("<IIIII", 0x02000000, 1 << 10, 0, 0, 0),
    )


pytestmark = [pytest.mark.docker, pytest.mark.root, pytest.mark.slow]

# Differences lamina makes on purpose (none so far).
DELIBERATE: dict[str, str] = {}
# Disagreements found by this harness and not fixed yet: bugs in lamina's builder. They
# run as strict xfails, so a fix turns them into failures that ask for removal here.
KNOWN_BUGS: dict[str, str] = {}


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_000_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


SCENARIOS = [
    Scenario(
        "run-rebuild-hits",
        {"Dockerfile": "FROM {BASE}\nRUN echo a > /a\nRUN echo b > /b\n"},
        [Build("MM"), Build("HH")],
        rule="a step hits with the same parent and the same configuration",
    ),
    Scenario(
        "run-internal-whitespace-counts",
        {"Dockerfile": "FROM {BASE}\nRUN echo a > /a\nRUN echo b > /b\n"},
        [
            Build("MM"),
            dockerfile("FROM {BASE}\nRUN echo  a > /a\nRUN echo b > /b\n"),
            Build("MM"),
            dockerfile("FROM {BASE}\nRUN echo a > /a\nRUN echo b > /b\n"),
            Build("HH"),
        ],
        rule="RUN text as written: `echo  a` differs from `echo a`; reverting hits the old entry",
    ),
    Scenario(
        "comments-blank-lines-directives-change-nothing",
        {"Dockerfile": "FROM {BASE}\nRUN echo a > /a\nRUN echo b > /b\n"},
        [
            Build("MM"),
            dockerfile(
                "# escape=\\\n# a comment\n\nFROM {BASE}\n\n# why a\nRUN echo a > /a\n"
                "   \n# why b\nRUN echo b > /b\n\n"
            ),
            Build("HH"),
        ],
        rule="comments, blank lines and parser directives change nothing",
    ),
    Scenario(
        "continuation-lines-joined-whitespace-kept",
        {"Dockerfile": "FROM {BASE}\nRUN echo a \\\n  b > /ab\n"},
        [
            Build("M"),
            dockerfile("FROM {BASE}\nRUN echo a \\\n    b > /ab\n"),
            Build("M"),
            dockerfile("FROM {BASE}\nRUN echo a     b > /ab\n"),
            Build("H"),
        ],
        rule="continuation lines are joined with the next line's indentation kept",
    ),
    Scenario(
        "env-change-misses-there-and-after",
        {"Dockerfile": "FROM {BASE}\nRUN echo x > /x\nENV A=1\nRUN echo $A > /a\n"},
        [
            Build("MMM"),
            dockerfile("FROM {BASE}\nRUN echo x > /x\nENV A=2\nRUN echo $A > /a\n"),
            Build("HMM"),
        ],
        rule="every step compares the accumulated config (Env)",
    ),
    Scenario(
        "label-change-misses-later-run",
        {"Dockerfile": "FROM {BASE}\nRUN echo x > /x\nLABEL a=1\nRUN echo y > /y\n"},
        [
            Build("MMM"),
            dockerfile("FROM {BASE}\nRUN echo x > /x\nLABEL a=2\nRUN echo y > /y\n"),
            Build("HMM"),
        ],
        rule="a changed LABEL misses there and everything after",
    ),
    Scenario(
        "workdir-change-and-directory",
        {"Dockerfile": "FROM {BASE}\nRUN echo x > /x\nWORKDIR /w/deep\nRUN pwd > here\n"},
        [
            Build("MMM"),
            Build("HHH"),
            dockerfile("FROM {BASE}\nRUN echo x > /x\nWORKDIR /v\nRUN pwd > here\n"),
            Build("HMM"),
        ],
        rule="WORKDIR is a metadata step that also creates the directory",
    ),
    Scenario(
        "user-change",
        {"Dockerfile": "FROM {BASE}\nRUN echo x > /x\nUSER root\nRUN id -u > /uid\n"},
        [
            Build("MMM"),
            dockerfile("FROM {BASE}\nRUN echo x > /x\nUSER 0\nRUN id -u > /uid\n"),
            Build("HMM"),
        ],
        rule="a changed USER misses there and after",
    ),
    Scenario(
        "metadata-steps-expose-cmd-stopsignal",
        {
            "Dockerfile": 'FROM {BASE}\nEXPOSE 80\nCMD ["sh"]\nSTOPSIGNAL SIGTERM\n'
            "HEALTHCHECK NONE\nRUN echo z > /z\n"
        },
        [
            Build("MMMMM"),
            dockerfile(
                'FROM {BASE}\nEXPOSE 80\nCMD ["sh"]\nSTOPSIGNAL SIGINT\nHEALTHCHECK NONE\n'
                "RUN echo z > /z\n"
            ),
            Build("HHMMM"),
        ],
        rule="metadata instructions are cacheable steps; their config feeds later keys",
    ),
    Scenario(
        "volume-mountpoint-in-later-run-layer",
        {"Dockerfile": "FROM {BASE}\nVOLUME /data\nRUN echo z > /z && echo inside > /data/f\n"},
        [Build("MM"), Build("HH")],
        rule="a RUN after VOLUME runs with the volume mounted: its layer holds the mount point "
        "but not what the command wrote inside the volume",
    ),
    Scenario(
        "entrypoint-and-healthcheck-change",
        {
            "Dockerfile": 'FROM {BASE}\nENTRYPOINT ["sh"]\nHEALTHCHECK CMD true\nRUN echo h > /h\n',
        },
        [
            Build("MMM"),
            dockerfile(
                'FROM {BASE}\nENTRYPOINT ["sh"]\nHEALTHCHECK --interval=5s CMD true\nRUN echo h > /h\n'
            ),
            Build("HMM"),
            dockerfile(
                'FROM {BASE}\nENTRYPOINT ["sh", "-c"]\nHEALTHCHECK CMD true\nRUN echo h > /h\n'
            ),
            Build("MMM"),
        ],
        rule="Entrypoint and Healthcheck are part of the accumulated config",
    ),
    Scenario(
        "shell-change-misses-run",
        {"Dockerfile": 'FROM {BASE}\nSHELL ["/bin/sh", "-c"]\nRUN echo s > /s\n'},
        [
            Build("MM"),
            dockerfile('FROM {BASE}\nSHELL ["/bin/sh", "-ec"]\nRUN echo s > /s\n'),
            Build("MM"),
        ],
        rule="RUN's key holds the SHELL",
    ),
    Scenario(
        "run-exec-form-keyed-on-the-command-it-runs",
        {"Dockerfile": "FROM {BASE}\nRUN echo e > /e\n"},
        [
            Build("M"),
            dockerfile('FROM {BASE}\nRUN ["/bin/sh", "-c", "echo e > /e"]\n'),
            Build("H"),
            dockerfile('FROM {BASE}\nRUN ["sh", "-c", "echo e > /e"]\n'),
            Build("M"),
        ],
        rule="RUN is keyed on SHELL + text (shell form) or the array (exec form): equal commands hit",
    ),
    Scenario(
        "build-arg-misses-first-run-after-arg",
        {
            "Dockerfile": "FROM {BASE}\nARG V=1\nRUN echo unrelated > /u\nRUN echo $V > /v\n",
        },
        [
            Build("MMM"),
            Build("HHH", build_args={"V": "1"}),
            Build("HMM", build_args={"V": "2"}),
            Build("HHH"),
        ],
        rule="a changed --build-arg misses at the first RUN after the ARG; the default value hits",
    ),
    Scenario(
        "arg-default-change-misses-at-arg",
        {"Dockerfile": "FROM {BASE}\nARG V=1\nRUN echo $V > /v\n"},
        [
            Build("MM"),
            dockerfile("FROM {BASE}\nARG V=2\nRUN echo $V > /v\n"),
            Build("MM"),
            Build("HH", build_args={"V": "2"}),
        ],
        rule="ARG is keyed on its Dockerfile default",
    ),
    Scenario(
        "arg-overridden-by-env-is-not-active",
        {"Dockerfile": "FROM {BASE}\nARG V=1\nENV V=fixed\nRUN echo $V > /v\n"},
        [Build("MMM"), Build("HHH", build_args={"V": "2"})],
        rule="build args that ENV overrides are not active",
    ),
    Scenario(
        "arg-without-value-becomes-active",
        {"Dockerfile": "FROM {BASE}\nARG V\nRUN echo hi > /h\n"},
        [
            Build("MM"),
            Build("HM", build_args={"V": "x"}),
            Build("HH"),
            Build("HH", build_args={"V": "x"}),
        ],
        rule="an ARG without a value is active only once --build-arg gives one",
    ),
    Scenario(
        "global-arg-in-from",
        {"Dockerfile": "ARG IMG={BASE}\nFROM $IMG\nARG IMG\nRUN echo $IMG > /img\n"},
        [Build("MM"), Build("HH")],
        rule="ARGs before FROM are not steps; redeclared in the stage they are in scope",
    ),
    Scenario(
        "copy-file-content-and-revert",
        {"Dockerfile": "FROM {BASE}\nCOPY a.txt /a\nRUN cat /a > /b\n", "a.txt": "1"},
        [
            Build("MM"),
            write("a.txt", "2"),
            Build("MM"),
            write("a.txt", "1"),
            Build("HH"),
        ],
        rule="COPY checksum covers content; reverting hits the old entry",
    ),
    Scenario(
        "copy-touch-hits",
        {"Dockerfile": "FROM {BASE}\nCOPY a.txt /a\nRUN cat /a > /b\n", "a.txt": "1"},
        [Build("MM"), touch("a.txt"), Build("HH")],
        rule="mtime is not hashed",
    ),
    Scenario(
        "copy-chmod-misses",
        # stat, not ls -l: a file lamina's layers share shows its link count (2 or more)
        # to RUN, the one thing identical files stored once let a step see.
        {
            "Dockerfile": "FROM {BASE}\nCOPY a.txt /a\nRUN stat -c '%A %U %G %s' /a > /ls\n",
            "a.txt": "1",
        },
        [
            Build("MM"),
            chmod("a.txt", 0o755),
            Build("MM"),
            chmod("a.txt", 0o644),
            Build("HH"),
        ],
        rule="a changed mode invalidates",
    ),
    Scenario(
        "copy-chown-hits",
        {"Dockerfile": "FROM {BASE}\nCOPY a.txt /a\nRUN echo after > /after\n", "a.txt": "1"},
        [Build("MM"), chown("a.txt", 1234, 5678), Build("HH")],
        rule="the client sends the context with uid/gid 0: changing the owner does not invalidate",
    ),
    Scenario(
        "copy-dir-rename",
        {"Dockerfile": "FROM {BASE}\nCOPY dir /d\n", "dir/a": "a", "dir/sub/b": "b"},
        [Build("M"), rename("dir/a", "dir/c"), Build("M"), rename("dir/c", "dir/a"), Build("H")],
        rule="a rename counts",
    ),
    Scenario(
        "copy-dir-empty-directory-counts",
        {"Dockerfile": "FROM {BASE}\nCOPY dir /d\n", "dir/a": "a"},
        [Build("M"), mkdir("dir/empty"), Build("M")],
        rule="an added empty directory counts",
    ),
    Scenario(
        "copy-dir-removed-file",
        {
            "Dockerfile": "FROM {BASE}\nCOPY dir /d\nRUN ls -R /d > /listing\n",
            "dir/a": "a",
            "dir/b": "b",
        },
        [Build("MM"), rm("dir/b"), Build("MM")],
        rule="a removed file changes the dir: checksum",
    ),
    Scenario(
        "copy-symlink-target-counts",
        {"Dockerfile": "FROM {BASE}\nCOPY dir /d\n", "dir/a": "a", "dir/b": "b"},
        [
            symlink("a", "dir/link"),
            Build("M"),
            symlink("b", "dir/link"),
            Build("M"),
            symlink("a", "dir/link"),
            Build("H"),
        ],
        rule="a symlink's target counts",
    ),
    Scenario(
        "dockerignore-ignored-file-edits-invalidate-nothing",
        {
            "Dockerfile": "FROM {BASE}\nCOPY . /ctx\n",
            ".dockerignore": "ignored.txt\nlogs/\n",
            "ignored.txt": "1",
            "logs/x.log": "l",
            "kept.txt": "k",
        },
        [
            Build("M"),
            write("ignored.txt", "2"),
            write("logs/y.log", "more"),
            Build("H"),
            write("kept.txt", "k2"),
            Build("M"),
        ],
        rule="files matched by .dockerignore never reach the checksum",
    ),
    Scenario(
        "dockerignore-exception-reincludes",
        {
            "Dockerfile": "FROM {BASE}\nCOPY . /ctx\n",
            ".dockerignore": "docs\n!docs/README.md\n*.tmp\n",
            "docs/README.md": "r",
            "docs/other.md": "o",
            "x.tmp": "t",
        },
        [
            Build("M"),
            write("docs/other.md", "o2"),
            write("x.tmp", "t2"),
            Build("H"),
            write("docs/README.md", "r2"),
            Build("M"),
        ],
        rule="a !pattern re-includes a path inside an excluded directory",
    ),
    Scenario(
        "dockerignore-excludes-dockerfile-and-itself",
        {
            "Dockerfile": "FROM {BASE}\nCOPY . /ctx\n",
            ".dockerignore": "Dockerfile\n.dockerignore\n",
            "kept.txt": "k",
        },
        [
            Build("M"),
            dockerfile("FROM {BASE}\n# a new comment\nCOPY . /ctx\n"),
            Build("H"),
        ],
        rule="the Dockerfile and .dockerignore are dropped from the context if the patterns match",
    ),
    Scenario(
        "dockerfile-in-context-is-copied",
        {"Dockerfile": "FROM {BASE}\nCOPY . /ctx\n", "kept.txt": "k"},
        [
            Build("M"),
            dockerfile("FROM {BASE}\n# a new comment\nCOPY . /ctx\n"),
            Build("M"),
        ],
        rule="without .dockerignore the Dockerfile is part of `COPY .`",
    ),
    Scenario(
        "add-versus-copy",
        {"Dockerfile": "FROM {BASE}\nCOPY a.txt /a\n", "a.txt": "1"},
        [Build("M"), dockerfile("FROM {BASE}\nADD a.txt /a\n"), Build("M")],
        rule="the text COPY or ADD is part of the key",
    ),
    Scenario(
        "copy-chown-flag-counts",
        {"Dockerfile": "FROM {BASE}\nCOPY a.txt /a\n", "a.txt": "1"},
        [Build("M"), dockerfile("FROM {BASE}\nCOPY --chown=1:1 a.txt /a\n"), Build("M")],
        rule="--chown is part of the COPY key",
    ),
    Scenario(
        "copy-destination-after-expansion",
        {"Dockerfile": "FROM {BASE}\nARG D=/x\nCOPY a.txt $D/a\n", "a.txt": "1"},
        [
            Build("MM"),
            Build("HH", build_args={"D": "/x"}),
            Build("HM", build_args={"D": "/y"}),
        ],
        rule="the COPY destination counts after variable expansion",
    ),
    Scenario(
        "copy-several-sources-and-wildcards",
        {"Dockerfile": "FROM {BASE}\nCOPY *.txt b.md /dst/\n", "a.txt": "a", "b.md": "b"},
        [
            Build("M"),
            write("c.txt", "c"),
            Build("M"),
            write("d.log", "not matched"),
            Build("H"),
            write("b.md", "b2"),
            Build("M"),
        ],
        rule="several sources give a multi: checksum over what the patterns match",
    ),
    Scenario(
        "add-local-tar-extracts",
        {
            "Dockerfile": "FROM {BASE}\nADD bundle.tar /opt/\n",
            "bundle.tar": _tar({"x/one.txt": b"one", "two.txt": b"two"}),
        },
        [
            Build("M"),
            write("bundle.tar", _tar({"x/one.txt": b"ONE", "two.txt": b"two"})),
            Build("M"),
        ],
        rule="ADD of a local tar archive extracts it",
    ),
    Scenario(
        "add-url-hashes-the-downloaded-bytes",
        {
            "Dockerfile": "FROM {BASE}\nADD {URL}/payload.txt /payload.txt\nRUN cat /payload.txt > /c\n",
            "../www/payload.txt": "one",
        },
        [
            Build("MM"),
            Build("HH"),
            write("../www/payload.txt", "two"),
            Build("MM"),
            write("../www/payload.txt", "one"),
            Build("HH"),
        ],
        rule="ADD of a URL downloads and hashes the bytes (a new Last-Modified alone hits)",
    ),
    Scenario(
        "copy-from-stage-unchanged-output-hits",
        {
            "Dockerfile": "FROM {BASE} AS build\nCOPY src.txt /src\nRUN echo constant > /out\n"
            "FROM {BASE}\nCOPY --from=build /out /out\nRUN cat /out > /final\n",
            "src.txt": "1",
        },
        [Build("MMMM"), write("src.txt", "2"), Build("MMHH")],
        rule="COPY --from hashes the copied files: unchanged output hits",
    ),
    Scenario(
        "copy-from-stage-changed-output-misses",
        {
            "Dockerfile": "FROM {BASE} AS build\nCOPY src.txt /src\nRUN cp /src /out\n"
            "FROM {BASE}\nCOPY --from=build /out /out\n",
            "src.txt": "1",
        },
        [Build("MMM"), write("src.txt", "2"), Build("MMM")],
        rule="COPY --from misses when the copied files changed",
    ),
    Scenario(
        "multi-stage-target-then-full",
        {
            "Dockerfile": "FROM {BASE} AS first\nRUN echo 1 > /one\n"
            "FROM first AS second\nRUN echo 2 > /two\n",
        },
        [Build("M", target="first"), Build("HM"), Build("HH")],
        rule="stages up to --target are built in order; the cache resets per stage",
    ),
    Scenario(
        "no-cache-still-stores-results",
        {"Dockerfile": "FROM {BASE}\nRUN echo n > /n\nENV E=1\n"},
        [Build("MM"), Build("MM", no_cache=True), Build("HH")],
        rule="--no-cache skips lookups but still stores results",
    ),
    Scenario(
        "dockerfile-outside-context-with-f",
        {"../elsewhere.Dockerfile": "FROM {BASE}\nCOPY a.txt /a\n", "a.txt": "1"},
        [
            Build("M", dockerfile="../elsewhere.Dockerfile"),
            dockerfile("FROM {BASE}\nCOPY a.txt /a\nRUN cat /a > /b\n", "../elsewhere.Dockerfile"),
            Build("HM", dockerfile="../elsewhere.Dockerfile"),
        ],
        rule="-f names a Dockerfile outside the context",
    ),
    Scenario(
        "onbuild-triggers-run-after-from",
        {
            "Dockerfile": "FROM {BASE} AS base\nONBUILD RUN echo trig > /trig\n"
            "ONBUILD COPY a.txt /a\nONBUILD ENV X=1\n"
            "FROM base\nRUN cat /trig /a > /both\n",
            "a.txt": "1",
        },
        [Build("MMMMMMM"), Build("HHHHHHH"), write("a.txt", "2"), Build("HHHHMMM")],
        rule="ONBUILD triggers of the base run right after FROM as ordinary cacheable steps",
    ),
    Scenario(
        "copy-capability-xattr-counts",
        {"Dockerfile": "FROM {BASE}\nCOPY tool /tool\n", "tool": "#!/bin/sh\n"},
        [Build("M"), setcap("tool"), Build("M"), Build("H")],
        rule="the tarsum covers security.capability, the one xattr read from disk",
    ),
    Scenario(
        "copy-from-image",
        {
            "Dockerfile": "FROM {BASE}\nCOPY --from={BASE} /etc/passwd /copied/passwd\nRUN wc -l /copied/passwd > /n\n"
        },
        [Build("MM"), Build("HH")],
        rule="COPY --from=<image> hashes the files as they are in that image",
    ),
    # What the classic builder refuses (BuildKit-era syntax), in its own words.
    Scenario(
        "classic-refuses-copy-link",
        {"Dockerfile": "FROM {BASE}\nCOPY --link a.txt /a\n", "a.txt": "1"},
        [Refused("Unknown flag: link", 2)],
        rule="COPY --link is a parse error: the classic parser does not know the flag",
    ),
    Scenario(
        "classic-refuses-copy-chmod",
        {"Dockerfile": "FROM {BASE}\nRUN echo a > /a\nCOPY --chmod=755 a.txt /a\n", "a.txt": "1"},
        [Refused("the --chmod option requires BuildKit")],
        rule="COPY --chmod parses, then fails at its step: it requires BuildKit",
    ),
    Scenario(
        "classic-refuses-run-heredoc",
        {"Dockerfile": "FROM {BASE}\nRUN <<EOF\necho hi > /hi\nEOF\n"},
        [Refused("unknown instruction: ECHO", 3)],
        rule="a heredoc's body is read as instructions: its first line is an unknown one",
    ),
    Scenario(
        "classic-refuses-copy-heredoc",
        {"Dockerfile": "FROM {BASE}\nCOPY <<EOF /x\n\n# a comment\nhi there\nEOF\n"},
        [Refused("unknown instruction: HI", 5)],
        rule="blank and comment lines of a heredoc are skipped like the Dockerfile's own",
    ),
    Scenario(
        "run-deletes-and-replaces-files",
        {
            "Dockerfile": "FROM {BASE}\nRUN rm /etc/group && mkdir -p /opt/a && echo 1 > /opt/a/f\n"
            "RUN rm -rf /opt/a && mkdir /opt/a && echo 2 > /opt/a/g && ln -s /opt/a/g /opt/link\n"
        },
        [Build("MM"), Build("HH")],
        rule="whiteouts and opaque directories in RUN layers",
    ),
]


def _param(s: Scenario) -> Any:
    marks = []
    if s.name in KNOWN_BUGS:
        marks.append(pytest.mark.xfail(reason=KNOWN_BUGS[s.name], strict=True))
    return pytest.param(s, id=s.name, marks=marks)


@pytest.mark.parametrize("scenario", [_param(s) for s in SCENARIOS])
def test_parity(parity: Callable[..., None], scenario: Scenario) -> None:
    if scenario.name in DELIBERATE:
        pytest.skip(f"deliberate difference: {DELIBERATE[scenario.name]}")
    parity(scenario.name, scenario.files, scenario.steps)


def test_enough_scenarios_cover_the_rules() -> None:
    assert len(SCENARIOS) >= 25
    assert len({s.name for s in SCENARIOS}) == len(SCENARIOS)
    assert all(s.rule for s in SCENARIOS)
