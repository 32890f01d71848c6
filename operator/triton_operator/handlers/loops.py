"""Per-object reconcile loops on one bounded pool of threads, for every kind.

Each tracked object is refreshed every `period_s` of its kind, or at once when poked (its spec
changed, one of its pods changed, ...). At most one pass per object runs at a time, and at most
`workers` passes run at once over all objects: 1,000 objects cost the same threads as 10 (a pool
and one scheduler thread), and an object waiting for its turn never blocks any other object's
handlers, finalizers or deletion (kopf's own executor stays free for them).

No finalizer is needed for a loop (unlike a kopf daemon): forgetting an object ends its loop.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from triton_operator.logrefs import about

log = logging.getLogger(__name__)

Body = Mapping[str, Any]
# One pass over an object: its latest body and a callable that turns True once the pass should give up
# early (the object was forgotten or the operator is stopping). It may return the object as it wrote it
# (the status patch's answer), so the next pass compares against what is really there.
Refresh = Callable[[Body, Callable[[], bool]], Body | None]
LoopKey = tuple[str, Hashable]  # (kind, the object's key)


@dataclass(frozen=True)
class LoopKind:
    refresh: Refresh
    period_s: float


@dataclass(eq=False)
class _Entry:
    body: Body
    # The context of the kopf handler that first tracked the object: a pass runs in a copy of it, so
    # kopf's context variables are there as in the handler (a pool thread would have none).
    context: contextvars.Context
    due: float = 0.0
    queued: bool = False  # handed to the pool (waiting for a thread or running)
    started: bool = False  # running now
    again: bool = False  # poked while running: run once more right after
    passes: int = 0


def _newer(candidate: Body | None, current: Body) -> bool:
    """Whether `candidate` is a later state of the object than `current` (by resourceVersion)."""
    if candidate is None:
        return False
    try:
        return int(candidate["metadata"]["resourceVersion"]) > int(current["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return False  # not comparable (no resourceVersion): keep what came last


def _named(loop_key: LoopKey) -> str:
    """`Kind namespace/name`, as every log line names an object (logrefs)."""
    kind, key = loop_key
    if isinstance(key, tuple) and len(key) == 2:
        return f"{kind} {key[0]}/{key[1]}"
    return f"{kind} {key}"


def _pass_about(
    loop_key: LoopKey, refresh: Refresh, body: Body, should_stop: Callable[[], bool]
) -> Body | None:
    """One pass with its log lines naming the object (logrefs)."""
    meta = body.get("metadata") or {}
    with about(loop_key[0], str(meta.get("namespace") or ""), str(meta.get("name") or "")):
        return refresh(body, should_stop)


def spec_or_commands_changed(old: Body, new: Body) -> bool:
    """Whether a new body asks for a pass now: a new generation (spec) or changed annotations."""
    old_meta, new_meta = old.get("metadata") or {}, new.get("metadata") or {}
    return bool(
        old_meta.get("generation") != new_meta.get("generation")
        or (old_meta.get("annotations") or {}) != (new_meta.get("annotations") or {})
    )


@dataclass
class ObjectLoops:
    """The scheduler: a heap of due times, one thread popping it, a pool running the passes."""

    workers: int
    name: str = "loops"
    kinds: dict[str, LoopKind] = field(default_factory=dict)
    entries: dict[LoopKey, _Entry] = field(default_factory=dict)
    _heap: list[tuple[float, int, LoopKey]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _stopping: bool = False
    _pool: ThreadPoolExecutor | None = None
    _scheduler: threading.Thread | None = None

    def register(self, kind: str, refresh: Refresh, period_s: float) -> None:
        self.kinds[kind] = LoopKind(refresh, period_s)

    # -- what handlers call ---------------------------------------------------------------------------
    def track(self, kind: str, key: Hashable, body: Body) -> bool:
        """Remember the object's latest body; a new object, spec or annotations get a pass at once.

        True when it did (the object is new or asks for something new), False for status-only news.
        """
        with self._cond:
            if self._stopping:
                return False
            entry = self.entries.get((kind, key))
            if entry is None:
                entry = _Entry(body=body, context=contextvars.copy_context())
                self.entries[(kind, key)] = entry
                self._schedule((kind, key), entry, time.monotonic())
                self._start()
                return True
            changed = spec_or_commands_changed(entry.body, body)
            if not _newer(entry.body, body):  # an event older than our own last write is dropped
                entry.body = body
            if changed:
                self._poke(kind, key, entry)
            return changed

    def poke(self, kind: str, key: Hashable) -> None:
        """Run a pass of the object as soon as a worker is free (or right after its running pass)."""
        with self._cond:
            entry = self.entries.get((kind, key))
            if entry is not None:
                self._poke(kind, key, entry)

    def forget(self, kind: str, key: Hashable) -> None:
        """Stop the object's loop (a running pass sees `should_stop()` turn True)."""
        with self._cond:
            self.entries.pop((kind, key), None)

    def tracked(self, kind: str) -> list[Hashable]:
        with self._cond:
            return [key for k, key in self.entries if k == kind]

    def stop(self, wait: bool = False) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)

    # -- inside (call with self._cond held) ---------------------------------------------------------
    def _start(self) -> None:
        if self._scheduler is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=self.name)
            self._scheduler = threading.Thread(target=self._run_scheduler, name=f"{self.name}-scheduler")
            self._scheduler.daemon = True
            self._scheduler.start()

    def _schedule(self, loop_key: LoopKey, entry: _Entry, due: float) -> None:
        entry.due = due
        heapq.heappush(self._heap, (due, next(self._seq), loop_key))
        self._cond.notify()

    def _poke(self, kind: str, key: Hashable, entry: _Entry) -> None:
        if entry.started:
            entry.again = True
        elif not entry.queued:  # a queued pass will read the latest body anyway
            self._schedule((kind, key), entry, time.monotonic())

    # -- the scheduler thread and the passes ----------------------------------------------------------
    def _run_scheduler(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopping:
                    return
                due, _, loop_key = heapq.heappop(self._heap)
                entry = self.entries.get(loop_key)
                if entry is None or entry.due != due or entry.queued:
                    continue  # forgotten, rescheduled since, or already queued
                entry.queued = True
            assert self._pool is not None
            try:
                self._pool.submit(self._pass, loop_key, entry)
            except RuntimeError:  # the pool was shut down: the operator is stopping
                return

    def _pass(self, loop_key: LoopKey, entry: _Entry) -> None:
        kind = self.kinds[loop_key[0]]
        with self._cond:
            if self._stopping or self.entries.get(loop_key) is not entry:
                return
            entry.started = True
            body = entry.body

        def should_stop() -> bool:
            return self._stopping or self.entries.get(loop_key) is not entry

        written: Body | None = None
        try:
            written = entry.context.copy().run(_pass_about, loop_key, kind.refresh, body, should_stop)
        except Exception as exc:  # the loop must survive anything one pass does
            log.warning(f"{_named(loop_key)}: pass failed, retrying next period: {exc}")
        with self._cond:
            entry.queued = entry.started = False
            entry.passes += 1
            if written is not None and entry.body is body and _newer(written, body):
                entry.body = written
            if self.entries.get(loop_key) is entry and not self._stopping:
                delay = 0.0 if entry.again else kind.period_s
                entry.again = False
                self._schedule(loop_key, entry, time.monotonic() + delay)
