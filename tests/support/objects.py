"""The sandbox's TritonServer, TritonModel and S3 credentials Secret as manifests, and the helpers the
e2e tests, the chaos tests and the benchmarks use to apply them and read them back (custom objects, their
conditions and Events, the server's ready pods, the pod runner's process ids)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any, cast

import yaml
from kubernetes import client

from tests.e2e import kube
from tests.e2e.conftest import Sandbox

BUCKET = "models"
PREFIX = "mnist/1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "sandbox", "AWS_SECRET_ACCESS_KEY": "sandbox-secret"}
SERVER = "triton"
GROUP_PATH = ("tritonoperator.dev", "v1alpha1")


def get_cr(
    sb: Sandbox, ns: str, plural: str, name: str, group_version: tuple[str, str] = GROUP_PATH
) -> dict[str, Any] | None:
    """A custom object (ours unless `group_version` says otherwise), None when there is none."""
    api = client.CustomObjectsApi(sb.api)
    try:
        obj = cast(dict[str, Any], api.get_namespaced_custom_object(*group_version, ns, plural, name))
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def kubectl_table(text: str) -> list[dict[str, str]]:
    """The rows of `kubectl get`'s table by column: a cell starts under its heading, so an empty cell
    stays empty instead of shifting the others."""
    header, *rows = text.splitlines()
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [{header[a:b].strip(): row[a:b].strip() for a, b in bounds} for row in rows]


def condition(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == ctype), {})


def apply(sb: Sandbox, ns: str, *objs: dict[str, Any]) -> None:
    sb.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(objs))


POD_SELECTOR = f"app.kubernetes.io/instance={SERVER},app.kubernetes.io/component=server"
TRITON_CONTAINER = "tritonserver"


def server_pods(sb: Sandbox, ns: str) -> list[Any]:
    return kube.ready_pods(client.CoreV1Api(sb.api), ns, POD_SELECTOR)


def runner_pids(sb: Sandbox, ns: str, container: str = TRITON_CONTAINER) -> dict[str, int]:
    """The process of each pod's `container` (a Triton pod also runs its repository-sync sidecar), or of
    its only container, by pod name (the sandbox's pod runner lists them)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{sb.cfg.ports['podrunner']}/pods", timeout=3) as resp:
        pods = json.load(resp)
    pids = {}
    for pod in (p for p in pods if p["namespace"] == ns):
        running = [c for c in pod["containers"] if c["pid"]]
        chosen = [c for c in running if c["name"] == container] or running[:1]
        if chosen:
            pids[pod["name"]] = chosen[0]["pid"]
    return pids


def triton_restarts(pod: Any) -> int:
    """How often a Triton pod's tritonserver container restarted (its status, as the kubelet reports)."""
    statuses = pod.status.container_statuses or []
    return next((c.restart_count for c in statuses if c.name == TRITON_CONTAINER), 0)


def events(sb: Sandbox, ns: str, name: str) -> list[Any]:
    core = client.CoreV1Api(sb.api)
    return [e for e in core.list_namespaced_event(ns).items if e.involved_object.name == name]


def tritonserver(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "tritonoperator.dev/v1alpha1",
        "kind": "TritonServer",
        "metadata": {"name": SERVER},
        "spec": {"replicas": replicas, "resources": {"gpus": 1}, "modelRepository": {"size": "1Gi"}},
    }


def tritonmodel(
    name: str, endpoint: str, *, prefix: str = PREFIX, config: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    source: dict[str, Any] = {
        "s3": {
            "bucket": BUCKET,
            "prefix": prefix,
            "endpoint": endpoint,
            "region": "us-east-1",
            "credentialsSecret": {"name": "s3-credentials"},
        },
        **extra,
    }
    spec: dict[str, Any] = {"serverRef": {"name": SERVER}, "version": 1, "source": source}
    if config is not None:
        spec["config"] = config
    return {
        "apiVersion": "tritonoperator.dev/v1alpha1",
        "kind": "TritonModel",
        "metadata": {"name": name},
        "spec": spec,
    }


def credentials_secret() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3-credentials"},
        "stringData": CREDENTIALS,
    }
