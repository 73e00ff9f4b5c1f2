"""Builds side by side: cold, fully cached, and after a one-file edit.

lamina builds against BuildKit (Docker 20.10's, ``DOCKER_BUILDKIT=1``), with the
classic builder and podman as further columns when they can run. Within each repeat
the builders take turns going first, so a slow spell on the machine hits all alike.
Every build's cache decisions are checked (a cold build must miss everywhere, a cached
rebuild must hit everywhere, an edit must hit up to the COPY and miss from there), so
a number is only recorded for the work it claims.

Around each one-file edit the store is measured on disk (blocks, each inode once), so
"what one edit costs the store" is a number of its own; and in every repeat the floor
of a cached rebuild (Python start-up plus one stat walk of the context) is measured
in the same run, so the cached rebuild reads against it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.context import ContextSpec, edit_one_file, revert_edit
from bench.docker_side import RefBuild
from bench.floor import disk_bytes, measure_floor
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
# Targets against BuildKit, the builder people use (issue: faster than BuildKit).
COLD_TARGET = 3.0
CACHED_TARGET = 1.5
EDIT_TARGET = 3.0
FLOOR_TARGET = 2.0
GROWTH_TARGET = 0.01


class RefSide(Protocol):
    """A reference builder: BuildKit, the classic builder, podman."""

    name: str

    def build(self, context: Path, tag: str) -> RefBuild:
        """One build of ``context`` tagged ``tag``."""
        ...

    def reset_cache(self, tag: str) -> None:
        """Removes ``tag`` and the builder's cache: the next build is cold."""
        ...

    def remove(self, tag: str) -> None:
        """Removes ``tag`` (quiet when it does not exist)."""
        ...

    def import_base(self, rootfs_tar: Path, tag: str) -> str:
        """Imports the base image."""
        ...

    def store_root(self) -> Path | None:
        """Where its store lives, when known."""
        ...


def ref_tag(name: str) -> str:
    """The tag a reference builder builds (one per builder: they share a daemon)."""
    return f"lamina-bench/app-{name.lower()}:latest"


@dataclass
class BuildSamples:
    """Times of each kind of build, per builder, plus the rehash check and the floor."""

    times: dict[str, dict[str, Samples]] = field(default_factory=dict)
    growth: dict[str, Samples] = field(default_factory=dict)
    floor: Samples = field(default_factory=lambda: Samples("s"))
    floor_ratio: Samples = field(default_factory=lambda: Samples("×"))
    dry_run_read: list[int] = field(default_factory=list)
    dry_run_seconds: list[float] = field(default_factory=list)
    dry_run_opened: list[list[str]] = field(default_factory=list)
    dry_run_opened_bytes: list[int] = field(default_factory=list)
    max_rss: list[int] = field(default_factory=list)

    def add(self, side: str, kind: str, seconds: float) -> None:
        self.times.setdefault(side, {}).setdefault(kind, Samples("s")).add(seconds)

    @property
    def lamina(self) -> dict[str, Samples]:
        return self.times.get("lamina", {})


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


def check_reference(name: str, build: RefBuild, kind: str) -> None:
    """Raises BenchError unless a reference build hit the cache as ``kind`` implies."""
    # Hits are counted after FROM, which is never a decision of its own.
    expect = {"cold": 0, "cached": build.steps - 1, "edit": COPY_STEP - 1}[kind]
    if build.steps < 2 or build.cached != expect:
        raise BenchError(
            f"{name}'s {kind} build hit the cache {build.cached} times in {build.steps} steps,"
            f" expected {expect}"
        )


def run_builds(
    context: Path,
    spec: ContextSpec,
    rootfs_tar: Path,
    lamina: LaminaSide,
    refs: list[RefSide],
    repeat: int,
) -> BuildSamples:
    """Cold build, cached rebuild and one-file edit, ``repeat`` times by each builder.

    Raises:
        BenchError: a build failed or made the wrong cache decisions.
    """
    out = BuildSamples()
    for ref in refs:
        ref.remove(ref_tag(ref.name))
        ref.import_base(rootfs_tar, BASE_TAG)
    try:
        _repeats(out, context, spec, rootfs_tar, lamina, refs, repeat)
    finally:
        revert_edit(context, spec)
        for ref in refs:
            # A daemon shared with other work gets back what it had.
            ref.reset_cache(ref_tag(ref.name))
            ref.remove(BASE_TAG)
    return out


