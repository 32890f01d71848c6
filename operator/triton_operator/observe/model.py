"""What a TritonModel's server pods and Triton say: facts, conditions and status entries (its staging
is observe/staging.py's).

Pure: takes objects as the API returned them and Triton's answers as the operator read them; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from triton_operator.api.common import ConditionStatus
from triton_operator.api.tritonmodel import ModelConditionType, ReplicaState
from triton_operator.conditions import DecidedCondition, Reason, with_kstatus
from triton_operator.observe.copies import CopyFacts
from triton_operator.observe.metrics import Scrape
from triton_operator.observe.rollout import TrafficOutcome
from triton_operator.observe.staging import CAMEL_CASE, StagingOutcome
from triton_operator.triton.client import ModelState
from triton_operator.triton.metrics import ModelRates, aggregate, model_rates

Obj = Mapping[str, Any]
REPOSITORY_PVC = "PVC"
REPOSITORY_OWN_COPY = "OwnCopy"


@dataclass(frozen=True)
class FilesAt:
    """Where one pod reads its models: its node, the PVC or its own copy, and what that copy holds."""

    node: str | None = None
    repository: str | None = None
    copy_digest: str | None = None
    copy_current: bool | None = None

    def entry(self) -> dict[str, Any]:
        """Its status.replicas[] fields."""
        out: dict[str, Any] = {}
        if self.node:
            out["node"] = self.node
        if self.repository:
            out["repository"] = self.repository
        if self.copy_digest:
            out["copyDigest"] = self.copy_digest
        if self.copy_current is not None:
            out["copyCurrent"] = self.copy_current
        return out


@dataclass(frozen=True)
class ReplicaFacts:
    """The model on one server pod, as Triton's repository index and the operator's loads say."""

    pod: str
    ip: str | None
    pod_ready: bool
    state: ReplicaState
    reason: str | None = None
    # Loaded from the files of the latest staging (not an older one still serving after a re-stage).
    current: bool = False
    # Triton refused to load the latest files here (its words).
    load_error: str | None = None
    # The pod takes traffic (Ready: its models-loaded gate is open too). Loaded into a pod that does
    # not yet, the model is not served through the Service: not counted loaded until it does.
    in_service: bool = True
    where: FilesAt = FilesAt()
    # Layout PerReplica: the pod's copy as judged for a load (fresh), when one was wanted.
    copy: CopyFacts | None = None

    def entry(self) -> dict[str, Any]:
        """status.replicas[] entry."""
        out: dict[str, Any] = {"pod": self.pod, "state": str(self.state)}
        if self.ip:
            out["ip"] = self.ip
        out |= self.where.entry()
        reason = self.load_error or self.reason
        if reason:
            out["reason"] = reason[:4096]
        return out


def ready_versions(index: Sequence[ModelState], target: str) -> set[str]:
    """The versions of `target` a pod's repository index lists READY."""
    return {row.version for row in index if row.name == target and row.state == "READY" and row.version}


def replica_state(rows: Sequence[ModelState], model: str, version: int) -> tuple[ReplicaState, str | None]:
    """The model's state at `version` in one pod's repository index (PENDING when never loaded)."""
    mine = [r for r in rows if r.name == model]
    exact = next((r for r in mine if r.version == str(version)), None)
    row = exact or next((r for r in mine if r.state), None)
    if row is None or row.state is None:
        return ReplicaState.PENDING, None
    if exact is None and row.state == "READY":
        # Another version is loaded; the wanted one is not (yet).
        return ReplicaState.PENDING, f"version {row.version} is loaded, not {version}"
    try:
        state = ReplicaState(row.state)
    except ValueError:
        return ReplicaState.UNAVAILABLE, f"{row.state}: {row.reason or ''}".strip(": ")
    if state == ReplicaState.UNAVAILABLE and row.reason == "unloaded":
        return ReplicaState.UNLOADED, row.reason
    return state, row.reason


