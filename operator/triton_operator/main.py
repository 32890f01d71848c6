"""Run the operator: kopf with this project's handlers, settings, liveness and metrics endpoints."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kopf

from triton_operator import election, handlers, opmetrics
from triton_operator.handlers.loops import ObjectLoops
from triton_operator.kube.rest import new_api_client
from triton_operator.logrefs import ObjectNames

log = logging.getLogger(__name__)

# Event handlers that only feed the loops run on every watch event (every status write of every object):
# kopf's "succeeded" line for each would be most of the log at scale.
QUIET_HANDLERS = ("track_model", "track_server", "child_changed", "staging_changed")


class _QuietEventHandlers(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.endswith("succeeded.") and any(f"Handler '{h}'" in message for h in QUIET_HANDLERS)
        )


LOG_FORMATS = ("text", "json")


def configure_logging(log_format: str = "text") -> None:
    """INFO and up on stderr, in kopf's full text format or as JSON lines; each line about an object
    names it (logrefs); no line per health probe (aiohttp's access log: a kubelet probes every few
    seconds, tens of thousands of lines a day that say nothing)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    json_lines = log_format == "json"
    # kopf's CLI sets up logging itself; embedded, it is ours to do. Its own object prefix ([ns/name])
    # is off: ObjectNames writes `Kind namespace/name: ` on every line about an object, kopf's or ours.
    kopf.configure(
        verbose=False,
        log_format=kopf.LogFormat.JSON if json_lines else kopf.LogFormat.FULL,
        log_prefix=False,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(ObjectNames(json=json_lines))
    logging.getLogger("kopf.objects").addFilter(_QuietEventHandlers())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


@dataclass(frozen=True)
class LeaderElection:
    """Only the holder of this Lease acts; the other replicas wait as standbys (see election.py)."""

    namespace: str
    lease_name: str
    timings: election.Timings


def run_operator(
    namespaces: Sequence[str] | None,
    health_address: str,
    health_port: int,
    leader_election: LeaderElection | None = None,
    models_gate: bool = True,
    log_format: str = "text",
) -> int:
    """Block until the operator is told to stop (SIGTERM/SIGINT); returns the exit status.

    `models_gate`: render and open the Triton pods' models-loaded readiness gate (its RBAC is granted).
    `log_format`: "text" (kopf's full format) or "json" (one JSON object a line, kopf's JSON format)."""
    configure_logging(log_format)
    handlers.register()
    opmetrics.start_server(health_address, health_port + 1)
    run: dict[str, Any] = {
        "clusterwide": not namespaces,
        "namespaces": list(namespaces or []),
        "liveness_endpoint": f"http://{health_address}:{health_port}/healthz",
        # kopf's own peering stays off: replicas elect the one that acts with a Lease (--leader-election).
        "standalone": True,
    }
    memo = kopf.Memo(models_gate=models_gate)  # handlers/settings.configure reads it
    if leader_election is None:
        kopf.run(**run, memo=memo)
        return 0
    return _run_elected(run, memo, leader_election, health_address, health_port)


def _run_elected(
    run: dict[str, Any], memo: kopf.Memo, settings: LeaderElection, health_address: str, health_port: int
) -> int:
    """kopf runs only once this process holds the Lease, and the Lease is handed over once it stopped."""
    elector = election.new_elector(
        new_api_client(), settings.namespace, settings.lease_name, settings.timings
    )
    with _standby_health(health_address, health_port), _stop_on_signals() as stop:
        if not elector.acquire(stop):
            log.info(f"stopped while waiting for lease {elector.ref}")
            return 0
    # A signal before kopf's own handlers are in place now ends the process: the lease then expires
    # after its duration, as after a crash.
    elector.start_renewing()  # from here on, a renewal overdue by the deadline ends the process
    try:
        kopf.run(**run, memo=memo)
    finally:
        # kopf's cleanup only told the loops to stop: passes still running would act after the
        # handover. Wait for them (each checks should_stop; the kubelet's grace period bounds it),
        # keeping the lease renewed meanwhile, then hand it over.
        loops: ObjectLoops | None = memo.get("loops")
        if loops is not None:
            loops.stop(wait=True)
        elector.stop_renewing()
        elector.release()
    return 0


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event SIGTERM/SIGINT set while waiting: a standby exits 0 at once (it holds nothing)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _StandbyHealth(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        # 200 for liveness (a standby must not be restarted) and readiness (a RollingUpdate moves on
        # only once the new pod is ready, and the old one releases the lease only once it is stopped).
        found = self.path.split("?")[0] == "/healthz"
        body = b'{"standby": true}\n' if found else b"not found\n"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json" if found else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None  # a probe every few seconds is no news


@contextlib.contextmanager
def _standby_health(address: str, port: int) -> Iterator[None]:
    """/healthz on the health port while waiting; the port is free again for kopf's endpoint after."""
    server = ThreadingHTTPServer((address, port), _StandbyHealth)
    thread = threading.Thread(target=server.serve_forever, name="standby-health", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
