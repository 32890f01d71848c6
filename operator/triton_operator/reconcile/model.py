"""TritonModel: stage its files with a Job, load it on every ready server pod, observe it into status.

One pass (`reconcile`) does everything and is safe to repeat: the create/update/resume handler and the
model's status loop both call it, one at a time per model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity
from pydantic import ValidationError

from triton_operator.api.common import (
    GROUP,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    ConditionStatus,
)
from triton_operator.api.tritonmodel import ModelConditionType, ReplicaState, TritonModelSpec
from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.conditions import DecidedCondition, Reason, set_conditions
from triton_operator.kube.rest import Kube
from triton_operator.observe.model import (
    ObservedModel,
    ReplicaFacts,
    ScrapePair,
    StagingOutcome,
    loaded_fraction,
    model_conditions,
    model_metrics,
    replica_state,
    staging_outcome,
)
from triton_operator.observe.server import pod_is_ready
from triton_operator.reconcile.server import invalid_spec_message
from triton_operator.reconcile.state import (
    FailedLoad,
    ModelMemory,
    OperatorState,
    StagedRecord,
    object_key,
)
from triton_operator.reconcile.status import now, stamp_metrics, write_status
from triton_operator.render.labels import APP_NAME, MANAGED_BY, label_selector
from triton_operator.render.server import pvc_name, service_endpoints
from triton_operator.render.staging import (
    removal_job_name,
    render_removal_job,
    render_staging_job,
    staging_job_name,
)
from triton_operator.triton import client as triton

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
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# A load Triton refused is tried again on the same pod only after this long (or with new files).
RETRY_FAILED_LOAD_S = 300.0
# Deleting with keepFilesOnDelete false: how long one delete pass waits on the removal Job, how often it
# looks, and when kopf calls the handler again after a failed or unfinished removal.
REMOVAL_WAIT_S = 120.0
REMOVAL_POLL_S = 1.0
REMOVAL_RETRY_S = 30.0


def staging_labels(model: str, server: str) -> dict[str, str]:
    """Labels of a model's staging Job: which model and server it stages for."""
    return {**STAGING_LABELS, LABEL_INSTANCE: model, MODEL_LABEL: model, SERVER_LABEL: server}


