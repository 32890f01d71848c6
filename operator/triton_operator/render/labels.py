"""The operator's label and annotation keys and values, all in one place: the children of a TritonServer,
the staging and removal Jobs of a TritonModel, the copies of a model split across servers, the routes of
a Gateway, the labels of others the operator reads (Kubernetes' Jobs, NVIDIA's GPU nodes)."""

from __future__ import annotations

import hashlib

from triton_operator.api.common import GROUP, LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME

APP_NAME = "triton"
COMPONENT = "server"
MANAGED_BY = "triton-operator"
OWNER_UID_LABEL = f"{GROUP}/server-uid"
# Names the server on children that must not carry app.kubernetes.io/instance (see volume_labels).
SERVER_NAME_LABEL = f"{GROUP}/server"
SPEC_HASH_ANNOTATION = f"{GROUP}/spec-hash"
# On the Deployment: the TritonServer generation its children were applied from. Kept in the cluster
# (not in the operator's memory) so a restarted operator knows what is already applied.
APPLIED_GENERATION_ANNOTATION = f"{GROUP}/applied-generation"
# The Triton pods' readiness gate: a pod takes traffic once its server's models are loaded into it
# (the operator sets this pod condition; see reconcile/gates.py).
MODELS_LOADED_GATE = f"{GROUP}/models-loaded"
# Staging and removal Jobs: which model and server they work for (SERVER_NAME_LABEL).
STAGING_COMPONENT = "staging"
MODEL_LABEL = f"{GROUP}/model"
# Labels of staging Jobs and their pods; deliberately not the server pods' selector labels.
STAGING_LABELS = {LABEL_NAME: APP_NAME, LABEL_COMPONENT: STAGING_COMPONENT, LABEL_MANAGED_BY: MANAGED_BY}
# On each copy of a model split across servers: the model it is a copy of.
SPLIT_OF_LABEL = f"{GROUP}/split-of"
# ... and its current percent of that model's traffic through the Gateway (kubectl get's SHARE column).
SPLIT_SHARE_ANNOTATION = f"{GROUP}/split-share"
# The server's children, any server (what the operator watches them by): the selector without the instance.
CHILD_LABELS = {LABEL_NAME: APP_NAME, LABEL_COMPONENT: COMPONENT, LABEL_MANAGED_BY: MANAGED_BY}
# On each HTTPRoute and GRPCRoute the operator owns: the object it routes to.
ROUTE_OWNER_LABEL = f"{GROUP}/route-of"
# On a TritonModel, a manual rollout command: `kubectl annotate tritonmodel NAME
# tritonoperator.dev/rollout="promote $(date +%s)" --overwrite` (rollout/spec.command_of).
COMMAND_ANNOTATION = f"{GROUP}/rollout"
# Kubernetes puts it on a Job's pods.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# NVIDIA's GPU feature discovery puts it on GPU nodes (spec.gpuProduct selects by it).
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
# A label value is at most 63 characters.
LABEL_VALUE_MAX = 63


def name_label(name: str) -> str:
    """An object's name as a label value: the name when it fits in 63 characters, else its start and a
    hash of it. A TritonModel may be named up to 253 characters (its copies on servers longer still), a
    label value may not: a longer one made the apiserver refuse every staging Job, copy and route of the
    model (and every label selector for them), so each pass failed and the model never got a status."""
    if len(name) <= LABEL_VALUE_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: LABEL_VALUE_MAX - len(digest) - 1].rstrip('-.')}-{digest}"


def staging_labels(model: str, server: str) -> dict[str, str]:
    """Labels of a model's staging Job: which model and server it stages for.

    Not app.kubernetes.io/instance: Argo CD's label tracking would count the Job as part of an
    Application named like the model (see volume_labels).
    """
    return {**STAGING_LABELS, MODEL_LABEL: name_label(model), SERVER_NAME_LABEL: name_label(server)}


def selector_labels(name: str) -> dict[str, str]:
    """Labels selecting one TritonServer's pods (a Deployment's selector is immutable: keep it small)."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: name, LABEL_COMPONENT: COMPONENT}


def standard_labels(name: str) -> dict[str, str]:
    """The app.kubernetes.io labels every child and pod carries."""
    return {**selector_labels(name), LABEL_MANAGED_BY: MANAGED_BY}


def owner_labels(name: str, uid: str) -> dict[str, str]:
    """Labels of each child: the standard ones plus the owner's uid (tells re-created owners apart)."""
    return {**standard_labels(name), OWNER_UID_LABEL: uid}


def volume_labels(name: str, uid: str) -> dict[str, str]:
    """Labels of the model-repository PVC: the owner's labels without app.kubernetes.io/instance.

    Argo CD's label tracking (`application.resourceTrackingMethod: label`) takes every object labelled
    `app.kubernetes.io/instance=<app>` for part of that Application; one without an owner reference
    that is not in git is then extraneous and pruned. A retained PVC has no owner reference (it must
    outlive the server), so with that label an Application named like the server would delete the
    models. Owned children (Deployment, pods, Service, PDB) keep the label: Argo CD never prunes an
    object that has an owner, and a Deployment's selector cannot change without recreating it.
    """
    labels = {key: value for key, value in owner_labels(name, uid).items() if key != LABEL_INSTANCE}
    return {**labels, SERVER_NAME_LABEL: name}


def label_selector(name: str) -> str:
    """selector_labels as a label-selector string, for status.selector (scale subresource, HPA)."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector_labels(name).items()))


ROUTE_COMPONENT = "route"


def route_labels(owner: str) -> dict[str, str]:
    """Labels of the operator's routes (not app.kubernetes.io/instance: GitOps tools track by it)."""
    return {
        LABEL_NAME: APP_NAME,
        LABEL_COMPONENT: ROUTE_COMPONENT,
        LABEL_MANAGED_BY: MANAGED_BY,
        ROUTE_OWNER_LABEL: name_label(owner),
    }
