"""TritonModel: stage its files with a Job, load it on every ready server pod, observe it into status.

One pass (`reconcile`) does everything and is safe to repeat: the create/update/resume handler and the
model's status loop both call it, one at a time per model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity
from pydantic import ValidationError

from triton_operator.api.common import (
    GROUP,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    ConditionStatus,
)
from triton_operator.api.tritonmodel import ModelConditionType, ReplicaState, TritonModelSpec
from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.conditions import DecidedCondition, Reason, set_conditions, with_kstatus
from triton_operator.kube.events import WARNING, Event, recorder_for
from triton_operator.kube.rest import Kube
from triton_operator.observe.model import (
    SERVER_GRACE_S,
    ObservedModel,
    ReplicaFacts,
    ScrapePair,
    StagingOutcome,
    loaded_fraction,
    model_metrics,
    replica_state,
    staging_outcome,
)
from triton_operator.observe.server import created_within, pod_is_ready, triton_is_up, triton_restarts
from triton_operator.reconcile.routing import (
    Routing,
    RoutingOutcome,
    experiment_outcome,
    experiment_weights,
    model_status_conditions,
    ready_versions,
    router_everywhere,
    settled,
    variant_specs,
    with_router_problems,
)
from triton_operator.reconcile.server import invalid_spec_message
from triton_operator.reconcile.split import SplitReconciler
from triton_operator.reconcile.state import (
    FailedLoad,
    ModelMemory,
    OperatorState,
    StagedRecord,
    name_label,
    object_key,
    pod_index_key,
)
from triton_operator.reconcile.status import now, stamp_metrics, write_status
from triton_operator.reconcile.watched import JOB_NAME_LABEL
from triton_operator.render.labels import APP_NAME, MANAGED_BY, label_selector
from triton_operator.render.server import pvc_name, service_endpoints
from triton_operator.render.staging import (
    removal_job_name,
    render_removal_job,
    render_staging_job,
    staging_job_name,
)
from triton_operator.triton import client as triton
from triton_operator.triton.client import ModelState

log = logging.getLogger(__name__)
KIND = "TritonModel"
STATUS_FIELDS = (
    "observedGeneration",
    "conditions",
    "servedVersion",
    "stagedDigest",
    "loaded",
    "replicas",
    "endpoints",
    "metrics",
    "stagingJob",
    "rollout",
    "traffic",
)
DEFAULT_OPERATOR_IMAGE = "ghcr.io/tritonoperator/triton-operator:0.1.0"
STAGING_COMPONENT = "staging"
MODEL_LABEL = f"{GROUP}/model"
SERVER_LABEL = f"{GROUP}/server"
# Labels of staging Jobs and their pods; deliberately not the server pods' selector labels.
STAGING_LABELS = {
    LABEL_NAME: APP_NAME,
    LABEL_COMPONENT: STAGING_COMPONENT,
    LABEL_MANAGED_BY: MANAGED_BY,
}
# A load Triton refused is tried again on the same pod only after this long (or with new files).
RETRY_FAILED_LOAD_S = 300.0
# ... unless the same files are loaded on another pod: then the failure is this pod's (a Triton still
# starting up, short of memory), not the files', and the pod's models-loaded gate waits for it.
RETRY_LOCAL_FAILED_LOAD_S = 20.0


def retry_failed_load_after(memory: ModelMemory, uid: str, job: str) -> float:
    """Seconds until a load of `job`'s files that failed on pod `uid` is tried there again."""
    loaded_elsewhere = any(loaded == job for other, loaded in memory.loads.items() if other != uid)
    return RETRY_LOCAL_FAILED_LOAD_S if loaded_elsewhere else RETRY_FAILED_LOAD_S


# Deleting with keepFilesOnDelete false: how often kopf calls the delete handler again to look at the
# removal Job, and how long after a failed removal.
REMOVAL_POLL_S = 2.0
REMOVAL_RETRY_S = 30.0


def namespace_terminating(exc: ApiException) -> bool:
    """Whether the apiserver refused to create something because its namespace is being deleted."""
    return exc.status == 403 and "being terminated" in str(exc.body)


def staging_labels(model: str, server: str) -> dict[str, str]:
    """Labels of a model's staging Job: which model and server it stages for.

    Not app.kubernetes.io/instance: Argo CD's label tracking would count the Job as part of an
    Application named like the model (see render.labels.volume_labels).
    """
    return {**STAGING_LABELS, MODEL_LABEL: name_label(model), SERVER_LABEL: name_label(server)}


