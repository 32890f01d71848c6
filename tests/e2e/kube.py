"""Small helpers for e2e tests: bounded waits and reads a user would do with kubectl."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.5) -> T:
    """Poll `check` until it returns something truthy; fail with `what` and the last value on timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except ApiException as exc:
            last = f"ApiException {exc.status}: {exc.reason}"
        else:
            if last:
                return cast(T, last)
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}; last seen: {last!r}")


def service_account_exists(core: client.CoreV1Api, ns: str, name: str) -> bool:
    try:
        core.read_namespaced_service_account(name, ns)
    except ApiException:
        return False
    return True


def pod_condition(pod: Any, ctype: str) -> Any:
    for cond in pod.status.conditions or []:
        if cond.type == ctype:
            return cond
    return None


def ready_pods(core: client.CoreV1Api, ns: str, selector: str) -> list[Any]:
    pods = core.list_namespaced_pod(ns, label_selector=selector).items
    return [
        p
        for p in pods
        if getattr(pod_condition(p, "Ready"), "status", None) == "True" and not p.metadata.deletion_timestamp
    ]


def pv_folder(core: client.CoreV1Api, ns: str, claim: str) -> Path:
    """The local folder of the volume a bound PVC uses (the sandbox's volumes are hostPath folders)."""
    pvc = core.read_namespaced_persistent_volume_claim(claim, ns)
    return Path(core.read_persistent_volume(pvc.spec.volume_name).spec.host_path.path)


def cluster_ip(core: client.CoreV1Api, ns: str, service: str) -> str:
    """A Service's ClusterIP: where a client in the cluster calls it (kube-proxy picks a ready pod)."""
    ip = core.read_namespaced_service(service, ns).spec.cluster_ip
    assert ip and ip != "None", f"Service {ns}/{service} has no ClusterIP"
    return str(ip)


def endpoint_slice_ips(api: client.ApiClient, ns: str, service: str) -> set[str]:
    """The ready addresses the EndpointSlices of a Service list (what kube-proxy routes to)."""
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        ns, label_selector=f"kubernetes.io/service-name={service}"
    )
    return {
        address
        for s in slices.items
        for e in s.endpoints or []
        if (e.conditions is None or e.conditions.ready is not False)
        for address in e.addresses
    }


class ConditionHistory:
    """Every (type, status, reason) an object's status.conditions showed, from a watch of its kind in one
    namespace, so a test can say "never Degraded on the way" (a poll would miss a one-second blip)."""

    def __init__(self, api: client.ApiClient, group: str, version: str, plural: str, ns: str, name: str):
        self.seen: list[tuple[str, str, str]] = []
        self._stop = threading.Event()
        self._args = (group, version, ns, plural)
        self._name = name
        self._custom = client.CustomObjectsApi(api)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"conditions-{name}")
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 600  # bounded: no test watches longer
        while not self._stop.is_set() and time.monotonic() < deadline:
            w = watch.Watch()
            try:
                for event in w.stream(
                    self._custom.list_namespaced_custom_object,
                    *self._args,
                    field_selector=f"metadata.name={self._name}",
                    timeout_seconds=5,
                ):
                    for c in (event["object"].get("status") or {}).get("conditions") or []:
                        entry = (str(c.get("type")), str(c.get("status")), str(c.get("reason")))
                        if entry not in self.seen:
                            self.seen.append(entry)
                    if self._stop.is_set():
                        w.stop()
            except ApiException:
                time.sleep(0.2)

    def stop(self) -> list[tuple[str, str, str]]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.seen

    def statuses(self, ctype: str) -> set[str]:
        return {status for t, status, _ in self.seen if t == ctype}


class ReadyTransitions:
    """Every moment a pod matching `selector` turned Ready, from a watch, with what `check(pod IP)` said
    right then (e.g. whether its Triton has the model loaded): a poll could miss a pod that turned
    Ready too early and was fixed a second later."""

    def __init__(self, api: client.ApiClient, ns: str, selector: str, check: Callable[[str], bool]):
        self.seen: list[tuple[str, int, bool]] = []  # (pod, Triton restart count, check's answer)
        self._ready: dict[str, bool] = {}
        self._stop = threading.Event()
        self._core = client.CoreV1Api(api)
        self._ns, self._selector, self._check = ns, selector, check
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"ready-{ns}")
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 600  # bounded: no test watches longer
        while not self._stop.is_set() and time.monotonic() < deadline:
            w = watch.Watch()
            try:
                for event in w.stream(
                    self._core.list_namespaced_pod, self._ns, label_selector=self._selector, timeout_seconds=5
                ):
                    pod = event["object"]
                    cond = pod_condition(pod, "Ready")
                    ready = cond is not None and cond.status == "True" and event["type"] != "DELETED"
                    uid = pod.metadata.uid
                    # A pod first seen Ready was so before the watch began (a new pod starts unready).
                    if ready and uid in self._ready and not self._ready[uid]:
                        restarts = sum(c.restart_count for c in pod.status.container_statuses or [])
                        self.seen.append((pod.metadata.name, restarts, self._answer(pod.status.pod_ip)))
                    self._ready[uid] = ready
                    if self._stop.is_set():
                        w.stop()
            except ApiException:
                time.sleep(0.2)

    def _answer(self, ip: str) -> bool:
        try:
            return self._check(ip)
        except Exception:  # unreachable right when it turned Ready: as wrong as a missing model
            return False

    def stop(self) -> list[tuple[str, int, bool]]:
        self._stop.set()
        self._thread.join(timeout=15)
        return self.seen
