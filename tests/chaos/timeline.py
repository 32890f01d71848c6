"""What the server's pods and its Service's endpoints did during one kill, for the report of a kill that
failed requests nothing explains: which pod was Ready, with which gate, terminating, restarted, and
which addresses kube-proxy routed to, each change with its time since the fault struck."""

from __future__ import annotations

import threading
import time
from typing import Any

from kubernetes import client
from triton_operator.render.labels import MODELS_LOADED_GATE

from tests.chaos.faults import SERVER_SELECTOR
from tests.e2e import kube
from tests.e2e.conftest import Sandbox

POLL_S = 0.5
MAX_ENTRIES = 400  # a long kill polls ~400 times; changes are far fewer


def pod_line(pod: Any) -> str:
    """One pod as `name ip Ready=… gate=… [terminating] restarts=…`."""
    conditions = {c.type: c.status for c in (pod.status.conditions or [])}
    restarts = sum(s.restart_count for s in (pod.status.container_statuses or []))
    gone = " terminating" if pod.metadata.deletion_timestamp else ""
    return (
        f"{pod.metadata.name} {pod.status.pod_ip} Ready={conditions.get('Ready', '-')} "
        f"gate={conditions.get(MODELS_LOADED_GATE, '-')}{gone} restarts={restarts}"
    )


class Timeline:
    """Polls the namespace's server pods and the Service's ready endpoints; keeps each change."""

    def __init__(self, sb: Sandbox, ns: str, service: str = "triton"):
        self.sb, self.ns, self.service = sb, ns, service
        self.entries: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-timeline", daemon=True)

    def start(self) -> Timeline:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def since(self, t0: float, limit: int = 40) -> str:
        """The changes, as lines `t+…s what`, relative to `t0` (time.monotonic()), the last `limit`."""
        lines = [f"    t{at - t0:+.1f}s {what}" for at, what in self.entries]
        cut = len(lines) - limit
        return "\n".join(([f"    ({cut} earlier changes left out)"] if cut > 0 else []) + lines[-limit:])

    def _run(self) -> None:
        core = client.CoreV1Api(self.sb.api)
        last: dict[str, str] = {}
        unreachable = False
        while not self._stop.wait(POLL_S) and len(self.entries) < MAX_ENTRIES:
            try:
                pods = core.list_namespaced_pod(self.ns, label_selector=SERVER_SELECTOR).items
                endpoints = sorted(kube.endpoint_slice_ips(self.sb.api, self.ns, self.service))
            except Exception as exc:  # the apiserver is the fault at times: keep what was seen last
                if not unreachable:
                    self.entries.append((time.monotonic(), f"API unreachable ({type(exc).__name__})"))
                unreachable = True
                continue
            if unreachable:
                self.entries.append((time.monotonic(), "API answers again"))
            unreachable = False
            now = {str(p.metadata.name): pod_line(p) for p in pods}
            now["~endpoints"] = f"Service endpoints {endpoints}"
            at = time.monotonic()
            for key in sorted(set(last) | set(now)):
                if last.get(key) != now.get(key):
                    self.entries.append((at, now.get(key, f"{key} gone")))
            last = now
