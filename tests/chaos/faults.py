"""Fault injectors against a running sandbox. Each returns a FaultRecord: when it struck, what it hit,
and until when its own effects may show (failed requests in that window are the fault's, counted)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from sandbox import cluster, procs
from tests.e2e import kube
from tests.e2e.conftest import Operator, Sandbox

ETCD_PAUSE_S = 10.0
S3_PAUSE_S = 10.0


@dataclass
class FaultRecord:
    fault: str
    target: str
    started: float  # time.monotonic()
    ended: float = 0.0
    # Requests failing in [started, blame_until] are this fault's own (a killed Triton's in-flight and
    # refused requests until the Service dropped its pod); only set by faults that may cause them.
    blame_until: float = 0.0
    # Which of those failures: the ones whose message has one of these (None: every one).
    blames: tuple[str, ...] | None = None
    notes: list[str] = field(default_factory=list)


def runner_pods(sb: Sandbox, ns: str) -> list[dict[str, Any]]:
    """The pod runner's view (what runs as a process) of the namespace's pods."""
    url = f"http://127.0.0.1:{sb.cfg.ports['podrunner']}/pods"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return [p for p in json.load(resp) if p["namespace"] == ns]


def _wait_dead(pid: int, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and procs.pid_alive(pid):
        time.sleep(0.05)
    assert not procs.pid_alive(pid), f"pid {pid} still alive {timeout_s:.0f}s after SIGKILL"


def operator_kill(operator: Operator) -> FaultRecord:
    """SIGKILL of the operator's process; the pod runner restarts the container (its back-off)."""
    rec = FaultRecord("operator-kill", "operator", time.monotonic())
    operator.kill()
    kube.wait_for(operator.running, 90, "the operator container restarted by the runner", interval_s=0.2)
    rec.ended = time.monotonic()
    return rec


def apiserver_restart(sb: Sandbox) -> FaultRecord:
    """SIGKILL of kube-apiserver, then the same command started again (cluster.py has no restart: the
    argv and environment are read from /proc of the killed process, and procs.spawn starts it again
    under the same name, so `down` still finds it)."""
    cfg = sb.cfg
    pid = procs.pid_of(cfg, "kube-apiserver")
    assert pid, "kube-apiserver is not running"
    argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    env = dict(
        e.decode().split("=", 1) for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in e
    )
    rec = FaultRecord("apiserver-restart", f"kube-apiserver pid {pid}", time.monotonic())
    os.kill(pid, signal.SIGKILL)
    _wait_dead(pid)
    time.sleep(1.0)  # mid-reconcile: the operator's calls fail for a while
    new = procs.spawn(cfg, "kube-apiserver", argv, env=env)
    kube.wait_for(lambda: cluster._apiserver_ready(cfg), 90, "kube-apiserver ready again", interval_s=0.2)
    rec.ended = time.monotonic()
    rec.notes.append(f"restarted as pid {new} after {rec.ended - rec.started:.1f}s")
    return rec


# What a client sees when the Service sends its connection to a pod that is gone or going: refused,
# reset or closed connections (not an answer of a Triton, such as 404 "unknown model").
CONNECTION_NEEDLES = (
    "connection closed",
    "Socket closed",
    "reset by peer",
    "Connection refused",
    "Broken pipe",  # gRPC "Stream removed (sendmsg: Broken pipe)": the same cut, seen while sending
)
SERVER_SELECTOR = "app.kubernetes.io/instance=triton,app.kubernetes.io/component=server"


def endpoints_caught_up(sb: Sandbox, ns: str, service: str) -> bool:
    """Whether the Service's ready endpoints are exactly its Ready pods that are not terminating (the
    endpoint controller wrote what the pods are now)."""
    try:
        pods = client.CoreV1Api(sb.api).list_namespaced_pod(ns, label_selector=SERVER_SELECTOR).items
        routed = kube.endpoint_slice_ips(sb.api, ns, service)
    except Exception:
        return False
    ready = {
        p.status.pod_ip
        for p in pods
        if not p.metadata.deletion_timestamp
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    }
    return routed == ready


def blame_stale_endpoints(rec: FaultRecord, sb: Sandbox, ns: str, service: str) -> None:
    """A control plane down while pods roll: no EndpointSlice changes until the API answers and the
    endpoint controller caught up, so kube-proxy keeps sending new connections to a pod that is already
    shutting down (refused), as in any cluster. The fault's own: connection failures until the
    endpoints are the Ready pods again, plus 2 s for kube-proxy (90 s at most)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not endpoints_caught_up(sb, ns, service):
        time.sleep(0.2)
    rec.notes.append(
        f"the Service's endpoints caught up {time.monotonic() - rec.started:.1f}s after it struck"
    )
    rec.blame_until = time.monotonic() + 2
    rec.blames = CONNECTION_NEEDLES


def _pause(sb: Sandbox, component: str, fault: str, seconds: float) -> FaultRecord:
    pid = procs.pid_of(sb.cfg, component)
    assert pid, f"{component} is not running"
    rec = FaultRecord(fault, f"{component} pid {pid}", time.monotonic())
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
    rec.ended = time.monotonic()
    return rec


def etcd_pause(sb: Sandbox) -> FaultRecord:
    """etcd stopped (SIGSTOP) for 10 s, then continued: the apiserver's reads and writes hang and fail."""
    rec = _pause(sb, "etcd", "etcd-pause", ETCD_PAUSE_S)
    kube.wait_for(
        lambda: cluster._apiserver_ready(sb.cfg), 60, "kube-apiserver ready after etcd", interval_s=0.2
    )
    return rec


