"""Whole operator passes without a cluster: a `World` of one fake Kubernetes, fake Tritons and a clock,
driven step by step (issue 18, point 5).

The operator runs through its stable entry points only: the server pass (`server_pass`, as its loop
calls it) and `ModelReconciler.reconcile`. Between passes a test plays the cluster: it completes or fails
the staging Jobs (their effect lands in the server's repository), lets the Deployment controller and the
kubelet start pods (each with its own fake Triton as pod IP), moves the clock, sends traffic.
`restart_operator` throws the operator's memory away, as a new operator pod would start: a fresh
`OperatorState` and new reconcilers, fed a listing of every object as kopf's watches start with.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
import pytest
from triton_operator.handlers.tritonserver import server_pass
from triton_operator.reconcile.model import ModelReconciler
from triton_operator.reconcile.server import ServerReconciler
from triton_operator.reconcile.state import OperatorState, object_key, pod_index_key
from triton_operator.render.labels import CHILD_LABELS, STAGING_LABELS
from triton_operator.render.labels import SERVER_NAME_LABEL as SERVER_LABEL
from triton_operator.render.repository import REPOSITORY_COMPONENT
from triton_operator.render.server import deployment_name
from triton_operator.triton import client as triton_client

from tests.support.fakeclock import FakeClock, install
from tests.support.fakekube import FakeKube
from tests.support.faketriton import FakeTriton, Repository, TritonPool
from tests.support.kubesemantics import condition_of, matches

NS = "default"
GROUP_VERSION = "tritonoperator.dev/v1alpha1"
GATEWAY_API = "gateway.networking.k8s.io/v1"
FAKE_CONNECT_TIMEOUT_S = 30.0
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


def server_spec(replicas: int = 2, **extra: Any) -> dict[str, Any]:
    return {"replicas": replicas, "resources": {"gpus": 1}, "modelRepository": {"size": "1Gi"}, **extra}


def model_spec(server: str, version: int = 1, **extra: Any) -> dict[str, Any]:
    source = {"s3": {"bucket": "models", "prefix": f"m/{version}"}}
    return {"serverRef": {"name": server}, "version": version, "source": source, **extra}


def selected(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return matches(",".join(f"{k}={v}" for k, v in wanted.items()), labels)


class Operator:
    """The operator's memory and reconcilers; its watch mirrors what handlers/*.py do with events."""

    def __init__(self, kube: FakeKube) -> None:
        self.state = OperatorState()
        self.models = ModelReconciler(kube, self.state, "operator:test")
        self.servers = ServerReconciler(kube, self.state)

    def saw(self, event: str, obj: Mapping[str, Any]) -> None:
        kind, meta = obj["kind"], obj["metadata"]
        labels = meta.get("labels") or {}
        if kind == "TritonServer":
            if event == "DELETED":
                self.state.forget(object_key(obj))
                self.servers.forget(object_key(obj))
            else:
                self.state.servers.put(object_key(obj), dict(obj))
        if kind == "Pod" and selected(labels, CHILD_LABELS) and labels.get("app.kubernetes.io/instance"):
            self.state.server_pods.invalidate((meta["namespace"], labels["app.kubernetes.io/instance"]))
            self.state.indexes.invalidate(pod_index_key(obj))
        if kind in ("Job", "Pod") and selected(labels, STAGING_LABELS):
            seen = self.state.staging.saw_job if kind == "Job" else self.state.staging.saw_pod
            seen(event, obj)


@dataclass
class Tally:
    """What the world counts: staging (and removal) Jobs the operator created, repository loads and
    router loads Triton was asked for (model, pod), and server pods taken out of service (their Ready
    went from True to False: the Service stops sending them requests)."""

    jobs: list[str] = field(default_factory=list)
    loads: list[tuple[str, str]] = field(default_factory=list)
    router_loads: list[tuple[str, str]] = field(default_factory=list)
    out_of_service: list[str] = field(default_factory=list)
    applies: list[str] = field(default_factory=list)  # the servers' Deployments applied (again)
    rounds: int = 0  # rounds of passes run


