"""A small typed facade over `tritonclient.grpc`: health, repository index, load and unload, by pod IP.

Every call opens its own short-lived gRPC client (closed again after the call) with explicit timeouts,
so one hung pod cannot stall a reconcile, and every failure surfaces as an exception of this module
carrying Triton's own message.

Why gRPC and not HTTP: in Triton 2.51 a model load over the HTTP API stalls every in-flight HTTP
inference on that server, for any model, for the whole load (seconds, with a python model;
Triton issue 8958). The same load over gRPC stalls nothing. The operator loads models into pods that
serve traffic, so every repository call (index, load, unload, readiness, config) and health go over
gRPC (port 8001); `tests/integration/test_load_stall.py` guards this.

Timeouts:
- `CONNECT_TIMEOUT_S` (2 s): bounds opening the connection, TCP handshake and the HTTP/2 settings
  exchange together. A refused connection raises `TritonUnreachable` at once; a pod that does not
  complete the connection within this time (dropped SYNs, or a hung process whose kernel accepts
  the TCP connection) raises `TritonTimeout`.
- `PROBE_TIMEOUT_S` (5 s): the whole call (gRPC deadline) for health, metadata, repository index,
  model readiness, model config and unload. Triton answers these from memory (unload only schedules
  the unload), so anything slower means the pod is hung.
- `LOAD_TIMEOUT_S` (60 s): Triton answers a load only once the model is loaded, which can legitimately
  take a while; callers with big models pass `timeout_s`. A load that times out raises `TritonTimeout`
  and may still complete on the server: read `repository_index` on the next reconcile.

A pod that ran out a call's time (a connection attempt, or a call bounded by `PROBE_TIMEOUT_S`) is hung
for that call: for `HUNG_HOLD_S` after that, every such call to it that would not wait longer raises the
same `TritonTimeout` at once, without asking (a caller with a longer timeout asks again). A connection
that could not be completed holds every call; a call that timed out holds only calls of its kind, so a
pod whose health answers while its index hangs stays held for the index. Once the hold is over, one
call asks again (the probe) while the others are still answered with the held timeout: a pod that stays
hung costs one wait per hold, not one per caller.
Each of a server's models reads each pod's index every period, one after another for the same pod
(the reads are shared, single-flight): without the hold, 100 models of a hung pod would wait out
100 timeouts in turn, holding the operator's workers from every other object meanwhile. Callers that
read through a shared single-flight cache ask `raise_if_held` first, so that they do not queue behind
a probe.
"""

from __future__ import annotations

import contextlib
import reprlib
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc  # type: ignore[import-untyped]
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

CONNECT_TIMEOUT_S = 2.0
PROBE_TIMEOUT_S = 5.0
LOAD_TIMEOUT_S = 60.0
HUNG_HOLD_S = PROBE_TIMEOUT_S
FORGET_HOLD_S = 10 * HUNG_HOLD_S  # a hold no call has probed for this long is of a pod gone
INDEX = "index"  # the repository index call, for `raise_if_held`
# The largest answer read from a pod. Triton's are kilobytes (an index of 10,000 models is about 1 MiB);
# tritonclient's default, 2 GiB, would let any pod make the operator parse 2 GiB into memory.
ANSWER_LIMIT = 64 << 20

# "StatusCode.UNAVAILABLE" (what InferenceServerException.status() gives) -> grpc.StatusCode.
_GRPC_CODES: dict[str, Any] = {str(code): code for code in grpc.StatusCode}


class TritonError(Exception):
    """Triton answered with an error; `message` is Triton's own text, `status` the gRPC status number."""

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
    """Triton accepted the connection but did not answer in time (a load may still be in progress);
    `connecting`: it did not even complete the connection."""

    def __init__(
        self, message: str, *, endpoint: str = "", status: int | None = None, connecting: bool = False
    ) -> None:
        super().__init__(message, endpoint=endpoint, status=status)
        self.connecting = connecting


# The kind of call a connection that could not be completed holds: every call of the pod.
CONNECT = "connect"
HoldKey = tuple[str, str]  # (the pod's gRPC URL, the call: "index", "health", ... or CONNECT)


@dataclass
class _Hold:
    at: float  # when the call timed out (on `_clock`)
    timeout_s: float  # its timeout: a more patient call still asks
    error: TritonTimeout
    probing: bool = False  # the hold is over and one call is asking again


