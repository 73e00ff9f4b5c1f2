"""The proof holds: what the replay says the rewrite would have run is what building the
rewritten Dockerfile through the same edits runs, build by build.

A Dockerfile that copies the whole context before installing its requirements is built
through a series of edits (the application file three times, the requirements once, a
revert); ``lamina advise`` replays those builds with requirements.txt copied first.
Then the patched Dockerfile is built for real, in a store of its own, through the same
edits: its install reruns exactly ``reruns_after`` times, and each build runs exactly the
steps the replay listed. Under both builders' rules.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from advice_builds import Engines, Project, one, ran

from lamina.core.advice.replay import normalized

pytestmark = pytest.mark.root

DOCKERFILE = """\
FROM busybox
COPY bin/pip /usr/local/bin/pip
WORKDIR /app
COPY . .
RUN pip install -r requirements.txt
RUN echo built > /app/stamp
"""

INSTALL = "RUN pip install -r requirements.txt"

# (path, content) written before each build; the first build starts from all of them.
EDITS = [
    ("app.py", "print('v1')\n"),
    ("app.py", "print('v2')\n"),
    ("app.py", "print('v3')\n"),
    ("requirements.txt", "flask==3.0\nrequests==2.32\n"),
    ("app.py", "print('v1')\n"),
]


def _through_edits(project: Project) -> list[list[str]]:
    executed = []
    for path, content in EDITS:
        project.write(path, content)
        executed.append(ran(project.build()))
    return executed


@pytest.mark.parametrize("builder", ["buildkit", "classic"])
def test_the_replay_runs_what_the_rewritten_dockerfile_really_runs(
    tmp_path: Path, engines: Engines, builder: str
) -> None:
    original = Project(tmp_path / "ctx", engines("original"), builder)
    original.stand_ins()
    original.write("requirements.txt", "flask==3.0\n")
    start = original.copy_to(tmp_path / "pristine", engines("unused"))
    original.dockerfile(DOCKERFILE)
    start.dockerfile(DOCKERFILE)
    executed_now = _through_edits(original)

    report = original.advise()
    advice = one(report, "volatile-copy-first")
    proof = advice.proof
    assert proof is not None and advice.diff is not None
    # The model reproduces every recorded build of the Dockerfile as it is.
    assert proof.compared == len(EDITS) and proof.agreed == proof.compared
    assert [list(b.ran_now) for b in proof.builds] == executed_now
    assert advice.saving.reruns_now == sum(INSTALL in r for r in executed_now) == len(EDITS)

    # The same edits, from the same start, through the patched Dockerfile.
    patched = Project(tmp_path / "patched", engines("patched"), builder)
    patched.root.rmdir()
    start.copy_to(patched.root, patched.engine)
    patched.patch(advice.diff)
    assert "COPY requirements.txt ./" in (patched.root / "Dockerfile").read_text()
    executed_after = _through_edits(patched)

    assert [list(b.ran_after) for b in proof.builds] == executed_after
    reruns = sum(normalized(INSTALL) in r for r in executed_after)
    # The first build, and the requirements edit; the application edits rerun no install.
    assert advice.saving.reruns_after == reruns == 2
    assert advice.saving.executions_after == sum(len(r) for r in executed_after)
    assert advice.saving.executions_now == sum(len(r) for r in executed_now)


def test_a_short_history_says_so(project: Project) -> None:
    project.stand_ins()
    project.write("requirements.txt", "flask==3.0\n")
    project.write("app.py", "print(1)\n")
    project.dockerfile(DOCKERFILE)
    project.build()
    report = project.advise()
    advice = one(report, "volatile-copy-first")
    # One build shows no volatility yet: the Dockerfile alone shows the problem.
    assert advice.proof is None and advice.saving.reruns_after is None
    assert any("history too short" in e for e in advice.evidence)
    assert any("history too short to replay: 1 build" in n for n in report.notes)
