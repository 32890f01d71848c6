"""Labels and names of the children of a TritonServer."""

from __future__ import annotations

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
