"""The OCI distribution protocol over urllib3: manifests, blobs, uploads, and auth.

``RegistryClient`` speaks to one registry. Every request goes through ``_send``, which
authenticates (Basic, or a Bearer token for the request's scopes, fetched on the first
401 and cached), follows at most ``MAX_REDIRECTS`` redirects (urllib3 drops the
Authorization header when a redirect leaves the registry's host, so storage backends
never see a token), and turns every failure into one ``RegistryError`` line carrying
the registry's own error words where it sent some.

Reads are bounded: manifests and configs by size, blobs by their descriptor's size (a
registry sending more is cut off), and every blob is hashed as it streams so nothing is
kept that does not match its digest.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlsplit

import urllib3

from lamina.core.digest import Hasher, sha256_bytes
from lamina.core.errors import RegistryAuthError, RegistryError
from lamina.core.registry import auth, tls
from lamina.core.registry.credentials import Credentials, lookup
from lamina.core.registry.manifests import ACCEPT, MAX_MANIFEST_BYTES, Descriptor

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
CHUNK = 1 << 16
# Blobs up to this size go up in one PUT; bigger ones in PATCH chunks of this size.
UPLOAD_CHUNK = 8 << 20
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
MAX_ERROR_BODY = 1 << 16

Progress = Callable[[int], None]


class TransferCancelled(RegistryError):
    """The user cancelled a pull or push (what was verified stays resumable)."""


@dataclass(frozen=True)
class Fetched:
    """A manifest as the registry sent it."""

    data: bytes
    media_type: str
    digest: str


def _reason(exc: BaseException) -> str:
    """The innermost OS-level reason of a urllib3 error ("Connection refused")."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    best = str(exc)
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLError):
            return f"TLS: {cur.reason or cur}"
        if isinstance(cur, OSError) and cur.strerror:
            return cur.strerror
        reason = getattr(cur, "reason", None)
        cur = reason if isinstance(reason, BaseException) else (cur.__cause__ or cur.__context__)
    return best.split(": ", 1)[-1] if ": " in best else best


def _is_tls_failure(exc: BaseException, kind: type[BaseException] | None = None) -> bool:
    kinds = (kind,) if kind else (ssl.SSLError, urllib3.exceptions.SSLError)
    cur: BaseException | None = exc
    seen: set[int] = set()
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, kinds):
            return True
        reason = getattr(cur, "reason", None)
        cur = reason if isinstance(reason, BaseException) else (cur.__cause__ or cur.__context__)
    return False


def _is_cert_failure(exc: BaseException) -> bool:
    return _is_tls_failure(exc, ssl.SSLCertVerificationError)


