"""The TritonModel resource (tritonoperator.dev/v1alpha1) that points at a published model."""

from __future__ import annotations

import re
from typing import Any

import yaml

from model_builders.errors import BuildError
from model_builders.manifest import Manifest
from model_builders.targets import FolderTarget, S3Target, Target, version_in_target

API_VERSION = "tritonoperator.dev/v1alpha1"
# --rollout value -> spec.rollout.strategy (triton_operator.api.tritonmodel.RolloutStrategy).
ROLLOUT_STRATEGIES = {"canary": "Canary"}


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
    rollout: str | None = None,
) -> dict[str, Any]:
    """The TritonModel object (a dict) for what `publish` wrote to `target`.

    spec.version is the manifest's highest version, the folder the artifact holds for it. `rollout`
    `"canary"` adds `spec.rollout: {strategy: Canary}` (how the operator moves traffic to a new version).
    """
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
        path = claim_path or default_claim_path(target)
        check_path_version(path, manifest.latest_version)
        source = {"pvc": {"claimName": claim, "path": path}}
    else:
        raise ValueError("a folder target needs the PVC it lives in (claim) to be read by a TritonModel")
    source["digest"] = manifest.digest
    spec: dict[str, Any] = {
        "serverRef": {"name": server},
        "modelName": manifest.model_name,
        "version": manifest.latest_version,
        "source": source,
    }
    if rollout is not None:
        if rollout not in ROLLOUT_STRATEGIES:
            raise BuildError(f"--rollout {rollout}: use one of {', '.join(ROLLOUT_STRATEGIES)}")
        spec["rollout"] = {"strategy": ROLLOUT_STRATEGIES[rollout]}
    return {"apiVersion": API_VERSION, "kind": "TritonModel", "metadata": metadata, "spec": spec}


def default_claim_path(target: FolderTarget) -> str:
    """The folder's path inside a claim mounted one level above the model's folder.

    `/mnt/nfs/mnist_mlp` -> `mnist_mlp`; a folder per version, `/mnt/nfs/mnist/2` -> `mnist/2`.
    """
    if version_in_target(target) is not None and target.path.parent.name:
        return f"{target.path.parent.name}/{target.path.name}"
    return target.path.name


def check_path_version(path: str, version: int) -> None:
    """BuildError when a claim path ends in a version number other than `version`."""
    last = path.rstrip("/").rsplit("/", 1)[-1]
    if last.isascii() and last.isdigit() and int(last) != version:
        raise BuildError(
            f"--claim-path {path} ends in version {last} but the model is published as version {version}: "
            f"give the path of the folder it was published to (ending in /{version})"
        )


def to_yaml(obj: dict[str, Any]) -> str:
    """YAML in the key order given (apiVersion, kind, metadata, spec)."""
    return str(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False))
