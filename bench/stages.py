"""Independent stages: two stages of equal cost against one, in the same run.

BuildKit builds the stages a target needs at once (at most one per CPU), so two
independent stages of equal cost should take about the time of one. Three Dockerfiles
on the same busybox base, each built with ``lamina build --no-cache`` (so every RUN
runs) and taking turns within each repeat:

* **one stage**: stage ``a`` hashes the work, the final stage copies its result;
* **two stages**: stages ``a`` and ``b`` hash the same amount each (their commands
  differ in the output file, so BuildKit's merging of identical steps cannot run one
  for both), the final stage copies both results;
* **two stages, one after the other**: the same Dockerfile with ``--builder classic``,
  which builds every stage in order: what building in parallel saves.

Next to them, the machine itself: the same hashing as one process and as two at once,
outside lamina. On a shared machine other work takes cores too, and this pair says how
much parallel room there was during the run, so the builds' ratio can be read against it.

The work is CPU-bound (busybox's ``sha256sum`` over zeros), so the two stages really
compete for the machine's cores; with one core the ratio would be about 2. Every build's
record is checked: status ``ok``, and every RUN a miss that ran.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.lamina_side import LaminaSide
from bench.measure import BenchError, Samples, run_child
from bench.report import Row

log = logging.getLogger(__name__)

BASE_TAG = "lamina-bench/busybox:latest"
OUT_TAG = "lamina-bench/stages:latest"
SECTION = "Parallel stages"
# Two stages may take this much longer than one and still count as "about the time of
# one" (start-up, the second COPY --from and the share of a busy machine).
TARGET_RATIO = 1.25


def _work(name: str, mb: int) -> str:
    """A RUN that keeps one core busy hashing ``mb`` MB, writing ``/out/<name>``."""
    return (
        f"RUN mkdir -p /out && dd if=/dev/zero bs=1048576 count={mb} 2>/dev/null"
        f" | sha256sum > /out/{name}"
    )


def dockerfile(stages: int, mb: int) -> str:
    """``stages`` independent stages of equal cost and a final stage reading them all."""
    names = "abcdefgh"[:stages]
    lines: list[str] = []
    for name in names:
        lines += [f"FROM {BASE_TAG} AS {name}", _work(name, mb)]
    lines.append(f"FROM {BASE_TAG}")
    lines += [f"COPY --from={name} /out/{name} /{name}" for name in names]
    return "\n".join(lines) + "\n"


@dataclass
class StageSamples:
    """The three builds' times, and the RUN steps' own times."""

    one: Samples = field(default_factory=lambda: Samples("s"))
    two: Samples = field(default_factory=lambda: Samples("s"))
    sequential: Samples = field(default_factory=lambda: Samples("s"))
    raw_one: Samples = field(default_factory=lambda: Samples("s"))
    raw_two: Samples = field(default_factory=lambda: Samples("s"))
    run_step: list[float] = field(default_factory=list)

    def ratios(self, two: Samples | None = None, one: Samples | None = None) -> list[float]:
        """Two over one, repeat by repeat (the builds' by default)."""
        two, one = two or self.two, one or self.one
        return [t / o for t, o in zip(two.values, one.values, strict=False) if o]


def write_contexts(work: Path, mb: int) -> tuple[Path, Path]:
    """The one-stage and two-stage contexts (a Dockerfile each, nothing else)."""
    out = []
    for stages in (1, 2):
        context = work / f"stages-{stages}"
        context.mkdir(parents=True, exist_ok=True)
        (context / "Dockerfile").write_text(dockerfile(stages, mb))
        out.append(context)
    return out[0], out[1]


def _hash_processes(busybox: str, count: int, mb: int) -> float:
    """Seconds for ``count`` processes at once, each hashing ``mb`` MB as a stage does.

    Raises:
        BenchError: the shell failed.
    """
    one = f"dd if=/dev/zero bs=1048576 count={mb} 2>/dev/null | {busybox} sha256sum >/dev/null"
    script = " ".join(f"({one}) &" for _ in range(count)) + " wait"
    return run_child(["/bin/sh", "-c", script]).check("the hashing processes").seconds


def _check(side: LaminaSide, runs: int, what: str) -> list[float]:
    """The newest build ran ``runs`` RUN steps, all misses; returns their durations."""
    record = side.last_record()
    if record.status != "ok":
        raise BenchError(f"{what}: the build is {record.status}: {record.error}")
    steps = [s for s in record.steps if s.instruction.startswith("RUN")]
    if len(steps) != runs or any(s.cached is not False for s in steps):
        decided = [(s.instruction[:20], s.cached) for s in steps]
        raise BenchError(f"{what}: expected {runs} RUN steps that ran, got {decided}")
    return [s.duration for s in steps]


def run_stages(
    work: Path, rootfs_tar: Path, mb: int, repeat: int, busybox: str | None = None
) -> StageSamples:
    """The three builds, ``repeat`` times, in a rotating order, and with ``busybox`` the
    machine's own one-against-two hashing.

    Raises:
        BenchError: a build failed or did not run what it should have.
    """
    one, two = write_contexts(work, mb)
    side = LaminaSide(work / "stages-store")
    side.reset()
    side.import_base(rootfs_tar, BASE_TAG)
    out = StageSamples()

    def build(context: Path, samples: Samples, runs: int, *extra: str) -> Callable[[], None]:
        def run() -> None:
            result = side.build(context, OUT_TAG, "--no-cache", *extra)
            durations = _check(side, runs, f"{context.name} {' '.join(extra)}".strip())
            samples.add(result.result.seconds)
            if runs == 1:
                out.run_step.extend(durations)

        return run

    def raw(samples: Samples, count: int) -> Callable[[], None]:
        def run() -> None:
            assert busybox is not None
            samples.add(_hash_processes(busybox, count, mb))

        return run

    order = [
        build(one, out.one, 1),
        build(two, out.two, 2),
        build(two, out.sequential, 2, "--builder", "classic"),
    ]
    if busybox is not None:
        order += [raw(out.raw_one, 1), raw(out.raw_two, 2)]
    # A warm-up build: the first one after the import pays for cold page caches.
    order[0]()
    out.one.values.clear()
    out.run_step.clear()
    for r in range(repeat):
        turn = r % len(order)
        for step in order[turn:] + order[:turn]:
            step()
    return out


def stage_rows(samples: StageSamples, mb: int, cpus: int) -> list[Row]:
    """The table rows: two stages in parallel, and one after the other, each against one."""
    ratios = samples.ratios()
    step = statistics.median(samples.run_step) if samples.run_step else 0.0
    notes = (
        f"each stage's RUN hashes {mb:,} MB with busybox sha256sum ({step:.2f} s as a step"
        f" on its own), on {cpus} CPU(s); whole `lamina build --no-cache` runs, start-up"
        " included; two stages over one, repeat by repeat: " + ", ".join(f"{r:.2f}" for r in ratios)
    )
    rows = [
        Row(
            SECTION,
            "two independent stages of equal cost (BuildKit rules: in parallel)",
            samples.two,
            samples.one,
            "one stage",
            target_speedup=1 / TARGET_RATIO,
            notes=notes,
        ),
        Row(
            SECTION,
            "the same two stages one after the other (--builder classic)",
            samples.sequential,
            samples.one,
            "one stage",
        ),
    ]
    if samples.raw_one.values:
        raw = samples.ratios(samples.raw_two, samples.raw_one)
        rows.append(
            Row(
                SECTION,
                "the machine: two hashing processes at once (no lamina)",
                samples.raw_two,
                samples.raw_one,
                "one process",
                notes="the parallel room the machine had during the run; two over one,"
                " repeat by repeat: " + ", ".join(f"{r:.2f}" for r in raw),
            )
        )
    return rows