class _HungPods:
    """Calls of pods that ran out their time, by (pod, call), for `HUNG_HOLD_S` (module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holds: dict[HoldKey, _Hold] = {}

    def check(self, url: str, call: str, timeout_s: float, *, probe: bool = True) -> tuple[HoldKey, ...]:
        """Raise the timeout the call ran out lately while it is held and this call is no more patient.

        When its holds are over, the first call becomes their probe (their keys are returned: pass them
        to `end_probe`); calls meanwhile raise as if still held. `probe=False` only looks.
        """
        with self._lock:
            holds = [
                (key, hold)
                for key in ((url, CONNECT), (url, call))
                if (hold := self._holds.get(key)) is not None and timeout_s <= hold.timeout_s
            ]
            held = next((h for _, h in holds if h.probing or _clock() - h.at < HUNG_HOLD_S), None)
            if held is None:
                if not probe:
                    return ()
                for _, hold in holds:
                    hold.probing = True
                return tuple(key for key, _ in holds)
            error = held.error
        # The same message as the call that timed out: a status quoting it does not change each pass.
        raise TritonTimeout(error.message, endpoint=url, connecting=error.connecting)

    def remember(
        self, key: HoldKey, timeout_s: float, error: TritonTimeout, *, waited_s: float, bound_s: float
    ) -> None:
        """Hold `key` when the call really waited out its bound (an instant error costs nothing again)."""
        if waited_s < 0.9 * bound_s:
            return
        now = _clock()
        with self._lock:
            # Pods that went away are not asked again; a pod still hung is asked long before this.
            for old in [k for k, h in self._holds.items() if not h.probing and now - h.at >= FORGET_HOLD_S]:
                del self._holds[old]
            self._holds[key] = _Hold(now, timeout_s, error)

    def answered(self, url: str, call: str) -> None:
        """The pod completed a call of this kind: neither it nor the connection is held any more."""
        with self._lock:
            self._holds.pop((url, call), None)
            self._holds.pop((url, CONNECT), None)

    def end_probe(self, keys: tuple[HoldKey, ...]) -> None:
        """The probe ended; holds it did not renew are over (it answered, or failed without waiting)."""
        with self._lock:
            for key in keys:
                hold = self._holds.get(key)
                if hold is not None and hold.probing:
                    del self._holds[key]


_hung = _HungPods()
_clock = time.monotonic  # the hold's own clock: how long a call really waited


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
        """`host:port` of the gRPC API (what this module talks to)."""
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


def _channel_args(connect_timeout_s: float) -> list[tuple[str, int]]:
    """gRPC channel options: message limits, and a connection attempt bounded in time."""
    connect_ms = max(1, int(connect_timeout_s * 1000))
    return [
        ("grpc.max_send_message_length", triton_grpc.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", ANSWER_LIMIT),
        # gRPC gives up a connection attempt (TCP + HTTP/2 settings) after
        # max(initial backoff, min backoff); then a pending call fails with UNAVAILABLE.
        ("grpc.initial_reconnect_backoff_ms", connect_ms),
        ("grpc.min_reconnect_backoff_ms", connect_ms),
        # A private connection per client: a call never inherits another call's connection attempt
        # (or its backoff), so the timeouts above hold per call.
        ("grpc.use_local_subchannel_pool", 1),
    ]


@contextlib.contextmanager
def _client(ep: TritonEndpoint, timeout_s: float, call: str) -> Iterator[Any]:
    """Open a gRPC tritonclient for one call and translate every failure into this module's exceptions.

    `call` names the kind of call for the hung-pod hold (module doc). The caller passes
    `client_timeout=timeout_s` to each request; the client is closed afterwards (closing the channel
    releases its socket, so short-lived clients leak nothing).
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive seconds, got {timeout_s!r}")
    probe = _hung.check(ep.grpc_url, call, timeout_s)
    connect_s = min(CONNECT_TIMEOUT_S, timeout_s)
    client: Any = None
    started, waiting_since = time.monotonic(), _clock()
    try:
        client = triton_grpc.InferenceServerClient(ep.grpc_url, channel_args=_channel_args(connect_s))
        yield client
    except InferenceServerException as exc:
        error = _translate(exc, ep, timeout_s, connect_s, time.monotonic() - started)
        if isinstance(error, TritonTimeout) and (error.connecting or timeout_s <= PROBE_TIMEOUT_S):
            # A pod that let a probe (or a connection) run out its time is hung; a load that ran long
            # is not.
            waited_s, bound_s = _clock() - waiting_since, connect_s if error.connecting else timeout_s
            key = (ep.grpc_url, CONNECT if error.connecting else call)
            _hung.remember(key, timeout_s, error, waited_s=waited_s, bound_s=bound_s)
        raise error from None
    else:
        _hung.answered(ep.grpc_url, call)
    finally:
        _hung.end_probe(probe)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