# How long a new model waits for a missing server before that is Degraded (a GitOps sync applies both,
# often the model first: Argo CD showed every fresh quickstart Degraded for a moment otherwise).
SERVER_GRACE_S = 15.0


@dataclass(frozen=True)
class ObservedModel:
    """The facts `model_conditions` decides from."""

    server: str
    namespace: str
    version: int
    server_found: bool = True
    # The model was created less than SERVER_GRACE_S ago: a missing server may still be on its way (one
    # GitOps sync applies the model and its server in some order).
    young: bool = False
    # Why the server cannot take the model (its spec is invalid), None when it can.
    server_problem: str | None = None
    # The staging Job the spec asks for, and the last one that completed (None: never staged).
    wanted_job: str = ""
    staged_job: str | None = None
    staged_version: int | None = None
    # Where the wanted Job stands when it has not completed yet.
    staging: StagingOutcome | None = None
    replicas: tuple[ReplicaFacts, ...] = ()
    # The server's spec.replicas: fewer pods than that (not started or not ready yet, or not seen yet
    # by this pass) are replicas the model is not serving on, whatever the ready ones say.
    wanted_replicas: int = 0

    @property
    def ready_replicas(self) -> list[ReplicaFacts]:
        return [r for r in self.replicas if r.pod_ready]

    @property
    def loaded_replicas(self) -> list[ReplicaFacts]:
        return [
            r for r in self.ready_replicas if r.state == ReplicaState.READY and r.current and r.in_service
        ]


def loaded_fraction(observed: ObservedModel) -> str:
    """status.loaded: replicas serving the latest staged files / ready server replicas."""
    return f"{len(observed.loaded_replicas)}/{len(observed.ready_replicas)}"


def _cond(ctype: ModelConditionType, ok: bool, reason: str, message: str) -> DecidedCondition:
    # Reasons copied from a termination message are checked: a condition's reason must be CamelCase.
    safe = reason if CAMEL_CASE.match(reason) else str(Reason.STAGING_FAILED)
    return DecidedCondition(ctype, ConditionStatus.TRUE if ok else ConditionStatus.FALSE, safe, message)


def _pods_text(replicas: Sequence[ReplicaFacts]) -> str:
    first = replicas[0]
    more = f" (and {len(replicas) - 1} more)" if len(replicas) > 1 else ""
    return f"pod {first.pod}{more}"


def _staged(observed: ObservedModel) -> tuple[bool, str, str]:
    if observed.staged_job is not None and observed.staged_job == observed.wanted_job:
        return True, Reason.STAGED, f"Version {observed.version} staged by Job {observed.staged_job}."
    staging = observed.staging
    if staging is not None and staging.phase in ("failed", "blocked"):
        return False, staging.reason, staging.message
    return False, Reason.STAGING, f"Job {observed.wanted_job} is staging version {observed.version}."


def _loaded(observed: ObservedModel) -> tuple[bool, str, str]:
    if observed.staged_job is None:
        return False, Reason.STAGING, "Nothing staged yet."
    ready = observed.ready_replicas
    if observed.server_problem is not None:
        return False, Reason.SERVER_NOT_READY, observed.server_problem
    if not ready:
        # Waiting, not a problem of the model's own: when the server is stuck, its Ready and Degraded say
        # why (and warn); a starting server is the normal first seconds of every fresh deploy.
        return (
            False,
            Reason.WAITING_FOR_REPLICAS,
            f"TritonServer {observed.server} has no ready replicas to load the model on yet "
            "(its Ready condition says why).",
        )
    failed = [r for r in ready if r.load_error]
    if failed:
        return False, Reason.LOAD_FAILED, f"{_pods_text(failed)}: Triton: {failed[0].load_error}"
    loaded = observed.loaded_replicas
    version = observed.staged_version
    if len(loaded) == len(ready) and len(loaded) < observed.wanted_replicas:
        return (
            False,
            Reason.WAITING_FOR_REPLICAS,
            f"Version {version} is ready on {len(loaded)} of the {observed.wanted_replicas} replicas "
            f"TritonServer {observed.server} wants; waiting for its other replicas to be ready.",
        )
    if len(loaded) == len(ready):
        return True, Reason.LOADED, f"Version {version} is ready on {len(loaded)}/{len(ready)} replicas."
    waiting = [r for r in ready if r not in loaded]
    detail = f": {waiting[0].reason}" if waiting[0].reason else ""
    return (
        False,
        Reason.LOADING,
        f"Version {version} is ready on {len(loaded)}/{len(ready)} replicas; "
        f"loading on {_pods_text(waiting)}{detail}.",
    )


