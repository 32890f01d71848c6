"""The TritonModel resource (tritonoperator.dev/v1alpha1) that points at a published model."""

from __future__ import annotations

import re
from typing import Any

import yaml

from model_builders.manifest import Manifest
from model_builders.targets import S3Target, Target

API_VERSION = "tritonoperator.dev/v1alpha1"


def resource_name(model_name: str) -> str:
    """A DNS-1123 name for the resource from a Triton model name (`mnist_mlp` -> `mnist-mlp`)."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
    return name[:63].rstrip("-") or "model"


def triton_model(
    manifest: Manifest,
    target: Target,
    *,
    server: str,
    endpoint_url: str | None = None,
    region: str | None = None,
    credentials_secret: str | None = None,
    name: str | None = None,
    namespace: str | None = None,
    claim: str | None = None,
    claim_path: str | None = None,
) -> dict[str, Any]:
    """The TritonModel object (a dict) for what `publish` wrote to `target`."""
    metadata: dict[str, Any] = {"name": name or resource_name(manifest.model_name)}
    if namespace:
        metadata["namespace"] = namespace
    source: dict[str, Any]
    if isinstance(target, S3Target):
        s3: dict[str, Any] = {"bucket": target.bucket, "prefix": target.prefix}
        if endpoint_url:
            s3["endpoint"] = endpoint_url
        if region:
            s3["region"] = region
        if credentials_secret:
            s3["credentialsSecret"] = {"name": credentials_secret}
        source = {"s3": s3}
    elif claim:
        # The folder is the root of `claim` (e.g. mounted from it): the model sits at claim_path inside.
        source = {"pvc": {"claimName": claim, "path": claim_path or target.path.name}}
    else:
        raise ValueError("a folder target needs the PVC it lives in (claim) to be read by a TritonModel")
    source["digest"] = manifest.digest
    return {
        "apiVersion": API_VERSION,
        "kind": "TritonModel",
        "metadata": metadata,
        "spec": {
            "serverRef": {"name": server},
            "modelName": manifest.model_name,
            "version": manifest.latest_version,
            "source": source,
        },
    }


def to_yaml(obj: dict[str, Any]) -> str:
    """YAML in the key order given (apiVersion, kind, metadata, spec)."""
    return str(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False))
