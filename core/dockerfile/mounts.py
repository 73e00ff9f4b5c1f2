"""``RUN --mount`` and ``RUN --network``, parsed as BuildKit's Dockerfile frontend does.

``--mount`` takes comma-separated ``key=value`` fields (a CSV record, so a value may be
quoted): ``type`` (``bind``, the default, ``cache``, ``tmpfs``, ``secret``, ``ssh``),
``target`` (also ``dst``/``destination``), ``source`` (``src``), ``from``, ``readonly``
(``ro``) or ``readwrite`` (``rw``), ``id``, ``sharing`` (``shared``, ``private``,
``locked``), ``mode``, ``uid``, ``gid``, ``required``, ``size`` (tmpfs). The rules follow
``frontend/dockerfile/instructions/commands_runmount.go``: a bind mount is read-only
unless ``rw``, a cache mount is writable unless ``ro``, a secret lands at
``/run/secrets/<id>`` unless ``target`` says otherwise, an ssh socket at
``/run/buildkit/ssh_agent.<n>``; the id of a cache mount defaults to its target.

Only the spec is parsed here; what a mount holds is the builder's business. Variables
in a mount's fields are expanded by the builder before parsing.
"""

from __future__ import annotations

import csv
import posixpath
from dataclasses import dataclass
from typing import Any

from lamina.core.errors import DockerfileError

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING_MODES = ("shared", "private", "locked")
NETWORK_MODES = ("default", "none", "host")

_BOOL_FIELDS = ("readonly", "ro", "readwrite", "rw", "required")


@dataclass(frozen=True)
class Mount:
    """One ``RUN --mount``.

    Attributes:
        type: ``bind``, ``cache``, ``tmpfs``, ``secret`` or ``ssh``.
        target: where it appears in the RUN's filesystem (absolute).
        source: the path inside ``from`` (bind, cache) or the secret's file; "" if unset.
        from_ref: the stage or image a bind or cache mount reads (None: the context for
            bind, an empty directory for cache).
        readonly: the command cannot write it.
        id: cache: what builds share it by (defaults to the target); secret and ssh:
            the id given to the build (``--secret id=...``, ``--ssh id=...``).
        sharing: cache: ``shared``, ``private`` or ``locked``.
        mode: octal permission bits for a cache dir, a secret file or an ssh socket.
        uid: owner of the cache dir, secret file or socket.
        gid: group of the same.
        required: secret and ssh: fail when the build has none to give.
        size: tmpfs: the size limit in bytes (0: the kernel's default).
    """

    type: str
    target: str
    source: str = ""
    from_ref: str | None = None
    readonly: bool = False
    id: str = ""
    sharing: str = "shared"
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    required: bool = False
    size: int = 0

    def spec(self) -> dict[str, Any]:
        """What of the mount enters a RUN's cache key under BuildKit: the spec, never
        what it holds (a cache mount's files, a secret's value)."""
        doc: dict[str, Any] = {"type": self.type, "target": self.target}
        for name in ("source", "from_ref", "id", "mode", "uid", "gid"):
            value = getattr(self, name)
            if value not in (None, ""):
                doc[name] = value
        if self.readonly:
            doc["readonly"] = True
        if self.type == "cache":
            doc["sharing"] = self.sharing
        if self.type == "tmpfs" and self.size:
            doc["size"] = self.size
        if self.required:
            doc["required"] = True
        return doc


def _bool(name: str, value: str | None) -> bool:
    if value is None:
        return True
    lowered = value.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise DockerfileError(f"invalid value for {name}: {value}")


def _int(name: str, value: str, base: int = 10) -> int:
    try:
        return int(value, base)
    except ValueError:
        raise DockerfileError(f"invalid value for {name}: {value}") from None


def _size(value: str) -> int:
    units = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = value.strip().lower().removesuffix("b") or "0"
    if text[-1] in units:
        return _int("size", text[:-1] or "0") * units[text[-1]]
    return _int("size", text)


