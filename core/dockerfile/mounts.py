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
The checks and their messages are those of Docker 20.10's BuildKit (measured): ``mode``,
``uid`` and ``gid`` only for cache, secret and ssh mounts, ``required`` only for secret
and ssh, ``sharing`` only for cache, a secret with neither ``from`` nor both ``source``
and ``id``; ``type`` and ``sharing`` values in any case. ``size`` (tmpfs) is newer
frontends' syntax, which 20.10's refuses.

Only the spec is parsed here; what a mount holds is the builder's business. Variables
in a mount's fields are expanded by the builder before parsing.
"""

from __future__ import annotations

import csv
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from lamina.core.errors import DockerfileError

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING_MODES = ("shared", "private", "locked")
NETWORK_MODES = ("default", "none", "host")

_BOOL_FIELDS = ("readonly", "ro", "readwrite", "rw", "required")
# Go's strconv.ParseBool, which BuildKit reads these fields with.
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
# Types whose files or sockets BuildKit gives an owner and mode.
_FILE_INFO_TYPES = ("cache", "secret", "ssh")
# docker/go-units RAMInBytes: binary units, an optional "i" and "b".
_RAM = re.compile(r"^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_RAM_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


@dataclass(frozen=True)
class Mount:
    """One ``RUN --mount``.

    Attributes:
        type: ``bind``, ``cache``, ``tmpfs``, ``secret`` or ``ssh``.
        target: where it appears in the RUN's filesystem (absolute).
        source: the path inside ``from`` (bind, cache), or the secret's id; "" if unset.
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
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise DockerfileError(f"invalid value for {name}: {value}")


def _uint(name: str, value: str, base: int = 10) -> int:
    """An unsigned 32-bit number, as BuildKit's ``strconv.ParseUint(value, base, 32)``."""
    digits = "01234567" if base == 8 else "0123456789"
    if not value or any(c not in digits for c in value) or int(value, base) >= 1 << 32:
        raise DockerfileError(f"invalid value {value} for {name}")
    return int(value, base)


def _size(value: str) -> int:
    match = _RAM.match(value)
    if match is None:
        raise DockerfileError(f"invalid value for size: {value}")
    return int(float(match.group(1)) * _RAM_UNITS[(match.group(2) or "").lower()])


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
            if raw.lower() not in MOUNT_TYPES:
                raise DockerfileError(f'unsupported mount type "{raw}"')
            kind = raw.lower()
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
            if text.lower() not in SHARING_MODES:
                raise DockerfileError(f'unsupported sharing value "{text}"')
            options["sharing"] = text.lower()
        elif key in ("mode", "uid", "gid"):
            options[key] = _uint(key, text, 8 if key == "mode" else 10)
        elif key == "required" and kind in ("secret", "ssh"):
            options["required"] = _bool(key, val)
        elif key in ("required", "size") and not (key == "size" and kind == "tmpfs"):
            raise DockerfileError(f"unexpected key '{key}' for mount type '{kind}'")
        elif key == "size":
            options["size"] = _size(text)
        else:
            raise DockerfileError(f"unexpected key '{key}' in '{field_of(fields, key)}'")
    if kind not in _FILE_INFO_TYPES:
        for key in ("mode", "uid", "gid"):
            if key in options:
                raise DockerfileError(f'{key} not allowed for "{kind}" type mounts')
    if "sharing" in options and kind != "cache":
        raise DockerfileError(f"invalid cache sharing set for {kind} mount")
    if kind == "secret":
        if options.get("from_ref"):
            raise DockerfileError("secret mount should not have a from")
        if not (options.get("source") or target or options.get("id")):
            raise DockerfileError("invalid secret mount. one of source, target required")
        if options.get("source") and options.get("id"):
            raise DockerfileError("both source and id can't be set")
        # The id is the source when one is given, else the target's base name; a
        # secret without a target lands under the id's base name (dockerfile2llb's
        # dispatchSecret, measured on 20.10).
        if not options.get("id"):
            options["id"] = options.get("source") or posixpath.basename(target)
        if not target:
            target = f"/run/secrets/{posixpath.basename(options['id'])}"
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


def mount_from(value: str) -> str | None:
    """The ``from=`` of a ``--mount`` value as written (None when it has none).

    Quotes are dropped first, as BuildKit's flag parser drops them before the fields are
    split, so ``"from=build"`` names ``build`` too.
    """
    text = value.replace('"', "").replace("'", "")
    try:
        rows = list(csv.reader([text]))
    except csv.Error:
        return None
    for field in rows[0] if rows else []:
        key, sep, raw = field.partition("=")
        if sep and key.strip().lower() == "from":
            return raw
    return None


def reject_variable_from(value: str) -> None:
    """Refuses a ``from=`` that holds a variable, in a ``--mount`` value as written.

    Neither builder expands one there: Docker 20.10's BuildKit takes ``$SRC`` as an
    image name, which cannot hold a ``$`` (measured), and newer frontends refuse it with
    this message.

    Raises:
        DockerfileError: ``from`` holds a variable.
    """
    ref = mount_from(value)
    if ref is not None and "$" in ref[:-1]:
        raise DockerfileError(
            "'from' doesn't support variable expansion, define alias stage instead"
        )


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


__all__ = [
    "MOUNT_TYPES",
    "Mount",
    "mount_from",
    "parse_mount",
    "parse_network",
    "reject_variable_from",
]