def recorded_staging(status: Mapping[str, Any], wanted_job: str, version: int) -> StagedRecord | None:
    """What status says was staged (after an operator restart): stagedDigest is set only on completion."""
    job, digest = status.get("stagingJob"), status.get("stagedDigest")
    if not job or not digest:
        return None
    if job == wanted_job:
        # This spec's Job staged this spec's version. Not servedVersion: mid-canary that is still the
        # old one, and a restarted operator then checked new pods for a version whose files a promotion
        # had removed ("loaded, but version 1 is not ready"; chaos seed 49025936 kill 2).
        return StagedRecord(str(job), version, str(digest))
    served = status.get("servedVersion")
    if served is None:
        return None  # staged for an older spec whose version is not known: stage again
    return StagedRecord(str(job), int(served), str(digest))


def settle(
    memory: ModelMemory, pods: list[dict[str, Any]], replicas: list[ReplicaFacts], *, needs_router: bool
) -> None:
    """Note the pods whose Triton has this model's latest files loaded (or refused them), and, for a
    routed model, its router: their models-loaded gate need not wait for this model (gates.py).

    A refusal settles a pod only while no pod has the files loaded: files Triton refuses everywhere
    must not hold every pod back, but a pod that refused files another pod serves would answer
    "unknown model" behind the Service while the others serve it."""
    loaded_somewhere = any(fact.current for fact in replicas)
    for pod, fact in zip(pods, replicas, strict=True):
        uid = pod["metadata"]["uid"]
        refused = fact.load_error is not None and not loaded_somewhere
        done = fact.pod_ready and (memory.staged is None or fact.current or refused)
        if done and needs_router and uid not in memory.routing.routers:
            done = False
        if not done:
            continue
        restarts = triton_restarts(pod)
        if memory.settled.get(uid) != restarts:
            memory.settled[uid] = restarts
            memory.settled_news = True


def invalid_model_conditions(message: str) -> list[DecidedCondition]:
    """A TritonModel whose spec does not validate: not Ready, Degraded, and Stalled (only a new spec ends
    it); its other conditions stay as they were."""
    reason = Reason.INVALID_SPEC
    decided = [
        DecidedCondition(ModelConditionType.READY, ConditionStatus.FALSE, reason, message),
        DecidedCondition(ModelConditionType.DEGRADED, ConditionStatus.TRUE, reason, message),
    ]
    return with_kstatus(decided, stuck=True)


def capacity_bytes(spec: TritonServerSpec) -> int | None:
    """The repository's size (an existing claim's size is not known: no limit)."""
    repo = spec.model_repository
    if repo.existing_claim:
        return None
    return int(parse_quantity(repo.size))  # type: ignore[no-untyped-call]


