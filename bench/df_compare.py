"""``lamina system df -v`` against ``docker system df -v`` on images built in both.

The same small Dockerfile is built ``images`` times on each side with a different
build arg, so both stores hold one busybox base and ``images`` images that share it,
each with a RUN layer of its own. Both CLIs are then timed, taking turns, and the
report gives the time per image as well as per call.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bench.docker_side import DockerSide
from bench.lamina_side import LaminaSide, lamina_command
from bench.measure import BenchError, Samples, run_child
from bench.report import Row

log = logging.getLogger(__name__)

DF_BASE = "lamina-bench-df/busybox:latest"
DF_REPO = "lamina-bench-df/img"
DOCKERFILE = f"FROM {DF_BASE}\nARG N\nRUN echo $N > /n\nLABEL org.lamina.bench=df\n"


def _populate(
    ctx: Path, rootfs_tar: Path, lamina: LaminaSide, docker: DockerSide | None, images: int
) -> None:
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    lamina.import_base(rootfs_tar, DF_BASE)
    if docker is not None:
        docker.import_base(rootfs_tar, DF_BASE)
    for i in range(images):
        tag = f"{DF_REPO}:{i}"
        run_child(
            [*lamina_command(), "build", "--build-arg", f"N={i}", "-t", tag, str(ctx)],
            env=lamina.env,
        ).check(f"lamina build of {tag}")
        if docker is not None:
            docker.run(
                "build", "--build-arg", f"N={i}", "-t", tag, str(ctx), what=f"docker build of {tag}"
            )


def _docker_image_count(docker: DockerSide) -> int:
    out = docker.run("images", "-q", what="docker images")
    return len({line for line in out.output.split() if line})


def _cleanup(docker: DockerSide | None, images: int) -> None:
    if docker is None:
        return
    for i in range(images):
        docker.remove(f"{DF_REPO}:{i}")
    docker.remove(DF_BASE)
    docker.remove_dangling()


def measure_df(
    work: Path,
    rootfs_tar: Path,
    docker: DockerSide | None,
    images: int,
    repeat: int,
    docker_name: str = "Docker",
) -> list[Row]:
    """Builds ``images`` images on both sides, then times ``system df -v`` on each.

    Raises:
        BenchError: a build or a df call failed.
    """
    lamina = LaminaSide(work / "df-store")
    lamina.reset()
    try:
        _populate(work / "df-context", rootfs_tar, lamina, docker, images)
        own = Samples("s")
        ref = Samples("s") if docker is not None else None
        lamina_df = [*lamina_command(), "system", "df", "-v"]
        for r in range(repeat):
            # Take turns, so a burst of load on the machine hits both sides alike.
            order = [True, False] if r % 2 == 0 else [False, True]
            for lamina_turn in order:
                if lamina_turn:
                    own.add(
                        run_child(lamina_df, env=lamina.env).check("lamina system df -v").seconds
                    )
                elif docker is not None and ref is not None:
                    ref.add(docker.run("system", "df", "-v", what="docker system df -v").seconds)
        lamina_images = images + 1
        docker_images = _docker_image_count(docker) if docker is not None else 0
        notes = f"lamina {own.median / lamina_images * 1000:.1f} ms per image over {lamina_images} images"
        if ref is not None and ref.values:
            notes += (
                f"; Docker {ref.median / max(docker_images, 1) * 1000:.1f} ms per image over "
                f"{docker_images} images (its daemon may hold others too)"
            )
        return [
            Row(
                "Inspect at scale",
                f"`system df -v` CLI, {images} images built in both",
                own,
                ref,
                docker_name,
                notes=notes,
            )
        ]
    except OSError as exc:
        raise BenchError(f"system df comparison: {exc}") from exc
    finally:
        _cleanup(docker, images)
        lamina.reset()
