"""The JSON documents of images, checked before use and read defensively after.

An archive's ``manifest.json`` (Docker), ``index.json`` and manifests (OCI) and every
image config are checked here against the types the OCI image-spec schemas
(``config-schema.json``, ``image-index-schema.json``, ``image-manifest-schema.json``,
``content-descriptor.json``) and Docker's Go structs give them, before lamina reads a
single field: a wrong type is refused in one line naming the field
(``config.Env[0]: expected a string, got a number``), never met later as a traceback.

Where Docker and the schemas differ lamina accepts what Docker accepts: ``config`` and
``history`` may be ``null``, ``architecture``, ``os`` and ``rootfs.type`` may be missing,
a descriptor may omit ``mediaType`` and ``size``, and a manifest may list no layers
(an image of ``FROM scratch`` with metadata only). Stricter than both: digests lamina
follows must be ``sha256:`` with 64 hex digits.

Parsing is bounded (docs/limits.md): at most ``MAX_JSON_BYTES`` per document and
``MAX_JSON_DEPTH`` levels of nesting, no ``NaN`` or ``Infinity``.

``normalized_config`` is the reading side: the view of a stored config that every
reader (``images``, ``inspect``, a later ``FROM``) gets, with any field of the wrong type
dropped, so that a config stored before these checks existed cannot break them either.
``config_problem`` says what is wrong with one, for ``fsck``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from lamina.core.digest import is_digest

MAX_JSON_BYTES = 8 << 20
MAX_JSON_DEPTH = 64
# Layers of one image (Docker's own layer store stops at 125).
MAX_LAYERS = 1000

_MEDIA_TYPE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)
_ANY_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


class Invalid(ValueError):
    """A document that does not have the shape it must have; ``str()`` is one line."""


Check = Callable[[Any, str], None]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _fail(path: str, expected: str, value: Any) -> Invalid:
    return Invalid(f"{path}: expected {expected}, got {_kind(value)}")


def _string(value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise _fail(path, "a string", value)


def _boolean(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        raise _fail(path, "a boolean", value)


def _integer(value: Any, path: str) -> None:
    # JSON Schema draft 4: an integer is a number without a fraction (1.0 is not).
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, "an integer", value)


def _size(value: Any, path: str) -> None:
    _integer(value, path)
    if not 0 <= value < 1 << 63:
        raise Invalid(f"{path}: {value} is not a size")


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, "an object", value)
    return value


def _is_object(value: Any, path: str) -> None:
    _object(value, path)


def _nullable(check: Check) -> Check:
    def run(value: Any, path: str) -> None:
        if value is not None:
            check(value, path)

    return run


def _array_of(check: Check) -> Check:
    def run(value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise _fail(path, "an array", value)
        for i, item in enumerate(value):
            check(item, f"{path}[{i}]")

    return run


def _map_of(check: Check) -> Check:
    def run(value: Any, path: str) -> None:
        for key, item in _object(value, path).items():
            check(item, f"{path}.{key}")

    return run


def _media_type(value: Any, path: str) -> None:
    _string(value, path)
    if not _MEDIA_TYPE.fullmatch(value):
        raise Invalid(f"{path}: {value[:80]!r} is not a media type")


def _digest(value: Any, path: str) -> None:
    _string(value, path)
    if not _ANY_DIGEST.fullmatch(value):
        raise Invalid(f"{path}: {value[:80]!r} is not a digest")


def _sha256(value: Any, path: str) -> None:
    _string(value, path)
    if not is_digest(value):
        raise Invalid(f"{path}: {value[:80]!r} is not a sha256 digest")


def _fields(doc: dict[str, Any], path: str, checks: dict[str, Check]) -> None:
    for key, check in checks.items():
        if key in doc:
            check(doc[key], f"{path}.{key}" if path else key)


_STRINGS = _array_of(_string)
_STRING_MAP = _map_of(_string)
_OBJECT_MAP = _map_of(_is_object)

PLATFORM_FIELDS: dict[str, Check] = {
    "architecture": _string,
    "os": _string,
    "os.version": _string,
    "os.features": _STRINGS,
    "variant": _string,
}


def _platform(value: Any, path: str) -> None:
    doc = _object(value, path)
    for key in ("architecture", "os"):
        if key not in doc:
            raise Invalid(f"{path}: no {key}")
    _fields(doc, path, PLATFORM_FIELDS)


DESCRIPTOR_FIELDS: dict[str, Check] = {
    "mediaType": _media_type,
    "size": _size,
    "digest": _digest,
    "urls": _STRINGS,
    "data": _string,
    "artifactType": _media_type,
    "annotations": _STRING_MAP,
    "platform": _platform,
}


def check_descriptor(value: Any, path: str) -> None:
    """A content descriptor (``content-descriptor.json``; ``platform`` as in an index).

    Raises:
        Invalid: naming the first field of the wrong type.
    """
    doc = _object(value, path)
    if "digest" not in doc:
        raise Invalid(f"{path}: no digest")
    _fields(doc, path, DESCRIPTOR_FIELDS)


def _schema_version(doc: dict[str, Any], path: str) -> None:
    if "schemaVersion" not in doc:
        raise Invalid(f"{path}: no schemaVersion")
    _integer(doc["schemaVersion"], f"{path}.schemaVersion")
    if doc["schemaVersion"] != 2:
        raise Invalid(f"{path}: schemaVersion {doc['schemaVersion']} is not 2")


def check_index(value: Any, path: str = "index") -> None:
    """An image index (``image-index-schema.json``) or Docker manifest list.

    Raises:
        Invalid: naming the first field of the wrong type.
    """
    doc = _object(value, path)
    _schema_version(doc, path)
    if "manifests" not in doc:
        raise Invalid(f"{path}: no manifests")
    _fields(
        doc,
        path,
        {
            "mediaType": _media_type,
            "artifactType": _media_type,
            "subject": check_descriptor,
            "manifests": _array_of(check_descriptor),
            "annotations": _STRING_MAP,
        },
    )


def check_manifest(value: Any, path: str = "manifest") -> None:
    """An image manifest (``image-manifest-schema.json``; no layers is allowed).

    Raises:
        Invalid: naming the first field of the wrong type.
    """
    doc = _object(value, path)
    _schema_version(doc, path)
    for key in ("config", "layers"):
        if key not in doc:
            raise Invalid(f"{path}: no {key}")
    _fields(
        doc,
        path,
        {
            "mediaType": _media_type,
            "artifactType": _media_type,
            "config": check_descriptor,
            "subject": check_descriptor,
            "layers": _array_of(check_descriptor),
            "annotations": _STRING_MAP,
        },
    )
    if len(doc["layers"]) > MAX_LAYERS:
        raise Invalid(f"{path}: {len(doc['layers'])} layers (the limit is {MAX_LAYERS})")


def check_docker_manifest(value: Any, path: str = "manifest.json") -> None:
    """A docker-archive ``manifest.json``: a list of ``{Config, RepoTags, Layers}``.

    Raises:
        Invalid: naming the first field of the wrong type.
    """
    _array_of(_is_object)(value, path)
    for i, entry in enumerate(value):
        where = f"{path}[{i}]"
        if "Config" not in entry:
            raise Invalid(f"{where}: no Config")
        _fields(
            entry,
            where,
            {
                "Config": _string,
                "RepoTags": _nullable(_STRINGS),
                "Layers": _nullable(_STRINGS),
                "Parent": _string,
                "LayerSources": _nullable(_map_of(check_descriptor)),
            },
        )
        if len(entry.get("Layers") or ()) > MAX_LAYERS:
            raise Invalid(f"{where}: {len(entry['Layers'])} layers (the limit is {MAX_LAYERS})")


def check_repositories(value: Any, path: str = "repositories") -> None:
    """A legacy docker-archive ``repositories`` file: ``{repo: {tag: id}}``.

    Raises:
        Invalid: naming the first field of the wrong type.
    """
    _map_of(_map_of(_string))(value, path)


_HEALTHCHECK: dict[str, Check] = {
    "Test": _nullable(_STRINGS),
    "Interval": _integer,
    "Timeout": _integer,
    "StartPeriod": _integer,
    "StartInterval": _integer,
    "Retries": _integer,
}

# The run config: the OCI schema's fields, and the rest of Docker's container.Config
# with the Go types that decide whether Docker itself can read it.
RUN_CONFIG_FIELDS: dict[str, Check] = {
    "User": _string,
    "ExposedPorts": _nullable(_OBJECT_MAP),
    "Env": _nullable(_STRINGS),
    "Entrypoint": _nullable(_STRINGS),
    "Cmd": _nullable(_STRINGS),
    "Volumes": _nullable(_OBJECT_MAP),
    "WorkingDir": _string,
    "Labels": _nullable(_STRING_MAP),
    "StopSignal": _string,
    "ArgsEscaped": _boolean,
    "Hostname": _string,
    "Domainname": _string,
    "AttachStdin": _boolean,
    "AttachStdout": _boolean,
    "AttachStderr": _boolean,
    "Tty": _boolean,
    "OpenStdin": _boolean,
    "StdinOnce": _boolean,
    "Image": _string,
    "NetworkDisabled": _boolean,
    "MacAddress": _string,
    "OnBuild": _nullable(_STRINGS),
    "Shell": _nullable(_STRINGS),
    "Healthcheck": _nullable(lambda v, p: _fields(_object(v, p), p, _HEALTHCHECK)),
    "StopTimeout": _nullable(_integer),
}


def _run_config(value: Any, path: str) -> None:
    _fields(_object(value, path), path, RUN_CONFIG_FIELDS)


def _history_entry(value: Any, path: str) -> None:
    _fields(
        _object(value, path),
        path,
        {
            "created": _string,
            "author": _string,
            "created_by": _string,
            "comment": _string,
            "empty_layer": _boolean,
        },
    )


def _rootfs(value: Any, path: str) -> None:
    doc = _object(value, path)
    if "diff_ids" not in doc:
        raise Invalid(f"{path}: no diff_ids")
    if "type" in doc:
        _string(doc["type"], f"{path}.type")
        if doc["type"] != "layers":
            raise Invalid(f"{path}.type: {doc['type'][:40]!r} is not 'layers'")
    _array_of(_sha256)(doc["diff_ids"], f"{path}.diff_ids")
    if len(doc["diff_ids"]) > MAX_LAYERS:
        raise Invalid(f"{path}: {len(doc['diff_ids'])} layers (the limit is {MAX_LAYERS})")


CONFIG_FIELDS: dict[str, Check] = {
    "created": _string,
    "author": _string,
    "architecture": _string,
    "variant": _string,
    "os": _string,
    "os.version": _string,
    "os.features": _nullable(_STRINGS),
    "config": _nullable(_run_config),
    "container_config": _nullable(_run_config),
    "rootfs": _rootfs,
    "history": _nullable(_array_of(_history_entry)),
    "id": _string,
    "parent": _string,
    "comment": _string,
    "container": _string,
    "docker_version": _string,
    "size": _integer,
}


def check_config(value: Any, path: str = "config") -> None:
    """An image config (``config-schema.json``, and Docker's ``image.Image``).

    Raises:
        Invalid: naming the first field of the wrong type.
    """
    doc = _object(value, path)
    if "rootfs" not in doc:
        raise Invalid(f"{path}: no rootfs")
    _fields(doc, path, CONFIG_FIELDS)


def config_problem(value: Any) -> str | None:
    """What is wrong with a stored config (one line), or None."""
    try:
        check_config(value)
    except Invalid as exc:
        return str(exc)
    return None


def normalized_config(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with every known field of the wrong type dropped (the same dict when
    nothing is wrong), so readers can rely on the types the schema gives."""
    if config_problem(doc) is None:
        return doc
    out: dict[str, Any] = {}
    for key, value in doc.items():
        check = CONFIG_FIELDS.get(key)
        if check is None:
            out[key] = value
            continue
        if key in ("config", "container_config") and isinstance(value, dict):
            out[key] = _kept(value, RUN_CONFIG_FIELDS)
            continue
        if key == "history" and isinstance(value, list):
            out[key] = [h for h in value if _passes(_history_entry, h)]
            continue
        if _passes(check, value):
            out[key] = value
    return out


def _kept(doc: dict[str, Any], checks: dict[str, Check]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in checks or _passes(checks[k], v)}


def _passes(check: Check, value: Any) -> bool:
    try:
        check(value, "")
    except Invalid:
        return False
    return True


def _refuse_constant(name: str) -> Any:
    raise Invalid(f"{name} is not JSON")


def parse(data: bytes) -> Any:
    """Parses one JSON document within the limits.

    Raises:
        Invalid: too large, not JSON, ``NaN``/``Infinity``, or nested too deeply.
    """
    if len(data) > MAX_JSON_BYTES:
        raise Invalid(f"{len(data)} bytes of JSON (the limit is {MAX_JSON_BYTES >> 20} MiB)")
    try:
        doc = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise Invalid(f"JSON nested more than {MAX_JSON_DEPTH} levels deep") from None
    except Invalid:
        raise
    except ValueError as exc:
        raise Invalid(f"not valid JSON ({_first_line(str(exc))})") from None
    _check_depth(doc)
    return doc


def _check_depth(doc: Any) -> None:
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise Invalid(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
        stack.extend((child, depth + 1) for child in children)


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else text