def parse_mount(value: str, ssh_index: int = 0) -> Mount:
    """Parses one ``--mount`` value.

    Args:
        value: the flag's value, variables already expanded.
        ssh_index: how many ssh mounts came before this one (their default targets are
            numbered).

    Raises:
        DockerfileError: an unknown field or type, a missing target, a bad value (the
            message is BuildKit's).
    """
    try:
        rows = list(csv.reader([value]))
    except csv.Error as exc:
        raise DockerfileError(f"invalid mount {value!r}: {exc}") from None
    fields = rows[0] if rows else []
    kind = "bind"
    seen: dict[str, str | None] = {}
    for field in fields:
        name, sep, raw = field.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        if not sep and name not in _BOOL_FIELDS:
            raise DockerfileError(f"invalid field '{field}' must be a key=value pair")
        if name == "type":
            if raw not in MOUNT_TYPES:
                raise DockerfileError(f"unsupported mount type {raw!r}")
            kind = raw
            continue
        seen[name] = raw if sep else None
    target = ""
    options: dict[str, Any] = {}
    readonly: bool | None = None
    for key, given in seen.items():
        val = given
        text = given or ""
        if key in ("target", "dst", "destination"):
            target = text
        elif key in ("source", "src"):
            options["source"] = text
        elif key == "from":
            options["from_ref"] = text
        elif key in ("readonly", "ro"):
            readonly = _bool(key, val)
        elif key in ("readwrite", "rw"):
            readonly = not _bool(key, val)
        elif key == "id":
            options["id"] = text
        elif key == "sharing":
            if text not in SHARING_MODES:
                raise DockerfileError(f"unsupported sharing value {text!r}")
            options["sharing"] = text
        elif key == "mode":
            options["mode"] = _int("mode", text, 8)
        elif key == "uid":
            options["uid"] = _int("uid", text)
        elif key == "gid":
            options["gid"] = _int("gid", text)
        elif key == "required":
            options["required"] = _bool(key, val)
        elif key == "size" and kind == "tmpfs":
            options["size"] = _size(text)
        else:
            raise DockerfileError(f"unexpected key '{key}' in '{field_of(fields, key)}'")
    if kind == "secret":
        options.setdefault("id", posixpath.basename(target) if target else "")
        if not options["id"] and options.get("source"):
            options["id"] = posixpath.basename(options["source"])
        if not target:
            if not options["id"]:
                raise DockerfileError("invalid secret mount: no id and no target")
            target = f"/run/secrets/{options['id']}"
        readonly = True if readonly is None else readonly
    elif kind == "ssh":
        options.setdefault("id", "default")
        if not target:
            target = f"/run/buildkit/ssh_agent.{ssh_index}"
        readonly = True if readonly is None else readonly
    if not target:
        raise DockerfileError("mount target is required")
    if not target.startswith("/"):
        # BuildKit makes a relative target relative to the working directory; the builder
        # joins it, so keep it as written.
        pass
    if kind == "bind" and readonly is None:
        readonly = True
    if kind == "cache":
        options.setdefault("id", target)
        if options.get("from_ref") is None and options.get("source"):
            raise DockerfileError("cache mount source requires from")
    if kind in ("cache", "tmpfs") and readonly is None:
        readonly = False
    return Mount(type=kind, target=target, readonly=bool(readonly), **options)


def field_of(fields: list[str], key: str) -> str:
    """The field of ``fields`` naming ``key`` (for error messages)."""
    for field in fields:
        if field.partition("=")[0].strip().lower() == key:
            return field
    return key


def parse_network(value: str) -> str:
    """Checks a ``RUN --network`` value (``default``, ``none`` or ``host``).

    Raises:
        DockerfileError: any other value.
    """
    if value not in NETWORK_MODES:
        raise DockerfileError(f"unsupported network mode {value!r} (default, none or host)")
    return value


__all__ = ["MOUNT_TYPES", "Mount", "parse_mount", "parse_network"]
