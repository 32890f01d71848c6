"""Staging Jobs and their pods as the watch last showed them, so waiting on staging costs no reads.

kopf watches both kinds already (to wake a model when its Job changes); every event lands here. A
model's pass reads from here and asks the API only for what no event has shown yet (after a restart,
before the watch has listed it). Entries older than `max_age_s` are read again: a watch that broke
and re-listed never reports what was deleted in between, so nothing stale outlives that bound.

Both stores are the passes' one cache mechanism (cache.SharedReads): a read that raced an event is
returned to its caller but not kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from triton_operator.reconcile.cache import SharedReads
from triton_operator.render.labels import JOB_NAME_LABEL

Obj = dict[str, Any]
MAX_AGE_S = 300.0  # kopf's watch timeout: every watch re-lists at least this often


class WatchedStaging:
    def __init__(self, max_age_s: float = MAX_AGE_S, clock: Callable[[], float] = time.monotonic) -> None:
        # (namespace, job name) -> the Job, or None once deleted.
        self._jobs: SharedReads[Obj | None] = SharedReads(max_age_s, clock)
        # (namespace, job name) -> {pod name: pod}; present once listed.
        self._pods: SharedReads[dict[str, Obj]] = SharedReads(max_age_s, clock)

    # -- fed by watch events --------------------------------------------------------------------------
    def saw_job(self, event_type: str | None, job: Mapping[str, Any]) -> None:
        meta = job["metadata"]
        self._jobs.put((meta["namespace"], meta["name"]), None if event_type == "DELETED" else dict(job))

    def saw_pod(self, event_type: str | None, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        job = (meta.get("labels") or {}).get(JOB_NAME_LABEL)
        if not job:
            return

        def changed(pods: dict[str, Obj]) -> dict[str, Obj]:
            pods = dict(pods)
            if event_type == "DELETED":
                pods.pop(meta["name"], None)
            else:
                pods[meta["name"]] = dict(pod)
            return pods

        # Never listed: nothing to update (the next read lists them all), but a listing in flight is stale.
        self._pods.update((meta["namespace"], job), changed)

    def deleted_job(self, namespace: str, name: str) -> None:
        """The operator deleted it itself: known gone without waiting for the event."""
        self._jobs.put((namespace, name), None)

    # -- read by passes -------------------------------------------------------------------------------
    def job(self, namespace: str, name: str, read: Callable[[], Obj | None]) -> Obj | None:
        return self._jobs.get((namespace, name), read)

    def pods(self, namespace: str, job: str, read: Callable[[], list[Obj]]) -> list[Obj]:
        def listed() -> dict[str, Obj]:
            return {p["metadata"]["name"]: p for p in read()}

        return list(self._pods.get((namespace, job), listed).values())
