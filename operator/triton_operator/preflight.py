"""What `triton-operator run` checks before it starts: credentials, the API, the CRDs, its permissions.

Each problem is one line naming the fix (the CLI prints it and exits 2). Without these checks each
ends deep inside kopf or the client: a traceback for a missing kubeconfig, endless retries and 403 or
404 log lines for missing CRDs or RBAC, while the pod looks alive.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from triton_operator.kube.rest import AccessUndecided, Kube, new_api_client

GROUP, VERSION = "tritonoperator.dev", "v1alpha1"
KINDS_SERVED = ("tritonservers", "tritonmodels")


@dataclass(frozen=True)
class Permission:
    verb: str
    group: str
    resource: str
    subresource: str = ""

    def __str__(self) -> str:
        name = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return f"{self.verb} {name}.{self.group}" if self.group else f"{self.verb} {name}"


# What the operator cannot work without, in each watched scope (the chart's workload rules grant more;
# these are the ones whose absence would leave it running but doing nothing).
REQUIRED = (
    Permission("list", GROUP, "tritonservers"),
    Permission("watch", GROUP, "tritonservers"),
    Permission("patch", GROUP, "tritonservers", "status"),
    Permission("list", GROUP, "tritonmodels"),
    Permission("watch", GROUP, "tritonmodels"),
    Permission("patch", GROUP, "tritonmodels", "status"),
    Permission("patch", GROUP, "tritonmodels"),  # its finalizer
    Permission("patch", "apps", "deployments"),
    Permission("list", "", "pods"),
    Permission("create", "batch", "jobs"),
    Permission("create", "", "events"),
)


def credentials() -> tuple[client.ApiClient | None, str | None]:
    """The API client (in-cluster credentials, else the kubeconfig), or why there is none."""
    try:
        return new_api_client(), None
    except (config.ConfigException, OSError) as exc:
        return None, (
            "no cluster credentials: not in a pod with a service account token, and no usable kubeconfig "
            f"($KUBECONFIG or ~/.kube/config): {exc}"
        )


def missing_crds(served: Sequence[str] | None) -> str | None:
    """Why the operator's kinds are not served, given the resources the API group lists (None: absent)."""
    missing = [k for k in KINDS_SERVED if served is None or k not in served]
    if not missing:
        return None
    return (
        f"the API server does not serve {', '.join(missing)} ({GROUP}/{VERSION}): install the CRDs "
        "(kubectl apply --server-side -f crds/, or the Helm chart)"
    )


def denied(allowed: Callable[[Permission, str | None], bool], namespaces: Sequence[str] | None) -> str | None:
    """The first permission this identity lacks in a watched scope (all namespaces, or each listed)."""
    scopes: Sequence[str | None] = list(namespaces) if namespaces else [None]
    for namespace in scopes:
        for permission in REQUIRED:
            if not allowed(permission, namespace):
                where = f" in namespace {namespace}" if namespace else " in all namespaces"
                return (
                    f"this identity may not {permission}{where}: bind it the operator's ClusterRole "
                    "(the Helm chart's RBAC; `kubectl auth can-i --list` shows what it may do)"
                )
    return None


# Without it the operator works as before the models-loaded readiness gate (reconcile/gates.py): its
# Triton pods are Ready as soon as Triton answers. A chart older than the gate grants no such rule.
GATE_PERMISSION = Permission("patch", "", "pods", "status")
GATE_OFF = (
    f"this identity may not {GATE_PERMISSION}: the models-loaded readiness gate is off, so new and "
    "restarted Triton pods take traffic before their models are loaded; grant it (the Helm chart's "
    "RBAC) and restart the operator"
)


def may_open_gates(
    allowed: Callable[[Permission, str | None], bool], namespaces: Sequence[str] | None
) -> bool:
    """Whether the identity may set the readiness gate's pod condition in every watched scope."""
    scopes: Sequence[str | None] = list(namespaces) if namespaces else [None]
    return all(allowed(GATE_PERMISSION, namespace) for namespace in scopes)


# An answer the API server could not decide is asked again this often, so long: an API server that has
# just started reads its RBAC objects within seconds; a binding to a missing role stays undecided.
UNDECIDED_TRIES, UNDECIDED_WAIT_S = 6, 2.0


class Undecided(Exception):
    """The API server could not decide a permission within the retries; the message is the verdict."""


def decided(
    ask: Callable[[], bool],
    permission: Permission,
    *,
    tries: int = UNDECIDED_TRIES,
    wait_s: float = UNDECIDED_WAIT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """`ask()`'s answer, asked again while the API server cannot decide it (at most `tries` times)."""
    for attempt in range(tries):
        try:
            return ask()
        except AccessUndecided as exc:
            if attempt == tries - 1:
                raise Undecided(
                    f"the API server could not decide whether this identity may {permission} "
                    f"(asked {tries} times over {(tries - 1) * wait_s:g} s): {exc}; check the RBAC "
                    "bindings of the operator's ServiceAccount (`kubectl auth can-i --list`)"
                ) from None
            sleep(wait_s)
    raise AssertionError("unreachable")  # the loop returns or raises


def _allowed(kube: Kube) -> Callable[[Permission, str | None], bool]:
    def allowed(permission: Permission, namespace: str | None) -> bool:
        attributes = {
            "verb": permission.verb,
            "group": permission.group,
            "resource": permission.resource,
            "subresource": permission.subresource,
            "namespace": namespace or "",
        }
        return decided(partial(kube.may, attributes), permission)

    return allowed


@dataclass(frozen=True)
class Verdict:
    """What the checks found: the problem that stops the operator (None: it may run), and whether it
    may open the models-loaded readiness gate (else it runs without, and says so)."""

    problem: str | None
    models_gate: bool = True


def check(namespaces: Sequence[str] | None) -> Verdict:
    """Every start-up problem the operator can see before it starts, as one line."""
    api, problem = credentials()
    if api is None:
        return Verdict(problem)
    host = api.configuration.host
    kube = Kube(api)
    try:
        crds = missing_crds(kube.served_resources(f"{GROUP}/{VERSION}"))
        if crds:
            return Verdict(crds)
        allowed = _allowed(kube)
        return Verdict(denied(allowed, namespaces), may_open_gates(allowed, namespaces))
    except Undecided as exc:
        return Verdict(str(exc))
    except ApiException as exc:
        return Verdict(f"the Kubernetes API at {host} answered {exc.status} {exc.reason}")
    except Exception as exc:  # urllib3's connection errors carry long nested reprs: keep the type and host
        return Verdict(f"cannot reach the Kubernetes API at {host}: {type(exc).__name__}")
    finally:
        api.close()  # type: ignore[no-untyped-call]  # untyped in the client
