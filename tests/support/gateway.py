"""TritonServers and a TritonModel exposed through the sandbox's Gateway: a pool server with its own
route, and the scorer model split across pools under its own host name."""

from __future__ import annotations

from typing import Any

from sandbox import gateway as gw
from tests.e2e.conftest import Sandbox
from tests.support.objects import tritonmodel
from tests.support.scorer import MODEL

IMAGES = {
    "pool-a": "nvcr.io/nvidia/tritonserver:24.10-py3",
    "pool-b": "nvcr.io/nvidia/tritonserver:24.11-py3",
}


def pool_server(name: str, replicas: int = 1, parent: dict[str, Any] | None = None) -> dict[str, Any]:
    ref = parent or {"name": gw.GATEWAY_NAME, "namespace": gw.GATEWAY_NAMESPACE, "sectionName": "http"}
    return {
        "apiVersion": "tritonoperator.dev/v1alpha1",
        "kind": "TritonServer",
        "metadata": {"name": name},
        "spec": {
            "image": IMAGES.get(name, IMAGES["pool-a"]),
            "replicas": replicas,
            "resources": {"gpus": 1},
            "modelRepository": {"size": "1Gi"},
            "gateway": {"parentRefs": [ref], "hostnames": [f"{name}.test"]},
        },
    }


def host_of(ns: str) -> str:
    """The model's host name in namespace `ns` (two namespaces' models must not claim the same one)."""
    return f"{MODEL}.{ns}.test"


def split_model(sb: Sandbox, ns: str, server: str, **spec: Any) -> dict[str, Any]:
    model = tritonmodel(MODEL, sb.cfg.s3_endpoint, prefix=f"{MODEL}/1")
    model["spec"]["serverRef"] = {"name": server}
    model["spec"]["gateway"] = {
        "parentRefs": [{"name": gw.GATEWAY_NAME, "namespace": gw.GATEWAY_NAMESPACE, "sectionName": "http"}],
        "hostnames": [host_of(ns)],
    }
    model["spec"].update(spec)
    return model