def raise_if_held(ep: TritonEndpoint, call: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise the held `TritonTimeout` when such a call to the pod would raise it (held, or being probed).

    For callers about to wait in a shared single-flight read: behind a probe of a hung pod they would
    each hold a worker for the probe's whole timeout.
    """
    _hung.check(ep.grpc_url, call, timeout_s, probe=False)


def _translate(
    exc: InferenceServerException, ep: TritonEndpoint, timeout_s: float, connect_s: float, elapsed_s: float
) -> TritonError:
    """Map a tritonclient gRPC error to this module's exceptions by its gRPC status code."""
    url = ep.grpc_url
    code = _GRPC_CODES.get(str(exc.status()))
    message = _clean(exc.message())
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return TritonTimeout(f"Triton at {url} did not answer within {timeout_s:g} s", endpoint=url)
    if code == grpc.StatusCode.UNAVAILABLE:
        # A connection attempt that ran out its time: the pod neither refused nor answered.
        if "failed to connect" in message and elapsed_s >= 0.9 * connect_s:
            return TritonTimeout(
                f"Triton at {url} did not complete a connection within {connect_s:g} s: {message}",
                endpoint=url,
                connecting=True,
            )
        return TritonUnreachable(f"cannot reach Triton at {url}: {message}", endpoint=url)
    return TritonError(message, endpoint=url, status=code.value[0] if code is not None else None)


def _clean(message: Any) -> str:
    """Triton's messages end with `;\\n` or a newline; keep the text, drop the trailing noise."""
    return str(message).strip().rstrip(";").strip()


def repository_index(ep: TritonEndpoint, *, timeout_s: float = PROBE_TIMEOUT_S) -> list[ModelState]:
    """Every model in the pod's repository folder with its load state and Triton's reason.

    A model loaded with `files=` (no folder in the repository) is not listed: Triton indexes folders.
    """
    with _client(ep, timeout_s, INDEX) as client:
        answer = client.get_model_repository_index(as_json=True, client_timeout=timeout_s)
    return parse_repository_index(answer, endpoint=ep.grpc_url)


def parse_repository_index(answer: Any, *, endpoint: str = "") -> list[ModelState]:
    """Triton's repository index (protobuf JSON: `{"models": [{"name", "version", "state", "reason"}]}`).

    Raises TritonError for an answer of another shape (the fields of a row are strings, a row needs
    a name), so that a stranger on the port reads as a failure to ask Triton, never as a crash.
    """
    rows = answer.get("models", []) if isinstance(answer, dict) else None
    if not isinstance(rows, list):
        raise _bad_answer("repository index", answer, endpoint)
    states: list[ModelState] = []
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("name"), str) or not row["name"]:
            raise _bad_answer("repository index row", row, endpoint)
        fields = [row.get(key) for key in ("version", "state", "reason")]
        if any(value is not None and not isinstance(value, str) for value in fields):
            raise _bad_answer("repository index row", row, endpoint)
        version, state, reason = (value or None for value in fields)
        states.append(ModelState(name=row["name"], version=version, state=state, reason=reason))
    return states


# Quotes a few levels and items of a bad answer: repr() of a deeply nested one exceeds the stack.
_QUOTE = reprlib.Repr()
_QUOTE.maxlevel, _QUOTE.maxstring, _QUOTE.maxother = 3, 60, 60


def _bad_answer(what: str, answer: Any, endpoint: str) -> TritonError:
    """The TritonError for an answer that is not what Triton sends; quotes its start only."""
    where = f" from {endpoint}" if endpoint else ""
    return TritonError(
        f"unexpected {what}{where} (not Triton's protobuf JSON): {_QUOTE.repr(answer)[:200]}",
        endpoint=endpoint,
    )


