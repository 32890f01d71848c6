"""The copy of a TritonModel that a Gateway split places on each of its servers: a TritonModel of its
own, `<name>-on-<server>`, owned by the model (pure)."""

from __future__ import annotations

import hashlib
from typing import Any

from triton_operator.api.common import GROUP
from triton_operator.api.tritonmodel import RolloutStrategy, TritonModelSpec
from triton_operator.render.labels import SPLIT_OF_LABEL, name_label


def copy_name(parent: str, server: str) -> str:
    """Name of the model's copy on `server` (hashed when it would exceed a name's 253 characters)."""
    name = f"{parent}-on-{server}"
    if len(name) <= 253:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[:242]}-{digest}"


def copy_spec(spec: TritonModelSpec, public: str, server: str) -> dict[str, Any]:
    """The copy's spec: the parent's model, version, source and config, on one server.

    Always under strategy Canary (the parent's steps and analysis when it has them): the copy then
    serves through the operator's in-server router, which counts each client request by outcome, so
    the pools are judged on the errors clients saw (Triton's own request counters miss error
    responses); and a new spec.version is canaried inside each pool. Across pools the parent moves
    the traffic.
    """
    rollout = spec.effective_rollout()
    canary: dict[str, Any] = {"strategy": "Canary"}
    if rollout.strategy is RolloutStrategy.CANARY:
        canary = rollout.model_dump(mode="json", by_alias=True, exclude_none=True)
    out: dict[str, Any] = {
        "serverRef": {"name": server},
        "modelName": public,
        "version": spec.version,
        "source": spec.source.model_dump(mode="json", by_alias=True, exclude_none=True),
        "keepFilesOnDelete": spec.keep_files_on_delete,
        "rollout": canary,
    }
    if spec.config is not None:
        out["config"] = spec.config.model_dump(mode="json", by_alias=True, exclude_none=True)
    return out


def render_copy(
    parent: str, namespace: str, server: str, spec: TritonModelSpec, public: str
) -> dict[str, Any]:
    """The copy's TritonModel (its owner reference is added by the caller)."""
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "TritonModel",
        "metadata": {
            "name": copy_name(parent, server),
            "namespace": namespace,
            "labels": {SPLIT_OF_LABEL: name_label(parent)},
        },
        "spec": copy_spec(spec, public, server),
    }
