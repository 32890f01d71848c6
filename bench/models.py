"""TritonModel half of `make bench`, side by side in one run:

- apply -> model READY through the operator (staging Job from S3, then load on the replica), against
  doing the same by hand: fetch the published files into a server's repository folder and load them
  with Triton's repository API;
- a hot load through the repository API into a running pod, against a pod restart (delete the pod,
  wait until its replacement serves the model, which the operator loads on it).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client
from triton_operator.triton import client as triton

from bench.run import poll
from model_builders.publish import fetch
from model_builders.targets import parse_target
from sandbox.mnist import BUCKET, MODEL, PREFIX, publish_mnist
from tests.e2e.conftest import Sandbox
from tests.e2e.kube import pv_folder

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}


def _server(name: str) -> dict[str, Any]:
    # Layout Shared (a ReadWriteMany claim): the Triton pod mounts the PVC, so the by-hand baseline's
    # files, written into the PVC, are what Triton loads, as they were before layout PerReplica (there
    # the pod loads from its own copy, which a sidecar fills a moment later: loaded at once, the by-hand
    # files were not there yet). Both servers alike; bench/scale_out.py measures PerReplica.
    return {
        "apiVersion": "tritonoperator.dev/v1alpha1",
        "kind": "TritonServer",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "resources": {"gpus": 1},
            "modelRepository": {"size": "1Gi", "retainOnDelete": False, "accessModes": ["ReadWriteMany"]},
        },
    }


def _model(sb: Sandbox, server: str) -> dict[str, Any]:
    s3 = {
        "bucket": BUCKET,
        "prefix": PREFIX,
        "endpoint": sb.cfg.s3_endpoint,
        "region": "us-east-1",
        "credentialsSecret": {"name": "s3-credentials"},
    }
    return {
        "apiVersion": "tritonoperator.dev/v1alpha1",
        "kind": "TritonModel",
        "metadata": {"name": MODEL},
        "spec": {"serverRef": {"name": server}, "version": 1, "source": {"s3": s3}},
    }


def _apply(sb: Sandbox, ns: str, *objs: dict[str, Any]) -> None:
    sb.kubectl(
        "apply", "-n", ns, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objs})
    )


def _pod(sb: Sandbox, ns: str, server: str) -> Any:
    pods = client.CoreV1Api(sb.api).list_namespaced_pod(
        ns, label_selector=f"app.kubernetes.io/instance={server},app.kubernetes.io/component=server"
    )
    return next(p for p in pods.items if not p.metadata.deletion_timestamp)


def _repository(sb: Sandbox, ns: str, server: str) -> Path:
    return pv_folder(client.CoreV1Api(sb.api), ns, f"{server}-models")


def _model_ready(sb: Sandbox, ns: str) -> bool:
    obj: Any = client.CustomObjectsApi(sb.api).get_namespaced_custom_object(
        "tritonoperator.dev", "v1alpha1", ns, "tritonmodels", MODEL
    )
    ready: dict[str, Any] = next(
        (c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == "Ready"), {}
    )
    return bool(
        ready.get("status") == "True" and ready.get("observedGeneration") == obj["metadata"]["generation"]
    )


def run_model_bench(sb: Sandbox, rounds: int, workdir: Path) -> dict[str, list[float]]:
    publish_mnist(sb.cfg.s3_endpoint, workdir, CREDENTIALS)
    os.environ.update(CREDENTIALS)  # the by-hand fetch reads S3 like any boto3 user: from the environment
    core = client.CoreV1Api(sb.api)
    ns = f"bench-models-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": ns}})
    poll(lambda: bool(core.list_namespaced_service_account(ns).items), 30, "the default service account")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3-credentials"},
        "stringData": CREDENTIALS,
    }
    _apply(sb, ns, secret, _server("via-operator"), _server("by-hand"))
    for server in ("via-operator", "by-hand"):
        sb.kubectl("wait", "-n", ns, f"tritonserver/{server}", "--for=condition=Ready", "--timeout=180s")
    by_hand_ep = triton.TritonEndpoint(_pod(sb, ns, "by-hand").status.pod_ip)
    results: dict[str, list[float]] = {"operator": [], "direct": [], "hot": [], "restart": []}
    for _ in range(rounds):
        # Through the operator: staging Job + load on the replica, until the TritonModel is Ready.
        start = time.perf_counter()
        _apply(sb, ns, _model(sb, "via-operator"))
        poll(lambda: _model_ready(sb, ns), 180, "the TritonModel to be Ready")
        results["operator"].append(time.perf_counter() - start)
        sb.kubectl("delete", "-n", ns, f"tritonmodel/{MODEL}", "--wait=true", "--timeout=60s")
        shutil.rmtree(
            _repository(sb, ns, "via-operator") / MODEL, ignore_errors=True
        )  # stage afresh next round

        # By hand: the same files into the other server's repository, then Triton's repository API.
        start = time.perf_counter()
        fetch(
            parse_target(f"s3://{BUCKET}/{PREFIX}"),
            _repository(sb, ns, "by-hand") / MODEL,
            endpoint_url=sb.cfg.s3_endpoint,
            region="us-east-1",
        )
        triton.load_model(by_hand_ep, MODEL)
        poll(lambda: triton.model_ready(by_hand_ep, MODEL), 60, "the model to be ready by hand")
        results["direct"].append(time.perf_counter() - start)
        triton.unload_model(by_hand_ep, MODEL)
        shutil.rmtree(_repository(sb, ns, "by-hand") / MODEL, ignore_errors=True)

    # Hot reload against a pod restart, on the operator's server with the model loaded.
    _apply(sb, ns, _model(sb, "via-operator"))
    poll(lambda: _model_ready(sb, ns), 180, "the TritonModel to be Ready")
    for _ in range(rounds):
        ep = triton.TritonEndpoint(_pod(sb, ns, "via-operator").status.pod_ip)
        # Loading a model Triton already has with the same files is a no-op; unload it first so the
        # load is real (the operator would load it again within a period anyway).
        triton.unload_model(ep, MODEL)
        poll(lambda ep=ep: not triton.model_ready(ep, MODEL), 30, "the model to be unloaded")
        start = time.perf_counter()
        triton.load_model(ep, MODEL)
        poll(lambda ep=ep: triton.model_ready(ep, MODEL), 60, "the reloaded model")
        results["hot"].append(time.perf_counter() - start)

        old = _pod(sb, ns, "via-operator")
        start = time.perf_counter()
        core.delete_namespaced_pod(old.metadata.name, ns)

        def replacement_serves(old_uid: str = old.metadata.uid) -> bool:
            pods = core.list_namespaced_pod(
                ns,
                label_selector="app.kubernetes.io/instance=via-operator,app.kubernetes.io/component=server",
            ).items
            fresh = [
                p
                for p in pods
                if p.metadata.uid != old_uid and p.status.pod_ip and not p.metadata.deletion_timestamp
            ]
            try:
                return bool(fresh) and triton.model_ready(
                    triton.TritonEndpoint(fresh[0].status.pod_ip), MODEL
                )
            except triton.TritonError:
                return False

        results["restart"].append(poll(replacement_serves, 180, "the replacement pod to serve the model"))
    core.delete_namespace(ns)
    # Gone for good before anything else is measured: a terminating namespace still costs requests.
    poll(lambda: ns not in {n.metadata.name for n in core.list_namespace().items}, 180, "the namespace to go")
    return results


def report(results: dict[str, list[float]], rounds: int) -> None:
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\nTritonModel, {rounds} rounds each, medians (seconds)")
    print(f"{'':44}{'a':>8}{'b':>8}{'a/b':>8}")
    print(
        f"{'apply -> READY: operator (a) vs by hand (b)':44}{med['operator']:8.2f}{med['direct']:8.2f}"
        f"{med['operator'] / med['direct']:8.2f}"
    )
    print(
        f"{'pod restart (a) vs hot load (b)':44}{med['restart']:8.2f}{med['hot']:8.2f}"
        f"{med['restart'] / med['hot']:8.2f}"
    )