def _server_version(metadata: Any) -> str | None:
    """The `version` of Triton's server metadata; None when it does not say."""
    version = metadata.get("version") if isinstance(metadata, dict) else None
    return version if isinstance(version, str) and version else None


def failed_models(index: list[ModelState]) -> list[ModelState]:
    """Rows that failed to load: UNAVAILABLE for a reason other than an explicit unload."""
    return [m for m in index if m.state == "UNAVAILABLE" and m.reason not in (None, "unloaded")]


def server_health(ep: TritonEndpoint, *, timeout_s: float = PROBE_TIMEOUT_S) -> Health:
    """Liveness, readiness and version; when not ready, `error` names the models that failed to load.

    Raises TritonUnreachable when the pod does not answer at all (distinct from a pod that answers
    "not ready"). Makes up to four requests, each bounded by `timeout_s`.
    """
    with _client(ep, timeout_s, "health") as client:
        live = bool(client.is_server_live(client_timeout=timeout_s))
        ready = bool(client.is_server_ready(client_timeout=timeout_s))
        try:
            version = _server_version(client.get_server_metadata(as_json=True, client_timeout=timeout_s))
        except InferenceServerException:
            version = None
    if ready:
        return Health(live=live, ready=True, version=version, error=None)
    # Triton's readiness answer carries no reason; its repository index holds the why.
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
    ep: TritonEndpoint,
    name: str,
    *,
    config_json: str | None = None,
    files: Mapping[str, bytes] | None = None,
    timeout_s: float = LOAD_TIMEOUT_S,
) -> None:
    """Load (or reload) `name` from the pod's repository, optionally overriding its config with JSON.

    `files` replaces the model's folder for this load: keys are paths in the folder prefixed with
    `file:` (e.g. `file:1/model.py`), values the file contents. Triton then needs the config as
    well, so `files` requires `config_json`; the model need not exist in the repository.

    Raises TritonLoadError with Triton's reason when the load fails, TritonTimeout when Triton did
    not answer within `timeout_s` (the load may still finish), TritonUnreachable when the pod is down.
    """
    if files is not None:
        if config_json is None:
            raise ValueError("load_model: files= needs config_json= (Triton loads overrides with a config)")
        bad = [key for key in files if not key.startswith("file:") or key == "file:"]
        if bad:
            raise ValueError(f"load_model: files= keys must be 'file:<path in model folder>', got {bad!r}")
    try:
        with _client(ep, timeout_s, "load") as client:
            client.load_model(
                name,
                config=config_json,
                files=dict(files) if files is not None else None,
                client_timeout=timeout_s,
            )
    except (TritonUnreachable, TritonLoadError):
        raise
    except TritonError as exc:
        raise TritonLoadError(exc.message, endpoint=exc.endpoint, status=exc.status) from None


def unload_model(ep: TritonEndpoint, name: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Ask the pod to unload `name`; unloading a model Triton does not know is not an error."""
    with _client(ep, timeout_s, "unload") as client:
        client.unload_model(name, client_timeout=timeout_s)


def model_ready(
    ep: TritonEndpoint, name: str, version: str | int | None = None, *, timeout_s: float = PROBE_TIMEOUT_S
) -> bool:
    """Whether `name` (or one `version` of it) is loaded and ready to serve on this pod."""
    with _client(ep, timeout_s, "model_ready") as client:
        return bool(
            client.is_model_ready(name, "" if version is None else str(version), client_timeout=timeout_s)
        )


def model_config(
    ep: TritonEndpoint, name: str, version: str | int = "", *, timeout_s: float = PROBE_TIMEOUT_S
) -> dict[str, Any]:
    """The config Triton serves `name` (or one `version` of it) with, as Triton's JSON form.

    Field names are the protobuf ones (`max_batch_size`, `instance_group`); as in any protobuf JSON,
    int64 fields come as strings (`"dims": ["1"]`). Raises TritonError for a model Triton does not
    serve (unknown, or not loaded).
    """
    with _client(ep, timeout_s, "model_config") as client:
        answer = client.get_model_config(name, str(version), as_json=True, client_timeout=timeout_s)
    config = answer.get("config") if isinstance(answer, dict) else None
    if not isinstance(config, dict):
        raise _bad_answer("model config", answer, ep.grpc_url)
    return config