def recorded_staging(status: Mapping[str, Any], wanted_job: str, version: int) -> StagedRecord | None:
    """What status says was staged (after an operator restart): stagedDigest is set only on completion."""
    job, digest = status.get("stagingJob"), status.get("stagedDigest")
    if not job or not digest:
        return None
    served = status.get("servedVersion")
    if served is None and job != wanted_job:
        return None  # staged for an older spec whose version is not known: stage again
    return StagedRecord(str(job), int(served) if served is not None else version, str(digest))


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

    # -- one pass -----------------------------------------------------------------------------------
    def reconcile(self, body: Mapping[str, Any], stopped: Callable[[], bool] = lambda: False) -> bool:
        """Stage, load and observe; write status if it changed. True if written."""
        key = object_key(body)
        memory = self.state.model(key)
        with memory.lock:
            return self._reconcile(body, memory, stopped)

    def _reconcile(self, body: Mapping[str, Any], memory: ModelMemory, stopped: Callable[[], bool]) -> bool:
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        try:
            spec = TritonModelSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            message = invalid_spec_message(exc)
            self._write_invalid(body, message)
            raise kopf.PermanentError(f"invalid spec: {message}") from exc
        server_name = spec.server_ref.name
        memory.server = (namespace, server_name)
        wanted = staging_job_name(name, spec)
        if memory.staged is None:
            memory.staged = recorded_staging(body.get("status") or {}, wanted, spec.version)
        if memory.baseline_job is None:
            memory.baseline_job = memory.staged.job if memory.staged else ""

        server = self.kube.get("TritonServer", namespace, server_name)
        if server is None:
            observed = ObservedModel(
                server=server_name, namespace=namespace, version=spec.version, server_found=False
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

        outcome: StagingOutcome | None = None
        if memory.staged is None or memory.staged.job != wanted:
            outcome = self._stage(body, spec, server_spec, wanted, memory)
        staged = memory.staged
        replicas = self._load_everywhere(namespace, server_name, spec, name, staged, memory, stopped)
        observed = ObservedModel(
            server=server_name,
            namespace=namespace,
            version=spec.version,
            wanted_job=wanted,
            staged_job=staged.job if staged else None,
            staged_version=staged.version if staged else None,
            staging=outcome,
            replicas=tuple(replicas),
        )
        return self._write(body, spec, observed, server_spec, memory)

    # -- staging --------------------------------------------------------------------------------------
    def _stage(
        self,
        body: Mapping[str, Any],
        spec: TritonModelSpec,
        server_spec: TritonServerSpec,
        job_name: str,
        memory: ModelMemory,
    ) -> StagingOutcome:
        """Run the Job for `job_name` (applied if missing); record and delete it once it completed."""
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        self._remove_other_jobs(namespace, name, job_name)
        job = self.kube.get("Job", namespace, job_name)
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
        pods = self.kube.list("Pod", namespace, f"{JOB_NAME_LABEL}={job_name}")
        outcome = staging_outcome(job, pods)
        if outcome.phase == "complete":
            digest = outcome.digest or spec.source.expected_digest()
            memory.staged = StagedRecord(job_name, spec.version, digest)
            # Status remembers it (stagingJob, stagedDigest); the finished Job is only clutter now.
            self.kube.delete("Job", namespace, job_name)
        return outcome

    def _remove_other_jobs(self, namespace: str, name: str, keep: str) -> None:
        """Delete this model's staging Jobs for earlier specs (a failed one stays until the spec changes)."""
        for job in self.kube.list("Job", namespace, f"{MODEL_LABEL}={name}"):
            job_name = job["metadata"]["name"]
            if job_name != keep and not job["metadata"].get("deletionTimestamp"):
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
    ) -> list[ReplicaFacts]:
        """Make the latest staged files READY on every ready pod of the server; facts per pod."""
        model = spec.resolved_model_name(name)
        facts = []
        pods = sorted(
            self.kube.list("Pod", namespace, label_selector(server)), key=lambda p: p["metadata"]["name"]
        )
        live_uids = set()
        for pod in pods:
            if pod["metadata"].get("deletionTimestamp"):
                continue
            live_uids.add(pod["metadata"]["uid"])
            facts.append(self._load_on(pod, model, staged, memory, stopped))
        for uid in set(memory.loads) - live_uids:
            memory.loads.pop(uid, None)
        for uid in set(memory.failures) - live_uids:
            memory.failures.pop(uid, None)
        return facts

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
        if not ip or not pod_is_ready(pod):
            return ReplicaFacts(pod_name, ip, False, ReplicaState.PENDING, "the pod is not ready")
        endpoint = triton.TritonEndpoint(ip)
        version = staged.version if staged else 0
        try:
            state, reason = replica_state(triton.repository_index(endpoint), model, version)
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
        if failure and failure.job == staged.job and time.monotonic() - failure.at < RETRY_FAILED_LOAD_S:
            return ReplicaFacts(pod_name, ip, True, state, reason, load_error=failure.message)
        try:
            triton.load_model(endpoint, model)
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
        log.info("loaded %s version %s on pod %s", model, staged.version, pod_name)
        return ReplicaFacts(pod_name, ip, True, ReplicaState.READY, None, current=True)

    @staticmethod
    def _state_after_failure(
        endpoint: triton.TritonEndpoint, model: str, version: int, state: ReplicaState, reason: str | None
    ) -> tuple[ReplicaState, str | None]:
        """What the index says after a failed load (a failed reload may leave the old one serving)."""
        try:
            return replica_state(triton.repository_index(endpoint), model, version)
        except triton.TritonError:
            return state, reason

    # -- status ---------------------------------------------------------------------------------------
    def _write(
        self,
        body: Mapping[str, Any],
        spec: TritonModelSpec,
        observed: ObservedModel,
        server_spec: TritonServerSpec | None,
        memory: ModelMemory,
    ) -> bool:
        meta = body["metadata"]
        name, generation = meta["name"], int(meta.get("generation", 1))
        old = body.get("status") or {}
        conditions = set_conditions(
            old.get("conditions") or [], model_conditions(observed), generation, now()
        )
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
            if observed.loaded_replicas and staged is not None:
                new["servedVersion"] = staged.version
                metrics = model_metrics(self._scrapes(memory), model, staged.version)
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
        decided = [
            DecidedCondition(ModelConditionType.READY, ConditionStatus.FALSE, Reason.INVALID_SPEC, message),
            DecidedCondition(ModelConditionType.DEGRADED, ConditionStatus.TRUE, Reason.INVALID_SPEC, message),
        ]
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
        memory = self.state.model(object_key(body))
        with memory.lock:
            unloaded = self._unload_everywhere(body, spec.server_ref.name, spec.resolved_model_name(name))
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
        server_name, model = spec.server_ref.name, spec.resolved_model_name(name)
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
        self._remove_other_jobs(namespace, name, job_name)
        job = self.kube.get("Job", namespace, job_name)
        if job is not None and job["metadata"].get("deletionTimestamp"):
            raise kopf.TemporaryError(f"waiting for the previous removal Job {job_name} to go", delay=5)
        if job is None and not self._start_removal(body, spec, server, claim, job_name):
            return
        deadline = time.monotonic() + REMOVAL_WAIT_S
        while True:
            job = self.kube.get("Job", namespace, job_name)
            if job is None:
                raise kopf.TemporaryError(f"removal Job {job_name} disappeared; starting another", delay=5)
            pods = self.kube.list("Pod", namespace, f"{JOB_NAME_LABEL}={job_name}")
            outcome = staging_outcome(job, pods)
            if outcome.phase == "complete":
                log.info(
                    "removed version %s of %s from PVC %s with Job %s", spec.version, model, claim, job_name
                )
                self.kube.delete("Job", namespace, job_name)
                return
            if outcome.phase in ("failed", "blocked"):
                raise self._removal_failed(body, job_name, outcome)
            if time.monotonic() > deadline:
                raise kopf.TemporaryError(
                    f"removal Job {job_name} has not finished after {REMOVAL_WAIT_S:.0f} s", delay=5
                )
            time.sleep(REMOVAL_POLL_S)

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
            if exc.status == 403 and "being terminated" in str(exc.body):
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
        kopf.event(cast(kopf.Body, body), type="Warning", reason=reason, message=message)
        self.kube.delete("Job", body["metadata"]["namespace"], job_name)
        return kopf.TemporaryError(f"{reason}: {outcome.message}", delay=REMOVAL_RETRY_S)
