"""The operator's own Prometheus metrics, served on their own port next to kopf's /healthz."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram, Info, start_http_server

from triton_operator import __version__

RECONCILES = Counter(
    "triton_operator_reconcile_total", "Reconciles run, by kind, step and result.", ["kind", "step", "result"]
)
RECONCILE_SECONDS = Histogram(
    "triton_operator_reconcile_duration_seconds",
    "Time spent per reconcile step.",
    ["kind", "step"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_ERRORS = Counter(
    "triton_operator_reconcile_errors_total",
    "Reconcile steps that failed, by kind, step and error.",
    ["kind", "step", "error"],
)
# Always present while an operator is scraped: the operator-down alert fires on its absence.
BUILD_INFO = Info("triton_operator_build", "The running triton-operator's version.")
BUILD_INFO.info({"version": __version__})
STATUS_WRITES = Counter("triton_operator_status_writes_total", "Status patches written, by kind.", ["kind"])


@contextmanager
def measured(kind: str, step: str) -> Iterator[None]:
    """Count and time one reconcile step; errors are counted by exception type and re-raised."""
    start = time.perf_counter()
    try:
        yield
    except Exception as exc:
        RECONCILES.labels(kind, step, "error").inc()
        RECONCILE_ERRORS.labels(kind, step, type(exc).__name__).inc()
        raise
    else:
        RECONCILES.labels(kind, step, "ok").inc()
    finally:
        RECONCILE_SECONDS.labels(kind, step).observe(time.perf_counter() - start)


def start_server(address: str, port: int, start: Callable[..., object] = start_http_server) -> None:
    start(port, addr=address)
