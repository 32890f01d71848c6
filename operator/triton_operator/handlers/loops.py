"""The waiting part of the per-object status loops (kopf daemons run in threads)."""

from __future__ import annotations

import threading
import time

import kopf

STOP_CHECK_S = 0.5
# Lets a loop notice `stopped` and return before kopf cancels it: a cancelled thread keeps running
# and kopf would hold the object's finalizer (and its deletion) until the cancellation timeout.
CANCELLATION_BACKOFF_S = 2 * STOP_CHECK_S + 0.5


def sleep_until_poked(poke: threading.Event, stopped: kopf.DaemonStopped, period_s: float) -> None:
    """Wait up to period_s for a poke, noticing a stop request within STOP_CHECK_S."""
    deadline = time.monotonic() + period_s
    while not stopped and (left := deadline - time.monotonic()) > 0:
        if poke.wait(min(left, STOP_CHECK_S)):
            return
