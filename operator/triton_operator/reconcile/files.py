"""A model's files in its server's repository PVC: the staging Job that puts a version there, the
removal Job that takes one out (after a promotion, or with the model when keepFilesOnDelete is false).

Jobs are the only writers of the repository (they mount its PVC); the operator only starts them, looks
at them once per pass (never waits), and deletes each once it is done with.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from triton_operator.api.tritonmodel import TritonModelSpec
from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.conditions import Reason
from triton_operator.kube.events import WARNING, Event, recorder_for
from triton_operator.kube.rest import Kube, namespace_terminating
from triton_operator.observe.staging import StagingOutcome, staging_outcome
from triton_operator.reconcile.state import ModelMemory, OperatorState
from triton_operator.render.labels import JOB_NAME_LABEL, MODEL_LABEL, name_label, staging_labels
from triton_operator.render.server import pvc_name
from triton_operator.render.staging import (
    capacity_bytes,
    jobs_placement,
    removal_job_name,
    render_removal_job,
    render_staging_job,
)

log = logging.getLogger(__name__)
KIND = "TritonModel"
# Deleting with keepFilesOnDelete false: how often kopf calls the delete handler again to look at the
# removal Job, and how long after a failed removal.
REMOVAL_POLL_S = 2.0
REMOVAL_RETRY_S = 30.0


class RepositoryFiles:
    """Staging and removal Jobs of models, one look per pass."""

    def __init__(self, kube: Kube, state: OperatorState, operator_image: str):
        self.kube = kube
        self.state = state
        self.operator_image = operator_image

    def stage(
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
            self.remove_other_jobs(namespace, name, keep)
            memory.cleaned_for = keep
        job = self._job(namespace, job_name)
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
                placement=jobs_placement(spec.server_ref.name, server_spec),
            )
            kopf.adopt(manifest, owner=cast(kopf.Body, body))
            log.info("staging %s/%s version %s with Job %s", namespace, name, spec.version, job_name)
            self.kube.apply(manifest)
            return StagingOutcome("running")
        outcome = self._outcome(namespace, job, job_name)
        if outcome.phase == "complete":
            # Status remembers it (stagingJob, stagedDigest); the finished Job is only clutter now.
            self._delete_job(namespace, job_name)
        return outcome

    def _job(self, namespace: str, job_name: str) -> dict[str, Any] | None:
        """A staging or removal Job, as the watch keeps it."""
        return self.state.staging.job(namespace, job_name, partial(self.kube.get, "Job", namespace, job_name))

    def _outcome(self, namespace: str, job: Mapping[str, Any], job_name: str) -> StagingOutcome:
        """How the Job is doing, from it and its pods (as the watch keeps them)."""
        read_pods = partial(self.kube.list, "Pod", namespace, f"{JOB_NAME_LABEL}={job_name}")
        return staging_outcome(job, self.state.staging.pods(namespace, job_name, read_pods))

    def _delete_job(self, namespace: str, job_name: str) -> None:
        self.kube.delete("Job", namespace, job_name)
        self.state.staging.deleted_job(namespace, job_name)

    def remove_other_jobs(self, namespace: str, name: str, keep: frozenset[str]) -> None:
        """Delete this model's staging Jobs for earlier specs (a failed one stays until the spec changes)."""
        for job in self.kube.list("Job", namespace, f"{MODEL_LABEL}={name_label(name)}"):
            job_name = job["metadata"]["name"]
            if job_name not in keep and not job["metadata"].get("deletionTimestamp"):
                self.kube.delete("Job", namespace, job_name)

    def removal_running(self, namespace: str, memory: ModelMemory) -> bool:
        """Whether the model's removal Job still runs (one no pass looks after any more does not count)."""
        if not memory.removing:
            return False
        job = self._job(namespace, memory.removing)
        status = (job or {}).get("status") or {}
        if job is None or status.get("succeeded") or status.get("failed"):
            memory.removing = None
        return memory.removing is not None

    def retire(
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
        job = self._job(namespace, job_name)
        if job is None:
            if memory.retired == version:
                memory.removing = None
                return True
            found = self.repository_claim(namespace, spec.server_ref.name)
            if found is None:
                return True  # no repository to remove it from
            claim, server = found
            self._start_removal(body, old, server, claim, job_name)
            memory.removing = job_name
            return False
        outcome = self._outcome(namespace, job, job_name)
        memory.removing = job_name if outcome.phase not in ("complete", "failed", "blocked") else None
        if outcome.phase == "complete":
            self._delete_job(namespace, job_name)
            memory.retired = version
            for uid in memory.loads:  # reload from disk on every pod: Triton unloads the removed version
                memory.loads[uid] = ""
            return True
        if outcome.phase in ("failed", "blocked"):
            log.warning("removing version %s of %s/%s failed: %s", version, namespace, name, outcome.message)
        return False

    def repository_claim(self, namespace: str, server_name: str) -> tuple[str, dict[str, Any]] | None:
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

    def remove_all(self, body: Mapping[str, Any], spec: TritonModelSpec) -> None:
        """Run the removal Job to completion (bounded); kopf.TemporaryError if it fails or is not done."""
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        server_name, model = spec.server_ref.name, spec.repository_name(name)
        found = self.repository_claim(namespace, server_name)
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
        self.remove_other_jobs(namespace, name, frozenset([job_name]))
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
            placement=jobs_placement(
                spec.server_ref.name, TritonServerSpec.model_validate(server.get("spec") or {})
            ),
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
