"""The replay's cache model on recorded inputs alone, rule by rule of cache-semantics.md
and buildkit-semantics.md (the real builder's agreement is tested in test_proof.py)."""

from __future__ import annotations

from lamina.core.advice.replay import ReplayBuild, replay, select
from lamina.core.dockerfile.instructions import load_dockerfile


def _builds(
    *contexts: dict[str, str], args: list[dict[str, str]] | None = None
) -> list[ReplayBuild]:
    return [
        ReplayBuild(i + 1, (args or [{}] * len(contexts))[i], c, {0: "sha256:base"})
        for i, c in enumerate(contexts)
    ]


def _runs(
    text: str, builds: list[ReplayBuild], builder: str = "buildkit"
) -> dict[str, list[bool | None]]:
    result = replay(load_dockerfile(text), builds, builder)
    return {s.instruction: list(s.runs) for s in result.steps}


def test_the_first_miss_cascades_and_a_revert_hits_the_old_entries() -> None:
    df = "FROM busybox\nCOPY app.py /app/\nRUN make\n"
    runs = _runs(df, _builds({"app.py": "1"}, {"app.py": "2"}, {"app.py": "1"}, {"app.py": "1"}))
    assert runs == {
        "COPY app.py /app/": [True, True, False, False],
        "RUN make": [True, True, False, False],
    }


def test_a_copy_keys_only_on_the_paths_it_names() -> None:
    df = "FROM busybox\nCOPY requirements.txt /app/\nRUN pip install\nCOPY . /app/\n"
    contexts = [{"requirements.txt": "r", "app.py": str(i)} for i in range(3)]
    runs = _runs(df, _builds(*contexts))
    assert runs["RUN pip install"] == [True, False, False]
    assert runs["COPY . /app/"] == [True, True, True]


def test_a_build_arg_reaches_the_runs_after_its_arg_in_both_builders() -> None:
    df = "FROM busybox\nRUN early\nARG V=1\nRUN late\nCOPY f /f\n"
    builds = _builds({"f": "x"}, {"f": "x"}, args=[{"V": "1"}, {"V": "2"}])
    for builder in ("buildkit", "classic"):
        runs = _runs(df, builds, builder)
        assert runs["RUN early"] == [True, False]
        assert runs["RUN late"] == [True, True]
        assert runs["COPY f /f"] == [True, True]  # on the new state the RUN made


def test_an_env_change_cascades_under_classic_only() -> None:
    df = "FROM busybox\nARG V=1\nENV X=$V\nCOPY f /f\n"
    builds = _builds({"f": "x"}, {"f": "x"}, args=[{"V": "1"}, {"V": "2"}])
    classic = _runs(df, builds, "classic")
    assert classic["ENV X=$V"] == [True, True] and classic["COPY f /f"] == [True, True]
    buildkit = _runs(df, builds, "buildkit")
    assert "ENV X=$V" not in buildkit  # no step under BuildKit
    assert buildkit["COPY f /f"] == [True, False]  # file ops carry no env


def test_no_cache_runs_every_step_and_still_records() -> None:
    df = "FROM busybox\nCOPY f /f\n"
    builds = _builds({"f": "x"}, {"f": "x"}, {"f": "x"})
    builds[1] = ReplayBuild(2, {}, {"f": "x"}, {0: "sha256:base"}, no_cache=True)
    assert _runs(df, builds)["COPY f /f"] == [True, True, False]


def test_a_changed_base_misses_from_the_start() -> None:
    df = "FROM busybox\nRUN a\n"
    builds = [ReplayBuild(1, {}, {}, {0: "sha256:one"}), ReplayBuild(2, {}, {}, {0: "sha256:two"})]
    assert _runs(df, builds)["RUN a"] == [True, True]


def test_buildkit_skips_stages_the_target_does_not_need() -> None:
    df = "FROM busybox AS unused\nRUN a\nFROM busybox\nRUN b\n"
    runs = _runs(df, _builds({}, {}), "buildkit")
    assert runs["RUN a"] == [None, None] and runs["RUN b"] == [True, False]
    assert _runs(df, _builds({}, {}), "classic")["RUN a"] == [True, False]


def test_copy_from_follows_the_stage_it_reads() -> None:
    df = "FROM busybox AS build\nCOPY src/ /src/\nRUN make\nFROM busybox\nCOPY --from=build /out /out\n"
    runs = _runs(df, _builds({"src/a": "1"}, {"src/a": "1"}, {"src/a": "2"}))
    assert runs["COPY --from=build /out /out"] == [True, False, True]


def test_sources_select_paths_patterns_and_folded_directories() -> None:
    paths = {"a.txt": "1", "b.txt": "2", "src": "d", "src/x.py": "3", "deep/": "f"}
    assert select(paths, "./src/") == {"src": "d", "src/x.py": "3"}
    assert select(paths, "*.txt") == {"a.txt": "1", "b.txt": "2"}
    assert select(paths, ".") == paths
    # A path inside a folded directory counts the whole folded entry.
    assert select(paths, "deep/sub/file") == {"deep/": "f"}
