"""Builds side by side: cold, fully cached, and after a one-file edit.

Within each repeat lamina and Docker alternate who goes first, so a slow spell on the
machine hits both sides alike. Every build's cache decisions are checked (a cold build
must miss everywhere, a cached rebuild must hit everywhere, an edit must hit up to the
COPY and miss from there), so a number is only recorded for the work it claims.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.context import ContextSpec, edit_one_file, revert_edit
from bench.docker_side import DockerBuild, DockerSide
from bench.inspect_scale import probe
from bench.lamina_side import LaminaSide
from bench.measure import BenchError, Samples, human_bytes
from bench.report import Row

log = logging.getLogger(__name__)

BASE_TAG = "lamina-bench/busybox:latest"
OUT_TAG = "lamina-bench/app:latest"
# FROM, RUN, COPY, RUN: the COPY is the third step after FROM (index 2 of 4).
COPY_STEP = 2
# A dry run after a one-file edit may read at most this share of the context plus the
# allowance (the edited file, the Dockerfile, index pages), never everything again.
REHASH_LIMIT = 0.05
REHASH_ALLOWANCE = 1_000_000


@dataclass
class BuildSamples:
    """Times of each kind of build, per side, plus the rehash check."""

    lamina: dict[str, Samples] = field(default_factory=dict)
    docker: dict[str, Samples] = field(default_factory=dict)
    dry_run_read: list[int] = field(default_factory=list)
    dry_run_seconds: list[float] = field(default_factory=list)
    dry_run_opened: list[list[str]] = field(default_factory=list)
    dry_run_opened_bytes: list[int] = field(default_factory=list)
    max_rss: list[int] = field(default_factory=list)

    def add(self, side: str, kind: str, seconds: float) -> None:
        table = self.lamina if side == "lamina" else self.docker
        table.setdefault(kind, Samples("s")).add(seconds)


def check_decisions(cached: tuple[bool | None, ...], kind: str) -> None:
    """Raises BenchError unless lamina's per-step decisions are what ``kind`` implies.

    Args:
        cached: each step's decision (None for FROM).
        kind: ``cold`` (all miss), ``cached`` (all hit) or ``edit`` (hit up to the COPY).
    """
    decisions = [c for c in cached if c is not None]
    if not decisions:
        raise BenchError("lamina reported no step decisions")
    if kind == "cold" and any(decisions):
        raise BenchError(f"lamina's cold build hit the cache: {cached}")
    if kind == "cached" and not all(decisions):
        raise BenchError(f"lamina's cached rebuild missed: {cached}")
    if kind == "edit":
        want = [True] * (COPY_STEP - 1) + [False] * (len(decisions) - COPY_STEP + 1)
        if decisions != want:
            raise BenchError(f"lamina's rebuild after an edit decided {decisions}, expected {want}")


def _check_docker(build: DockerBuild, kind: str) -> None:
    # Docker prints "Using cache" once per hit; FROM is step 1 and never "cached".
    expect = {"cold": 0, "cached": build.steps - 1, "edit": COPY_STEP - 1}[kind]
    if build.cached != expect:
        raise BenchError(
            f"Docker's {kind} build hit the cache {build.cached} times, expected {expect}"
        )


def run_builds(
    context: Path,
    spec: ContextSpec,
    rootfs_tar: Path,
    lamina: LaminaSide,
    docker: DockerSide | None,
    repeat: int,
) -> BuildSamples:
    """Cold build, cached rebuild and one-file edit, ``repeat`` times on each side.

    Raises:
        BenchError: a build failed or made the wrong cache decisions.
    """
    out = BuildSamples()
    if docker is not None:
        docker.remove(OUT_TAG)
        docker.import_base(rootfs_tar, BASE_TAG)
    try:
        _repeats(out, context, spec, rootfs_tar, lamina, docker, repeat)
    finally:
        revert_edit(context, spec)
        if docker is not None:
            # A daemon shared with other work gets back what it had.
            docker.remove(OUT_TAG)
            docker.remove(BASE_TAG)
            docker.remove_dangling()
    return out


def _repeats(
    out: BuildSamples,
    context: Path,
    spec: ContextSpec,
    rootfs_tar: Path,
    lamina: LaminaSide,
    docker: DockerSide | None,
    repeat: int,
) -> None:
    for r in range(repeat):
        revert_edit(context, spec)

        def lamina_cold() -> None:
            lamina.reset()
            lamina.import_base(rootfs_tar, BASE_TAG)
            build = lamina.build(context, OUT_TAG)
            check_decisions(build.cached, "cold")
            out.add("lamina", "cold", build.result.seconds)
            out.max_rss.append(build.result.max_rss)

        def docker_cold() -> None:
            assert docker is not None
            # rmi removes the image and its untagged parents: the classic builder's cache.
            docker.remove(OUT_TAG)
            docker.remove_dangling()
            build = docker.build(context, OUT_TAG)
            _check_docker(build, "cold")
            out.add("docker", "cold", build.result.seconds)

        def lamina_build(kind: str) -> Callable[[], None]:
            def run() -> None:
                build = lamina.build(context, OUT_TAG)
                check_decisions(build.cached, kind)
                out.add("lamina", kind, build.result.seconds)

            return run

        def docker_build(kind: str) -> Callable[[], None]:
            def run() -> None:
                assert docker is not None
                build = docker.build(context, OUT_TAG)
                _check_docker(build, kind)
                out.add("docker", kind, build.result.seconds)

            return run

        pairs: list[tuple[Callable[[], None], Callable[[], None] | None]] = [
            (lamina_cold, docker_cold if docker else None),
            (lamina_build("cached"), docker_build("cached") if docker else None),
        ]
        for own, ref in pairs:
            _alternate(r, own, ref)
        rel = edit_one_file(context, spec, r + 1)
        log.info("edited %s", rel)
        _alternate(r, lamina_build("edit"), docker_build("edit") if docker else None)
        # Rehash check: after one more edit, a dry run reads only what changed.
        edited = edit_one_file(context, spec, 1000 + r)
        report = probe("dry-run", lamina.home, "--context", str(context))
        if report.get("failed"):
            raise BenchError(f"lamina's dry run failed: {report['failed']}")
        # It must have seen the edit, or reading little would prove nothing.
        check_decisions(tuple(report["cached"]), "edit")
        out.dry_run_read.append(int(report["read_bytes"]))
        out.dry_run_seconds.append(float(report["seconds"]))
        out.dry_run_opened.append(list(report["context_files_opened"]))
        out.dry_run_opened_bytes.append(int(report["context_bytes_opened"]))
        if edited not in report["context_files_opened"]:
            raise BenchError(f"lamina's dry run saw the edit of {edited} without opening it")


def _alternate(r: int, own: Callable[[], None], ref: Callable[[], None] | None) -> None:
    order = [own, ref] if r % 2 == 0 else [ref, own]
    for step in order:
        if step is not None:
            step()


def build_rows(samples: BuildSamples, spec: ContextSpec, docker_name: str) -> list[Row]:
    """The table rows for the build measurements."""
    size = f"{spec.files:,} files / {spec.total_bytes / 1e6:,.0f} MB"
    rows = []
    for kind, what, target in (
        ("cold", f"cold build ({size})", 1.0),
        ("cached", "fully cached rebuild", 20.0),
        ("edit", "rebuild after editing one file", None),
    ):
        if kind not in samples.lamina:
            continue
        notes = ""
        if kind == "cold" and samples.max_rss:
            notes = f"lamina CLI peak RSS {human_bytes(max(samples.max_rss))}"
        if kind == "edit" and samples.dry_run_read:
            notes = (
                f"a dry run (cache decisions only) after another one-file edit took "
                f"{min(samples.dry_run_seconds):.2f} s and read "
                f"{human_bytes(max(samples.dry_run_read))} of a {human_bytes(spec.total_bytes)} "
                "context"
            )
        rows.append(
            Row(
                "Builds",
                what,
                samples.lamina[kind],
                samples.docker.get(kind),
                docker_name,
                target_speedup=target,
                notes=notes,
                profile=f"{kind}-build",
            )
        )
    if samples.dry_run_opened:
        most = max(samples.dry_run_opened, key=len)
        rows.append(
            Row(
                "Builds",
                "context files a dry run opens after a one-file edit",
                Samples("files", [float(len(o)) for o in samples.dry_run_opened]),
                target_max=2,
                notes=f"of {spec.files:,}: {', '.join(most[:3])}"
                f" ({human_bytes(max(samples.dry_run_opened_bytes))}); the Dockerfile and "
                ".dockerignore, read on every build, are not counted",
            )
        )
    if samples.dry_run_read:
        rows.append(
            Row(
                "Builds",
                "bytes the dry run reads in all (index and SQLite temp files too)",
                Samples("B", [float(n) for n in samples.dry_run_read]),
                target_max=spec.total_bytes * REHASH_LIMIT + REHASH_ALLOWANCE,
                notes=f"the target is {REHASH_LIMIT:.0%} of the context + 1 MB for the index; "
                "rehashing everything would read all of it",
            )
        )
    return rows