def s3_outage(sb: Sandbox) -> FaultRecord:
    """The S3 server stopped for 10 s (SIGSTOP: moto keeps its objects in memory, a kill would lose the
    published models), then continued: downloads in flight stall, new connections hang."""
    return _pause(sb, "s3", "s3-outage", S3_PAUSE_S)


def _kill_container(
    sb: Sandbox,
    ns: str,
    pick: Callable[[dict[str, Any]], bool],
    what: str,
    fault: str,
    container: str | None = None,
) -> FaultRecord:
    """SIGKILL of the first running container (by pod, then container name) of the picked pods, or of
    their `container` (a Triton pod also runs its repository-sync sidecar)."""
    victims = sorted(
        (
            (p["name"], c["name"], c["pid"])
            for p in runner_pods(sb, ns)
            if pick(p)
            for c in p["containers"]
            if c["pid"] and container in (None, c["name"])
        ),
    )
    assert victims, f"no running {what} in {ns} to kill"
    pod, container, pid = victims[0]
    rec = FaultRecord(fault, f"{ns}/{pod} {container} pid {pid}", time.monotonic())
    os.kill(pid, signal.SIGKILL)
    _wait_dead(pid)
    rec.ended = time.monotonic()
    return rec


def _serving(ip: str, model: str) -> bool:
    """Whether Triton at `ip` answers and serves `model` (the router: not in the repository index)."""
    try:
        with urllib.request.urlopen(f"http://{ip}:8000/v2/models/{model}/ready", timeout=3) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def triton_kill(sb: Sandbox, ns: str, server_pod_names: set[str], model: str, service: str) -> FaultRecord:
    """SIGKILL of one server pod's tritonserver (the first by name). Its in-flight requests fail, and so
    do the ones the Service sends while it has no ready endpoint because of it (the other replica may be
    rolling): the blame window ends 2 s (kube-proxy) after the restarted pod is a ready endpoint of
    `service` again, serving `model` (or, if the pod is gone, once any endpoint is), 90 s at most."""
    core = client.CoreV1Api(sb.api)
    ips = {}
    for name in server_pod_names:
        with contextlib.suppress(Exception):
            ips[name] = core.read_namespaced_pod(name, ns).status.pod_ip or ""
    rec = _kill_container(
        sb, ns, lambda p: p["name"] in server_pod_names, "tritonserver", "triton-kill", "tritonserver"
    )
    pod = rec.target.split()[0].split("/", 1)[1]
    ip = ips.get(pod, "")
    deadline = time.monotonic() + 90
    while ip and time.monotonic() < deadline and not _back_behind(sb, ns, service, pod, ip, model):
        time.sleep(0.2)
    rec.notes.append(f"{pod} was a ready endpoint again {time.monotonic() - rec.started:.1f}s after the kill")
    rec.blame_until = time.monotonic() + 2
    return rec


def _back_behind(sb: Sandbox, ns: str, service: str, pod: str, ip: str, model: str) -> bool:
    """Whether the killed pod is back behind its Service, serving `model` (or gone, replaced by another)."""
    try:
        ready = kube.endpoint_slice_ips(sb.api, ns, service)
    except Exception:
        return False
    if ip in ready:
        return _serving(ip, model)
    try:
        client.CoreV1Api(sb.api).read_namespaced_pod(pod, ns)
    except client.ApiException as exc:
        return exc.status == 404 and bool(ready)
    return False


def staging_pod_kill(sb: Sandbox, ns: str, job_name: str) -> FaultRecord:
    """SIGKILL of the staging Job's pod's process (mid-download); waits (5 s at most) for its process."""
    core = client.CoreV1Api(sb.api)
    deadline = time.monotonic() + 5
    while True:
        pods = {
            p.metadata.name for p in core.list_namespaced_pod(ns, label_selector=f"job-name={job_name}").items
        }
        running = [
            p for p in runner_pods(sb, ns) if p["name"] in pods and any(c["pid"] for c in p["containers"])
        ]
        if running or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return _kill_container(sb, ns, lambda p: p["name"] in pods, "staging pod", "staging-pod-kill")