def _repeats(
    out: BuildSamples,
    context: Path,
    spec: ContextSpec,
    rootfs_tar: Path,
    lamina: LaminaSide,
    refs: list[RefSide],
    repeat: int,
) -> None:
    for r in range(repeat):
        revert_edit(context, spec)

        def lamina_cold() -> None:
            lamina.reset()
            lamina.import_base(rootfs_tar, BASE_TAG)
            build = lamina.build(context, OUT_TAG, "--network", "none")
            check_decisions(build.cached, "cold")
            out.add("lamina", "cold", build.result.seconds)
            out.max_rss.append(build.result.max_rss)

        def lamina_build(kind: str) -> Callable[[], None]:
            def run() -> None:
                before = disk_bytes(lamina.home) if kind == "edit" else 0
                build = lamina.build(context, OUT_TAG, "--network", "none")
                check_decisions(build.cached, kind)
                out.add("lamina", kind, build.result.seconds)
                if kind == "edit":
                    grown = disk_bytes(lamina.home) - before
                    out.growth.setdefault("lamina", Samples("B")).add(grown)

            return run

        def ref_build(ref: RefSide, kind: str) -> Callable[[], None]:
            def run() -> None:
                tag = ref_tag(ref.name)
                if kind == "cold":
                    ref.reset_cache(tag)
                root = ref.store_root()
                before = disk_bytes(root) if kind == "edit" and root is not None else 0
                build = ref.build(context, tag)
                check_reference(ref.name, build, kind)
                out.add(ref.name, kind, build.result.seconds)
                if kind == "edit" and root is not None:
                    out.growth.setdefault(ref.name, Samples("B")).add(disk_bytes(root) - before)

            return run

        def floor() -> None:
            out.floor.add(measure_floor(context).seconds)

        for kind, own in (("cold", lamina_cold), ("cached", lamina_build("cached"))):
            if kind == "cached":
                floor()
            _take_turns(r, [own, *[ref_build(ref, kind) for ref in refs]])
        cached = out.lamina["cached"].values[-1]
        out.floor_ratio.add(cached / out.floor.values[-1])
        rel = edit_one_file(context, spec, r + 1)
        log.info("edited %s", rel)
        _take_turns(r, [lamina_build("edit"), *[ref_build(ref, "edit") for ref in refs]])
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


def _take_turns(r: int, steps: list[Callable[[], None]]) -> None:
    """Runs every builder's step, the order rotated by one each repeat."""
    shift = r % len(steps)
    for step in steps[shift:] + steps[:shift]:
        step()


def build_rows(samples: BuildSamples, spec: ContextSpec, refs: list[str]) -> list[Row]:
    """The table rows for the build measurements.

    Args:
        samples: what was measured.
        spec: the context.
        refs: the reference builders that ran, the first (BuildKit) the one targets name.
    """
    size = f"{spec.files:,} files / {spec.total_bytes / 1e6:,.0f} MB"
    primary = refs[0] if refs else ""
    rows = []

    def others(kind: str) -> list[tuple[str, Samples]]:
        return [(n, samples.times[n][kind]) for n in refs[1:] if kind in samples.times.get(n, {})]

    for kind, what, target in (
        ("cold", f"cold build ({size})", COLD_TARGET),
        ("cached", "fully cached rebuild", CACHED_TARGET),
        ("edit", "rebuild after editing one file", EDIT_TARGET),
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
                samples.times.get(primary, {}).get(kind),
                primary,
                target_speedup=target if primary else None,
                notes=notes,
                profile=f"{kind}-build",
                others=others(kind),
            )
        )
    if samples.floor.values:
        rows.append(
            Row(
                "Builds",
                "the floor: Python start-up and one stat walk of the context",
                samples.floor,
                notes="a child of lamina's interpreter that lstats every context entry "
                "once and reads nothing: what no cached rebuild can beat",
            )
        )
        rows.append(
            Row(
                "Builds",
                "fully cached rebuild ÷ the floor",
                samples.floor_ratio,
                target_max=FLOOR_TARGET + 1e-9,
                notes="each repeat's cached rebuild over the floor measured just before it",
            )
        )
    if "lamina" in samples.growth:
        rows.append(
            Row(
                "Builds",
                "store growth per one-file edit",
                samples.growth["lamina"],
                samples.growth.get(primary),
                primary,
                target_max=spec.total_bytes * GROWTH_TARGET + 1e-9,
                notes=f"blocks on disk, each inode once, around the edit's build; the target is "
                f"{GROWTH_TARGET:.0%} of the context",
                others=[(n, samples.growth[n]) for n in refs[1:] if n in samples.growth],
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
