"""Run the operator: kopf with this project's handlers, settings, liveness and metrics endpoints."""

from __future__ import annotations

from collections.abc import Sequence

import kopf

from triton_operator import handlers, opmetrics


def run_operator(namespaces: Sequence[str] | None, health_address: str, health_port: int) -> int:
    """Block until the operator is told to stop (SIGTERM/SIGINT); returns the exit status."""
    # kopf's CLI sets up logging itself; embedded, it is ours to do (INFO, kopf's format with object refs).
    kopf.configure(verbose=False, log_format=kopf.LogFormat.FULL)
    handlers.register()
    opmetrics.start_server(health_address, health_port + 1)
    kopf.run(
        clusterwide=not namespaces,
        namespaces=list(namespaces or []),
        liveness_endpoint=f"http://{health_address}:{health_port}/healthz",
        # One active operator: peering needs its CRD installed, so it is opt-in (see handlers.configure).
        standalone=True,
    )
    return 0
