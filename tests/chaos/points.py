"""Kill points: predicates on the observed state of one namespace (its model, server, staging Jobs and
server Deployment), polled until one holds."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.conftest import Sandbox

GROUP, VERSION = "tritonoperator.dev", "v1alpha1"
STAGING_SELECTOR = "app.kubernetes.io/component=staging"


@dataclass
class Observed:
    model: dict[str, Any] | None
    server: dict[str, Any] | None
    jobs: list[Any] = field(default_factory=list)
    deployment: Any = None
    at: float = 0.0  # time.time()

    @property
    def mstatus(self) -> dict[str, Any]:
        return dict((self.model or {}).get("status") or {})

    @property
    def rollout(self) -> dict[str, Any]:
        return dict(self.mstatus.get("rollout") or {})

    def condition(self, ctype: str) -> dict[str, Any]:
        return next((c for c in self.mstatus.get("conditions") or [] if c.get("type") == ctype), {})


def _get(api: client.CustomObjectsApi, ns: str, plural: str, name: str) -> dict[str, Any] | None:
    try:
        obj = cast(dict[str, Any], api.get_namespaced_custom_object(GROUP, VERSION, ns, plural, name))
        return obj
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def observe(sb: Sandbox, ns: str, model: str, server: str = "triton") -> Observed:
    custom = client.CustomObjectsApi(sb.api)
    obs = Observed(_get(custom, ns, "tritonmodels", model), _get(custom, ns, "tritonservers", server))
    obs.jobs = (
        client.BatchV1Api(sb.api)
        .list_namespaced_job(ns, label_selector=STAGING_SELECTOR, _request_timeout=5)
        .items
    )
    with contextlib.suppress(ApiException):
        obs.deployment = client.AppsV1Api(sb.api).read_namespaced_deployment(server, ns, _request_timeout=5)
    obs.at = time.time()
    return obs


def _active_jobs(o: Observed) -> list[Any]:
    return [
        j for j in o.jobs if not (j.status.succeeded or j.status.failed) and not j.metadata.deletion_timestamp
    ]


def _step_age(o: Observed) -> float:
    started = o.rollout.get("stepStartedAt")
    if not started:
        return -1.0
    return o.at - datetime.fromisoformat(str(started)).astimezone(UTC).timestamp()


def _progressing(o: Observed, canary: str) -> bool:
    return o.rollout.get("phase") == "Progressing" and str(o.rollout.get("canaryVersion")) == canary


def job_created(o: Observed) -> bool:
    return bool(_active_jobs(o))


def job_running(o: Observed) -> bool:
    return any((j.status.active or 0) >= 1 for j in _active_jobs(o))


def job_done_unrecorded(o: Observed) -> bool:
    done = {j.metadata.name for j in o.jobs if j.status.succeeded}
    return bool(done) and (not o.mstatus.get("stagedDigest") or o.mstatus.get("stagingJob") not in done)


def between_replicas(o: Observed) -> bool:
    return o.condition("Staged").get("status") == "True" and o.mstatus.get("loaded") in ("0/2", "1/2")


def step_started(o: Observed) -> bool:
    return _progressing(o, "2") and 0 <= _step_age(o) < 1.5


def step_holding(o: Observed) -> bool:
    return _progressing(o, "2") and _step_age(o) >= 2.0


def last_step(o: Observed, steps: int = 2) -> bool:
    return _progressing(o, "2") and o.rollout.get("stepIndex") == steps - 1


def promoted(o: Observed) -> bool:
    return o.rollout.get("phase") == "Promoted" and str(o.rollout.get("stableVersion")) == "2"


def canary_failing(o: Observed) -> bool:
    return _progressing(o, "2")


def rolled_back(o: Observed) -> bool:
    return o.rollout.get("phase") == "RolledBack"


def pods_rolling(o: Observed) -> bool:
    d = o.deployment
    if d is None or d.status is None:
        return False
    want = d.spec.replicas or 0
    st = d.status
    return (
        (st.observed_generation or 0) < (d.metadata.generation or 0)
        or (st.updated_replicas or 0) < want
        or (st.replicas or 0) > want
    )


def finalizer_pending(o: Observed) -> bool:
    return bool(o.model and o.model["metadata"].get("deletionTimestamp"))


def server_deleting(o: Observed) -> bool:
    return o.server is None or bool(o.server["metadata"].get("deletionTimestamp"))


POINTS: dict[tuple[str, str], Callable[[Observed], bool]] = {
    ("staging", "job-created"): job_created,
    ("staging", "job-running"): job_running,
    ("staging", "job-done-unrecorded"): job_done_unrecorded,
    ("loading", "between-replicas"): between_replicas,
    ("rollout", "step-started"): step_started,
    ("rollout", "step-holding"): step_holding,
    ("rollout", "last-step"): last_step,
    ("rollout", "promoted"): promoted,
    ("rollback", "canary-failing"): canary_failing,
    ("rollback", "rolled-back"): rolled_back,
    ("server-spec", "pods-rolling"): pods_rolling,
    ("delete-model", "finalizer-pending"): finalizer_pending,
    ("delete-server", "server-deleting"): server_deleting,
}


def _ready(o: Observed) -> bool:
    return o.condition("Ready").get("status") == "True" and o.mstatus.get("loaded") == "2/2"


# The scenario's end, fault-free: once it holds, every kill point of the scenario has passed.
PASSED: dict[str, Callable[[Observed], bool]] = {
    "staging": _ready,
    "loading": _ready,
    "rollout": lambda o: promoted(o) and _ready(o),
    "rollback": lambda o: rolled_back(o) and o.condition("Ready").get("reason") == "RolledBack",
    # Not before the operator updated the Deployment, which this cannot tell: a roll takes long enough
    # (new pods start Triton and load the model) never to pass between two looks.
    "server-spec": lambda o: False,
    "delete-model": lambda o: o.model is None,
    "delete-server": lambda o: o.server is None,
}


def wait_point(
    sb: Sandbox, ns: str, model: str, scenario: str, point: str, timeout_s: float = 120
) -> tuple[bool, Observed | None]:
    """Poll (every 0.2 s, bounded) until the point holds: (True, what was seen); (False, the last
    state) when the scenario ended without it (it passed between two looks) or within `timeout_s`."""
    check = POINTS[(scenario, point)]
    deadline = time.monotonic() + timeout_s
    last: Observed | None = None
    while time.monotonic() < deadline:
        try:
            last = observe(sb, ns, model)
        except Exception:  # a slow apiserver is no reason to stop looking
            time.sleep(0.2)
            continue
        if check(last):
            return True, last
        if PASSED[scenario](last):
            return False, last
        time.sleep(0.2)
    return False, last
