"""Objects a fresh sandbox needs: fake GPU nodes (plus one CPU node for the operator and its Jobs)
and a default StorageClass served by the pod runner's local-folder provisioner."""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from sandbox.config import PROVISIONER, STORAGE_CLASS, SandboxConfig

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def api_client(cfg: SandboxConfig) -> client.ApiClient:
    api: client.ApiClient = config.new_client_from_config(config_file=str(cfg.kubeconfig))
    return api


def _node(cfg: SandboxConfig, name: str, index: int, gpus: int) -> tuple[dict[str, Any], dict[str, Any]]:
    labels = {
        "type": "kwok",  # kwok manages nodes with this label
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "sandbox-gpu" if gpus else "sandbox-cpu",
    }
    if gpus:
        # What NVIDIA's GPU feature discovery puts on a GPU node, so selectors written for real pools work.
        labels |= {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": cfg.gpu_product,
            "nvidia.com/gpu.count": str(gpus),
            "nvidia.com/gpu.memory": "81920",
            "nvidia.com/gpu.family": "ampere",
            "nvidia.com/cuda.driver.major": "550",
        }
    capacity = {"cpu": "64", "memory": "512Gi", "pods": "110", "ephemeral-storage": "1Ti"}
    if gpus:
        capacity["nvidia.com/gpu"] = str(gpus)
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {
            "podCIDR": cfg.node_pod_cidr(index),
            "podCIDRs": [cfg.node_pod_cidr(index)],
            "taints": [GPU_TAINT] if gpus else [],
        },
    }
    status = {
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [
            {"type": "InternalIP", "address": cfg.node_ip(index)},
            {"type": "Hostname", "address": name},
        ],
    }
    return body, status


def node_names(cfg: SandboxConfig) -> list[str]:
    return [cfg.node_name(i) for i in range(cfg.nodes)] + ["cpu-node-0"]


def _node_specs(cfg: SandboxConfig) -> list[tuple[str, int, int]]:
    gpu_nodes = [(cfg.node_name(i), i, cfg.gpus_per_node) for i in range(cfg.nodes)]
    return [*gpu_nodes, ("cpu-node-0", cfg.nodes, 0)]


def node_ips(cfg: SandboxConfig) -> list[str]:
    return [cfg.node_ip(index) for _, index, _ in _node_specs(cfg)]


# kwok's `Logs` kind (kwok.x-k8s.io/v1alpha1, as kwok v0.8.0 defines it; schema cut to the fields used):
# kwok (--enable-crds=Logs) watches these objects, and the pod runner creates one per pod naming its
# containers' log files (containerlogs.py), so kwok's kubelet server can answer `kubectl logs`.
KWOK_LOGS_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "logs.kwok.x-k8s.io"},
    "spec": {
        "group": "kwok.x-k8s.io",
        "names": {"kind": "Logs", "listKind": "LogsList", "plural": "logs", "singular": "logs"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "required": ["metadata", "spec"],
                        "properties": {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "metadata": {"type": "object"},
                            "spec": {
                                "type": "object",
                                "required": ["logs"],
                                "properties": {
                                    "logs": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "containers": {"type": "array", "items": {"type": "string"}},
                                                "follow": {"type": "boolean"},
                                                "logsFile": {"type": "string"},
                                                "previousLogsFile": {"type": "string"},
                                            },
                                        },
                                    }
                                },
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


def create_kwok_crds(cfg: SandboxConfig) -> None:
    """kwok's Logs CRD, established before kwok starts watching it."""
    ext = client.ApiextensionsV1Api(api_client(cfg))
    try:
        ext.create_custom_resource_definition(KWOK_LOGS_CRD)
    except ApiException as exc:
        if exc.status != 409:
            raise
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        crd = ext.read_custom_resource_definition(KWOK_LOGS_CRD["metadata"]["name"])
        if any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []):
            return
        time.sleep(0.1)
    raise RuntimeError("kwok's Logs CRD was not established within 30 s")


def create_cluster_objects(cfg: SandboxConfig) -> None:
    api = api_client(cfg)
    core = client.CoreV1Api(api)
    for name, index, gpus in _node_specs(cfg):
        body, _ = _node(cfg, name, index, gpus)
        try:
            core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
    storage = client.StorageV1Api(api)
    try:
        storage.create_storage_class(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": STORAGE_CLASS,
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                "provisioner": PROVISIONER,
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
                "allowVolumeExpansion": True,
            }
        )
    except ApiException as exc:
        if exc.status != 409:
            raise


def nodes_ready(cfg: SandboxConfig) -> bool:
    """True once every node is Ready with our addresses and capacity.

    kwok initialises a node's status itself (several patches in a row); we set addresses and GPU
    capacity after it has, and check they stuck, so its first patches cannot erase ours.
    """
    core = client.CoreV1Api(api_client(cfg))
    nodes = {n.metadata.name: n for n in core.list_node().items}
    done = True
    for name, index, gpus in _node_specs(cfg):
        node = nodes.get(name)
        conds = {c.type: c.status for c in ((node.status.conditions or []) if node else [])}
        if node is None or conds.get("Ready") != "True":
            done = False
            continue
        _, want = _node(cfg, name, index, gpus)
        ips = {a.address for a in node.status.addresses or [] if a.type == "InternalIP"}
        gpu_ok = not gpus or (node.status.allocatable or {}).get("nvidia.com/gpu") == str(gpus)
        if ips != {cfg.node_ip(index)} or not gpu_ok:
            core.patch_node_status(name, {"status": want})
            done = False
    return done


def default_service_account_exists(cfg: SandboxConfig) -> bool:
    core = client.CoreV1Api(api_client(cfg))
    try:
        core.read_namespaced_service_account("default", "default")
    except ApiException:
        return False
    return True