def model_conditions(observed: ObservedModel) -> list[DecidedCondition]:
    """Ready, Staged, Loaded and Degraded of a TritonModel from observed facts."""
    ready_t, staged_t, loaded_t, degraded_t = (
        ModelConditionType.READY,
        ModelConditionType.STAGED,
        ModelConditionType.LOADED,
        ModelConditionType.DEGRADED,
    )
    if not observed.server_found and observed.young:
        message = (
            f"Waiting for TritonServer {observed.server!r} in namespace {observed.namespace!r} "
            f"(not found yet; after {SERVER_GRACE_S:.0f} s that is a problem)."
        )
        return [
            _cond(ready_t, False, Reason.WAITING_FOR_SERVER, message),
            _cond(staged_t, False, Reason.WAITING_FOR_SERVER, message),
            _cond(loaded_t, False, Reason.WAITING_FOR_SERVER, message),
            _cond(degraded_t, False, Reason.AS_EXPECTED, "No problems observed."),
        ]
    if not observed.server_found:
        message = (
            f"TritonServer {observed.server!r} not found in namespace {observed.namespace!r}: "
            "create it, or set spec.serverRef.name to an existing TritonServer."
        )
        return [
            _cond(ready_t, False, Reason.SERVER_NOT_FOUND, message),
            _cond(staged_t, False, Reason.SERVER_NOT_FOUND, message),
            _cond(loaded_t, False, Reason.SERVER_NOT_FOUND, message),
            _cond(degraded_t, True, Reason.SERVER_NOT_FOUND, message),
        ]
    staged = _staged(observed)
    loaded = _loaded(observed)
    problems = []
    if not staged[0] and staged[1] not in (Reason.STAGING,):
        problems.append(staged)
    if not loaded[0] and loaded[1] == Reason.LOAD_FAILED:
        problems.append(loaded)
    ready: tuple[bool, str, str]
    if staged[0] and loaded[0]:
        ready = (True, Reason.LOADED, loaded[2])
    elif problems:
        ready = problems[0]
    elif not staged[0]:
        ready = staged
    else:
        ready = loaded
    degraded: tuple[bool, str, str]
    if problems:
        degraded = (True, problems[0][1], " ".join(p[2] for p in problems))
    else:
        degraded = (False, Reason.AS_EXPECTED, "No problems observed.")
    if not staged[0] and observed.staged_job is not None and loaded[0]:
        # Still serving what was staged before: say so, so nobody thinks the model is down.
        suffix = f" Version {observed.staged_version} staged earlier keeps serving."
        ready = (ready[0], ready[1], ready[2] + suffix)
    return [
        _cond(ready_t, *ready),
        _cond(staged_t, *staged),
        _cond(loaded_t, *loaded),
        _cond(degraded_t, *degraded),
    ]


def model_stuck(observed: ObservedModel) -> bool:
    """Whether a TritonModel has a problem no retry ends, only a change to its spec or to an object it
    names (conditions.with_kstatus makes that Stalled=True, what kstatus reads as Failed): its server
    missing past SERVER_GRACE_S or with an invalid spec; a staging that failed (a failed staging Job stays
    failed until the spec changes: a source that does not exist, a digest mismatch, a config Triton
    refuses) or cannot start (its credentials Secret is missing); files Triton refused on every replica it
    tried (a load refused on one pod while others serve the files is that pod's, and is retried)."""
    if not observed.server_found:
        return not observed.young
    if observed.server_problem is not None:
        return True
    staged, reason, _ = _staged(observed)
    if not staged and reason != Reason.STAGING:
        return True
    ready = observed.ready_replicas
    return any(r.load_error for r in ready) and not any(r.current for r in ready)


