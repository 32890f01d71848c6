"""TritonServer: apply its children, then observe them (and Triton in each pod) into its status."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from triton_operator.api.common import ConditionType
from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.conditions import (
    Reason,
    set_conditions,
    with_kstatus,
)
from triton_operator.kube.rest import API_MESSAGE_MAX, Kube, api_message, apply_cannot_succeed
from triton_operator.observe.metrics import Scrape, pod_summary, total_summary
from triton_operator.observe.server import (
    ApplyFailure,
    PodTriton,
    claim_binding,
    failed_conditions,
    observe_server,
    pod_entries,
    server_status_conditions,
    waits_for_claim,
)
from triton_operator.reconcile.autoscaling import Autoscalers, handover_count
from triton_operator.reconcile.gates import sync_gates
from triton_operator.reconcile.gateway import OwnedRoutes, routed_condition, routes_sending_to
from triton_operator.reconcile.monitoring import PodMonitors
from triton_operator.reconcile.state import Key, OperatorState, object_key
from triton_operator.reconcile.status import now, stamp_metrics, write_conditions, write_status
from triton_operator.render.autoscaling import prometheus_address_default
from triton_operator.render.labels import (
    APPLIED_GENERATION_ANNOTATION,
    label_selector,
    owner_labels,
    route_labels,
)
from triton_operator.render.podmonitor import PodMonitorDefaults, pod_monitor_defaults
from triton_operator.render.repository import per_replica, render_repository_service, repository_server_name
from triton_operator.render.routes import server_route_names, server_routes
from triton_operator.render.server import (
    Copies,
    copies_for,
    deployment_name,
    metrics_enabled,
    pvc_name,
    render_all,
    service_endpoints,
    wants_models_gate,
)
from triton_operator.render.staging import DEFAULT_OPERATOR_IMAGE
from triton_operator.triton import client as triton
from triton_operator.triton.metrics import fetch_metrics, parse_metrics

log = logging.getLogger(__name__)
KIND = "TritonServer"
STATUS_FIELDS = (
    "observedGeneration",
    "conditions",
    "replicas",
    "readyReplicas",
    "updatedReplicas",
    "selector",
    "tritonVersion",
    "pods",
    "endpoints",
    "metrics",
    "autoscaling",
)


def optional_children(name: str) -> list[tuple[str, str]]:
    """Children that exist only under some specs (kind, name); removed when the spec no longer renders
    them: the PDB of a pool of one, the repository server of layout Shared."""
    return [
        ("PodDisruptionBudget", name),
        ("Deployment", repository_server_name(name)),
        ("Service", repository_server_name(name)),
    ]


def invalid_spec_message(exc: ValidationError) -> str:
    """pydantic errors as `spec.<path>: <message>` sentences."""
    parts = []
    for err in exc.errors()[:5]:
        path = ".".join(str(p) for p in err["loc"])
        parts.append(f"spec.{path}: {err['msg']}")
    return "; ".join(parts)


class ServerReconciler:
    def __init__(
        self,
        kube: Kube,
        state: OperatorState,
        pod_monitors: PodMonitorDefaults | None = None,
        operator_image: str = DEFAULT_OPERATOR_IMAGE,
        prometheus_address: str | None = None,
    ):
        self.kube = kube
        self.state = state
        self.operator_image = operator_image
        self.routes = OwnedRoutes(kube)
        monitor_defaults = pod_monitors or pod_monitor_defaults(os.environ)
        self.pod_monitors = PodMonitors(kube, monitor_defaults)
        self.autoscalers = Autoscalers(
            kube, prometheus_address or prometheus_address_default(os.environ), monitor_defaults
        )

    def forget(self, key: Key) -> None:
        """A TritonServer is gone: its optional children's verdicts go too (a new one of that name is told
        afresh that a kind is missing)."""
        self.pod_monitors.forget(key)
        self.autoscalers.forget(key)

    # -- apply --------------------------------------------------------------------------------------
    def apply(self, body: Mapping[str, Any]) -> bool:
        """Render and server-side-apply every child; remove children the spec no longer wants.

        False when part of the spec waits (a scale to zero while a model's route still sends the pool
        traffic): the next pass applies again.
        """
        meta = body["metadata"]
        name, namespace, uid, generation = (
            meta["name"],
            meta["namespace"],
            meta["uid"],
            meta.get("generation", 1),
        )
        try:
            spec = TritonServerSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            self._fail(body, Reason.INVALID_SPEC, invalid_spec_message(exc))
            raise kopf.PermanentError(f"invalid spec: {invalid_spec_message(exc)}") from exc
        try:
            copies = self._copies(body, spec)
            running = self.kube.get("Deployment", namespace, deployment_name(name))
            gate = self.state.models_gate and wants_models_gate(name, spec, running, copies)
            children = render_all(name, namespace, uid, spec, models_gate=gate, copies=copies)
            rendered = {(c["kind"], c["metadata"]["name"]) for c in children}
            held = self._hold_scale_to_zero(namespace, name, spec, children)
            for child in children:
                if child["kind"] == "Deployment" and child["metadata"]["name"] == deployment_name(name):
                    annotations = child["metadata"].setdefault("annotations", {})
                    annotations[APPLIED_GENERATION_ANNOTATION] = str(generation)
            # _copies applied the repository Service already (for its ClusterIP): once per apply is enough.
            applied_first = {("Service", repository_server_name(name))} if copies else set()
            handover = handover_count(spec, running)
            if handover is not None and running is not None:  # before the apply that lets the count go
                self.autoscalers.hand_over_replicas(body, handover)
            for child in children:
                if (child["kind"], child["metadata"]["name"]) in applied_first:
                    continue
                if _owned(child, spec):
                    kopf.adopt(child, owner=cast(kopf.Body, body))
                self.kube.apply(child)
            if handover is not None and running is None:  # a new Deployment starts at the fewest replicas
                self.autoscalers.hand_over_replicas(body, handover)
            for kind, child_name in optional_children(name):
                if (kind, child_name) not in rendered:
                    self.kube.delete(kind, namespace, child_name)
            exposure = spec.gateway
            wanted = server_routes(name, namespace, name, exposure, route_labels(name)) if exposure else []
            self.state.route_problems[object_key(body)] = self.routes.apply(
                body, wanted, server_route_names(name)
            )
            self.pod_monitors.apply(body, spec)  # its own failures go to Monitored, never fail the server
            self.autoscalers.apply(body, spec)  # ... and to Autoscaled
        except ApiException as exc:
            message = f"applying children failed: {exc.status} {api_message(exc, API_MESSAGE_MAX)}"
            permanent = apply_cannot_succeed(exc)
            self._fail(body, Reason.APPLY_FAILED, message, permanent=permanent)
            if permanent:
                raise kopf.PermanentError(message) from exc  # the spec must change; retrying cannot help
            raise kopf.TemporaryError(message, delay=15) from exc
        self.state.apply_failures.pop(object_key(body), None)
        return held is None

    def _copies(self, body: Mapping[str, Any], spec: TritonServerSpec) -> Copies | None:
        """Layout PerReplica: apply the repository server's Service first, for the ClusterIP the Triton
        pods' sync sidecars read from (see render/repository.source_url)."""
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        if not per_replica(spec):
            return None
        service = render_repository_service(name, namespace, owner_labels=owner_labels(name, meta["uid"]))
        kopf.adopt(service, owner=cast(kopf.Body, body))
        applied = self.kube.apply(service)
        cluster_ip = ((applied or {}).get("spec") or {}).get("clusterIP")
        return copies_for(name, namespace, spec, operator_image=self.operator_image, cluster_ip=cluster_ip)

    def _hold_scale_to_zero(
        self, namespace: str, name: str, spec: TritonServerSpec, children: list[dict[str, Any]]
    ) -> str | None:
        """Scaling to zero a pool a model's route still sends traffic to: keep its pods until the route
        says 0 (the model zeroes it at once on seeing spec.replicas 0), else its share would fail."""
        if spec.replica_count() != 0:
            return None
        routes = routes_sending_to(self.kube, namespace, name)
        if not routes:
            return None
        deployment = self.kube.get("Deployment", namespace, deployment_name(name))
        current = int(((deployment or {}).get("spec") or {}).get("replicas") or 0)
        if current == 0:
            return None
        for child in children:
            if child["kind"] == "Deployment" and child["metadata"]["name"] == deployment_name(name):
                child["spec"]["replicas"] = current
        log.info("holding %s/%s at %d replicas until %s send it nothing", namespace, name, current, routes)
        return f"scaling to 0 waits for {', '.join(routes)} to send {name} nothing"

    def _fail(self, body: Mapping[str, Any], reason: Reason, message: str, permanent: bool = True) -> None:
        """Ready/Degraded say why the spec could not be applied; the rest of the status stays."""
        generation = int(body["metadata"].get("generation", 1))
        failure = ApplyFailure(generation, str(reason), message, permanent)
        # Remembered: the observing passes that follow keep saying it (they would otherwise see no
        # Deployment and report Reconciling with Degraded=False, hiding the apiserver's refusal until
        # the drift period applies again).
        self.state.apply_failures[object_key(body)] = failure
        decided = with_kstatus(failed_conditions(failure), failure.permanent)
        write_conditions(self.kube, KIND, body, decided, STATUS_FIELDS)

    # -- observe ------------------------------------------------------------------------------------
    def refresh(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Observe the children and Triton in every pod; write status if it changed (returned as written)."""
        meta = body["metadata"]
        name, namespace, generation = meta["name"], meta["namespace"], int(meta.get("generation", 1))
        try:
            spec = TritonServerSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            return None  # apply() reported it; nothing to observe against
        key = object_key(body)
        deployment = self.kube.get("Deployment", namespace, deployment_name(name))
        # Shared with the server's models (one list per period for all of them; pod events invalidate it).
        pods = self.state.server_pods.get(key, lambda: self.kube.list("Pod", namespace, label_selector(name)))
        try:
            sync_gates(self.kube, self.state, key, pods)
        except ApiException as exc:  # status is still worth writing; the next pass tries again
            log.warning("the models-loaded gates of %s/%s: %s %s", namespace, name, exc.status, exc.reason)
        triton_by_pod, summaries = self._ask_triton(key, pods, metrics_enabled(spec))

        # Only while the scheduler holds pods for their claims is the claim read (one GET, at start-up).
        binding = waits_for_claim(pods) and claim_binding(
            self.kube.get("PersistentVolumeClaim", namespace, pvc_name(name, spec)), now()
        )
        floor = spec.autoscaling.min_replicas if spec.autoscaling is not None else None
        observed = observe_server(
            deployment, pods, triton_by_pod, claim_is_binding=binding, autoscaled_floor=floor
        )
        old = body.get("status") or {}
        routed = None
        if spec.gateway is not None:
            problem = self.state.route_problems.get(key)
            verdict = self.routes.judge(body, problem, server_route_names(name), exposure=spec.gateway)
            routed = routed_condition(verdict)
        decided = server_status_conditions(observed, generation, self.state.apply_failures.get(key), routed)
        watched = self.pod_monitors.condition(key)
        if watched is not None:  # told apart from kstatus's view: scraping never makes a server unready
            decided.append(watched)
        dep_status = (deployment or {}).get("status") or {}
        autoscaling, autoscaled = self.autoscalers.observe(body, spec, int(dep_status.get("replicas") or 0))
        if autoscaled is not None:  # nor does its autoscaler: the pool serves at the size it has
            decided.append(autoscaled)
        before = old.get("conditions") or []
        if spec.autoscaling is None:  # turned off: no condition about it left behind
            before = [c for c in before if c.get("type") != ConditionType.AUTOSCALED]
        conditions = set_conditions(before, decided, generation, now())
        entries = pod_entries(pods, triton_by_pod)
        versions = sorted({e["tritonVersion"] for e in entries if "tritonVersion" in e})
        new: dict[str, Any] = {
            "observedGeneration": generation,
            "conditions": conditions,
            "replicas": int(dep_status.get("replicas") or 0),
            "readyReplicas": int(dep_status.get("readyReplicas") or 0),
            "updatedReplicas": int(dep_status.get("updatedReplicas") or 0),
            "selector": label_selector(name),
            "pods": entries,
            "endpoints": service_endpoints(name, namespace, spec),
        }
        if versions:
            new["tritonVersion"] = ", ".join(versions)
        if autoscaling is not None:
            new["autoscaling"] = autoscaling
        if summaries:
            per_pod = [{"pod": pod, **s} for pod, s in sorted(summaries.items())]
            new["metrics"] = {"perPod": per_pod, "total": total_summary(per_pod)}
            stamp_metrics(new, old, now())
        return write_status(self.kube, KIND, body, new, STATUS_FIELDS)

    def _ask_triton(
        self, key: Key, pods: list[dict[str, Any]], with_metrics: bool
    ) -> tuple[dict[str, PodTriton], dict[str, dict[str, Any]]]:
        """Health, repository index and metrics of every running pod, by pod IP."""
        answers: dict[str, PodTriton] = {}
        summaries: dict[str, dict[str, Any]] = {}
        previous_scrapes = self.state.scrapes[key]
        scrapes: dict[str, Scrape] = {}
        for pod in pods:
            pod_name, ip = pod["metadata"]["name"], (pod.get("status") or {}).get("podIP")
            if not ip or pod["metadata"].get("deletionTimestamp") or pod["status"].get("phase") != "Running":
                continue
            endpoint = triton.TritonEndpoint(ip)
            try:
                health = triton.server_health(endpoint)
                # Fresh each period, and kept for the models of this server (they read it too).
                models = self.state.pod_index(pod, fresh=True) if health.live else []
                answers[pod_name] = PodTriton(health=health, models=models)
                if with_metrics and health.live:
                    scrape = Scrape(parse_metrics(fetch_metrics(endpoint)), time.monotonic())
                    # A pod keeps its name across container restarts: counters reset, handled as a reset.
                    summaries[pod_name] = pod_summary(previous_scrapes.get(pod_name), scrape)
                    scrapes[pod_name] = scrape
            except triton.TritonError as exc:
                answers[pod_name] = PodTriton(unreachable=exc.message)
        self.state.previous_scrapes[key] = {p: previous_scrapes[p] for p in scrapes if p in previous_scrapes}
        self.state.scrapes[key] = scrapes
        return answers, summaries


def _owned(child: Mapping[str, Any], spec: TritonServerSpec) -> bool:
    """Children get an owner reference (and so die with the server) except a retained model PVC."""
    if child["kind"] != "PersistentVolumeClaim":
        return True
    return not spec.model_repository.retain_on_delete
