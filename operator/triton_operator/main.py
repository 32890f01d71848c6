"""Run the operator: kopf with this project's handlers, settings, liveness and metrics endpoints."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import kopf

from triton_operator import handlers, opmetrics

# Event handlers that only feed the loops run on every watch event (every status write of every object):
# kopf's "succeeded" line for each would be most of the log at scale.
QUIET_HANDLERS = ("track_model", "track_server", "child_changed", "staging_changed")


class _QuietEventHandlers(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.endswith("succeeded.") and any(f"Handler '{h}'" in message for h in QUIET_HANDLERS)
        )


def run_operator(namespaces: Sequence[str] | None, health_address: str, health_port: int) -> int:
    """Block until the operator is told to stop (SIGTERM/SIGINT); returns the exit status."""
    # kopf's CLI sets up logging itself; embedded, it is ours to do (INFO, kopf's format with object refs).
    kopf.configure(verbose=False, log_format=kopf.LogFormat.FULL)
    logging.getLogger("kopf.objects").addFilter(_QuietEventHandlers())
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