# --- metrics -------------------------------------------------------------------------------------

ScrapePair = tuple[Scrape | None, Scrape]  # (previous, current) of one pod


def model_metrics(scrapes: Mapping[str, ScrapePair], model: str, version: int) -> dict[str, Any]:
    """status.metrics of one model version summed over pods; {} when no pod reports it.

    Counts are Triton's cumulative counters (summed); rates, latencies, queue time and batching
    efficiency cover the window between each pod's last two scrapes and are left out when idle.
    """
    key = (model, str(version))
    window: list[ModelRates] = []
    success = failure = 0
    seen = False
    for previous, current in scrapes.values():
        counters = current.snapshot.models.get(key)
        if counters is None:
            continue
        seen = True
        success += counters.success_count
        failure += counters.failure_count
        if previous is not None and current.at > previous.at:
            window.append(model_rates(previous.snapshot.models.get(key), counters, current.at - previous.at))
    if not seen:
        return {}
    figures: dict[str, Any] = {"successCount": success, "failureCount": failure}
    if not window:
        return figures
    total = aggregate(window)
    figures["requestRate"] = round(total.request_rate, 2)
    figures["failureRate"] = round(total.failure_rate, 2)
    optional = {
        "p50LatencyMs": _ms(total.p50_latency_us),
        "p99LatencyMs": _ms(total.p99_latency_us),
        "avgQueueMs": _ms(total.avg_queue_us),
        "inferencesPerExecution": (
            round(total.batching_efficiency, 2) if total.batching_efficiency is not None else None
        ),
    }
    return figures | {k: v for k, v in optional.items() if v is not None}


def _ms(us: float | None) -> float | None:
    return None if us is None else round(us / 1000.0, 3)


def routed_conditions(decided: Sequence[DecidedCondition], routed: TrafficOutcome) -> list[DecidedCondition]:
    """A routed model's conditions: its own (staging, loading), then what the rollout says on top.

    Ready is False while a rollout runs or after a rollback (`kubectl wait --for=condition=Ready`
    returns once the spec's version serves everything); Progressing says where the rollout is.
    """

    out = []
    for cond in decided:
        if cond.type == ModelConditionType.READY and routed.ready is not None and cond.status == "True":
            cond = DecidedCondition.said(cond.type, *routed.ready)
        elif cond.type == ModelConditionType.DEGRADED and routed.degraded is not None:
            cond = DecidedCondition.said(cond.type, *routed.degraded)
        out.append(cond)
    out.append(DecidedCondition.said(ModelConditionType.PROGRESSING, *routed.progressing))
    return out


def model_status_conditions(
    observed: ObservedModel, routed: TrafficOutcome | None = None
) -> list[DecidedCondition]:
    """Every condition a TritonModel (not through a Gateway) writes: its own from the observed facts, a
    routed model's rollout on top, and Reconciling and Stalled for kstatus (Flux) from both."""
    decided = model_conditions(observed)
    stuck = model_stuck(observed)
    if routed is not None:
        decided = routed_conditions(decided, routed)
        stuck = stuck or routed.stalled
    return with_kstatus(decided, stuck)


def invalid_model_conditions(message: str) -> list[DecidedCondition]:
    """A TritonModel whose spec does not validate: not Ready, Degraded, and Stalled (only a new spec ends
    it); its other conditions stay as they were."""
    reason = Reason.INVALID_SPEC
    decided = [
        DecidedCondition(ModelConditionType.READY, ConditionStatus.FALSE, reason, message),
        DecidedCondition(ModelConditionType.DEGRADED, ConditionStatus.TRUE, reason, message),
    ]
    return with_kstatus(decided, stuck=True)
