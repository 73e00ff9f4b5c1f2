"""The one error tree of lamina's core.

Every error carries a one-line, user-ready message (``str(exc)``). Library errors
(sqlite3, OSError, docker, tarfile, json) are translated at the boundary with
``raise LaminaError(...) from exc`` so that no traceback reaches a user.

    LaminaError
    ├── UsageError                 bad arguments: unknown filter, malformed size or duration
    ├── DockerfileError            a Dockerfile that does not parse (names file and line)
    ├── BuildError                 a build step that cannot run or fails
    │   ├── ContextError           a missing, unreadable or escaping context file
    │   ├── RunFailed              a RUN step exited non-zero (exit code, last output lines)
    │   └── SandboxUnavailable     RUN cannot be isolated on this machine (says why)
    ├── StoreError                 the store is unusable, locked, or corrupt
    │   ├── NotFound               an image, tag, layer or cache entry that does not exist
    │   └── InUse                  a removal that something else still needs
    │       └── RmiError           an ``rmi`` that stopped part-way (``done``: what it did)
    ├── ArchiveError               an archive that cannot be imported, loaded or saved safely
    ├── RegistryError              a registry that cannot be reached, refuses, or sends bad data
    │   └── RegistryAuthError      a registry that refuses our credentials (401/403)
    └── EngineUnavailable          a backend (the Docker Engine) that cannot be reached or used
"""

from __future__ import annotations


class LaminaError(Exception):
    """Base of every error lamina reports to a user.

    Args:
        message: one line, ready to print after ``lamina: ``.
    """

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(LaminaError):
    """Bad arguments or options (exit code 2, like argparse)."""

    exit_code = 2


class DockerfileError(LaminaError):
    """A Dockerfile that cannot be parsed.

    Args:
        message: what is wrong.
        path: the Dockerfile, if known.
        line: the 1-based line number, if known.
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None and line is not None:
            where = f"{path}:{line}: "
        elif path is not None:
            where = f"{path}: "
        elif line is not None:
            where = f"line {line}: "
        super().__init__(where + message)
        self.path = path
        self.line = line
        self.reason = message


class BuildError(LaminaError):
    """A build step that cannot be carried out."""


class ContextError(BuildError):
    """A context file that is missing, unreadable, or escapes the context."""


class RunFailed(BuildError):
    """A RUN step whose command exited non-zero.

    Args:
        message: one line naming the step, the exit code and the last output line.
        exit_status: the command's exit code.
        output_tail: the last lines the command printed.
    """

    def __init__(
        self, message: str, exit_status: int, output_tail: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.exit_status = exit_status
        self.output_tail = output_tail or []


class SandboxUnavailable(BuildError):
    """RUN cannot run isolated here (no root, no user namespaces, no overlayfs)."""


class StoreError(LaminaError):
    """The store cannot be opened or is inconsistent."""


class NotFound(StoreError):
    """An image, tag, layer or cache entry that does not exist."""


class InUse(StoreError):
    """A removal refused because something still references the object."""


class RmiError(InUse):
    """An ``rmi`` that stopped part-way.

    Args:
        message: the failure, one line.
        done: the ``Untagged:``/``Deleted:`` lines of what was done before it.
        cause: the error that stopped it (its exit code is kept).
    """

    def __init__(self, message: str, done: list[str], cause: LaminaError) -> None:
        super().__init__(message)
        self.done = done
        self.cause = cause
        self.exit_code = cause.exit_code


class ArchiveError(LaminaError):
    """An archive that cannot be imported, loaded or saved safely."""


class RegistryError(LaminaError):
    """A pull or push that failed at the registry: unreachable, an error it answered
    (in its own words), or bytes that do not match their digest."""


class RegistryAuthError(RegistryError):
    """The registry (or its token server) refused the credentials, or asked for some."""


class EngineUnavailable(LaminaError):
    """A backend that cannot be reached or used (Docker not running, no permission, old API)."""
