"""Reaching a Docker Engine, and turning the SDK's failures into one-line errors.

Everything the Docker backend sends goes through :func:`connect` and :func:`call`, so a
daemon that is not running, a socket without permission or an API too old is reported
as one :class:`~lamina.core.errors.EngineUnavailable` line naming the address, never as
a ``requests``/``urllib3`` traceback.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from lamina.core.errors import EngineUnavailable, InUse, LaminaError, NotFound

log = logging.getLogger(__name__)

# build/prune with filters, keep-storage and all, and the BuildCache section of
# system df, arrived in API 1.39 (Docker 18.09); lamina needs nothing newer.
MIN_API_VERSION = "1.39"

T = TypeVar("T")


def docker_host() -> str:
    """The address the SDK will use: ``$DOCKER_HOST`` or the default socket."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception in a ``__cause__``/``__context__``/args chain."""
    seen: set[int] = set()
    current: BaseException = exc
    while id(current) not in seen:
        seen.add(id(current))
        nxt = current.__cause__ or current.__context__
        if nxt is None:
            # requests/urllib3 wrap the OSError in their args rather than chaining it.
            for arg in current.args:
                if isinstance(arg, BaseException):
                    nxt = arg
                    break
        if nxt is None:
            break
        current = nxt
    return current


def _search_chain(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return current
        for nxt in (current.__cause__, current.__context__):
            if nxt is not None:
                stack.append(nxt)
        for arg in current.args:
            if isinstance(arg, BaseException):
                stack.append(arg)
    return None


def unreachable(exc: BaseException, host: str | None = None) -> EngineUnavailable:
    """The one-line error for a daemon that cannot be reached at all.

    Args:
        exc: what the SDK raised.
        host: the address tried (default: :func:`docker_host`).

    Returns:
        An ``EngineUnavailable`` whose message says what to do.
    """
    host = host or docker_host()
    if _search_chain(exc, PermissionError) is not None:
        return EngineUnavailable(
            f"permission denied on the Docker socket ({host}): run as a member of the "
            "'docker' group or point DOCKER_HOST at a socket you may use"
        )
    if (
        _search_chain(exc, FileNotFoundError) is not None
        or _search_chain(exc, ConnectionRefusedError) is not None
    ):
        return EngineUnavailable(
            f"cannot reach the Docker Engine at {host}: is dockerd running? "
            "(set DOCKER_HOST to use another daemon)"
        )
    root = _root_cause(exc)
    detail = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
    return EngineUnavailable(f"cannot use the Docker Engine at {host}: {detail}")


def connect(timeout: int = 60, min_api: str = MIN_API_VERSION) -> Any:
    """A ``docker.DockerClient`` from the environment, checked to be usable.

    ``DOCKER_HOST``, ``DOCKER_TLS_VERIFY`` and ``DOCKER_CERT_PATH`` are honoured (the
    SDK's ``from_env``); the API version is negotiated (``version="auto"``) so a newer
    client library talks to an older daemon at the daemon's version.

    Args:
        timeout: seconds for each API call.
        min_api: the oldest API version lamina accepts.

    Returns:
        A connected client.

    Raises:
        EngineUnavailable: the SDK is missing, the daemon is unreachable or refuses us,
            or its API is older than ``min_api``.
    """
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError as exc:
        raise EngineUnavailable(
            "the Docker backend needs the docker SDK: pip install 'lamina[docker]'"
        ) from exc
    host = docker_host()
    try:
        client = docker.from_env(version="auto", timeout=timeout)
        client.ping()
    except docker.errors.TLSParameterError as exc:
        raise EngineUnavailable(f"bad Docker TLS settings for {host}: {exc}") from exc
    except Exception as exc:
        raise unreachable(exc, host) from exc
    api = str(client.api.api_version)
    if _version_tuple(api) < _version_tuple(min_api):
        client.close()
        raise EngineUnavailable(
            f"the Docker Engine at {host} speaks API {api}; lamina needs {min_api} or newer "
            "(Docker 18.09+)"
        )
    log.debug("connected to Docker Engine at %s (API %s)", host, api)
    return client


def call(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one SDK call, translating its errors.

    Args:
        what: what is being done, for the message ("inspecting image busybox").
        fn: the SDK function.
        *args: passed to ``fn``.
        **kwargs: passed to ``fn``.

    Returns:
        Whatever ``fn`` returns.

    Raises:
        NotFound: the daemon answered 404.
        InUse: the daemon answered 409 (conflict: in use by a container or image).
        EngineUnavailable: the daemon went away or answered with another error.
    """
    import docker

    try:
        return fn(*args, **kwargs)
    except LaminaError:
        raise
    except docker.errors.NotFound as exc:
        raise NotFound(f"{what}: {explanation(exc)}") from exc
    except docker.errors.APIError as exc:
        if exc.status_code == 409:
            raise InUse(f"{what}: {explanation(exc)}") from exc
        raise EngineUnavailable(f"{what}: Docker answered {explanation(exc)}") from exc
    except docker.errors.DockerException as exc:
        raise unreachable(exc) from exc
    except OSError as exc:
        raise unreachable(exc) from exc
    except Exception as exc:
        # requests' ConnectionError/ReadTimeout are not OSErrors.
        if type(exc).__module__.split(".")[0] in ("requests", "urllib3"):
            raise unreachable(exc) from exc
        raise


def explanation(exc: Any) -> str:
    """The daemon's own words for a failed API call (its JSON ``message``), first line.

    The SDK's ``str()`` of an API error is ``400 Client Error for <url>: Bad Request
    ("...")``; users compare lamina's words with Docker's, so only the daemon's message
    is kept, or the HTTP status when the daemon said nothing.
    """
    text = getattr(exc, "explanation", None)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = str(text or "").strip()
    if text:
        return text.splitlines()[0]
    response = getattr(exc, "response", None)
    status = getattr(exc, "status_code", None) or getattr(response, "status_code", None)
    reason = getattr(response, "reason", None)
    if status:
        return f"HTTP {status} {reason or ''}".strip()
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# What :func:`until_cancelled` yields, once, when the build is cancelled.
CANCELLED = object()
_END = object()


def until_cancelled(stream: Iterable[T], cancel: threading.Event | None) -> Iterator[T | object]:
    """A stream's items, read in a thread so a cancel is seen while Docker is silent.

    Yields :data:`CANCELLED` once (and stops) when ``cancel`` is set; an exception the
    stream raises is raised here.
    """
    if cancel is None:
        yield from stream
        return
    items: queue.Queue[object] = queue.Queue()

    def pump() -> None:
        try:
            for item in stream:
                items.put(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            items.put(exc)
        items.put(_END)

    threading.Thread(target=pump, name="docker-build-stream", daemon=True).start()
    while True:
        if cancel.is_set():
            yield CANCELLED
            return
        try:
            item = items.get(timeout=0.2)
        except queue.Empty:
            continue
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        yield item