class RegistryClient:
    """A client for one registry.

    Args:
        domain: ``host[:port]`` as the reference names it (``docker.io`` is mapped to
            its API host by the caller through ``Reference.endpoint``).
        credentials: what to log in with; by default looked up in Docker's config.
        timeout: (connect, read) seconds for each request.
        upload_chunk: PATCH size for chunked uploads (and the monolithic limit).
    """

    def __init__(
        self,
        domain: str,
        credentials: Credentials | None = None,
        *,
        timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
        upload_chunk: int = UPLOAD_CHUNK,
    ) -> None:
        self.domain = domain
        self._creds = credentials
        self._timeout = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        self._connect_timeout = timeout[0]
        self.upload_chunk = upload_chunk
        # No retries of any kind (a failed transfer resumes on the next pull), only
        # bounded redirects.
        retries = urllib3.Retry(
            total=MAX_REDIRECTS,
            connect=0,
            read=0,
            status=0,
            other=0,
            redirect=MAX_REDIRECTS,
            raise_on_redirect=True,
        )
        self._pool = urllib3.PoolManager(
            num_pools=4, maxsize=8, ssl_context=tls.ssl_context(domain), retries=retries
        )
        self._scheme: str | None = None
        self._lock = threading.Lock()
        self._tokens = auth.TokenCache()
        self._challenge: auth.Challenge | None = None

    # -- plumbing --------------------------------------------------------------------

    @property
    def credentials(self) -> Credentials:
        if self._creds is None:
            self._creds = lookup(self.domain)
        return self._creds

    def close(self) -> None:
        """Closes pooled connections."""
        self._pool.clear()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _base(self) -> str:
        with self._lock:
            if self._scheme is None:
                self._scheme = self._probe()
            return f"{self._scheme}://{self.domain}"

    def _probe(self) -> str:
        """HTTPS, or plain HTTP where allowed and the registry does not speak TLS."""
        try:
            resp = self._pool.request(
                "GET",
                f"https://{self.domain}/v2/",
                timeout=self._timeout,
                redirect=False,
                preload_content=False,
            )
            resp.drain_conn()
            resp.release_conn()
            return "https"
        except urllib3.exceptions.HTTPError as exc:
            # A certificate that does not verify means the registry does speak TLS:
            # falling back to HTTP would only hide the real problem.
            if tls.allows_http(self.domain) and not _is_cert_failure(exc):
                log.debug("%s: no HTTPS (%s); trying plain HTTP", self.domain, _reason(exc))
                return "http"
            if _is_tls_failure(exc):
                raise RegistryError(
                    f"cannot reach the registry {self.domain} over HTTPS: {_reason(exc)} "
                    f"(a private CA goes in {tls.certs_root() / self.domain}/ca.crt)"
                ) from exc
            raise RegistryError(f"cannot reach the registry {self.domain}: {_reason(exc)}") from exc

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self._base() + path

    def _authorization(self, scopes: list[str]) -> str | None:
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return auth.basic_header(self.credentials) if self.credentials else None
        if challenge.scheme != "bearer":
            return None
        key = (challenge.params.get("realm", ""), challenge.params.get("service", ""))
        cache_key = (*key, " ".join(sorted(scopes)))
        token = self._tokens.get(cache_key)
        if token is None:
            token, lifetime = auth.fetch_token(
                self._pool, challenge, scopes, self.credentials, self._connect_timeout
            )
            self._tokens.put(cache_key, token, lifetime)
        return f"Bearer {token}"

    def _send(
        self,
        method: str,
        path: str,
        *,
        scopes: list[str],
        what: str,
        headers: dict[str, str] | None = None,
        body: Callable[[], Any] | bytes | None = None,
        ok: tuple[int, ...] = (200,),
        stream: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        """Sends one request, authenticating on a 401; returns a response in ``ok``.

        Raises:
            RegistryAuthError: 401 after authenticating, or 403.
            RegistryError: unreachable, or any other status (the registry's words).
        """
        url = self._url(path)
        for attempt in (1, 2):
            hdrs = {"User-Agent": "lamina", **(headers or {})}
            authorization = self._authorization(scopes)
            if authorization:
                hdrs["Authorization"] = authorization
            payload = body() if callable(body) else body
            try:
                resp = self._pool.request(
                    method,
                    url,
                    headers=hdrs,
                    body=payload,
                    timeout=self._timeout,
                    preload_content=False,
                    # Only reads follow redirects; an upload's Location is followed by hand.
                    redirect=method in ("GET", "HEAD"),
                )
            except urllib3.exceptions.MaxRetryError as exc:
                if isinstance(exc.reason, urllib3.exceptions.ResponseError):
                    raise RegistryError(
                        f"{what}: the registry redirected more than {MAX_REDIRECTS} times"
                    ) from exc
                raise RegistryError(
                    f"{what}: cannot reach the registry {self.domain}: {_reason(exc)}"
                ) from exc
            except urllib3.exceptions.HTTPError as exc:
                raise RegistryError(f"{what}: {self.domain}: {_reason(exc)}") from exc
            if resp.status in ok:
                if not stream:
                    # Success bodies here are empty or tiny; never read a hostile one whole.
                    resp.read(MAX_ERROR_BODY, decode_content=False)
                    _release(resp)
                return resp
            # Read even a HEAD's empty body: an unread response keeps its connection busy.
            err = resp.read(MAX_ERROR_BODY, decode_content=True)
            _release(resp)
            if resp.status == 401 and attempt == 1:
                header = resp.headers.get("WWW-Authenticate", "")
                challenge = auth.parse_challenge(header) if header else None
                if challenge is not None and challenge.scheme in ("basic", "bearer"):
                    wanted = list(scopes)
                    extra = challenge.params.get("scope")
                    if extra and extra not in wanted:
                        wanted.append(extra)
                    if challenge.scheme == "basic" and not self.credentials:
                        raise RegistryAuthError(
                            f"{what}: {self.domain} requires credentials "
                            f"(`lamina login {self.domain}`)"
                        )
                    self._challenge = challenge
                    scopes = wanted
                    continue
            raise self._status_error(resp.status, err, what)
        raise RegistryError(f"{what}: the registry kept refusing")  # pragma: no cover

    def _status_error(self, status: int, body: bytes, what: str) -> RegistryError:
        words = auth.registry_words(body)
        if status == 401:
            hint = "" if self.credentials else f" (`lamina login {self.domain}`)"
            return RegistryAuthError(
                f"{what}: {words or 'unauthorized: authentication required'}{hint}"
            )
        if status == 403:
            return RegistryAuthError(f"{what}: {words or 'denied: access forbidden'}")
        if status == 404:
            return RegistryError(f"{what}: {words or 'not found'}")
        if status == 416:
            return RegistryError(f"{what}: the registry refused the byte range")
        return RegistryError(f"{what}: the registry answered {status}: {words or 'no detail'}")

    # -- reading -----------------------------------------------------------------------

    def ping(self) -> None:
        """``GET /v2/`` with credentials: checks that the registry accepts them."""
        self._send("GET", "/v2/", scopes=[], what=f"log in to {self.domain}")

    def get_manifest(self, repo: str, ref: str, *, accept: str = ACCEPT) -> Fetched:
        """A manifest or index by tag or digest, at most ``MAX_MANIFEST_BYTES``.

        Raises:
            RegistryError: unknown, too large, or not matching the digest asked for
                (or the one the registry says it sent).
        """
        what = f"{self.domain}/{repo}:{ref}" if ":" not in ref else f"{self.domain}/{repo}@{ref}"
        resp = self._send(
            "GET",
            f"/v2/{repo}/manifests/{ref}",
            scopes=[f"repository:{repo}:pull"],
            what=what,
            headers={"Accept": accept},
            stream=True,
        )
        try:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > MAX_MANIFEST_BYTES:
                raise RegistryError(f"{what}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
            data = _read_limited(resp, MAX_MANIFEST_BYTES, what, "manifest")
        finally:
            _release(resp)
        digest = sha256_bytes(data)
        if ref.startswith("sha256:") and digest != ref:
            raise RegistryError(f"{what}: manifest does not match its digest (got {digest})")
        claimed = resp.headers.get("Docker-Content-Digest")
        if claimed and claimed.startswith("sha256:") and claimed != digest:
            raise RegistryError(
                f"{what}: manifest does not match the digest {claimed} it was sent as"
            )
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return Fetched(data, media_type, digest)

    def get_blob(self, repo: str, desc: Descriptor, limit: int) -> bytes:
        """A small blob (a config) in memory, verified against its digest."""
        what = f"{self.domain}/{repo}: blob {desc.digest}"
        if desc.size > limit:
            raise RegistryError(f"{what}: {desc.size} bytes is more than {limit} for a config")
        resp = self._send(
            "GET",
            f"/v2/{repo}/blobs/{desc.digest}",
            scopes=[f"repository:{repo}:pull"],
            what=what,
            stream=True,
        )
        try:
            data = _read_limited(resp, desc.size, what, "blob")
        finally:
            _release(resp)
        if len(data) != desc.size:
            raise RegistryError(f"{what}: truncated ({len(data)} of {desc.size} bytes)")
        if sha256_bytes(data) != desc.digest:
            raise RegistryError(f"{what}: the bytes do not match the digest")
        return data

    def download_blob(
        self,
        repo: str,
        desc: Descriptor,
        partial: Path,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        """Streams a blob into ``partial``, resuming what an earlier try left there.

        The bytes already in ``partial`` are re-hashed and the rest is asked for with a
        ``Range`` request (a registry that answers 200 instead sends it all again). The
        file holds exactly ``desc.size`` bytes matching ``desc.digest`` when this
        returns; bytes that do not match are deleted, a short read is kept to resume.

        Raises:
            RegistryError: unreachable, refused, truncated, too long or not matching.
            TransferCancelled: ``cancel`` was set.
        """
        what = f"{self.domain}/{repo}: blob {desc.digest}"
        hasher = Hasher()
        have = 0
        try:
            if partial.exists():
                have = partial.stat().st_size
            if have > desc.size:
                partial.unlink()
                have = 0
            f = open(partial, "r+b" if have else "wb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise RegistryError(f"{partial}: cannot write: {exc.strerror}") from exc
        with f:
            if have:
                while chunk := f.read(CHUNK):
                    hasher.update(chunk)
                if progress:
                    progress(have)
            if have < desc.size or desc.size == 0:
                headers = {"Range": f"bytes={have}-"} if have else {}
                resp = self._send(
                    "GET",
                    f"/v2/{repo}/blobs/{desc.digest}",
                    scopes=[f"repository:{repo}:pull"],
                    what=what,
                    headers=headers,
                    ok=(200, 206),
                    stream=True,
                )
                try:
                    if resp.status == 200 and have:
                        log.info("%s: the registry ignored the range; fetching it all", what)
                        f.seek(0)
                        f.truncate()
                        hasher, have = Hasher(), 0
                    self._stream_into(resp, f, hasher, desc, what, progress, cancel)
                finally:
                    _release(resp)
                try:
                    f.flush()
                    os.fsync(f.fileno())
                except OSError as exc:
                    raise RegistryError(f"{partial}: cannot write: {exc.strerror}") from exc
        if hasher.size < desc.size:
            raise RegistryError(
                f"{what}: truncated download ({hasher.size} of {desc.size} bytes; "
                "pull again to resume)"
            )
        if hasher.digest() != desc.digest:
            partial.unlink(missing_ok=True)
            raise RegistryError(
                f"{what}: the bytes do not match the digest (got {hasher.digest()})"
            )

    def _stream_into(
        self,
        resp: urllib3.BaseHTTPResponse,
        out: BinaryIO,
        hasher: Hasher,
        desc: Descriptor,
        what: str,
        progress: Progress | None,
        cancel: threading.Event | None,
    ) -> None:
        try:
            for chunk in resp.stream(CHUNK, decode_content=False):
                if cancel is not None and cancel.is_set():
                    raise TransferCancelled(f"{what}: cancelled")
                if hasher.size + len(chunk) > desc.size:
                    raise RegistryError(f"{what}: the registry sent more than {desc.size} bytes")
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise RegistryError(
                        f"{what}: cannot write the download: {exc.strerror}"
                    ) from exc
                hasher.update(chunk)
                if progress:
                    progress(len(chunk))
        except urllib3.exceptions.HTTPError as exc:
            # A connection cut mid-body: what arrived stays for the next try.
            log.info("%s: download broke off: %s", what, exc)

    # -- writing -----------------------------------------------------------------------

    def blob_exists(self, repo: str, digest: str) -> bool:
        """``HEAD`` the blob in ``repo``."""
        resp = self._send(
            "HEAD",
            f"/v2/{repo}/blobs/{digest}",
            scopes=[f"repository:{repo}:pull,push"],
            what=f"{self.domain}/{repo}: blob {digest}",
            ok=(200, 404),
        )
        return resp.status == 200

    def mount_blob(self, repo: str, digest: str, source: str) -> bool:
        """Asks the registry to link ``digest`` from repository ``source`` into ``repo``.

        Returns:
            Whether it mounted (201); False when it started an upload instead (202),
            which is abandoned.
        """
        resp = self._send(
            "POST",
            f"/v2/{repo}/blobs/uploads/?mount={digest}&from={source}",
            scopes=[f"repository:{repo}:pull,push", f"repository:{source}:pull"],
            what=f"{self.domain}/{repo}: mount {digest} from {source}",
            ok=(201, 202),
        )
        if resp.status == 201:
            return True
        location = resp.headers.get("Location")
        if location:
            try:
                self._send(
                    "DELETE",
                    self._location(location),
                    scopes=[f"repository:{repo}:pull,push"],
                    what="abandon upload",
                    ok=(204, 200, 202, 404),
                )
            except RegistryError as exc:
                log.info("could not abandon the upload session: %s", exc)
        return False

    def _location(self, location: str) -> str:
        return urljoin(self._base() + "/", location)

    def _start_upload(self, repo: str, what: str) -> str:
        resp = self._send(
            "POST",
            f"/v2/{repo}/blobs/uploads/",
            scopes=[f"repository:{repo}:pull,push"],
            what=what,
            ok=(202,),
        )
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"{what}: the registry started an upload without a Location")
        return self._location(location)

    def upload_blob(
        self,
        repo: str,
        path: Path,
        digest: str,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        """Uploads the file ``path`` (whose sha256 is ``digest``) to ``repo``.

        Up to ``upload_chunk`` bytes go monolithically (``POST`` then one ``PUT`` with
        the body); bigger blobs in ``PATCH`` chunks and a closing ``PUT``.
        """
        what = f"{self.domain}/{repo}: upload {digest}"
        size = path.stat().st_size
        location = self._start_upload(repo, what)
        scopes = [f"repository:{repo}:pull,push"]
        if size <= self.upload_chunk:

            def whole() -> _Reader:
                return _Reader(path, 0, size, progress, cancel, what)

            self._send(
                "PUT",
                _with_query(location, f"digest={digest}"),
                scopes=scopes,
                what=what,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                body=whole,
                ok=(201,),
            )
            return
        offset = 0
        while offset < size:
            n = min(self.upload_chunk, size - offset)
            start = offset

            def part(start: int = start, n: int = n) -> _Reader:
                return _Reader(path, start, n, progress, cancel, what)

            resp = self._send(
                "PATCH",
                location,
                scopes=scopes,
                what=what,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(n),
                    "Content-Range": f"{start}-{start + n - 1}",
                },
                body=part,
                ok=(202,),
            )
            location = self._location(resp.headers.get("Location") or location)
            offset += n
        self._send(
            "PUT",
            _with_query(location, f"digest={digest}"),
            scopes=scopes,
            what=what,
            headers={"Content-Length": "0"},
            body=b"",
            ok=(201,),
        )

    def put_blob_bytes(self, repo: str, data: bytes) -> str:
        """Uploads a small blob (a config) monolithically; returns its digest."""
        digest = sha256_bytes(data)
        what = f"{self.domain}/{repo}: upload {digest}"
        location = self._start_upload(repo, what)
        self._send(
            "PUT",
            _with_query(location, f"digest={digest}"),
            scopes=[f"repository:{repo}:pull,push"],
            what=what,
            headers={"Content-Type": "application/octet-stream"},
            body=data,
            ok=(201,),
        )
        return digest

    def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> str:
        """Uploads a manifest under a tag (or digest); returns its digest."""
        self._send(
            "PUT",
            f"/v2/{repo}/manifests/{ref}",
            scopes=[f"repository:{repo}:pull,push"],
            what=f"{self.domain}/{repo}:{ref}: manifest",
            headers={"Content-Type": media_type},
            body=data,
            ok=(201,),
        )
        return sha256_bytes(data)


class _Reader:
    """``n`` bytes of a file from ``start``, reporting progress as urllib3 reads them."""

    def __init__(
        self,
        path: Path,
        start: int,
        n: int,
        progress: Progress | None,
        cancel: threading.Event | None,
        what: str,
    ) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed when read to the end
        self._f.seek(start)
        self._left = n
        self._progress = progress
        self._cancel = cancel
        self._what = what

    def read(self, size: int = -1) -> bytes:
        if self._cancel is not None and self._cancel.is_set():
            self._f.close()
            raise TransferCancelled(f"{self._what}: cancelled")
        if self._left <= 0:
            self._f.close()
            return b""
        want = self._left if size is None or size < 0 else min(size, self._left)
        data = self._f.read(want)
        self._left -= len(data)
        if self._progress and data:
            self._progress(len(data))
        if not data:
            self._f.close()
        return data

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK):
            yield chunk


def _release(resp: urllib3.BaseHTTPResponse) -> None:
    """Returns a response's connection to the pool, closing it if bytes are left unread
    (a half-read body would be the next request's garbage)."""
    if resp.length_remaining is None or resp.length_remaining > 0:
        resp.close()
    resp.release_conn()


def _with_query(url: str, query: str) -> str:
    return f"{url}&{query}" if urlsplit(url).query else f"{url}?{query}"


def _read_limited(resp: urllib3.BaseHTTPResponse, limit: int, what: str, kind: str) -> bytes:
    chunks: list[bytes] = []
    total = 0
    try:
        for chunk in resp.stream(CHUNK, decode_content=True):
            total += len(chunk)
            if total > limit:
                raise RegistryError(f"{what}: {kind} larger than {limit} bytes")
            chunks.append(chunk)
    except urllib3.exceptions.HTTPError as exc:
        raise RegistryError(f"{what}: the {kind} broke off: {_reason(exc)}") from exc
    return b"".join(chunks)
