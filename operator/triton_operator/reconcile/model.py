"""TritonModel: stage its files with a Job, load it on every ready server pod, observe it into status.

One pass (`reconcile`) is safe to repeat: the model's loop (handlers/tritonmodel.py's model_pass) calls
it on every event and every period, one at a time per model. A routed model's traffic is decided by the
one rollout engine (reconcile/traffic.py; docs/architecture.md), staging and removal Jobs are
reconcile/files.py's, loads on each pod reconcile/loading.py's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from triton_operator.api.tritonmodel import TritonModelSpec
from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.conditions import Reason, set_conditions
from triton_operator.kube.rest import Kube
from triton_operator.observe.leftovers import taken_over, wanted_names
from triton_operator.observe.model import (
    SERVER_GRACE_S,
    ObservedModel,
    ScrapePair,
    invalid_model_conditions,
    loaded_fraction,
    model_metrics,
    model_status_conditions,
)
from triton_operator.observe.rollout import TrafficOutcome
from triton_operator.observe.server import created_within
from triton_operator.observe.staging import (
    StagedRecord,
    StagingOutcome,
    load_token,
    recorded_staging,
    recorded_variant,
)
from triton_operator.reconcile.files import RepositoryFiles
from triton_operator.reconcile.loading import Loader, settle
from triton_operator.reconcile.routing import InServerTraffic
from triton_operator.reconcile.server import invalid_spec_message
from triton_operator.reconcile.split import SplitReconciler
from triton_operator.reconcile.state import ModelMemory, OperatorState, object_key, pod_index_key
from triton_operator.reconcile.status import now, stamp_metrics, write_conditions, write_status
from triton_operator.reconcile.traffic import with_problem
from triton_operator.render.labels import label_selector
from triton_operator.render.server import service_endpoints
from triton_operator.render.staging import DEFAULT_OPERATOR_IMAGE, staging_job_name
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
    "stagedVariants",
    "rollout",
    "traffic",
)


def staged_variants(memory: ModelMemory, variants: list[TritonModelSpec]) -> dict[int, StagedRecord]:
    """What is staged of the spec's experiment variants (those not staged yet are left out)."""
    return {
        v.version: memory.variants_staged[v.version] for v in variants if v.version in memory.variants_staged
    }


class ModelReconciler:
    def __init__(self, kube: Kube, state: OperatorState, operator_image: str = DEFAULT_OPERATOR_IMAGE):
        self.kube = kube
        self.state = state
        self.operator_image = operator_image
        self.files = RepositoryFiles(kube, state, operator_image)
        self.loader = Loader(kube, state)
        self.traffic = InServerTraffic(state, self.files, self.loader)
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
            write_conditions(self.kube, KIND, body, invalid_model_conditions(message), STATUS_FIELDS)
            raise kopf.PermanentError(f"invalid spec: {message}") from exc
        memory.wants = wanted_names(spec, name)
        if spec.through_gateway:
            return self.split.reconcile(body, spec, memory)
        if any("server" in entry for entry in (body.get("status") or {}).get("traffic") or []):
            self.split.withdraw(body)  # status still says it was split by a Gateway: no longer
        server_name = spec.server_ref.name
        memory.server = (namespace, server_name)
        wanted = staging_job_name(name, spec)
        variants = spec.variant_specs()  # an experiment's other versions, each from its own source
        status = body.get("status") or {}
        if memory.staged is None:
            memory.staged = recorded_staging(status, wanted, spec.version)
        for variant in variants:
            job = staging_job_name(name, variant)
            record = recorded_variant(status, job, variant.version)
            if variant.version not in memory.variants_staged and record is not None:
                memory.variants_staged[variant.version] = record
        if memory.baseline_job is None:
            # What the pods loaded before this operator started: what status says was staged.
            baseline = load_token(memory.staged, staged_variants(memory, variants))
            memory.baseline_job = baseline.job if baseline else ""

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

        keep = frozenset([wanted, *(staging_job_name(name, v) for v in variants)])
        outcome: StagingOutcome | None = None
        if not memory.has_staged(wanted):
            outcome = self.files.stage(body, spec, server_spec, wanted, memory, keep)
            if outcome.phase == "complete":
                memory.staged = StagedRecord(
                    wanted, spec.version, outcome.digest or spec.source.expected_digest()
                )
        problems = []
        for variant in variants:
            job = staging_job_name(name, variant)
            if (done := memory.variants_staged.get(variant.version)) is None or done.job != job:
                staged_variant = self.files.stage(body, variant, server_spec, job, memory, keep)
                if staged_variant.phase == "complete":
                    digest = staged_variant.digest
                    memory.variants_staged[variant.version] = StagedRecord(job, variant.version, digest)
                elif staged_variant.phase in ("failed", "blocked"):
                    problems.append(f"version {variant.version}: {staged_variant.message}")
        staged = memory.staged
        load = load_token(staged, staged_variants(memory, variants))
        removal_running = partial(self.files.removal_running, namespace, memory)
        pods, replicas = self.loader.load_everywhere(
            namespace, server_name, spec, name, load, memory, stopped, removal_running
        )
        routed = None
        if spec.routed and staged is not None:
            routed = self.traffic.route(body, spec, server_spec, memory, pods, replicas, stopped)
            if problems:
                message = "Staging an experiment variant failed: " + "; ".join(problems)
                routed = with_problem(routed, str(Reason.STAGING_FAILED), message, stalled=True)
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
            wanted_replicas=server_spec.fewest_replicas(),
        )
        return self._write(body, spec, observed, server_spec, memory, routed)

    def _server(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The TritonServer, read once per period for all its models (its watch events invalidate it)."""
        return self.state.servers.get(
            (namespace, name), partial(self.kube.get, "TritonServer", namespace, name)
        )

    # -- status ---------------------------------------------------------------------------------------
    def _write(
        self,
        body: Mapping[str, Any],
        spec: TritonModelSpec,
        observed: ObservedModel,
        server_spec: TritonServerSpec | None,
        memory: ModelMemory,
        routed: TrafficOutcome | None = None,
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
        variants = staged_variants(memory, spec.variant_specs())
        if variants:
            new["stagedVariants"] = [
                {"version": version, "job": record.job} | ({"digest": record.digest} if record.digest else {})
                for version, record in sorted(variants.items())
            ]
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
                served = staged.version if routed is None or routed.served is None else int(routed.served)
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
            public, versions = spec.resolved_model_name(name), spec.repository_name(name)
            others = self.kube.list("TritonModel", body["metadata"]["namespace"])
            mine = not taken_over(others, name, spec.server_ref.name, public)  # its parent's now, say
            unloaded = self._unload_everywhere(body, spec.server_ref.name, public) if mine else []
            if mine and spec.routed:  # the router went first (it has the public name), then its versions
                self._unload_everywhere(body, spec.server_ref.name, versions)
            if not spec.keep_files_on_delete:
                self.files.remove_all(body, spec)
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
