"""A small JSON client for the few kinds the operator touches.

The official client's typed models would convert every manifest the render functions produce; here
objects stay plain dicts end to end, and server-side apply (which the typed client does not speak
directly) is one method. Connection, auth and TLS come from the official client's configuration.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from triton_operator import __version__

FIELD_MANAGER = "triton-operator"
USER_AGENT = f"triton-operator/{__version__}"
REQUEST_TIMEOUT_S = 30


class AccessUndecided(Exception):
    """The API server could not evaluate its authorization rules for a question (`evaluationError`)."""


def access_decision(status: Mapping[str, Any]) -> bool:
    """A SelfSubjectAccessReview's answer; AccessUndecided when it is "not allowed" only for want of
    rules it could not read (an API server that has just started and not yet read its RBAC objects, or a
    binding to a role that does not exist)."""
    if status.get("allowed"):
        return True
    if status.get("evaluationError") and not status.get("denied"):
        raise AccessUndecided(str(status["evaluationError"]))
    return False


@dataclass(frozen=True)
class Kind:
    api_version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        group_path = (
            f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        )
        ns = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        tail = "".join(f"/{p}" for p in (name, sub) if p)
        return f"{group_path}{ns}/{self.plural}{tail}"


KINDS = {
    "Deployment": Kind("apps/v1", "deployments"),
    "Service": Kind("v1", "services"),
    "PersistentVolumeClaim": Kind("v1", "persistentvolumeclaims"),
    "PodDisruptionBudget": Kind("policy/v1", "poddisruptionbudgets"),
    "Job": Kind("batch/v1", "jobs"),
    "Pod": Kind("v1", "pods"),
    "Event": Kind("v1", "events"),
    "TritonServer": Kind("tritonoperator.dev/v1alpha1", "tritonservers"),
    "TritonModel": Kind("tritonoperator.dev/v1alpha1", "tritonmodels"),
    "HTTPRoute": Kind("gateway.networking.k8s.io/v1", "httproutes"),
    "GRPCRoute": Kind("gateway.networking.k8s.io/v1", "grpcroutes"),
    "Gateway": Kind("gateway.networking.k8s.io/v1", "gateways"),
    "PodMonitor": Kind("monitoring.coreos.com/v1", "podmonitors"),
    "ScaledObject": Kind("keda.sh/v1alpha1", "scaledobjects"),
    "HorizontalPodAutoscaler": Kind("autoscaling/v2", "horizontalpodautoscalers"),
}


def new_api_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else $KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]  # untyped in the client
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    api = client.ApiClient()
    api.user_agent = USER_AGENT
    return api


class Kube:
    """get/list/apply/patch/delete on plain dicts; 404 on get is None, on delete is success."""

    def __init__(self, api: client.ApiClient):
        self.api = api

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        url = self.api.configuration.host + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json", "Content-Type": content_type, "User-Agent": USER_AGENT}
        self.api.update_params_for_auth(headers, None, ["BearerToken"], path, method, body)
        # Bodies are dicts: the client serialises them as JSON, which is also valid apply-patch YAML.
        resp = self.api.call_api(
            method, url, header_params=headers, body=body, _request_timeout=REQUEST_TIMEOUT_S
        )
        data = resp.read()  # type: ignore[no-untyped-call]
        if not 200 <= resp.status <= 299:
            # This client raises only from its typed layer; a raw call returns every status.
            exc = ApiException(status=resp.status, reason=resp.reason)
            exc.body = data.decode(errors="replace") if data else ""
            raise exc
        return json.loads(data) if data else None

    def served_resources(self, group_version: str) -> list[str] | None:
        """The resources an API group version serves (discovery), None when it is not served."""
        try:
            listing = self._call("GET", f"/apis/{group_version}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return [str(r.get("name", "")) for r in listing.get("resources") or []]

    def may(self, attributes: Mapping[str, str]) -> bool:
        """Whether this identity may do what `attributes` say (a SelfSubjectAccessReview)."""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": dict(attributes)},
        }
        result = self._call("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=review)
        return access_decision(result.get("status") or {})

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self._call("GET", KINDS[kind].path(namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def list(
        self, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        query = {"labelSelector": label_selector} if label_selector else None
        items: list[dict[str, Any]] = self._call("GET", KINDS[kind].path(namespace), query=query)["items"]
        return items

    def apply(
        self, obj: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER, force: bool = True
    ) -> dict[str, Any]:
        """Server-side apply as `field_manager` (the operator's), taking over the fields it sets (`force`;
        without it, a field another manager holds at another value is a 409 conflict)."""
        meta = obj["metadata"]
        path = KINDS[obj["kind"]].path(meta.get("namespace"), meta["name"])
        result: dict[str, Any] = self._call(
            "PATCH",
            path,
            query={"fieldManager": field_manager, "force": "true" if force else "false"},
            body=dict(obj),
            content_type="application/apply-patch+yaml",
        )
        return result

    def create(self, kind: str, namespace: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """POST a new object (no apply: an Event is written once, then only its count moves)."""
        result: dict[str, Any] = self._call("POST", KINDS[kind].path(namespace), body=dict(obj))
        return result

    def merge_patch(self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch of an object (not its status)."""
        result: dict[str, Any] = self._call(
            "PATCH",
            KINDS[kind].path(namespace, name),
            body=dict(patch),
            content_type="application/merge-patch+json",
        )
        return result

    def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch of the status subresource."""
        result: dict[str, Any] = self._call(
            "PATCH",
            KINDS[kind].path(namespace, name, "status"),
            body={"status": dict(status)},
            content_type="application/merge-patch+json",
        )
        return result

    def patch_pod_condition(self, namespace: str, name: str, condition: Mapping[str, Any]) -> None:
        """Set one condition of a pod's status (a strategic merge by type: the kubelet's stay)."""
        self._call(
            "PATCH",
            KINDS["Pod"].path(namespace, name, "status"),
            body={"status": {"conditions": [dict(condition)]}},
            content_type="application/strategic-merge-patch+json",
        )

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        try:
            self._call(
                "DELETE",
                KINDS[kind].path(namespace, name),
                body={"propagationPolicy": "Background"},
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


# What the operator quotes of an apiserver error in a condition: enough to name the field; the apiserver
# may echo a whole value (a deeply nested affinity printed in full made a message over the condition's
# limit).
API_MESSAGE_MAX = 2048
# Server-side apply answers a value of the wrong type inside a free-form field (spec.affinity,
# env valueFrom) with 500 "failed to create typed patch object": no retry can make that apply.
_TYPED_PATCH_FAILED = "failed to create typed patch object"


def api_message(exc: ApiException, limit: int | None = None) -> str:
    """The apiserver's own message in an error (its reason when there is none), cut to `limit`."""
    try:
        text = str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        text = str(exc.reason)
    return text if limit is None or len(text) <= limit else text[:limit] + " ... (truncated)"


def apply_cannot_succeed(exc: ApiException) -> bool:
    """Whether applying again cannot help until the spec changes (a 4xx but conflicts and throttling, or
    a server-side apply type error)."""
    status = exc.status or 0
    if 400 <= status < 500:
        return status not in (409, 429)
    return status == 500 and _TYPED_PATCH_FAILED in api_message(exc, API_MESSAGE_MAX)


def namespace_terminating(exc: ApiException) -> bool:
    """Whether the apiserver refused to create something because its namespace is being deleted."""
    return exc.status == 403 and "being terminated" in str(exc.body)
