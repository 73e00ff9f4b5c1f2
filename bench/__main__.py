"""``python -m bench`` (``make bench``): lamina against BuildKit, in one run.

Runs the build comparison (cold, cached, one-file edit, the floor, store growth) against
BuildKit, the classic builder and podman where they run, two independent stages
against one (built in parallel), layer commit throughput,
inspect-at-scale on a synthetic store, and a profile of the slowest path; writes
``results.json`` and ``results.md`` to ``--out``. Parts that cannot run here (no
dockerd, no sandbox) are skipped and listed with the reason; the rest still runs.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench.context import ContextSpec, edit_one_file, generate
from bench.measure import BenchError, Skipped, human_bytes
from bench.report import Results

log = logging.getLogger("bench")

PARTS = ("builds", "stages", "commit", "inspect", "profile")
# Git-ignored; ``python -m bench.readme`` puts the table of a full run into README.md.
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Sizes:
    """Every size knob, full or quick."""

    files: int
    context_mb: int
    images: int
    layers: int
    commit_files: int
    commit_mb: int
    repeat: int
    presses: int
    stage_mb: int


FULL = Sizes(
    files=20_000,
    context_mb=525,
    images=2_000,
    layers=20_000,
    commit_files=2_000,
    commit_mb=1_000,
    repeat=3,
    presses=50,
    stage_mb=600,
)
QUICK = Sizes(
    files=200,
    context_mb=2,
    images=20,
    layers=200,
    commit_files=50,
    commit_mb=5,
    repeat=1,
    presses=5,
    stage_mb=8,
)


def make_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark lamina against BuildKit (and the classic builder, podman), "
        "side by side.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes (seconds), for smoke tests"
    )
    parser.add_argument(
        "--scale",
        type=float,
        help="multiply every size (files, MB, images, layers) by this: 0.1 for a quick "
        "check at a tenth of the full run ($BENCH_SCALE in make bench)",
    )
    parser.add_argument("--files", type=int, help="files in the build context (20000)")
    parser.add_argument("--context-mb", type=int, help="MB in the build context (500)")
    parser.add_argument("--images", type=int, help="images in the synthetic store (2000)")
    parser.add_argument("--layers", type=int, help="layers in the synthetic store (20000)")
    parser.add_argument("--commit-mb", type=int, help="MB in the committed layer (1000)")
    parser.add_argument("--commit-files", type=int, help="files in the committed layer (2000)")
    parser.add_argument("--repeat", type=int, help="repeats per measurement (3; 1 with --quick)")
    parser.add_argument("--presses", type=int, help="key presses per app session (50)")
    parser.add_argument(
        "--stage-mb", type=int, help="MB each stage hashes in the parallel-stages builds (600)"
    )
    parser.add_argument("--only", action="append", choices=PARTS, help="run only these parts")
    parser.add_argument("--no-docker", action="store_true", help="skip the Docker columns")
    parser.add_argument("--no-podman", action="store_true", help="skip the podman column")
    parser.add_argument(
        "--profile",
        help="profile these paths (comma-separated) instead of the one furthest "
        "from its target: cold-build, cached-build, edit-build, df, prune-plan, app; or none",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="where results go (default: bench/results/)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="contexts and stores, reused across runs (default: $TMPDIR/lamina-bench[-quick])",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    return parser


def sizes_from(args: argparse.Namespace) -> Sizes:
    """The sizes to run: ``--quick`` or full, overridden by each knob given."""
    base = QUICK if args.quick else FULL

    def pick(name: str) -> int:
        value = getattr(args, name)
        return int(getattr(base, name) if value is None else value)

    scale = args.scale or 1.0
    if scale <= 0:
        raise SystemExit("bench: --scale must be above 0")

    def scaled(name: str) -> int:
        value = getattr(args, name)
        if value is not None:
            return int(value)
        return max(1, round(getattr(base, name) * scale))

    sizes = Sizes(
        files=scaled("files"),
        context_mb=scaled("context_mb"),
        images=scaled("images"),
        layers=scaled("layers"),
        commit_files=scaled("commit_files"),
        commit_mb=scaled("commit_mb"),
        repeat=pick("repeat"),
        presses=pick("presses"),
        stage_mb=scaled("stage_mb"),
    )
    for name, value in vars(sizes).items():
        if value < 1:
            raise SystemExit(f"bench: --{name.replace('_', '-')} must be at least 1")
    if sizes.layers < 2 * sizes.images:
        raise SystemExit("bench: --layers must be at least twice --images")
    return sizes


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Runs the selected parts and writes the results.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        0, or 1 when a measurement failed (a target not met is not a failure).
    """
    args = make_parser().parse_args(argv)
    # A stopped run (kill, a CI timeout) unwinds like ^C, so the private dockerd and
    # podman's storage are stopped and removed by the same clean-up.
    signal.signal(signal.SIGTERM, _interrupted)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    sizes = sizes_from(args)
    parts = tuple(args.only or PARTS)
    default_dir = "lamina-bench-quick" if args.quick else "lamina-bench"
    if args.scale:
        default_dir += f"-x{args.scale:g}"
    work = (args.workdir or Path(tempfile.gettempdir()) / default_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    command = (
        "python -m bench"
        + ("" if argv is None and len(sys.argv) < 2 else " ")
        + shlex.join(sys.argv[1:] if argv is None else argv)
    )
    results = Results(
        command=command.strip(), config={**vars(sizes), "parts": list(parts), "workdir": str(work)}
    )
    _say(f"bench: working in {work}")

    _precompile()
    state = _State(work=work, sizes=sizes)
    if "builds" in parts:
        # A private dockerd lives only as long as the builds need it, so it idles
        # through none of the other measurements.
        with ExitStack() as stack:
            _run_builds(state, results, stack, args.no_docker, args.no_podman)
    # A part that breaks is recorded as failed; the parts after it, and the results of
    # those before it, are not lost with it.
    if "stages" in parts:
        _guarded("stages", results, lambda: _run_stages(state, results))
    if "commit" in parts:
        _guarded("commit", results, lambda: _run_commit(state, results))
    if "inspect" in parts:
        _guarded("inspect", results, lambda: _run_inspect(state, results))
    if "profile" in parts and args.profile != "none":
        _guarded("profile", results, lambda: _run_profile(state, results, args.profile))
    json_path, md_path = results.write(args.out)
    print(md_path.read_text())
    _say(f"bench: wrote {json_path} and {md_path}")
    return 1 if results.failed else 0


def _guarded(part: str, results: Results, run: Callable[[], None]) -> None:
    try:
        run()
    except Exception as exc:  # reported in the results; the run goes on
        log.exception("bench part %s failed", part)
        results.fail(part, f"{type(exc).__name__}: {exc}")


@dataclass
class _State:
    work: Path
    sizes: Sizes
    context: Path | None = None
    spec: ContextSpec | None = None
    build_home: Path | None = None
    synthetic: Path | None = None
    rootfs: Path | None = None


def _precompile() -> None:
    """Writes lamina's bytecode before anything is timed: a user's install has it, and
    with ``PYTHONDONTWRITEBYTECODE`` set every timed CLI run would compile every module
    it imports (a third of a cached rebuild)."""
    import compileall

    repo = Path(__file__).resolve().parents[1]
    for package in ("core", "tui"):
        compileall.compile_dir(repo / package, quiet=1)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _run_builds(
    state: _State, results: Results, stack: ExitStack, no_docker: bool, no_podman: bool
) -> None:
    from bench.builds import BASE_TAG, RefSide, build_rows, run_builds
    from bench.lamina_side import LaminaSide, check_builder

    sizes = state.sizes
    try:
        check_builder()
    except Skipped as exc:
        results.skip("builds (cold, cached, one-file edit)", str(exc))
        return
    from lamina.core.demo.busybox import busybox_rootfs_tar

    spec = ContextSpec(sizes.files, sizes.context_mb * 1_000_000)
    state.rootfs = busybox_rootfs_tar(state.work / "busybox-rootfs.tar")
    _say(f"bench: context of {spec.files:,} files / {human_bytes(spec.total_bytes)}")
    context = generate(state.work / f"context-{spec.files}-{sizes.context_mb}", spec, BASE_TAG)
    state.context, state.spec = context, spec
    refs: list[RefSide] = []
    classic = None
    if no_docker:
        results.skip("Docker columns (BuildKit, classic)", "--no-docker")
    else:
        from bench.docker_side import DockerSide
        from bench.dockerd import docker_daemon

        try:
            daemon = stack.enter_context(docker_daemon())
        except Skipped as exc:
            results.skip("Docker columns (BuildKit, classic)", str(exc))
        else:
            classic = DockerSide(daemon)
            refs += [DockerSide(daemon, buildkit=True), classic]
            where = "a private dockerd" if daemon.private else daemon.host
            results.docker = f"{daemon.version} ({daemon.storage_driver}, {where})"
            cli = classic.docker
            results.builders["BuildKit"] = (
                f"Docker Engine {daemon.version}'s (`DOCKER_BUILDKIT=1 {cli} build "
                f"--network none`, {daemon.storage_driver}, {where})"
            )
            results.builders["classic"] = (
                f"the same daemon's classic builder (`DOCKER_BUILDKIT=0 {cli} build "
                "--network none`)"
            )
    if no_podman:
        results.skip("podman column", "--no-podman")
    else:
        from bench.podman_side import PodmanSide

        podman_home = state.work / "podman"
        try:
            podman = PodmanSide.open(podman_home, state.rootfs, BASE_TAG)
        except Skipped as exc:
            results.skip("podman column", str(exc))
        else:
            stack.callback(podman.destroy)
            refs.append(podman)
            results.builders["podman"] = (
                f"podman {podman.version()} (`podman build --network none`, overlay, "
                "a private storage root)"
            )
    results.builders["lamina"] = "`lamina build --network none`, BuildKit's cache rules"
    lamina = LaminaSide(state.work / "build-store")
    names = ", ".join(["lamina"] + [r.name for r in refs])
    _say(f"bench: builds x{sizes.repeat} ({names})")
    try:
        samples = run_builds(context, spec, state.rootfs, lamina, refs, sizes.repeat)
    except (BenchError, OSError) as exc:
        results.fail("builds", str(exc))
        return
    state.build_home = lamina.home
    results.rows += build_rows(samples, spec, [r.name for r in refs])
    docker = classic
    docker_name = f"Docker {classic.daemon.version}" if classic is not None else "Docker"

    from bench.df_compare import measure_df

    # `system df -v` side by side on images built in both (issue: disk usage).
    df_images = max(2, sizes.images // 50)
    _say(f"bench: system df -v on {df_images} images built in both")
    try:
        results.rows += measure_df(
            state.work, state.rootfs, docker, df_images, sizes.repeat, docker_name
        )
    except (BenchError, OSError) as exc:
        results.fail("system df comparison", str(exc))


def _run_stages(state: _State, results: Results) -> None:
    import os

    from bench.lamina_side import check_builder
    from bench.stages import run_stages, stage_rows

    sizes = state.sizes
    try:
        check_builder()
    except Skipped as exc:
        results.skip("parallel stages", str(exc))
        return
    if state.rootfs is None:
        from lamina.core.demo.busybox import busybox_rootfs_tar

        state.rootfs = busybox_rootfs_tar(state.work / "busybox-rootfs.tar")
    _say(f"bench: one stage against two of {sizes.stage_mb:,} MB each x{sizes.repeat}")
    try:
        from lamina.core.demo.workspace import find_busybox

        samples = run_stages(state.work, state.rootfs, sizes.stage_mb, sizes.repeat, find_busybox())
    except (BenchError, OSError) as exc:
        results.fail("parallel stages", str(exc))
        return
    results.rows += stage_rows(samples, sizes.stage_mb, os.cpu_count() or 1)


def _run_commit(state: _State, results: Results) -> None:
    from bench.throughput import ThroughputSpec, measure_commit

    sizes = state.sizes
    spec = ThroughputSpec(sizes.commit_files, sizes.commit_mb * 1_000_000, sizes.repeat)
    _say(f"bench: layer commit of {human_bytes(spec.total_bytes)} x{spec.repeat}")
    work = state.work / "commit"
    try:
        results.rows += measure_commit(work, spec)
    except Skipped as exc:
        results.skip("layer commit throughput", str(exc))
    except (BenchError, OSError) as exc:
        results.fail("layer commit throughput", str(exc))
    finally:
        shutil.rmtree(work / "store", ignore_errors=True)


def _run_inspect(state: _State, results: Results) -> None:
    from bench.inspect_scale import measure_inspect
    from bench.synthetic_store import StoreSpec
    from bench.synthetic_store import generate as generate_store

    sizes = state.sizes
    spec = StoreSpec(sizes.images, sizes.layers)
    home = state.work / f"synthetic-{sizes.images}-{sizes.layers}"
    _say(f"bench: synthetic store of {spec.images:,} images / {spec.layers:,} layers")
    try:
        made = generate_store(home, spec)
    except (BenchError, OSError) as exc:
        results.fail("synthetic store", str(exc))
        return
    except ImportError as exc:
        results.skip("inspect at scale", f"lamina's store is not importable ({exc})")
        return
    if made.seconds:
        _say(f"bench: generated it in {made.seconds:.0f} s")
    state.synthetic = home
    scale = f"{made.images:,} images / {made.layers:,} layers"
    rows, problems = measure_inspect(home, scale, state.sizes.repeat, state.sizes.presses)
    results.rows += rows
    for problem in problems:
        what, _, why = problem.partition(": ")
        if "ModuleNotFoundError" in why or "ImportError" in why:
            results.skip(what, why)
        else:
            results.fail(what, why)


def _run_profile(state: _State, results: Results, wanted: str | None) -> None:
    from bench.builds import BASE_TAG, OUT_TAG
    from bench.context import revert_edit
    from bench.lamina_side import LaminaSide
    from bench.profiling import pick, profile_path

    paths = [p.strip() for p in wanted.split(",") if p.strip()] if wanted else []
    if not paths:
        slowest = pick(results.rows)
        if slowest is None:
            results.skip("profile", "no measurement with a target ran")
            return
        paths = [slowest]

    def fresh_build() -> Path:
        assert state.rootfs is not None
        side = LaminaSide(state.work / "profile-store")
        side.reset()
        side.import_base(state.rootfs, BASE_TAG)
        return side.home

    def edit() -> None:
        assert state.context is not None and state.spec is not None
        edit_one_file(state.context, state.spec, 5000)

    for path in paths:
        _say(f"bench: profiling {path}")
        try:
            report = profile_path(
                path,
                build_home=state.build_home,
                context=state.context,
                fresh_build=fresh_build if state.rootfs else None,
                edit=edit,
                synthetic=state.synthetic,
                tag=OUT_TAG,
            )
        except (BenchError, ImportError) as exc:
            results.skip(f"profile of {path}", str(exc))
            continue
        finally:
            shutil.rmtree(state.work / "profile-store", ignore_errors=True)
            if state.context is not None and state.spec is not None:
                revert_edit(state.context, state.spec)
        results.profiles.append(report)


if __name__ == "__main__":
    sys.exit(main())
