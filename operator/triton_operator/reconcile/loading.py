"""Loading a model's staged files on every pod of its server, and what each pod then holds.

A load is asked of Triton only when a pod does not have the latest staged files READY; a refused load
is retried on that pod after a while (sooner when another pod serves the same files: then the failure
is the pod's, not the files'). Which files each pod loaded is remembered per pod uid.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any

from triton_operator.api.tritonmodel import ReplicaState, TritonModelSpec
from triton_operator.kube.rest import Kube
from triton_operator.observe.copies import CopyFacts, has_own_copy
from triton_operator.observe.model import (
    REPOSITORY_OWN_COPY,
    REPOSITORY_PVC,
    FilesAt,
    ReplicaFacts,
    ready_versions,
    replica_state,
)
from triton_operator.observe.server import pod_is_ready, triton_is_up, triton_restarts
from triton_operator.observe.staging import StagedRecord
from triton_operator.reconcile.pod_copies import Copies
from triton_operator.reconcile.state import (
    FailedLoad,
    ModelMemory,
    OperatorState,
    pod_index_key,
)
from triton_operator.render.labels import label_selector
from triton_operator.triton import client as triton
from triton_operator.triton.client import ModelState

log = logging.getLogger(__name__)

# A load Triton refused is tried again on the same pod only after this long (or with new files).
RETRY_FAILED_LOAD_S = 300.0
# ... unless the same files are loaded on another pod: then the failure is this pod's (a Triton still
# starting up, short of memory), not the files', and the pod's models-loaded gate waits for it.
RETRY_LOCAL_FAILED_LOAD_S = 20.0


def retry_failed_load_after(memory: ModelMemory, uid: str, job: str) -> float:
    """Seconds until a load of `job`'s files that failed on pod `uid` is tried there again."""
    loaded_elsewhere = any(loaded == job for other, loaded in memory.loads.items() if other != uid)
    return RETRY_LOCAL_FAILED_LOAD_S if loaded_elsewhere else RETRY_FAILED_LOAD_S


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


def where_files_are(pod: Mapping[str, Any], copy: CopyFacts | None) -> FilesAt:
    """status.replicas[]'s node, repository and copy fields for one pod."""
    node = (pod.get("spec") or {}).get("nodeName")
    if not has_own_copy(pod):
        return FilesAt(node, REPOSITORY_PVC)
    if copy is None:
        return FilesAt(node, REPOSITORY_OWN_COPY)
    return FilesAt(node, REPOSITORY_OWN_COPY, copy.digest, copy.current)


class Loader:
    """Loads a model's staged files on every pod; reads each pod's index through the shared cache."""

    def __init__(self, kube: Kube, state: OperatorState):
        self.kube = kube
        self.state = state
        self.copies = Copies(kube, state.read_ttl_s)

    def read_index(self, pod: Mapping[str, Any]) -> list[ModelState]:
        """The pod's repository index, read once per period for all its models (the server's pass too)."""
        return self.state.pod_index(pod)

    def load_everywhere(
        self,
        namespace: str,
        server: str,
        spec: TritonModelSpec,
        name: str,
        staged: StagedRecord | None,
        memory: ModelMemory,
        stopped: Callable[[], bool],
        removal_running: Callable[[], bool],
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
            copy = partial(self._copy_of, pod, namespace, server, model, staged)
            fact = self._load_on(pod, model, staged, memory, stopped, removal_running, copy)
            where = where_files_are(pod, fact.copy or copy(fresh=False))
            facts.append(replace(fact, in_service=pod_is_ready(pod), where=where))
        live_uids = {pod["metadata"]["uid"] for pod in live}
        for uid in set(memory.loads) - live_uids:
            memory.loads.pop(uid, None)
        for uid in set(memory.failures) - live_uids:
            memory.failures.pop(uid, None)
        for uid in set(memory.settled) - live_uids:
            memory.settled.pop(uid, None)
        return live, facts

    def _copy_of(
        self,
        pod: Mapping[str, Any],
        namespace: str,
        server: str,
        model: str,
        staged: StagedRecord | None,
        *,
        fresh: bool,
    ) -> CopyFacts | None:
        """The pod's own copy of the model (layout PerReplica), or None where the pod mounts the PVC.

        `fresh` asks the sidecar and the repository server again: answers shared within a period are
        good for status, but a load must not trust a copy judged before the repository last changed."""
        if staged is None or not has_own_copy(pod) or not triton_is_up(pod):
            return None
        return self.copies.facts(pod, namespace, server, model, staged.version, staged.digest, fresh=fresh)

    def _load_on(
        self,
        pod: Mapping[str, Any],
        model: str,
        staged: StagedRecord | None,
        memory: ModelMemory,
        stopped: Callable[[], bool],
        removal_running: Callable[[], bool],
        copy: Callable[..., CopyFacts | None] = lambda fresh: None,
    ) -> ReplicaFacts:
        pod_name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or not triton_is_up(pod):
            return ReplicaFacts(pod_name, ip, False, ReplicaState.PENDING, "the pod is not ready")
        endpoint = triton.TritonEndpoint(ip)
        version = staged.version if staged else 0
        index_key = pod_index_key(pod)
        try:
            index = self.read_index(pod)
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
        own_copy = copy(fresh=True)
        if own_copy is not None and not own_copy.current:
            # Triton would load whatever the pod's copy holds now: a version missing, or half there.
            return ReplicaFacts(pod_name, ip, True, ReplicaState.LOADING, own_copy.reason, copy=own_copy)
        if removal_running():
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

    @staticmethod
    def _state_after_failure(
        endpoint: triton.TritonEndpoint, model: str, version: int, state: ReplicaState, reason: str | None
    ) -> tuple[ReplicaState, str | None]:
        """What the index says after a failed load (a failed reload may leave the old one serving)."""
        try:
            return replica_state(triton.repository_index(endpoint), model, version)
        except triton.TritonError:
            return state, reason

    def reload_stale_versions(
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
                stale = ready_versions(self.read_index(pod), target) - {served}
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