class World:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        install(self.clock, monkeypatch)
        # The fakes answer in-process: on a busy machine a connection may take over the client's 2 s,
        # which it would take for a hung pod (held for 5 s, every call failing at once meanwhile).
        monkeypatch.setattr(triton_client, "CONNECT_TIMEOUT_S", FAKE_CONNECT_TIMEOUT_S)
        self.events: list[tuple[str, str, str, str]] = []  # (object, type, reason, message)
        monkeypatch.setattr(kopf, "event", self._event)
        self.kube = FakeKube(now=self.clock.now)
        self.kube.allocate_cluster_ip = self._cluster_ip  # type: ignore[method-assign]
        self.kube.served[GATEWAY_API] = ["gateways", "httproutes", "grpcroutes"]
        self.tritons = TritonPool()
        self.every_triton: list[FakeTriton] = []
        self.repositories: dict[str, Repository] = {}  # by server
        self.operator = Operator(self.kube)
        self.kube.watch(self._saw)
        self.restarts = 0
        self._ready: dict[str, bool] = {}  # pod -> Ready, as last seen
        self._out_of_service: list[str] = []
        self.rounds_run = 0
        self.traffic: Callable[[World], None] | None = None  # what clients send each round
        # The restart measure: the checkpoint where the operator restarts, and the tally at each.
        self.restart_at: str | None = None
        self.marks: dict[str, Tally] = {}
        self.checks: dict[str, Callable[[World], None]] = {}  # checkpoint -> a test's assertions there

    def close(self) -> None:
        self.tritons.stop_all()

    def _saw(self, event: str, obj: dict[str, Any]) -> None:
        self.operator.saw(event, obj)
        if obj["kind"] != "Pod":
            return
        name = obj["metadata"]["name"]
        if event == "DELETED" and (obj.get("status") or {}).get("podIP"):
            self.tritons.stop(obj["status"]["podIP"])
        ready = (condition_of(obj, "Ready") or {}).get("status") == "True"
        if self._ready.get(name) and not ready and event != "DELETED":
            self._out_of_service.append(name)
        self._ready[name] = ready

    def _event(self, body: Any, *, type: str, reason: str, message: str) -> None:
        self.events.append((body["metadata"]["name"], type, reason, message))

    # -- what a user does ---------------------------------------------------------------------------
    def add_server(self, name: str, spec: Mapping[str, Any] | None = None) -> None:
        self.repositories.setdefault(name, Repository())
        body = {
            "apiVersion": GROUP_VERSION,
            "kind": "TritonServer",
            "metadata": {"name": name, "namespace": NS},
            "spec": dict(spec or server_spec()),
        }
        self.kube.add(body)

    def add_model(self, name: str, spec: Mapping[str, Any]) -> None:
        body = {
            "apiVersion": GROUP_VERSION,
            "kind": "TritonModel",
            "metadata": {"name": name, "namespace": NS, "finalizers": [KOPF_FINALIZER]},
            "spec": dict(spec),
        }
        self.kube.add(body)

    def set_spec(self, kind: str, name: str, spec: Mapping[str, Any]) -> None:
        self.kube.update_spec(kind, NS, name, spec)

    def command(self, model: str, value: str) -> None:
        """`kubectl annotate tritonmodel M tritonoperator.dev/rollout=VALUE --overwrite`."""
        self.kube.annotate("TritonModel", NS, model, {"tritonoperator.dev/rollout": value})

    def clients(self, per_pod: int = 60, failing: Mapping[int, float] | None = None) -> None:
        """Requests to every routed model: a Gateway splits them between servers by its routes' weights,
        each pod's router between versions by the variants it was loaded with; Triton and the router
        count them. `failing`: version -> the share of its requests that fail."""
        shares = self.gateway_shares()
        for triton in list(self.tritons):
            share = shares.get(self.server_of(triton), 1.0)
            for public, loaded in list(triton.loaded.items()):
                raw = ((loaded.config.get("parameters") or {}).get("variants") or {}).get("string_value")
                if not loaded.from_files or not raw:
                    continue
                variants = json.loads(raw)
                total = sum(int(v["weight"]) for v in variants) or 1
                for v in variants:
                    requests = int(per_pod * share) * int(v["weight"]) // total
                    failures = int(requests * (failing or {}).get(int(v["version"]), 0.0))
                    triton.serve(v["model"], v["version"], requests - failures, failures, router=public)

    def gateway_shares(self) -> dict[str, float]:
        """Server -> its share of a model's requests times the number of servers the route names."""
        shares: dict[str, float] = {}
        for route in self.kube.list("HTTPRoute", NS):
            for rule in route["spec"].get("rules") or []:
                backends = rule.get("backendRefs") or []
                if len(backends) < 2:
                    continue  # a server's own route, or a model on one server: all of it
                total = sum(int(b.get("weight", 1)) for b in backends) or 1
                for b in backends:
                    shares[b["name"]] = len(backends) * int(b.get("weight", 1)) / total
        return shares

    def server_of(self, triton: FakeTriton) -> str:
        pods = [p for p in self.kube.list("Pod", NS) if p["status"].get("podIP") == triton.ip]
        return str(pods[0]["metadata"]["labels"].get("app.kubernetes.io/instance")) if pods else ""

    # -- the cluster's controllers ------------------------------------------------------------------
    def _cluster_ip(self, service: Mapping[str, Any]) -> str | None:
        """A server's repository-server Service gets the address of a fake repository server (its
        pod and Service in one); other Services get none: no test talks to them."""
        labels = service["metadata"].get("labels") or {}
        if labels.get("app.kubernetes.io/component") != REPOSITORY_COMPONENT:
            return None
        server = labels["app.kubernetes.io/instance"]
        return self.tritons.start_repository_server(self.repositories.setdefault(server, Repository())).ip

    def start_pods(self) -> list[str]:
        """Deployments get their pods; each pending pod starts with a fake Triton as its IP."""
        started = []
        for dep in self.kube.list("Deployment", NS):
            self.kube.sync_deployment(NS, dep["metadata"]["name"])
        for pod in self.kube.list("Pod", NS, "app.kubernetes.io/component=server"):
            if pod["status"].get("podIP"):
                continue
            server = pod["metadata"]["labels"]["app.kubernetes.io/instance"]
            triton = self.tritons.start(self.repositories.setdefault(server, Repository()))
            self.every_triton.append(triton)
            self.kube.start_pod(NS, pod["metadata"]["name"], triton.ip)
            started.append(pod["metadata"]["name"])
        return started

    def roll_server(self, server: str) -> None:
        """Every pod of the server replaced by a new one (a rolling update, all at once)."""
        self.kube.roll_deployment(NS, deployment_name(server))
        self.start_pods()

    def restart_triton(self, pod: str) -> None:
        obj = self.kube.get("Pod", NS, pod)
        assert obj is not None
        self.tritons.by_ip[obj["status"]["podIP"]].restart()
        self.kube.restart_container(NS, pod)

    def finish_jobs(self, *, fail: str | None = None) -> list[str]:
        """Every unfinished staging or removal Job ends: its files land in (or leave) the server's
        repository and the Job completes; `fail` names a Job that fails instead."""
        done = []
        for job in self.kube.list("Job", NS):
            status = job.get("status") or {}
            if status.get("succeeded") or status.get("failed"):
                continue
            name = job["metadata"]["name"]
            if name == fail:
                self.kube.fail_job(NS, name)
                continue
            args = job["spec"]["template"]["spec"]["containers"][0]["args"]
            staged = json.loads(args[args.index("--spec") + 1])
            repository = self.repositories.setdefault(job["metadata"]["labels"][SERVER_LABEL], Repository())
            if "--remove" in args:
                repository.remove(staged["modelName"], staged["version"])
                self.kube.complete_job(NS, name)
            else:
                # The files' digest: what was staged (a new source or config stages new files).
                digest = (
                    "sha256:" + hashlib.sha256(json.dumps(staged, sort_keys=True).encode()).hexdigest()[:16]
                )
                repository.stage(staged["modelName"], staged["version"], digest)
                self.kube.complete_job(NS, name, digest=digest)
            done.append(name)
        return done

    # -- the operator -------------------------------------------------------------------------------
    def restart_operator(self) -> None:
        """A new operator process: no memory; kopf's watches list every object first."""
        self.operator = Operator(self.kube)
        self.restarts += 1
        for obj in list(self.kube.objects.values()):
            self.operator.saw("ADDED", obj)

    def checkpoint(self, name: str) -> None:
        """A named point of a scenario: the tally so far is kept; the operator restarts here if asked."""
        self.marks[name] = self.tally()
        if name in self.checks:
            self.checks[name](self)
        if name == self.restart_at:
            self.restart_operator()

    def server_pass(self, name: str) -> None:
        body = self.body("TritonServer", name)
        server_pass(self.operator.servers, body, lambda: False)

    def delete_model(self, name: str) -> bool:
        """`kubectl delete tritonmodel`: the finalizer's handler (`ModelReconciler.delete`) runs until it
        is done, as kopf calls it again after each TemporaryError; then the object goes. Done or not."""
        try:
            self.operator.models.delete(self.body("TritonModel", name))
        except kopf.TemporaryError:
            return False
        self.kube.delete("TritonModel", NS, name)
        return True

    def model_pass(self, name: str) -> None:
        with contextlib.suppress(kopf.PermanentError):  # reported in status, as the model's loop does
            self.operator.models.reconcile(self.body("TritonModel", name))

    def accept_routes(self) -> None:
        """The Gateway controller: every route accepted by each parent, its backends resolved."""
        for kind in ("HTTPRoute", "GRPCRoute"):
            for route in self.kube.list(kind, NS):
                generation = route["metadata"]["generation"]
                conditions = [
                    {"type": t, "status": "True", "reason": t, "observedGeneration": generation}
                    for t in ("Accepted", "ResolvedRefs")
                ]
                parents = [
                    {"parentRef": ref, "controllerName": "example.com/gateway", "conditions": conditions}
                    for ref in route["spec"].get("parentRefs") or []
                ]
                if (route.get("status") or {}).get("parents") != parents:
                    self.kube.patch_status(kind, NS, route["metadata"]["name"], {"parents": parents})

    def round(self, *, jobs: bool = True) -> None:
        """One turn of everything: clients send requests (`traffic`), server passes, pods started,
        routes accepted, model passes (copies after their parents), then (with `jobs`) every staging
        Job finishes."""
        self.rounds_run += 1
        if self.traffic is not None:
            self.traffic(self)
        for server in self.names("TritonServer"):
            self.server_pass(server)
        self.start_pods()
        self.accept_routes()
        for model in sorted(self.names("TritonModel"), key=lambda n: "-on-" in n):
            if self.kube.get("TritonModel", NS, model) is not None:
                self.model_pass(model)
        if jobs:
            self.finish_jobs()

    def rounds(self, count: int, *, jobs: bool = True, advance_s: float = 1.0) -> None:
        for _ in range(count):
            self.round(jobs=jobs)
            self.clock.advance(advance_s)

    def until(
        self, done: Callable[[World], bool], *, limit: int = 30, advance_s: float = 1.0, jobs: bool = True
    ) -> int:
        """Rounds until `done` (at most `limit`: a scenario that never gets there fails, saying so)."""
        for count in range(1, limit + 1):
            self.round(jobs=jobs)
            self.clock.advance(advance_s)
            if done(self):
                return count
        raise AssertionError(f"not done after {limit} rounds; statuses: {self.statuses()}")

    # -- reading what a user would ------------------------------------------------------------------
    def body(self, kind: str, name: str) -> dict[str, Any]:
        obj = self.kube.get(kind, NS, name)
        assert obj is not None, f"{kind} {name} is gone"
        return obj

    def status(self, name: str, kind: str = "TritonModel") -> dict[str, Any]:
        return dict(self.body(kind, name).get("status") or {})

    def condition(self, name: str, ctype: str, kind: str = "TritonModel") -> tuple[str, str]:
        conditions = self.status(name, kind).get("conditions") or []
        cond: dict[str, Any] = next((c for c in conditions if c["type"] == ctype), {})
        return str(cond.get("status")), str(cond.get("reason"))

    def event_list(self) -> list[tuple[str, str, str, str]]:
        """(object, type, reason, message) of every Event, posted as objects (`kubectl get events`)
        or through kopf.event."""
        posted = [
            (e["involvedObject"]["name"], e["type"], e["reason"], e.get("message", ""))
            for e in self.kube.list("Event", None)
        ]
        return posted + self.events

    def names(self, kind: str, selector: str | None = None) -> list[str]:
        return [o["metadata"]["name"] for o in self.kube.list(kind, NS, selector)]

    def statuses(self) -> dict[str, Any]:
        return {n: self.status(n) for n in self.names("TritonModel")}

    def tritons_of(self, server: str) -> list[FakeTriton]:
        pods = self.kube.list(
            "Pod", NS, f"app.kubernetes.io/instance={server},app.kubernetes.io/component=server"
        )
        ips = [p["status"].get("podIP") for p in pods]
        return [self.tritons.by_ip[ip] for ip in ips if ip in self.tritons.by_ip]

    def tally(self) -> Tally:
        """Jobs created so far, and the loads asked of each Triton (by its pod's order of start, so
        that two runs of a scenario compare)."""
        ips = {t.ip: f"pod{n}" for n, t in enumerate(self.every_triton)}
        pods = {
            p["metadata"]["name"]: ips.get(p["status"].get("podIP"), "") for p in self.kube.list("Pod", NS)
        }
        tally = Tally(
            jobs=self.kube.created("Job"),
            out_of_service=[pods.get(p, p) for p in self._out_of_service],
            applies=[c.name for c in self.kube.calls if c.verb == "apply" and c.kind == "Deployment"],
            rounds=self.rounds_run,
        )
        for n, triton in enumerate(self.every_triton):
            for model, with_files in triton.loads:
                (tally.router_loads if with_files else tally.loads).append((model, f"pod{n}"))
        return tally
