"""Dependency manifests, the commands that install from them, and the download caches a
``RUN --mount=type=cache`` keeps across builds.

An *install* reads only its manifests (``requirements.txt``, ``package.json`` and its
lockfile, ``go.mod``/``go.sum``...), so it can run before the rest of the sources are
copied, and then reruns only when a manifest changes. A *build* command (``go build``)
reads the sources too, but fetches the same dependencies first: a prefetch command
(``go mod download``) can run on the manifests alone.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from lamina.core.advice.commands import Command


@dataclass(frozen=True)
class Ecosystem:
    """One package manager's habits.

    Attributes:
        name: what the advice calls it (``pip``, ``npm``...).
        required: manifests an install cannot do without (any one of them).
        optional: manifests it reads when present (lockfiles).
        caches: where its download cache lives, for ``--mount=type=cache`` (as root).
        prefetch: the command that downloads the dependencies from the manifests alone,
            for a build command that would fetch them on its way (None: none safe).
    """

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    caches: tuple[str, ...] = ()
    prefetch: str | None = None


PIP = Ecosystem("pip", (), (), ("/root/.cache/pip",))
UV = Ecosystem("uv", ("pyproject.toml",), ("uv.lock",), ("/root/.cache/uv",))
POETRY = Ecosystem("poetry", ("pyproject.toml",), ("poetry.lock",), ("/root/.cache/pypoetry",))
PIPENV = Ecosystem("pipenv", ("Pipfile",), ("Pipfile.lock",), ("/root/.cache/pipenv",))
NPM = Ecosystem(
    "npm", ("package.json",), ("package-lock.json", "npm-shrinkwrap.json"), ("/root/.npm",)
)
YARN = Ecosystem(
    "yarn", ("package.json",), ("yarn.lock", ".yarnrc.yml"), ("/usr/local/share/.cache/yarn",)
)
PNPM = Ecosystem("pnpm", ("package.json",), ("pnpm-lock.yaml",), ("/root/.local/share/pnpm/store",))
GO = Ecosystem(
    "go", ("go.mod",), ("go.sum",), ("/go/pkg/mod", "/root/.cache/go-build"), "go mod download"
)
CARGO = Ecosystem("cargo", ("Cargo.toml",), ("Cargo.lock",), ("/usr/local/cargo/registry",))
BUNDLER = Ecosystem("bundler", ("Gemfile",), ("Gemfile.lock",), ())
COMPOSER = Ecosystem("composer", ("composer.json",), ("composer.lock",), ("/root/.cache/composer",))
MAVEN = Ecosystem("maven", ("pom.xml",), (), ("/root/.m2",), "mvn -B dependency:go-offline")
GRADLE = Ecosystem(
    "gradle",
    ("build.gradle", "build.gradle.kts"),
    ("settings.gradle", "settings.gradle.kts", "gradle.properties"),
    ("/root/.gradle",),
)

# Every manifest name a context may hold, for a COPY of the whole context.
MANIFEST_NAMES = frozenset(
    {"requirements.txt", "requirements-dev.txt", "constraints.txt"}
    | {
        n
        for e in (UV, POETRY, PIPENV, NPM, YARN, PNPM, GO, CARGO, BUNDLER, COMPOSER, MAVEN, GRADLE)
        for n in (*e.required, *e.optional)
    }
)


@dataclass(frozen=True)
class Install:
    """A command that installs dependencies (or builds, fetching them first).

    Attributes:
        ecosystem: whose.
        files: the manifests it names itself (``pip install -r FILE``), as written.
        needs_sources: it installs the project itself (``pip install .``, ``poetry
            install`` without ``--no-root``), so it cannot run on the manifests alone.
        build: a build command (``go build``, ``mvn package``): the advice inserts the
            ecosystem's prefetch before the sources are copied.
        standalone: it names its packages itself (``pip install flask``) and reads no
            file of the context.
    """

    ecosystem: Ecosystem
    files: tuple[str, ...] = ()
    needs_sources: bool = False
    build: bool = False
    standalone: bool = False


def _pip_files(words: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
    files: list[str] = []
    project = False
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("-r", "--requirement", "-c", "--constraint") and i + 1 < len(words):
            files.append(words[i + 1])
            i += 2
            continue
        for flag in ("--requirement=", "--constraint="):
            if w.startswith(flag):
                files.append(w[len(flag) :])
        if w.startswith("-r") and len(w) > 2 and not w.startswith("--"):
            files.append(w[2:])
        elif w in (".", "./") or w.startswith((".[", "./[")) or w in ("-e", "--editable"):
            project = True
        i += 1
    return tuple(files), project


def install_of(command: Command) -> Install | None:
    """What ``command`` installs, if it is a dependency install or build command."""
    w = command.words
    prog = command.program
    if prog.startswith("python") and w[1:3] == ("-m", "pip"):
        w = ("pip", *w[3:])
        prog = "pip"
    if prog in ("pip", "pip3") and "install" in w[1:2]:
        files, project = _pip_files(w[2:])
        return Install(PIP, files, needs_sources=project, standalone=not files and not project)
    if prog == "uv":
        if w[1:3] == ("pip", "install"):
            files, project = _pip_files(w[3:])
            return Install(UV, files, needs_sources=project, standalone=not files and not project)
        if w[1:2] == ("sync",):
            return Install(UV, needs_sources="--no-install-project" not in w)
    if prog == "poetry" and w[1:2] == ("install",):
        return Install(POETRY, needs_sources="--no-root" not in w)
    if prog == "pipenv" and w[1:2] in (("install",), ("sync",)):
        return Install(PIPENV)
    if prog == "npm" and w[1:2] in (("ci",), ("install",), ("i",)):
        # `npm install left-pad` adds a package rather than installing the manifest's.
        extra = [x for x in w[2:] if not x.startswith("-")]
        return None if extra else Install(NPM)
    if prog == "yarn" and (len(w) == 1 or w[1] == "install" or w[1].startswith("--")):
        return Install(YARN)
    if prog == "pnpm" and w[1:2] in (("install",), ("i",)):
        return Install(PNPM)
    if prog == "go":
        if w[1:3] == ("mod", "download"):
            return Install(GO)
        if w[1:2] in (("build",), ("install",), ("test",)):
            return Install(GO, build=True)
    if prog == "cargo" and w[1:2] in (("build",), ("fetch",), ("install",)):
        return Install(CARGO, needs_sources=w[1] != "fetch")
    if prog == "bundle" and w[1:2] == ("install",):
        return Install(BUNDLER)
    if prog == "composer" and w[1:2] == ("install",):
        return Install(COMPOSER, needs_sources="--no-autoloader" not in w)
    if prog in ("mvn", "mvnw", "./mvnw"):
        if any(x.startswith("dependency:") for x in w[1:]):
            return Install(MAVEN)
        if any(x in ("package", "install", "verify", "compile") for x in w[1:]):
            return Install(MAVEN, build=True)
    if prog in ("gradle", "gradlew") and any(x in ("build", "assemble") for x in w[1:]):
        return Install(GRADLE, needs_sources=True)
    return None


def manifests_in(install: Install, names: set[str], cwd: str) -> list[str] | None:
    """The manifests an install reads, as paths relative to its working directory,
    among ``names`` (the files present there); None when it cannot run on them alone.

    Args:
        install: the install.
        names: paths present in the copied tree, relative to ``cwd``.
        cwd: the install's working directory (absolute), to read absolute ``-r`` paths.

    Returns:
        The manifests; ``[]`` for an install that reads no file (``pip install flask``).
    """
    if install.standalone:
        return []
    if install.needs_sources and not install.build:
        return None
    eco = install.ecosystem
    if install.files:
        found = []
        for f in install.files:
            rel = posixpath.normpath(posixpath.relpath(f, cwd) if f.startswith("/") else f)
            if rel.startswith("..") or rel not in names:
                return None
            found.append(rel)
        return found
    if install.build and eco.prefetch is None:
        return None
    present = [n for n in eco.required if n in names]
    if not present:
        return None
    return present + [n for n in eco.optional if n in names]
