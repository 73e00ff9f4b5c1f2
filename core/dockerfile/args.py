"""Build arguments, ENV and ``--target``: which variables a Dockerfile step sees.

Docker's scoping rules, read the same way by both engines:

* ``--target`` ends the build with the named stage (names compare case-insensitively);
  the stages after it are not built.
* ARGs before the first FROM (meta args) are usable in FROM lines only; a stage sees
  one after re-declaring it with ``ARG NAME`` (it then gets the meta value).
* An ``ARG`` inside a stage takes its ``--build-arg`` value when one is given, else
  its default (variables in the default expanded), else it has no value.
* The predefined proxy args (``HTTP_PROXY`` ...) reach RUN without a declaration when
  passed with ``--build-arg``, but count in the cache key only once declared.
* ENV beats ARG: a name ENV sets is no build arg for RUN or for the key.
* BuildKit (not the classic builder) predefines the platform args (``TARGETOS``,
  ``BUILDPLATFORM`` ...) as meta args declared before the Dockerfile's own
  (:func:`platform_args`): FROM and meta defaults may use them, a stage sees one after
  ``ARG NAME``, ``--build-arg`` overrides them, and a meta ``ARG NAME`` without a
  default empties one (measured on 20.10's BuildKit).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lamina.core.dockerfile.instructions import Dockerfile, Instruction
from lamina.core.dockerfile.shell import Lexer
from lamina.core.errors import DockerfileError, UsageError

BUILTIN_ARGS = frozenset(
    {
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "FTP_PROXY",
        "ftp_proxy",
        "NO_PROXY",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
    }
)


def stages_to_build(dockerfile: Dockerfile, target: str | None) -> list[int]:
    """The indexes of the stages a build runs: all of them, or up to ``target``.

    Raises:
        UsageError: no stage is called ``target``.
    """
    if target is None:
        return list(range(len(dockerfile.stages)))
    lowered = target.lower()
    for i, stage in enumerate(dockerfile.stages):
        if stage.name == lowered:
            return list(range(i + 1))
    where = f" in {dockerfile.path}" if dockerfile.path else ""
    raise UsageError(f"target stage {target!r} not found{where}")


def expand(
    dockerfile: Dockerfile, instruction: Instruction, word: str, env: Mapping[str, str]
) -> str:
    """One word of ``instruction`` with its variables expanded.

    Raises:
        DockerfileError: a bad substitution, naming the Dockerfile and the line.
    """
    try:
        return Lexer(dockerfile.escape).process_word(word, env)
    except DockerfileError as exc:
        raise DockerfileError(exc.reason, dockerfile.path, instruction.line) from None


def platform_args(platform: str) -> dict[str, str]:
    """The platform args BuildKit predefines for a build on ``platform`` (``os/arch`` or
    ``os/arch/variant``), the build's and the target's platform alike (a build for the
    daemon's own platform; dockerfile2llb's ``getPlatformArgs``)."""
    os_, arch, variant = ([*platform.split("/"), "", ""])[:3]
    out: dict[str, str] = {}
    for prefix in ("BUILD", "TARGET"):
        out |= {
            f"{prefix}PLATFORM": platform,
            f"{prefix}OS": os_,
            f"{prefix}ARCH": arch,
            f"{prefix}VARIANT": variant,
        }
    return out


def meta_values(
    dockerfile: Dockerfile,
    build_args: Mapping[str, str],
    predefined: Mapping[str, str] | None = None,
) -> dict[str, str | None]:
    """The meta ARGs' values: ``--build-arg``, else the expanded default, else None.

    Args:
        dockerfile: the Dockerfile.
        build_args: the ``--build-arg`` values.
        predefined: meta args declared before the Dockerfile's own (BuildKit's
            :func:`platform_args`), each overridden by a ``--build-arg`` of its name; a
            meta ``ARG`` of the same name without a default empties it, as BuildKit
            does.

    Raises:
        DockerfileError: a default with a bad substitution.
    """
    meta: dict[str, str | None] = {
        name: build_args.get(name, value) for name, value in (predefined or {}).items()
    }
    for instruction in dockerfile.meta_args:
        for name, raw in instruction.env_pairs:
            if name in build_args:
                meta[name] = build_args[name]
            elif raw is not None:
                env = {k: v for k, v in meta.items() if v is not None}
                meta[name] = expand(dockerfile, instruction, raw, env)
            else:
                meta[name] = "" if predefined and name in predefined else None
    return meta


class BuildArgs:
    """The build args in scope for one stage.

    Args:
        cli: the ``--build-arg`` values.
        meta: meta ARG values (after ``--build-arg`` overrides), None when unset.
    """

    def __init__(self, cli: Mapping[str, str], meta: Mapping[str, str | None]) -> None:
        self.cli = dict(cli)
        self.meta = dict(meta)
        self.declared: dict[str, str | None] = {}

    def declare(self, name: str, default: str | None) -> str | None:
        """Declares ``ARG name[=default]`` (default already expanded); returns its value."""
        if name in self.cli:
            value: str | None = self.cli[name]
        elif default is not None:
            value = default
        elif name in self.meta:
            value = self.meta[name]
        else:
            value = None
        self.declared[name] = value
        return value

    def _env_names(self, env: Iterable[str]) -> set[str]:
        return {e.split("=", 1)[0] for e in env}

    def active(self, env: list[str]) -> dict[str, str]:
        """Args a RUN sees in its environment (declared with a value, or builtin and
        passed), minus names ENV sets."""
        taken = self._env_names(env)
        out = {k: v for k, v in self.declared.items() if v is not None and k not in taken}
        for name in BUILTIN_ARGS:
            if name in self.cli and name not in self.declared and name not in taken:
                out[name] = self.cli[name]
        return out

    def keyed(self, env: list[str]) -> list[str]:
        """The sorted ``K=V`` args the classic builder prepends to a RUN's cache key
        (builtin proxy args only when declared)."""
        # Sorted as strings, as moby sorts them ("A0=x" before "A=y").
        return sorted(f"{k}={v}" for k, v in self.keyed_values(env).items())

    def keyed_values(self, env: list[str]) -> dict[str, str]:
        """The args of :meth:`keyed` as a mapping: declared, with a value, not set by ENV."""
        taken = self._env_names(env)
        return {k: v for k, v in self.declared.items() if v is not None and k not in taken}

    def expansion_env(self, env: list[str]) -> dict[str, str]:
        """Variables for expanding words in an instruction: args, then ENV over them."""
        out = {k: v for k, v in self.declared.items() if v is not None}
        for e in env:
            k, _, v = e.partition("=")
            out[k] = v
        return out

    def unused(self) -> list[str]:
        """``--build-arg`` names no ARG consumed (Docker warns about them)."""
        used = set(self.declared) | set(self.meta) | BUILTIN_ARGS
        return sorted(k for k in self.cli if k not in used)


class StageScope:
    """The ARG and ENV scope of one stage, followed instruction by instruction.

    For a reader that needs only the variables (what lamina records of a Docker build);
    the embedded builder keeps ENV in the image config it builds instead.

    Args:
        dockerfile: the Dockerfile (its escape token and path).
        build_args: the ``--build-arg`` values.
        meta: the meta ARG values (:func:`meta_values`).
        env: the environment the stage starts with (``K=V``; the base image's, if known).
    """

    def __init__(
        self,
        dockerfile: Dockerfile,
        build_args: Mapping[str, str],
        meta: Mapping[str, str | None],
        env: Iterable[str] = (),
    ) -> None:
        self.dockerfile = dockerfile
        self.args = BuildArgs(build_args, meta)
        self.env: list[str] = list(env)

    def apply(self, instruction: Instruction) -> None:
        """Takes in an ARG's declarations or an ENV's values (other instructions: nothing).

        Raises:
            DockerfileError: a default or value with a bad substitution.
        """
        if instruction.keyword == "ARG":
            for name, raw in instruction.env_pairs:
                variables = self.args.expansion_env(self.env)
                default = None if raw is None else self._expand(instruction, raw, variables)
                self.args.declare(name, default)
        elif instruction.keyword == "ENV":
            for name, raw in instruction.env_pairs:
                value = self._expand(instruction, raw or "", self.args.expansion_env(self.env))
                self.env = [e for e in self.env if e.split("=", 1)[0] != name]
                self.env.append(f"{name}={value}")

    def keyed(self) -> dict[str, str]:
        """The build args the classic builder keys a RUN with, here (see ``BuildArgs.keyed``)."""
        return self.args.keyed_values(self.env)

    def _expand(self, instruction: Instruction, word: str, env: Mapping[str, str]) -> str:
        return expand(self.dockerfile, instruction, word, env)
