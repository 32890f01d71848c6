"""The sandbox's container runtime: watches pods on the fake nodes and runs each as real processes
(see podlife.py), provisions local volumes (provisioner.py), and serves /healthz and /pods.

Started by `python -m sandbox up`; stops every process it started on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from sandbox import monitoring, provisioner
from sandbox.attach import VolumeAttachments
from sandbox.config import MARKER_ENV, REPO_ROOT, SandboxConfig
from sandbox.podlife import PodLife, RuntimeSettings
from sandbox.tritonserver import triton_dist

log = logging.getLogger("podrunner")
WATCH_TIMEOUT_S = 60
PROVISION_PERIOD_S = 1.0
# A pod annotated so is handed over to a test (tests/e2e/test_hostile_triton.py): the runner stops its
# processes, freeing its IP's ports for the test's own process, and never runs it again. Its status stays
# as last published (Running, Ready): to the cluster it is a pod whose kubelet lost track of it.
HAND_OVER_ANNOTATION = "sandbox.tritonoperator.dev/hand-over"
# kwok frees a deleted pod's IP at once, while its processes still run their preStop sleep and grace
# period: a new pod given that IP waits for them (a kubelet's CNI holds the IP until then), or its
# Triton could not bind its ports, and its probes would be answered by the old one. Bounded: preStop
# and grace are capped at 10 s by the pod runner, the kill at 5 s more.
DRAIN_WAIT_S = 30.0


class PodRunner:
    def __init__(self, cfg: SandboxConfig):
        self.cfg = cfg
        api = config.new_client_from_config(config_file=str(cfg.kubeconfig))
        self.core = client.CoreV1Api(api)
        self.storage = client.StorageV1Api(api)
        dist = triton_dist()
        self.settings = RuntimeSettings(
            triton_binary=str(dist.binary),
            triton_backend_dir=str(dist.backend_dir),
            triton_library_path=dist.library_path,
            operator_bin_dir=os.path.dirname(sys.executable),
            apiserver_host=cfg.apiserver_cluster_ip,
            apiserver_port=443,
            marker_env={MARKER_ENV: str(cfg.root)},
            pythonpath=os.pathsep.join([str(REPO_ROOT / "operator"), str(REPO_ROOT)]),
            programs=monitoring.programs(),
        )
        self.pods: dict[str, PodLife] = {}
        self.attachments = VolumeAttachments()  # which node holds each ReadWriteOnce volume (attach.py)
        # Pod IP -> the life of a deleted pod whose processes are still stopping; uid -> a new pod with
        # that IP, started once they have stopped.
        self.draining: dict[str, PodLife] = {}
        self.deferred: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.node_names: set[str] = set()

    # -- pods -----------------------------------------------------------------------------------
    def handle(self, event_type: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        status = pod.get("status") or {}
        gone = event_type == "DELETED" or pod["metadata"].get("deletionTimestamp")
        handed_over = (pod["metadata"].get("annotations") or {}).get(HAND_OVER_ANNOTATION) == "true"
        self.attachments.saw(pod, deleted=event_type == "DELETED")
        with self.lock:
            life = self.pods.get(uid)
            if gone or handed_over:
                if life:
                    self._stop(uid, drains_ip=bool(gone))
                self.deferred.pop(uid, None)
                return
            runnable = (
                life is None
                and pod["spec"].get("nodeName") in self.node_names
                and status.get("podIP")
                and status.get("phase") not in ("Succeeded", "Failed")
                # A pod we already ran before a runner restart has container statuses; do not run it twice.
                and not any(
                    "terminated" in (cs.get("state") or {}) for cs in status.get("containerStatuses") or []
                )
            )
            if runnable and self._ip_still_held(uid, pod):
                return
            if runnable:
                life = PodLife(self.core, pod, self.settings, self.cfg.pods_dir, self.attachments)
                self.pods[uid] = life
                life.start()
            elif life is not None:
                life.saw(pod)

    def _stop(self, uid: str, drains_ip: bool) -> None:
        """Stop a pod's processes (in the background); a deleted pod's IP stays held until they end."""
        life = self.pods.pop(uid)
        life.stop()
        if drains_ip:
            self.draining[life.pod_ip] = life

    def _ip_still_held(self, uid: str, pod: dict[str, Any]) -> bool:
        """Whether the processes of a deleted pod with this pod's IP still run; if so the pod starts
        once they stopped (under self.lock)."""
        ip = pod["status"]["podIP"]
        holder = self.draining.get(ip)
        if holder is None or not holder.thread.is_alive():
            self.draining.pop(ip, None)
            return False
        first = uid not in self.deferred
        self.deferred[uid] = pod
        if first:
            threading.Thread(
                target=self._start_when_free, args=(uid, holder), name=f"defer-{uid[:8]}", daemon=True
            ).start()
        return True

    def _start_when_free(self, uid: str, holder: PodLife) -> None:
        holder.join(timeout=DRAIN_WAIT_S)
        with self.lock:
            if self.draining.get(holder.pod_ip) is holder:
                del self.draining[holder.pod_ip]
            pod = self.deferred.pop(uid, None)
        if pod is not None and not self.stopping.is_set():
            self.handle("MODIFIED", pod)

    def watch_pods(self) -> None:
        """List, then watch from that version; relist after errors or expiry (bounded back-off)."""
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                self.node_names = {
                    n.metadata.name for n in self.core.list_node(label_selector="type=kwok").items
                }
                resp: Any = self.core.list_pod_for_all_namespaces(
                    field_selector="spec.nodeName!=", _preload_content=False
                )
                listing = json.loads(resp.data)
                self.attachments.relisted(listing["items"])
                seen = set()
                for pod in listing["items"]:
                    seen.add(pod["metadata"]["uid"])
                    self.handle("ADDED", pod)
                with self.lock:
                    for uid in [u for u in self.pods if u not in seen]:
                        self._stop(uid, drains_ip=True)  # deleted while the watch was down
                rv = listing["metadata"]["resourceVersion"]
                w = watch.Watch()
                for ev in w.stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector="spec.nodeName!=",
                    resource_version=rv,
                    timeout_seconds=WATCH_TIMEOUT_S,
                ):
                    if self.stopping.is_set():
                        w.stop()
                        break
                    obj = ev["raw_object"]
                    if ev["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self.handle(ev["type"], obj)
                backoff = 0.5
            except ApiException as exc:
                log.warning("pod watch: %s; relisting", exc.reason)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5)
            except Exception:
                log.exception("pod watch failed; relisting")
                time.sleep(backoff)
                backoff = min(backoff * 2, 5)

    def provision_loop(self) -> None:
        while not self.stopping.wait(PROVISION_PERIOD_S):
            try:
                provisioner.sync_once(self.core, self.storage, self.cfg.volumes_dir)
            except Exception:
                log.exception("provisioner pass failed")

    def shutdown(self) -> None:
        self.stopping.set()
        with self.lock:
            lives = list(self.pods.values())
            self.pods.clear()
        for life in lives:
            life.stop()
        for life in lives:
            life.join(timeout=15)

    def describe(self) -> list[dict[str, Any]]:
        with self.lock:
            return [life.describe() for life in self.pods.values()]


def serve_health(runner: PodRunner, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                body = b"ok"
            elif self.path == "/pods":
                body = json.dumps(runner.describe()).encode()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="health").start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    cfg = SandboxConfig.from_env(args.name)
    runner = PodRunner(cfg)
    done = threading.Event()

    def on_term(*_: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    threading.Thread(target=runner.watch_pods, daemon=True, name="pods").start()
    threading.Thread(target=runner.provision_loop, daemon=True, name="provisioner").start()
    server = serve_health(runner, cfg.ports["podrunner"])
    log.info("pod runner for sandbox %r is up", cfg.name)
    done.wait()
    log.info("stopping: terminating every pod's processes")
    server.shutdown()
    runner.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
