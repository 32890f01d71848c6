"""A small typed facade over `tritonclient.http`: health, repository index, load and unload, by pod IP.

Every call opens its own short-lived client with explicit timeouts, so one hung pod cannot stall a
reconcile, and every failure surfaces as an exception of this module carrying Triton's own message.

Timeouts (each bounds the TCP connect and every socket read/write of one HTTP request):
- `CONNECT_TIMEOUT_S` (2 s): a pod IP that does not accept a connection is treated as unreachable.
- `PROBE_TIMEOUT_S` (5 s): health, metadata, repository index, model readiness, unload. Triton answers
  these from memory (unload only schedules the unload), so anything slower means the pod is hung.
- `LOAD_TIMEOUT_S` (60 s): Triton answers a load only once the model is loaded, which can legitimately
  take a while; callers with big models pass `timeout_s`. A load that times out raises `TritonTimeout`
  and may still complete on the server: read `repository_index` on the next reconcile.
"""

from __future__ import annotations

import contextlib
import http.client
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

CONNECT_TIMEOUT_S = 2.0
PROBE_TIMEOUT_S = 5.0
LOAD_TIMEOUT_S = 60.0


class TritonError(Exception):
    """Triton answered with an error; `message` is Triton's own text."""

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint
        self.status = status


class TritonLoadError(TritonError):
    """Triton refused or failed to load a model; `message` is Triton's reason."""


class TritonUnreachable(TritonError):
    """No answer from Triton: connection refused, reset, or a timeout."""


class TritonTimeout(TritonUnreachable):
    """Triton accepted the connection but did not answer in time (a load may still be in progress)."""


@dataclass(frozen=True)
class TritonEndpoint:
    """Where one Triton pod listens: its IP (or host name) and the three standard ports."""

    host: str
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002

    def __post_init__(self) -> None:
        if not self.host or self.host != self.host.strip() or "/" in self.host:
            raise ValueError(
                f"TritonEndpoint.host must be a bare IP or host name (no scheme), got {self.host!r}"
            )
        for field in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(self, field)
            if not isinstance(port, int) or not 0 < port < 65536:
                raise ValueError(f"TritonEndpoint.{field} must be a TCP port in 1..65535, got {port!r}")

    @property
    def _host_in_url(self) -> str:
        # IPv6 pod IPs need brackets inside URLs.
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def http_url(self) -> str:
        """`host:port` of the HTTP API, the form tritonclient expects (no scheme)."""
        return f"{self._host_in_url}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """`host:port` of the gRPC API."""
        return f"{self._host_in_url}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """Full URL of Triton's Prometheus endpoint."""
        return f"http://{self._host_in_url}:{self.metrics_port}/metrics"


@dataclass(frozen=True)
class Health:
    """What a pod says about itself; `error` explains a not-ready server in Triton's words."""

    live: bool
    ready: bool
    version: str | None
    error: str | None


@dataclass(frozen=True)
class ModelState:
    """One row of Triton's repository index; `state` is None for a model present but never loaded."""

    name: str
    version: str | None
    state: str | None
    reason: str | None


@contextlib.contextmanager
def _client(ep: TritonEndpoint, timeout_s: float) -> Iterator[Any]:
    """Open a tritonclient for one call and translate every failure into this module's exceptions."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive seconds, got {timeout_s!r}")
    client: Any = None
    try:
        client = triton_http.InferenceServerClient(
            ep.http_url,
            connection_timeout=min(CONNECT_TIMEOUT_S, timeout_s),
            network_timeout=timeout_s,
        )
        yield client
    except InferenceServerException as exc:
        status = exc.status()
        raise TritonError(
            _clean(exc.message()),
            endpoint=ep.http_url,
            status=int(status) if status and str(status).isdigit() else None,
        ) from None
    except TimeoutError:
        raise TritonTimeout(
            f"Triton at {ep.http_url} did not answer within {timeout_s:g} s", endpoint=ep.http_url
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        # OSError covers refused/reset connections and unresolvable hosts; HTTPException covers
        # geventhttpclient's parse errors when a pod closes the connection mid-answer.
        raise TritonUnreachable(
            f"cannot reach Triton at {ep.http_url}: {exc or type(exc).__name__}", endpoint=ep.http_url
        ) from None
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


def _clean(message: Any) -> str:
    """Triton's messages end with `;\\n` or a newline; keep the text, drop the trailing noise."""
    return str(message).strip().rstrip(";").strip()