class ModelReconciler:
    def __init__(self, kube: Kube, state: OperatorState, operator_image: str = DEFAULT_OPERATOR_IMAGE):
        self.kube = kube
        self.state = state
        self.operator_image = operator_image
        self.routing = Routing(read_index=self._index_of)
        self.split = SplitReconciler(kube, state)

    # -- one pass -----------------------------------------------------------------------------------
    def reconcile(
        self, body: Mapping[str, Any], stopped: Callable[[], bool] = lambda: False
    ) -> dict[str, Any] | None:
        """Stage, load and observe; write status if it changed (returns the object as written)."""
        key = object_key(body)
        memory = self.state.model(key)
        with memory.lock:
            return self._reconcile(body, memory, stopped)

    def _reconcile(
        self, body: Mapping[str, Any], memory: ModelMemory, stopped: Callable[[], bool]
    ) -> dict[str, Any] | None:
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        try:
            spec = TritonModelSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            message = invalid_spec_message(exc)
            self._write_invalid(body, message)
            raise kopf.PermanentError(f"invalid spec: {message}") from exc
        if spec.through_gateway:
            return self.split.reconcile(body, spec, memory)
        server_name = spec.server_ref.name
        memory.server = (namespace, server_name)
        wanted = staging_job_name(name, spec)
        if memory.staged is None:
            memory.staged = recorded_staging(body.get("status") or {}, wanted, spec.version)
        if memory.baseline_job is None:
            memory.baseline_job = memory.staged.job if memory.staged else ""

        server = self._server(namespace, server_name)
        if server is None:
            observed = ObservedModel(
                server=server_name,
                namespace=namespace,
                version=spec.version,
                server_found=False,
                young=created_within(body, SERVER_GRACE_S, now()),
            )
            return self._write(body, spec, observed, None, memory)
        try:
            server_spec = TritonServerSpec.model_validate(server.get("spec") or {})
        except ValidationError:
            problem = f"TritonServer {server_name} has an invalid spec; see its Ready condition."
            observed = ObservedModel(
                server=server_name,
                namespace=namespace,
                version=spec.version,
                server_problem=problem,
                wanted_job=wanted,
            )
            return self._write(body, spec, observed, None, memory)

        variants = variant_specs(spec)  # an experiment's other versions, each from its own source
        keep = frozenset([wanted, *(staging_job_name(name, v) for v in variants)])
        outcome: StagingOutcome | None = None
        if memory.staged is None or memory.staged.job != wanted:
            outcome = self._stage(body, spec, server_spec, wanted, memory, keep)
            if outcome.phase == "complete":
                memory.staged = StagedRecord(
                    wanted, spec.version, outcome.digest or spec.source.expected_digest()
                )
        problems = []
        for variant in variants:
            job = staging_job_name(name, variant)
            if (done := memory.variants_staged.get(variant.version)) is None or done.job != job:
                staged_variant = self._stage(body, variant, server_spec, job, memory, keep)
                if staged_variant.phase == "complete":
                    memory.variants_staged[variant.version] = StagedRecord(job, variant.version, None)
                elif staged_variant.phase in ("failed", "blocked"):
                    problems.append(f"version {variant.version}: {staged_variant.message}")
        staged = memory.staged
        load = staged
        if staged is not None and variants:
            # The versions reload once every variant's files are there (the token names all their Jobs).
            jobs = sorted([staged.job, *(r.job for r in memory.variants_staged.values())])
            load = StagedRecord("+".join(jobs), staged.version, staged.digest)
        pods, replicas = self._load_everywhere(namespace, server_name, spec, name, load, memory, stopped)
        routed = None
        if spec.routed and staged is not None:
            routed = self._route(body, spec, server_spec, memory, replicas, stopped)
            if problems:
                message = "Staging an experiment variant failed: " + "; ".join(problems)
                failed = (False, str(Reason.STAGING_FAILED), message)
                degraded = (True, str(Reason.STAGING_FAILED), message)
                routed = replace(routed, ready=failed, degraded=degraded, stalled=True)
        settle(memory, pods, replicas, needs_router=spec.routed and staged is not None)
        observed = ObservedModel(
            server=server_name,
            namespace=namespace,
            version=spec.version,
            wanted_job=wanted,
            staged_job=staged.job if staged else None,
            staged_version=staged.version if staged else None,
            staging=outcome,
            replicas=tuple(replicas),
            wanted_replicas=server_spec.replicas,
        )
        return self._write(body, spec, observed, server_spec, memory, routed)

    def _server(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The TritonServer, read once per period for all its models (its watch events invalidate it)."""
        return self.state.servers.get(
            (namespace, name), partial(self.kube.get, "TritonServer", namespace, name)
        )

    # -- staging --------------------------------------------------------------------------------------
    def _stage(
        self,
        body: Mapping[str, Any],
        spec: TritonModelSpec,
        server_spec: TritonServerSpec,
        job_name: str,
        memory: ModelMemory,
        keep: frozenset[str],
    ) -> StagingOutcome:
        """Run the Job for `job_name` (applied if missing); delete it once it completed (caller records it).

        `keep`: the Jobs the spec wants now; this model's other staging Jobs (earlier specs) are deleted.
        """
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        if memory.cleaned_for != keep:
            self._remove_other_jobs(namespace, name, keep)
            memory.cleaned_for = keep
        staging = self.state.staging
        job = staging.job(namespace, job_name, partial(self.kube.get, "Job", namespace, job_name))
        if job is None:
            manifest = render_staging_job(
                name,
                namespace,
                spec,
                server_claim=pvc_name(spec.server_ref.name, server_spec),
                job_name=job_name,
                operator_image=self.operator_image,
                labels=staging_labels(name, spec.server_ref.name),
                capacity_bytes=capacity_bytes(server_spec),
            )
            kopf.adopt(manifest, owner=cast(kopf.Body, body))
            log.info("staging %s/%s version %s with Job %s", namespace, name, spec.version, job_name)
            self.kube.apply(manifest)
            return StagingOutcome("running")
        read_pods = partial(self.kube.list, "Pod", namespace, f"{JOB_NAME_LABEL}={job_name}")
        outcome = staging_outcome(job, staging.pods(namespace, job_name, read_pods))
        if outcome.phase == "complete":
            # Status remembers it (stagingJob, stagedDigest); the finished Job is only clutter now.
            self.kube.delete("Job", namespace, job_name)
            staging.deleted_job(namespace, job_name)
        return outcome

    def _remove_other_jobs(self, namespace: str, name: str, keep: frozenset[str]) -> None:
        """Delete this model's staging Jobs for earlier specs (a failed one stays until the spec changes)."""
        for job in self.kube.list("Job", namespace, f"{MODEL_LABEL}={name_label(name)}"):
            job_name = job["metadata"]["name"]
            if job_name not in keep and not job["metadata"].get("deletionTimestamp"):
                self.kube.delete("Job", namespace, job_name)

    # -- loading --------------------------------------------------------------------------------------
    def _load_everywhere(
        self,
        namespace: str,
        server: str,
        spec: TritonModelSpec,
        name: str,
        staged: StagedRecord | None,
        memory: ModelMemory,
        stopped: Callable[[], bool],
    ) -> tuple[list[dict[str, Any]], list[ReplicaFacts]]:
        """Make the latest staged files READY on every pod whose Triton answers; the live pods and
        the facts on each (in the same order)."""
        model = spec.repository_name(name)
        facts = []
        pods = sorted(
            self.state.server_pods.get(
                (namespace, server), lambda: self.kube.list("Pod", namespace, label_selector(server))
            ),
            key=lambda p: p["metadata"]["name"],
        )
        live = [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]
        for pod in live:
            fact = self._load_on(pod, model, staged, memory, stopped)
            facts.append(replace(fact, in_service=pod_is_ready(pod)))
        live_uids = {pod["metadata"]["uid"] for pod in live}
        for uid in set(memory.loads) - live_uids:
            memory.loads.pop(uid, None)
        for uid in set(memory.failures) - live_uids:
            memory.failures.pop(uid, None)
        for uid in set(memory.settled) - live_uids:
            memory.settled.pop(uid, None)
        return live, facts

    def _load_on(
        self,
        pod: Mapping[str, Any],
        model: str,
        staged: StagedRecord | None,
        memory: ModelMemory,
        stopped: Callable[[], bool],
    ) -> ReplicaFacts:
        pod_name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or not triton_is_up(pod):
            return ReplicaFacts(pod_name, ip, False, ReplicaState.PENDING, "the pod is not ready")
        endpoint = triton.TritonEndpoint(ip)
        version = staged.version if staged else 0
        index_key = pod_index_key(pod)
        try:
            index = self._index_of(pod)
            state, reason = replica_state(index, model, version)
        except triton.TritonError as exc:
            return ReplicaFacts(
                pod_name, ip, True, ReplicaState.PENDING, f"Triton not reachable: {exc.message}"
            )
        if staged is None:
            return ReplicaFacts(pod_name, ip, True, state, reason or "waiting for staging")
        loaded_from = memory.loads.get(uid, memory.baseline_job)
        current = state == ReplicaState.READY and loaded_from == staged.job
        if current or state == ReplicaState.LOADING or stopped():
            if current:
                memory.loads[uid] = staged.job
            return ReplicaFacts(pod_name, ip, True, state, reason, current=current)
        failure = memory.failures.get(uid)
        if (
            failure
            and failure.job == staged.job
            and time.monotonic() - failure.at < retry_failed_load_after(memory, uid, staged.job)
        ):
            return ReplicaFacts(pod_name, ip, True, state, reason, load_error=failure.message)
        if self._removal_running(pod["metadata"]["namespace"], memory):
            # A version's folder is being removed: a load now could read it half gone (see ModelMemory).
            return ReplicaFacts(
                pod_name, ip, True, ReplicaState.LOADING, f"waiting for removal Job {memory.removing}"
            )
        try:
            # The index changes now: no model may keep a copy read before or during this load.
            self.state.indexes.invalidate(index_key)
            try:
                triton.load_model(endpoint, model)
            finally:
                self.state.indexes.invalidate(index_key)
            if not triton.model_ready(endpoint, model, staged.version):
                raise triton.TritonLoadError(f"loaded, but version {staged.version} is not ready")
        except triton.TritonLoadError as exc:
            log.warning("loading %s on pod %s failed: %s", model, pod_name, exc.message)
            memory.failures[uid] = FailedLoad(staged.job, exc.message, time.monotonic())
            state, reason = self._state_after_failure(endpoint, model, staged.version, state, reason)
            return ReplicaFacts(pod_name, ip, True, state, reason, load_error=exc.message)
        except triton.TritonError as exc:
            # Timed out or the pod went away mid-load: the next pass reads the index again.
            return ReplicaFacts(pod_name, ip, True, ReplicaState.LOADING, exc.message)
        memory.loads[uid] = staged.job
        memory.failures.pop(uid, None)
        memory.routing.routers.pop(uid, None)  # a (re)loaded pod gets its router again
        log.info("loaded %s version %s on pod %s", model, staged.version, pod_name)
        return ReplicaFacts(pod_name, ip, True, ReplicaState.READY, None, current=True)

    def _removal_running(self, namespace: str, memory: ModelMemory) -> bool:
        """Whether the model's removal Job still runs (one no pass looks after any more does not count)."""
        if not memory.removing:
            return False
        job_name = memory.removing
        job = self.state.staging.job(namespace, job_name, partial(self.kube.get, "Job", namespace, job_name))
        status = (job or {}).get("status") or {}
        if job is None or status.get("succeeded") or status.get("failed"):
            memory.removing = None
        return memory.removing is not None

    @staticmethod
    def _state_after_failure(
        endpoint: triton.TritonEndpoint, model: str, version: int, state: ReplicaState, reason: str | None
    ) -> tuple[ReplicaState, str | None]:
        """What the index says after a failed load (a failed reload may leave the old one serving)."""
        try:
            return replica_state(triton.repository_index(endpoint), model, version)
        except triton.TritonError:
            return state, reason

    # -- routed models (canary rollouts) --------------------------------------------------------------
    def _route(
        self,
        body: Mapping[str, Any],
        spec: TritonModelSpec,
        server_spec: TritonServerSpec,
        memory: ModelMemory,
        replicas: list[ReplicaFacts],
        stopped: Callable[[], bool],
    ) -> RoutingOutcome:
        """Decide the weights, put them in the router on every replica, retire a promoted-over version."""
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        public, target = spec.resolved_model_name(name), spec.repository_name(name)
        ready = [r for r in replicas if r.pod_ready]
        loaded = [r for r in ready if r.state == ReplicaState.READY and r.current]
        # The facts are about the files staged last: only once those are the spec's version do they say
        # whether that version is READY everywhere (while it stages, they still describe the old one).
        staged_now = memory.staged is not None and memory.staged.job == staging_job_name(name, spec)
        everywhere = (
            staged_now and bool(ready) and len(loaded) == len(ready) and len(loaded) >= server_spec.replicas
        )
        scrapes = dict(self.state.scrapes.get(memory.server) or {}) if memory.server else {}
        pods = self._pods(namespace, spec.server_ref.name)
        if spec.experiment is not None:
            weights = experiment_weights(spec)
            windows = self.routing.experiment_windows(memory.routing, scrapes, public, target, weights)
            outcome = experiment_outcome(spec, windows)
            sticky = spec.experiment.sticky_key or ""
            problems = self.routing.apply_router(
                pods, public, target, weights, sticky, memory.routing, stopped
            )
            return router_everywhere(with_router_problems(outcome, problems), memory.routing, public)
        state, weights, outcome = self.routing.canary_pass(
            spec,
            body.get("status") or {},
            meta.get("annotations"),
            memory.routing,
            requested_ready_everywhere=everywhere,
            scrapes=scrapes,
            public=public,
            target=target,
            now=now(),
        )
        sticky = spec.effective_rollout().sticky_key or ""
        problems = self.routing.apply_router(pods, public, target, weights, sticky, memory.routing, stopped)
        outcome = with_router_problems(outcome, problems)
        # Once everything goes to the new version on every replica, the old one's files can go.
        retiring = outcome.retire is not None and memory.routing.applied_at is not None
        if retiring and self._retire(body, spec, server_spec, int(outcome.retire or 0), memory):
            done = settled(state.canary_version, now(), state.last_command_token)
            rollout = (outcome.rollout or {}) | done.to_status() | {"canaryWeight": 100}
            rollout["message"] = (
                f"version {state.canary_version} promoted and serves 100%; version {outcome.retire} unloaded"
            )
            outcome = replace(outcome, rollout=rollout, retire=None)
        elif outcome.retire is None and state.stable_version == state.canary_version:
            on_disk = self._reload_stale_versions(pods, target, state.canary_version, memory)
            if staged_now and str(spec.version) == state.canary_version:
                # Files no spec asks for (left in a retained repository by a model deleted while its
                # server was gone, say): the one version serving everything is all there should be.
                for version in sorted(on_disk - {str(spec.version)}):
                    self._retire(body, spec, server_spec, int(version), memory)
        return router_everywhere(outcome, memory.routing, public)

    def _reload_stale_versions(
        self, pods: list[dict[str, Any]], target: str, served: str, memory: ModelMemory
    ) -> set[str]:
        """Reload the model (next pass) on each pod that still has a version loaded that nothing serves;
        the versions still loaded after that reload (their files are on disk).

        A promotion removes the old version's files, writes status (one version serves everything),
        and the next pass reloads it from disk; an operator stopped between the two leaves the old
        version loaded, and status no longer names it. Triton keeps only what is on disk after a load.
        """
        job = memory.staged.job if memory.staged else ""
        on_disk: set[str] = set()
        for pod in pods:
            uid = pod["metadata"]["uid"]
            if not triton_is_up(pod):
                continue
            try:
                stale = ready_versions(self._index_of(pod), target) - {served}
            except triton.TritonError:
                continue
            if (uid, job) in memory.routing.stale_reloads:
                if stale and memory.loads.get(uid) == job:  # reloaded since, and still there
                    on_disk |= stale
                continue
            if stale:
                log.info(
                    "version %s of %s is still loaded on pod %s; reloading it from the repository",
                    ", ".join(sorted(stale)),
                    target,
                    pod["metadata"]["name"],
                )
                memory.loads[uid] = ""
                memory.routing.stale_reloads.add((uid, job))
        return on_disk

    def _pods(self, namespace: str, server: str) -> list[dict[str, Any]]:
        read = partial(self.kube.list, "Pod", namespace, label_selector(server))
        return sorted(
            self.state.server_pods.get((namespace, server), read), key=lambda p: p["metadata"]["name"]
        )

    def _index_of(self, pod: Mapping[str, Any]) -> list[ModelState]:
        """The pod's repository index, read once per period for all its models (the server's pass too)."""
        return self.state.pod_index(pod)

    def _retire(
        self,
        body: Mapping[str, Any],
        spec: TritonModelSpec,
        server_spec: TritonServerSpec,
        version: int,
        memory: ModelMemory,
    ) -> bool:
        """Remove `version`'s folder with a removal Job; True once done (the versions then reload)."""
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        old = spec.model_copy(update={"version": version})
        job_name = removal_job_name(name, old)
        staging = self.state.staging
        job = staging.job(namespace, job_name, partial(self.kube.get, "Job", namespace, job_name))
        if job is None:
            if memory.retired == version:
                memory.removing = None
                return True
            found = self._repository_claim(namespace, spec.server_ref.name)
            if found is None:
                return True  # no repository to remove it from
            claim, server = found
            self._start_removal(body, old, server, claim, job_name)
            memory.removing = job_name
            return False
        read_pods = partial(self.kube.list, "Pod", namespace, f"{JOB_NAME_LABEL}={job_name}")
        outcome = staging_outcome(job, staging.pods(namespace, job_name, read_pods))
        memory.removing = job_name if outcome.phase not in ("complete", "failed", "blocked") else None
        if outcome.phase == "complete":
            self.kube.delete("Job", namespace, job_name)
            staging.deleted_job(namespace, job_name)
            memory.retired = version
            for uid in memory.loads:  # reload from disk on every pod: Triton unloads the removed version
                memory.loads[uid] = ""
            return True
        if outcome.phase in ("failed", "blocked"):
            log.warning("removing version %s of %s/%s failed: %s", version, namespace, name, outcome.message)
        return False

    # -- status ---------------------------------------------------------------------------------------
    def _write(
        self,
        body: Mapping[str, Any],
        spec: TritonModelSpec,
        observed: ObservedModel,
        server_spec: TritonServerSpec | None,
        memory: ModelMemory,
        routed: RoutingOutcome | None = None,
    ) -> dict[str, Any] | None:
        meta = body["metadata"]
        name, generation = meta["name"], int(meta.get("generation", 1))
        old = body.get("status") or {}
        decided = model_status_conditions(observed, routed)
        conditions = set_conditions(old.get("conditions") or [], decided, generation, now())
        new: dict[str, Any] = {"observedGeneration": generation, "conditions": conditions}
        staged = memory.staged
        if staged is not None:
            new["stagingJob"] = staged.job
            if staged.digest:
                new["stagedDigest"] = staged.digest
        elif observed.wanted_job and observed.server_found:
            new["stagingJob"] = observed.wanted_job
        if observed.server_found and server_spec is not None:
            model = spec.resolved_model_name(name)
            new["loaded"] = loaded_fraction(observed)
            new["replicas"] = [r.entry() for r in observed.replicas]
            endpoints = service_endpoints(spec.server_ref.name, meta["namespace"], server_spec)
            new["endpoints"] = {
                "http": endpoints["http"],
                "grpc": endpoints["grpc"],
                "model": f"/v2/models/{model}/infer",
            }
            if routed is not None:
                if routed.rollout is not None:
                    new["rollout"] = routed.rollout
                new["traffic"] = routed.traffic
            if observed.loaded_replicas and staged is not None:
                served = staged.version if routed is None else routed.served_version or staged.version
                new["servedVersion"] = served
                # A routed model's clients call its router (version 1): their traffic is the router's.
                metrics_version = staged.version if routed is None else 1
                metrics = model_metrics(self._scrapes(memory), model, metrics_version)
                if metrics:
                    new["metrics"] = metrics
                    stamp_metrics(new, old, now())
        return write_status(self.kube, KIND, body, new, STATUS_FIELDS)

    def _scrapes(self, memory: ModelMemory) -> dict[str, ScrapePair]:
        """The server reconciler's last two scrapes of each pod (the model never scrapes itself)."""
        if memory.server is None:
            return {}
        current = dict(self.state.scrapes.get(memory.server) or {})
        previous = self.state.previous_scrapes.get(memory.server) or {}
        return {pod: (previous.get(pod), scrape) for pod, scrape in current.items()}

    def _write_invalid(self, body: Mapping[str, Any], message: str) -> None:
        generation = int(body["metadata"].get("generation", 1))
        old = body.get("status") or {}
        decided = invalid_model_conditions(message)
        new = {k: v for k, v in old.items() if k in STATUS_FIELDS}
        new |= {
            "observedGeneration": generation,
            "conditions": set_conditions(old.get("conditions") or [], decided, generation, now()),
        }
        write_status(self.kube, KIND, body, new, STATUS_FIELDS)

    # -- delete ---------------------------------------------------------------------------------------
    def delete(self, body: Mapping[str, Any]) -> list[str]:
        """Unload the model from every reachable pod; with keepFilesOnDelete false remove its files too.

        Returns the pods it was unloaded from. Unreachable pods are skipped (gone or restarting: nothing
        to unload), and a server or PVC that is gone means no files to remove, so deletion never waits on
        something that no longer exists. kopf.TemporaryError while the removal Job fails or still runs.
        """
        name = body["metadata"]["name"]
        try:
            spec = TritonModelSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            return []  # nothing was ever staged or loaded from an invalid spec
        if spec.through_gateway:
            # Its copies (TritonModels of their own) unload themselves; they go by garbage collection.
            self.state.forget_model(object_key(body))
            return []
        memory = self.state.model(object_key(body))
        with memory.lock:
            unloaded = self._unload_everywhere(body, spec.server_ref.name, spec.resolved_model_name(name))
            if spec.routed:  # the router went first (it has the public name), then the versions behind it
                self._unload_everywhere(body, spec.server_ref.name, spec.repository_name(name))
            if not spec.keep_files_on_delete:
                self._remove_files(body, spec)
        self.state.forget_model(object_key(body))
        return unloaded

    def _unload_everywhere(self, body: Mapping[str, Any], server: str, model: str) -> list[str]:
        namespace = body["metadata"]["namespace"]
        try:
            pods = self.kube.list("Pod", namespace, label_selector(server))
        except ApiException as exc:
            log.warning("listing the pods of %s to unload %s failed: %s", server, model, exc)
            return []
        unloaded = []
        for pod in pods:
            ip = (pod.get("status") or {}).get("podIP")
            if not ip or pod["metadata"].get("deletionTimestamp"):
                continue
            self.state.indexes.invalidate(pod_index_key(pod))
            try:
                triton.unload_model(triton.TritonEndpoint(ip), model)
            except triton.TritonError as exc:
                log.info("not unloading %s from pod %s: %s", model, pod["metadata"]["name"], exc.message)
                continue
            unloaded.append(pod["metadata"]["name"])
        return unloaded

    def _repository_claim(self, namespace: str, server_name: str) -> tuple[str, dict[str, Any]] | None:
        """(the server's model-repository PVC, the server) if both exist and the PVC is not going away."""
        server = self.kube.get("TritonServer", namespace, server_name)
        if server is None:
            return None
        try:
            server_spec = TritonServerSpec.model_validate(server.get("spec") or {})
        except ValidationError:
            return None  # no PVC is rendered from an invalid spec
        claim = pvc_name(server_name, server_spec)
        pvc = self.kube.get("PersistentVolumeClaim", namespace, claim)
        if pvc is None or pvc["metadata"].get("deletionTimestamp"):
            return None  # its files go with it (and no new pod may mount a terminating claim)
        return claim, server

    def _remove_files(self, body: Mapping[str, Any], spec: TritonModelSpec) -> None:
        """Run the removal Job to completion (bounded); kopf.TemporaryError if it fails or is not done."""
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        server_name, model = spec.server_ref.name, spec.repository_name(name)
        found = self._repository_claim(namespace, server_name)
        if found is None:
            log.info(
                "not removing the files of %s/%s: TritonServer %s or its PVC is gone",
                namespace,
                name,
                server_name,
            )
            return
        claim, server = found
        job_name = removal_job_name(name, spec)
        # A staging Job still running could put the files back after the removal: stop it first.
        self._remove_other_jobs(namespace, name, frozenset([job_name]))
        job = self.kube.get("Job", namespace, job_name)
        if job is not None and job["metadata"].get("deletionTimestamp"):
            raise kopf.TemporaryError(f"waiting for the previous removal Job {job_name} to go", delay=5)
        if job is None:
            if not self._start_removal(body, spec, server, claim, job_name):
                return
            raise kopf.TemporaryError(f"removal Job {job_name} started", delay=REMOVAL_POLL_S)
        # One look per call, never a wait: a thread held here would be one fewer for every other object.
        pods = self.kube.list("Pod", namespace, f"{JOB_NAME_LABEL}={job_name}")
        outcome = staging_outcome(job, pods)
        if outcome.phase == "complete":
            log.info("removed version %s of %s from PVC %s with Job %s", spec.version, model, claim, job_name)
            self.kube.delete("Job", namespace, job_name)
            return
        if outcome.phase in ("failed", "blocked"):
            raise self._removal_failed(body, job_name, outcome)
        raise kopf.TemporaryError(f"removal Job {job_name} has not finished yet", delay=REMOVAL_POLL_S)

    def _start_removal(
        self,
        body: Mapping[str, Any],
        spec: TritonModelSpec,
        server: Mapping[str, Any],
        claim: str,
        job_name: str,
    ) -> bool:
        """Apply the removal Job; False when the namespace is being deleted (its PVCs go with it)."""
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        manifest = render_removal_job(
            name,
            namespace,
            spec,
            server_claim=claim,
            job_name=job_name,
            operator_image=self.operator_image,
            labels=staging_labels(name, spec.server_ref.name),
        )
        # Owned by the server, not by the TritonModel being deleted: the Job goes if the server goes.
        kopf.append_owner_reference(
            manifest, owner=cast(kopf.Body, server), controller=False, block_owner_deletion=False
        )
        log.info(
            "removing version %s of %s/%s from PVC %s with Job %s",
            spec.version,
            namespace,
            name,
            claim,
            job_name,
        )
        try:
            self.kube.apply(manifest)
        except ApiException as exc:
            if namespace_terminating(exc):
                log.info("not removing the files of %s/%s: its namespace is being deleted", namespace, name)
                return False
            raise
        return True

    def _removal_failed(
        self, body: Mapping[str, Any], job_name: str, outcome: StagingOutcome
    ) -> kopf.TemporaryError:
        """A Warning Event with the program's reason; the failed Job goes so the retry runs a fresh one."""
        reason = outcome.reason or str(Reason.STAGING_FAILED)  # CamelCase: staging_outcome checked it
        message = (
            f"Removing the model's files failed ({outcome.message}); retrying in {REMOVAL_RETRY_S:.0f} s. "
            "To delete it and keep the files, set spec.keepFilesOnDelete to true."
        )
        recorder_for(self.kube).record({"kind": KIND, **body}, Event(WARNING, reason, message))
        self.kube.delete("Job", body["metadata"]["namespace"], job_name)
        return kopf.TemporaryError(f"{reason}: {outcome.message}", delay=REMOVAL_RETRY_S)
