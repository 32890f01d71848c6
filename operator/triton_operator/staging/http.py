"""Download one file over HTTP(S), bounded in size and time, with retries and sha256 verification."""

from __future__ import annotations

import hashlib
import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import ParseResult, unquote, urlparse

from triton_operator.api.tritonmodel import HttpSource
from triton_operator.staging.errors import ExitCode, StagingError

ATTEMPTS = 4
TIMEOUT_S = 30.0
_CHUNK = 1 << 20
_NAME_MAX = 255  # bytes in one file name on Linux filesystems


def _checked_url(url: str) -> ParseResult:
    """The parsed URL; StagingError for one urllib cannot request (it would raise ValueError there)."""
    try:
        parsed = urlparse(url)
        _ = parsed.port  # raises ValueError for a port that is not a number in 0..65535
    except ValueError as exc:
        raise StagingError(
            ExitCode.SOURCE_NOT_FOUND, f"{redact(url)} is not a valid URL ({exc}): fix spec.source.http.url"
        ) from None
    if not url.isascii() or not parsed.hostname:
        # urllib sends the URL as it is: anything but ASCII must be percent-encoded first.
        raise StagingError(
            ExitCode.SOURCE_NOT_FOUND,
            f"{redact(url)} is not a valid URL (no host, or characters that are not percent-encoded): "
            "fix spec.source.http.url",
        )
    return parsed


def file_name(url: str) -> str:
    """The file name a URL's path ends with (`model.onnx` for https://host/a/model.onnx?x=1)."""
    name = unquote(_checked_url(url).path.rsplit("/", 1)[-1])
    # A NUL (%00) cannot be in a file name, and a name over 255 bytes cannot be created.
    unusable = "\0" in name or len(name.encode()) > _NAME_MAX
    if not name or name in (".", "..") or "/" in name or "\\" in name or unusable:
        raise StagingError(
            ExitCode.INVALID_ARTIFACT,
            f"cannot name the file of {redact(url)}: "
            "end the URL's path with the file name (e.g. .../model.onnx)",
        )
    return name


def redact(url: str) -> str:
    """The URL without user info or query (presigned URLs carry signatures there)."""
    try:
        parsed = urlparse(url)
        host = parsed.hostname or ""
        port = f":{parsed.port}" if parsed.port else ""
    except ValueError:
        # A port that is not a number, an unclosed bracket: the host as written, less user info and query.
        scheme, _, rest = url.partition("://")
        netloc, slash, path = rest.partition("/")
        path = (slash + path).split("?", 1)[0].split("#", 1)[0]
        return f"{scheme}://{netloc.rpartition('@')[2]}{path}"
    return f"{parsed.scheme}://{host}{port}{parsed.path}"


def declared_length(value: str | None) -> int | None:
    """A Content-Length header's byte count, or None when it is absent or not a plain number.

    str.isdigit() alone accepts digits such as '²' (the header is decoded as latin-1), which int() refuses.
    """
    value = value.strip() if value is not None else None
    return int(value) if value and value.isascii() and value.isdigit() else None


def _attempt(source: HttpSource, dest: Path, space_left: int, timeout_s: float) -> int:
    """One download; returns the byte count. Raises StagingError (transient or permanent)."""
    where = redact(source.url)
    _checked_url(source.url)
    request = urllib.request.Request(source.url, headers={"User-Agent": "triton-operator-stage"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            length = declared_length(response.headers.get("Content-Length"))
            if length is not None and length > space_left:
                raise StagingError(
                    ExitCode.TOO_LARGE,
                    f"{where} is {length} bytes but only {space_left} bytes are free in the model "
                    "repository: grow spec.modelRepository.size of the TritonServer",
                )
            digest = hashlib.sha256()
            total = 0
            with open(dest, "wb") as out:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    total += len(chunk)
                    if total > space_left:
                        raise StagingError(
                            ExitCode.TOO_LARGE,
                            f"{where} is more than {space_left} bytes, the space free in the model "
                            "repository: grow spec.modelRepository.size of the TritonServer",
                        )
                    digest.update(chunk)
                    out.write(chunk)
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            raise StagingError(
                ExitCode.SOURCE_NOT_FOUND, f"{where} answered {exc.code}: fix spec.source.http.url"
            ) from None
        if exc.code in (401, 403):
            raise StagingError(
                ExitCode.ACCESS_DENIED,
                f"{where} answered {exc.code}: make the file readable or use a URL that grants access",
            ) from None
        if exc.code >= 500 or exc.code in (408, 429):
            raise StagingError(
                ExitCode.SOURCE_UNAVAILABLE, f"{where} answered {exc.code}; retrying may help"
            ) from None
        raise StagingError(
            ExitCode.SOURCE_NOT_FOUND, f"{where} answered {exc.code}: fix spec.source.http.url"
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        detail = getattr(exc, "reason", exc)
        raise StagingError(
            ExitCode.SOURCE_UNAVAILABLE, f"cannot download {where} ({detail}): check the URL and the network"
        ) from None
    except (http.client.HTTPException, ValueError) as exc:
        # A malformed answer: a chunked body cut short (IncompleteRead) or a chunk size that is not hex
        # (ValueError), a status line that is not HTTP (BadStatusLine).
        raise StagingError(
            ExitCode.SOURCE_UNAVAILABLE,
            f"{where} answered malformed HTTP ({type(exc).__name__}: {str(exc)[:200]}); retrying may help",
        ) from None
    if length is not None and total != length:
        raise StagingError(
            ExitCode.SOURCE_UNAVAILABLE, f"{where} ended after {total} of {length} bytes; retrying may help"
        )
    actual = digest.hexdigest()
    if actual != source.sha256:
        raise StagingError(
            ExitCode.DIGEST_MISMATCH,
            f"{where} has sha256 {actual}, not the expected {source.sha256}: fix spec.source.http.sha256 "
            "or the URL",
        )
    return total


def download(
    source: HttpSource,
    dest: Path,
    *,
    space_left: int,
    attempts: int = ATTEMPTS,
    timeout_s: float = TIMEOUT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Download `source` to `dest`; transient failures are retried with backoff (1, 2, 4 s)."""
    for attempt in range(1, attempts + 1):
        try:
            return _attempt(source, dest, space_left, timeout_s)
        except StagingError as exc:
            dest.unlink(missing_ok=True)
            if exc.code != ExitCode.SOURCE_UNAVAILABLE or attempt == attempts:
                raise
            sleep(float(2 ** (attempt - 1)))
    raise AssertionError("unreachable")  # pragma: no cover
