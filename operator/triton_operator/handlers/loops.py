"""Per-object status loops: wake every period or when poked, stop promptly when told."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Protocol

STOP_CHECK_S = 0.5
# Lets a kopf daemon notice `stopped` and return before kopf cancels it: a cancelled thread keeps
# running and kopf would hold the object's finalizer (and its deletion) until the cancellation timeout.
CANCELLATION_BACKOFF_S = 2 * STOP_CHECK_S + 0.5

log = logging.getLogger(__name__)


class StopFlag(Protocol):
    def __bool__(self) -> bool: ...


def sleep_until_poked(poke: threading.Event, stopped: StopFlag, period_s: float) -> None:
    """Wait up to period_s for a poke, noticing a stop request within STOP_CHECK_S."""
    deadline = time.monotonic() + period_s
    while not stopped and (left := deadline - time.monotonic()) > 0:
        if poke.wait(min(left, STOP_CHECK_S)):
            return


class _Forgotten:
    """Truthy once the loop's object is no longer tracked (deleted) or the loops are shut down."""

    def __init__(self, loops: ObjectLoops, key: Hashable):
        self.loops, self.key = loops, key

    def __bool__(self) -> bool:
        return self.loops.stopping.is_set() or self.key not in self.loops.bodies


class ObjectLoops:
    """One thread per tracked object calling `refresh(body)` with its latest body.

    Unlike a kopf daemon this needs no finalizer on the object: deleting it never waits for the
    operator (kopf daemons always add one), and the loop ends when the object is forgotten.
    """

    def __init__(self, refresh: Callable[[Mapping[str, Any]], None], period_s: float, name: str):
        self.refresh = refresh
        self.period_s = period_s
        self.name = name
        self.bodies: dict[Hashable, Mapping[str, Any]] = {}
        self.pokes: dict[Hashable, threading.Event] = {}
        self.threads: dict[Hashable, threading.Thread] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def track(self, key: Hashable, body: Mapping[str, Any]) -> None:
        """Remember the object's latest body; start its loop if it has none."""
        with self.lock:
            self.bodies[key] = body
            self.pokes.setdefault(key, threading.Event())
            thread = self.threads.get(key)
            if thread is None or not thread.is_alive():
                # In a copy of the caller's (a kopf handler's) context: kopf.event() finds kopf's event
                # queue through context variables, which a plain new thread would not have.
                context = contextvars.copy_context()
                thread = threading.Thread(
                    target=context.run, args=(self._run, key), name=f"{self.name}-{key}", daemon=True
                )
                self.threads[key] = thread
                thread.start()

    def forget(self, key: Hashable) -> None:
        with self.lock:
            self.bodies.pop(key, None)
            poke = self.pokes.pop(key, None)
        if poke:
            poke.set()

    def poke(self, key: Hashable) -> None:
        poke = self.pokes.get(key)
        if poke:
            poke.set()

    def _run(self, key: Hashable) -> None:
        gone = _Forgotten(self, key)
        while not gone:
            poke = self.pokes.get(key)
            if poke is None:
                break
            sleep_until_poked(poke, gone, self.period_s)
            poke.clear()
            body = self.bodies.get(key)
            if body is None or self.stopping.is_set():
                break
            try:
                self.refresh(body)
            except Exception as exc:  # the loop must survive anything one pass does
                log.warning(f"{self.name} {key}: refresh failed, retrying next period: {exc}")
        with self.lock:
            if self.threads.get(key) is threading.current_thread():
                del self.threads[key]
