"""Build arguments with Docker's scoping rules.

* ARGs before the first FROM (meta args) are usable in FROM lines only; a stage sees
  one after re-declaring it with ``ARG NAME`` (it then gets the meta value).
* An ``ARG`` inside a stage takes its ``--build-arg`` value when one is given, else
  its default (variables in the default expanded), else it has no value.
* The predefined proxy args (``HTTP_PROXY`` ...) reach RUN without a declaration when
  passed with ``--build-arg``, but count in the cache key only once declared.
* ENV beats ARG: a name ENV sets is no build arg for RUN or for the key.
"""

from __future__ import annotations

from collections.abc import Mapping

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

    def _env_names(self, env: list[str]) -> set[str]:
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
        taken = self._env_names(env)
        items = [f"{k}={v}" for k, v in self.declared.items() if v is not None and k not in taken]
        return sorted(items)

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