def repository_index(ep: TritonEndpoint, *, timeout_s: float = PROBE_TIMEOUT_S) -> list[ModelState]:
    """Every model in the pod's repository folder with its load state and Triton's reason."""
    with _client(ep, timeout_s) as client:
        rows = client.get_model_repository_index()
    return [
        ModelState(
            name=str(row["name"]),
            version=str(row["version"]) if row.get("version") is not None else None,
            state=str(row["state"]) if row.get("state") else None,
            reason=str(row["reason"]) if row.get("reason") else None,
        )
        for row in rows
    ]


def failed_models(index: list[ModelState]) -> list[ModelState]:
    """Rows that failed to load: UNAVAILABLE for a reason other than an explicit unload."""
    return [m for m in index if m.state == "UNAVAILABLE" and m.reason not in (None, "unloaded")]


def server_health(ep: TritonEndpoint, *, timeout_s: float = PROBE_TIMEOUT_S) -> Health:
    """Liveness, readiness and version; when not ready, `error` names the models that failed to load.

    Raises TritonUnreachable when the pod does not answer at all (distinct from a pod that answers
    "not ready"). Makes up to four requests, each bounded by `timeout_s`.
    """
    with _client(ep, timeout_s) as client:
        live = bool(client.is_server_live())
        ready = bool(client.is_server_ready())
        try:
            version: str | None = str(client.get_server_metadata()["version"])
        except (InferenceServerException, KeyError):
            version = None
    if ready:
        return Health(live=live, ready=True, version=version, error=None)
    # Triton's /v2/health/ready answers 400 with an empty body; its repository index holds the why.
    error = "Triton is not live" if not live else "Triton is not ready"
    try:
        failed = failed_models(repository_index(ep, timeout_s=timeout_s))
    except TritonError:
        failed = []
    if failed:
        error += ": " + "; ".join(
            f"model '{m.name}' version {m.version} is {m.state}: {m.reason}" for m in failed
        )
    return Health(live=live, ready=False, version=version, error=error)


def load_model(
    ep: TritonEndpoint, name: str, *, config_json: str | None = None, timeout_s: float = LOAD_TIMEOUT_S
) -> None:
    """Load (or reload) `name` from the pod's repository, optionally overriding its config with JSON.

    Raises TritonLoadError with Triton's reason when the load fails, TritonTimeout when Triton did
    not answer within `timeout_s` (the load may still finish), TritonUnreachable when the pod is down.
    """
    try:
        with _client(ep, timeout_s) as client:
            client.load_model(name, config=config_json)
    except (TritonUnreachable, TritonLoadError):
        raise
    except TritonError as exc:
        raise TritonLoadError(exc.message, endpoint=exc.endpoint, status=exc.status) from None


def unload_model(ep: TritonEndpoint, name: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Ask the pod to unload `name`; unloading a model Triton does not know is not an error."""
    with _client(ep, timeout_s) as client:
        client.unload_model(name)


def model_ready(
    ep: TritonEndpoint, name: str, version: str | int | None = None, *, timeout_s: float = PROBE_TIMEOUT_S
) -> bool:
    """Whether `name` (or one `version` of it) is loaded and ready to serve on this pod."""
    with _client(ep, timeout_s) as client:
        return bool(client.is_model_ready(name, "" if version is None else str(version)))
