"""One pod's life on a fake node: start its containers as real processes, restart them by the pod's
restartPolicy, run its probes against them, and report it all in the pod's status like a kubelet.

Deliberate differences from a kubelet, for a fast test cluster (documented in README):
- probe periods are capped at PROBE_PERIOD_CAP_S (probes run more often, never less; thresholds hold);
- crash-loop back-off starts at 1 s and is capped at 20 s (a kubelet: 10 s, capped at 5 min);
- termination grace is capped at 10 s (a preStop sleep at 5 s, within it).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sandbox.attach import VolumeAttachments
from sandbox.containerlogs import ContainerLog, logs_object, publish_logs_object
from sandbox.launch import Launch, Mount, UnsupportedContainer, plan_container
from sandbox.volumes import (
    VolumeNotReady,
    bound_claims,
    container_mounts,
    prepare_volumes,
    refresh_volumes,
    remove_pod_dir,
)

PROBE_PERIOD_CAP_S = 2.0
BACKOFF_START_S = 1.0
BACKOFF_CAP_S = 20.0
GRACE_CAP_S = 10.0
PRESTOP_CAP_S = 5.0
TICK_S = 0.25
# How often a running pod's configMap and secret volumes are brought up to date. A kubelet takes up to its
# sync period plus its cache's TTL (about a minute); the sandbox is quicker, so that a configuration change
# (the Prometheus Operator's, for one) is seen within seconds.
VOLUME_REFRESH_S = 2.0
log = logging.getLogger("podrunner")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class RuntimeSettings:
    """What the runner knows about this machine: where the stand-in programs are."""

    triton_binary: str
    triton_backend_dir: str
    triton_library_path: str
    operator_bin_dir: str
    apiserver_host: str  # what a kubelet puts in KUBERNETES_SERVICE_HOST/PORT: the `kubernetes` Service
    apiserver_port: int
    marker_env: dict[str, str]
    pythonpath: str
    programs: dict[str, str] = field(default_factory=dict)  # image name -> local program (launch.py)


@dataclass
class ProbeState:
    spec: dict[str, Any]
    successes: int = 0
    failures: int = 0
    last_run: float = 0.0
    passed: bool = False  # latest verdict after thresholds
    last_message: str = ""

    def due(self, started_at: float, now: float) -> bool:
        if now - started_at < float(self.spec.get("initialDelaySeconds") or 0):
            return False
        period = min(float(self.spec.get("periodSeconds") or 10), PROBE_PERIOD_CAP_S)
        return now - self.last_run >= period

    def record(self, ok: bool, message: str) -> bool:
        """Count a result; returns True when the verdict flipped."""
        before = self.passed
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= int(self.spec.get("successThreshold") or 1):
                self.passed = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            self.last_message = message
            if self.failures >= int(self.spec.get("failureThreshold") or 3):
                self.passed = False
        return before != self.passed


@dataclass
class ContainerRun:
    spec: dict[str, Any]
    init: bool = False
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    started_iso: str = ""
    restart_count: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    restart_at: float | None = None
    startup: ProbeState | None = None
    liveness: ProbeState | None = None
    readiness: ProbeState | None = None
    log: ContainerLog | None = None  # its CRI log files, for `kubectl logs` (containerlogs.py)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def reset_probes(self) -> None:
        self.startup = ProbeState(self.spec["startupProbe"]) if self.spec.get("startupProbe") else None
        self.liveness = ProbeState(self.spec["livenessProbe"]) if self.spec.get("livenessProbe") else None
        self.readiness = ProbeState(self.spec["readinessProbe"]) if self.spec.get("readinessProbe") else None

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": bool(
                self.process and self.process.poll() is None and (not self.startup or self.startup.passed)
            ),
            "state": self.state,
        }
        if self.process:
            st["containerID"] = f"sandbox://{self.process.pid}"
        if self.last_state:
            st["lastState"] = self.last_state
        return st


class PodLife:
    """Runs in its own thread from the pod's first sight until it is stopped."""

    def __init__(
        self,
        core: client.CoreV1Api,
        pod: dict[str, Any],
        settings: RuntimeSettings,
        pods_dir: Path,
        attachments: VolumeAttachments,
    ):
        self.core = core
        self.attachments = attachments
        self.pod = pod
        self.settings = settings
        meta = pod["metadata"]
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.pod_ip: str = pod["status"]["podIP"]
        self.dir = pods_dir / f"{self.ns}_{self.name}_{self.uid}"
        self.restart_policy = pod["spec"].get("restartPolicy", "Always")
        self.init_runs = [ContainerRun(c, init=True) for c in pod["spec"].get("initContainers") or []]
        self.runs = [ContainerRun(c) for c in pod["spec"].get("containers") or []]
        for run in self.init_runs + self.runs:
            run.log = ContainerLog(self.dir, run.name)
        self.stop_event = threading.Event()
        # Set when the pod is stopped or a volume it waits for is let go: the retry need not wait its second.
        self.volumes_changed = threading.Event()
        self.thread = threading.Thread(target=self._main, name=f"pod-{self.ns}/{self.name}", daemon=True)
        self.phase = "Pending"
        self.initialized = not self.init_runs
        self.start_time = now_iso()
        self.mounts_by_volume: dict[str, Path] = {}
        self._last_status: dict[str, Any] | None = None
        self._transition: dict[str, tuple[str, str]] = {}
        # The readiness gates' conditions as others (an operator) last set them in the pod's status.
        self._gates = [g["conditionType"] for g in pod["spec"].get("readinessGates") or []]
        self._gate_status: dict[str, str] = {}
        self.saw(pod)

    # -- public ---------------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.volumes_changed.set()

    def saw(self, pod: dict[str, Any]) -> None:
        """The pod as the API has it now: a kubelet reads its readiness gates' conditions from there."""
        conditions = (pod.get("status") or {}).get("conditions") or []
        self._gate_status = {
            c["type"]: c.get("status", "") for c in conditions if c.get("type") in self._gates
        }

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def describe(self) -> dict[str, Any]:
        return {
            "namespace": self.ns,
            "name": self.name,
            "uid": self.uid,
            "podIP": self.pod_ip,
            "phase": self.phase,
            "containers": [
                {
                    "name": r.name,
                    "pid": r.process.pid if r.process and r.process.poll() is None else None,
                    "ready": r.ready,
                    "restartCount": r.restart_count,
                }
                for r in self.init_runs + self.runs
            ],
        }

    # -- lifecycle ------------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            if self._prepare():
                self._run_init_containers()
                if not self.stop_event.is_set() and self.phase != "Failed":
                    self._run_containers()
        except Exception as exc:  # keep the runner alive whatever one pod does
            with contextlib.suppress(Exception):  # the apiserver may be away too
                self._event("Warning", "Failed", f"sandbox pod runner: {exc!r}")
        finally:
            for run in self.init_runs + self.runs:
                self._kill(run, reason="Killing")
            self.attachments.release(self.uid)  # nothing of the pod runs: its volumes may go to another node
            self._pump_logs(final=True)
            # As a kubelet: a finished pod's logs (and volumes) stay until the pod is deleted, and its
            # last status is sent again until the apiserver took it (a Job whose pod ended while the
            # apiserver restarted waited for ever: chaos, apiserver-restart as a removal Job ended).
            while not self.stop_event.wait(1.0):
                with contextlib.suppress(Exception):
                    self._publish()
            remove_pod_dir(self.dir)

    def _prepare(self) -> bool:
        """Set up volumes, retrying while a claim is unbound, a secret is missing or a volume is attached to
        another node (one Event per distinct problem, as a kubelet and the attach/detach controller)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._publish_logs()
        warned = ""
        while not self.stop_event.is_set():
            self.volumes_changed.clear()
            try:
                claims = bound_claims(self.core, self.pod)
                self.attachments.attach(self.pod, claims, wake=self.volumes_changed)
                self.mounts_by_volume = prepare_volumes(self.core, self.pod, self.dir, claims)
                return True
            except VolumeNotReady as exc:
                if str(exc) != warned:
                    warned = str(exc)
                    self._event("Warning", exc.reason, exc.event_message())
                    for run in self.init_runs + self.runs:
                        run.state = {"waiting": {"reason": "ContainerCreating", "message": str(exc)}}
                    self._publish()
            self.volumes_changed.wait(1.0)
        return False

    def _run_init_containers(self) -> None:
        for run in self.init_runs:
            while not self.stop_event.is_set():
                due = run.restart_at is None or time.monotonic() >= run.restart_at
                if run.process is None and due and not self._launch(run):
                    return
                code = run.process.poll() if run.process else None
                if code is not None:
                    self._record_exit(run, code)
                    run.process = None
                    if code == 0:
                        break
                    if self.restart_policy == "Never":
                        self.phase = "Failed"
                        self._publish()
                        return
                    self._schedule_restart(run)
                self._pump_logs()
                self._publish()
                self.stop_event.wait(TICK_S)
        self.initialized = True

    def _run_containers(self) -> None:
        for run in self.runs:
            if not self._launch(run):
                self._publish()
                # The spec cannot change; keep reporting until the pod goes away.
                self.stop_event.wait()
                return
        self.phase = "Running"
        refresh_at = time.monotonic() + VOLUME_REFRESH_S
        refreshed = any("configMap" in v or "secret" in v for v in self.pod["spec"].get("volumes") or [])
        while not self.stop_event.is_set():
            now = time.monotonic()
            for run in self.runs:
                self._tick(run, now)
            if refreshed and now >= refresh_at:
                refresh_at = now + VOLUME_REFRESH_S
                with contextlib.suppress(Exception):  # the apiserver may be away: the files stay as they are
                    refresh_volumes(self.core, self.pod, self.mounts_by_volume)
            self._pump_logs()
            if all(r.process is None and r.restart_at is None for r in self.runs):
                failed = any(r.state.get("terminated", {}).get("exitCode", 0) != 0 for r in self.runs)
                self.phase = "Failed" if failed else "Succeeded"
                self._publish()
                return
            self._publish()
            self.stop_event.wait(TICK_S)

    def _tick(self, run: ContainerRun, now: float) -> None:
        if run.process is None:
            if run.restart_at is not None and now >= run.restart_at:
                if run.state.get("waiting", {}).get("reason") == "CrashLoopBackOff":
                    run.restart_count += 1
                self._launch(run)
            return
        code = run.process.poll()
        if code is not None:
            # As a container runtime: once its main process ends, nothing of the container lives on (a
            # killed tritonserver's python stubs kept running, one set more per kill).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.process.pid, signal.SIGKILL)
            self._record_exit(run, code)
            run.process = None
            if self.restart_policy == "Always" or (self.restart_policy == "OnFailure" and code != 0):
                self._schedule_restart(run)
            return
        self._probe(run, now)

    # -- logs -----------------------------------------------------------------------------------
    def _publish_logs(self) -> None:
        """Empty logs for every container, and the kwok Logs object that serves them to `kubectl logs`."""
        runs = self.init_runs + self.runs
        try:
            for run in runs:
                assert run.log is not None
                run.log.prepare()
            publish_logs_object(
                self.core.api_client, logs_object(self.pod, [(r.name, r.log) for r in runs if r.log])
            )
        except Exception as exc:  # the pod runs all the same
            log.warning("no kubectl logs for pod %s/%s: %r", self.ns, self.name, exc)

    def _pump_logs(self, final: bool = False) -> None:
        for run in self.init_runs + self.runs:
            if run.log is not None:
                try:
                    run.log.pump(final=final)
                except OSError as exc:  # logs are a view: the container runs on whatever happens to them
                    log.warning("logs of %s/%s %s: %r", self.ns, self.name, run.name, exc)

    # -- processes ------------------------------------------------------------------------------
    def _launch(self, run: ContainerRun) -> bool:
        try:
            env = self._container_env(run.spec)
            plan = plan_container(
                run.spec,
                pod_ip=self.pod_ip,
                mounts=[*container_mounts(run.spec, self.mounts_by_volume), self._termination_mount(run)],
                env=env,
                triton_binary=self.settings.triton_binary,
                triton_backend_dir=self.settings.triton_backend_dir,
                triton_library_path=self.settings.triton_library_path,
                operator_bin_dir=self.settings.operator_bin_dir,
                base_env=self._base_env(run),
                programs=self.settings.programs,
            )
        except UnsupportedContainer as exc:
            run.state = {"waiting": {"reason": "SandboxUnsupportedImage", "message": str(exc)}}
            self._event("Warning", "Failed", str(exc))
            return False
        except ConfigError as exc:
            run.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            self._event("Warning", "Failed", f"Error: {exc}")
            self._schedule_restart(run, count=False)
            return True
        self._spawn(run, plan)
        return True

    def _spawn(self, run: ContainerRun, plan: Launch) -> None:
        log_path = self.dir / f"{run.name}.log"
        if run.log is not None:
            try:
                run.log.begin()  # the instance before this one (if any) becomes the previous log
            except OSError as exc:
                log.warning("logs of %s/%s %s: %r", self.ns, self.name, run.name, exc)
        workdir = self.dir / "work" / run.name
        workdir.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as raw_log:
            run.process = subprocess.Popen(
                plan.argv,
                env=plan.env,
                stdout=raw_log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                start_new_session=True,
            )
        run.started_at, run.started_iso, run.restart_at, run.ready = time.monotonic(), now_iso(), None, False
        run.state = {"running": {"startedAt": run.started_iso}}
        run.reset_probes()
        if not run.readiness and not run.startup:
            run.ready = not run.init
        self._event("Normal", "Started", f"Started container {run.name}")

    def _termination_file(self, run: ContainerRun) -> Path:
        return self.dir / f"{run.name}.termination-log"

    def _termination_mount(self, run: ContainerRun) -> Mount:
        """The container's terminationMessagePath as a file of the pod (args naming it get rewritten)."""
        path = str(run.spec.get("terminationMessagePath") or "/dev/termination-log")
        target = self._termination_file(run)
        target.unlink(missing_ok=True)
        return Mount(container_path=path, local_path=str(target))

    def _termination_message(self, run: ContainerRun, code: int) -> str:
        """As a kubelet: the termination file, or on failure (FallbackToLogsOnError) the log's tail."""
        with contextlib.suppress(OSError):
            text = self._termination_file(run).read_text(errors="replace")[:4096]
            if text.strip():
                return text
        if code != 0 and run.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            with contextlib.suppress(OSError):
                tail = (self.dir / f"{run.name}.log").read_bytes()[-2048:].decode(errors="replace")
                return "\n".join(tail.splitlines()[-80:])
        return ""

    def _record_exit(self, run: ContainerRun, code: int) -> None:
        if run.log is not None:
            with contextlib.suppress(OSError):
                run.log.pump(final=True)
        reason = "Completed" if code == 0 else "Error"
        if code < 0:
            reason, code = "Error", 128 - code  # killed by a signal: 128+N, as a runtime reports it
        term: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": run.started_iso,
            "finishedAt": now_iso(),
            "containerID": f"sandbox://{run.process.pid if run.process else 0}",
        }
        message = self._termination_message(run, code)
        if message:
            term["message"] = message
        run.state = {"terminated": term}
        run.last_state = {"terminated": term}
        run.ready = False
        if code != 0:
            self._event(
                "Warning",
                "BackOff" if self.restart_policy != "Never" else "Failed",
                f"Container {run.name} exited with code {code}",
            )

    def _schedule_restart(self, run: ContainerRun, count: bool = True) -> None:
        delay = min(BACKOFF_START_S * 2 ** max(run.restart_count, 0), BACKOFF_CAP_S)
        run.restart_at = time.monotonic() + delay
        if count:
            run.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {delay:.0f}s restarting failed container={run.name}",
                }
            }

    def _kill(self, run: ContainerRun, reason: str) -> None:
        proc = run.process
        if proc is None or proc.poll() is not None:
            return
        grace = min(float(self.pod["spec"].get("terminationGracePeriodSeconds") or 30), GRACE_CAP_S)
        # As a kubelet: the preStop hook first (only the sleep action here), within the grace period.
        pre_stop = ((run.spec.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
        slept = min(float(pre_stop.get("seconds") or 0), PRESTOP_CAP_S, grace)
        if slept > 0:
            time.sleep(slept)
            grace = max(grace - slept, 2.0)  # a kubelet gives 2 s more after a hook that used it all
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything the container left in its group

    # -- probes ---------------------------------------------------------------------------------
    def _probe(self, run: ContainerRun, now: float) -> None:
        if run.startup and not run.startup.passed:
            if run.startup.due(run.started_at, now):
                ok, msg = self._run_probe(run.startup.spec, run)
                run.startup.last_run = now
                run.startup.record(ok, msg)
                if not ok and run.startup.failures >= int(run.startup.spec.get("failureThreshold") or 3):
                    self._event("Warning", "Unhealthy", f"Startup probe failed: {msg}")
                    self._restart_unhealthy(run, "failed startup probe")
                    return
                if run.startup.passed and not run.readiness:
                    run.ready = True
            return
        if run.liveness and run.liveness.due(run.started_at, now):
            ok, msg = self._run_probe(run.liveness.spec, run)
            run.liveness.last_run = now
            run.liveness.record(ok, msg)
            if not ok and run.liveness.failures >= int(run.liveness.spec.get("failureThreshold") or 3):
                self._event("Warning", "Unhealthy", f"Liveness probe failed: {msg}")
                self._restart_unhealthy(run, "failed liveness probe")
                return
        if run.readiness and run.readiness.due(run.started_at, now):
            ok, msg = self._run_probe(run.readiness.spec, run)
            run.readiness.last_run = now
            run.readiness.record(ok, msg)
            run.ready = run.readiness.passed
            # Once per streak of failures, on reaching the threshold (a kubelet repeats it; events dedupe).
            if not ok and run.readiness.failures == int(run.readiness.spec.get("failureThreshold") or 3):
                self._event("Warning", "Unhealthy", f"Readiness probe failed: {msg}")

    def _restart_unhealthy(self, run: ContainerRun, why: str) -> None:
        self._event("Normal", "Killing", f"Container {run.name} {why}, will be restarted")
        self._kill(run, reason="Killing")
        # The exit is picked up (and the restart scheduled) on the next tick.

    def _run_probe(self, probe: dict[str, Any], run: ContainerRun) -> tuple[bool, str]:
        timeout = float(probe.get("timeoutSeconds") or 1)
        if "httpGet" in probe:
            h = probe["httpGet"]
            port = self._port(h.get("port"), run)
            host = h.get("host") or self.pod_ip
            url = f"{(h.get('scheme') or 'HTTP').lower()}://{host}:{port}{h.get('path') or '/'}"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    return 200 <= resp.status < 400, f"HTTP probe failed with statuscode: {resp.status}"
            except urllib.error.HTTPError as exc:
                body = exc.read(300).decode(errors="replace").strip()
                return False, f"HTTP probe failed with statuscode: {exc.code}" + (f": {body}" if body else "")
            except (urllib.error.URLError, OSError) as exc:
                return False, f"Get {url!r}: {getattr(exc, 'reason', exc)}"
        if "tcpSocket" in probe:
            port = self._port(probe["tcpSocket"].get("port"), run)
            try:
                with socket.create_connection((probe["tcpSocket"].get("host") or self.pod_ip, port), timeout):
                    return True, ""
            except OSError as exc:
                return False, f"dial tcp {self.pod_ip}:{port}: {exc}"
        return False, "only httpGet and tcpSocket probes are supported by the sandbox"

    @staticmethod
    def _port(port: Any, run: ContainerRun) -> int:
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            return int(port)
        for p in run.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"container {run.name} has no port named {port!r}")

    # -- environment ----------------------------------------------------------------------------
    def _base_env(self, run: ContainerRun) -> dict[str, str]:
        """A container starts from its image's environment, not the runner's (no KUBECONFIG, no AWS keys)."""
        return {
            "PATH": f"{self.settings.operator_bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.dir / "work" / run.name),
            "LANG": "C.UTF-8",
            "HOSTNAME": self.name,
            "PYTHONPATH": self.settings.pythonpath,
            "PYTHONUNBUFFERED": "1",
            # As a kubelet does: the `kubernetes` Service's ClusterIP (kube-proxy forwards it).
            "KUBERNETES_SERVICE_HOST": self.settings.apiserver_host,
            "KUBERNETES_SERVICE_PORT": str(self.settings.apiserver_port),
            **self.settings.marker_env,
            "TRITON_SANDBOX_POD_UID": self.uid,
            "TRITON_SANDBOX_CONTAINER": run.name,
        }

    def _container_env(self, spec: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for src in spec.get("envFrom") or []:
            prefix = src.get("prefix") or ""
            if "configMapRef" in src:
                data = self._read_config(
                    "configmap", src["configMapRef"]["name"], src["configMapRef"].get("optional")
                )
            else:
                data = self._read_config("secret", src["secretRef"]["name"], src["secretRef"].get("optional"))
            env |= {prefix + k: v for k, v in data.items()}
        for item in spec.get("env") or []:
            if "value" in item or "valueFrom" not in item:
                env[item["name"]] = _expand_env(str(item.get("value", "")), env)
                continue
            ref = item["valueFrom"]
            if "secretKeyRef" in ref or "configMapKeyRef" in ref:
                kind = "secret" if "secretKeyRef" in ref else "configmap"
                r = ref.get("secretKeyRef") or ref.get("configMapKeyRef")
                data = self._read_config(kind, r["name"], r.get("optional"))
                if r["key"] not in data:
                    if r.get("optional"):
                        continue
                    raise ConfigError(
                        f"couldn't find key {r['key']} in {kind.capitalize()} {self.ns}/{r['name']}"
                    )
                env[item["name"]] = data[r["key"]]
            elif "fieldRef" in ref:
                env[item["name"]] = self._field(ref["fieldRef"]["fieldPath"])
        return env

    def _field(self, path: str) -> str:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        values = {
            "metadata.name": self.name,
            "metadata.namespace": self.ns,
            "metadata.uid": self.uid,
            "status.podIP": self.pod_ip,
            "status.hostIP": self.pod["status"].get("hostIP", ""),
            "spec.nodeName": spec.get("nodeName", ""),
            "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        }
        if path.startswith("metadata.labels['"):
            return str((meta.get("labels") or {}).get(path[len("metadata.labels['") : -2], ""))
        return str(values.get(path, ""))

    def _read_config(self, kind: str, name: str, optional: Any) -> dict[str, str]:
        try:
            if kind == "secret":
                secret = self.core.read_namespaced_secret(name, self.ns)
                return {
                    k: base64.b64decode(v).decode(errors="replace") for k, v in (secret.data or {}).items()
                }
            cm = self.core.read_namespaced_config_map(name, self.ns)
            return {k: str(v) for k, v in (cm.data or {}).items()}
        except ApiException as exc:
            if exc.status == 404:
                if optional:
                    return {}
                raise ConfigError(f'{kind} "{name}" not found') from exc
            raise

    # -- status ---------------------------------------------------------------------------------
    def _condition(self, ctype: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
        status = "True" if ok else "False"
        prev = self._transition.get(ctype)
        if prev is None or prev[0] != status:
            self._transition[ctype] = (status, now_iso())
        cond = {
            "type": ctype,
            "status": status,
            "lastTransitionTime": self._transition[ctype][1],
            "lastProbeTime": None,
        }
        if not ok:
            cond |= {"reason": reason, "message": message}
        return cond

    def _publish(self) -> None:
        unready = [r.name for r in self.runs if not r.ready]
        all_ready = not unready and self.phase == "Running"
        not_ready_msg = f"containers with unready status: [{' '.join(unready)}]"
        # As a kubelet: Ready needs every readiness gate's condition True as well.
        gate_msg = self._gate_problem()
        pod_ready = all_ready and gate_msg is None
        ready_reason = "ContainersNotReady" if not all_ready else "ReadinessGatesNotReady"
        ready_msg = not_ready_msg if not all_ready else gate_msg or ""
        status: dict[str, Any] = {
            "phase": self.phase,
            "startTime": self.start_time,
            "conditions": [
                self._condition("PodReadyToStartContainers", True),
                self._condition(
                    "Initialized",
                    self.initialized,
                    "ContainersNotInitialized",
                    "containers with incomplete status: "
                    f"[{' '.join(r.name for r in self.init_runs if 'terminated' not in r.state)}]",
                ),
                self._condition("ContainersReady", all_ready, "ContainersNotReady", not_ready_msg),
                self._condition("Ready", pod_ready, ready_reason, ready_msg),
            ],
            "containerStatuses": [r.status() for r in self.runs],
        }
        if self.init_runs:
            status["initContainerStatuses"] = [r.status() for r in self.init_runs]
        if status == self._last_status:
            return
        try:
            self.core.patch_namespaced_pod_status(self.name, self.ns, {"status": status})
            self._last_status = status
        except ApiException as exc:
            if exc.status == 404:
                self.stop_event.set()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # The apiserver is away (restarted, say): as a kubelet's status manager, keep the status
            # unsent and send it on a later call (a finished pod's thread keeps calling: see _main).
            log.info("status of pod %s/%s not sent yet: %r", self.ns, self.name, exc)

    def _gate_problem(self) -> str | None:
        """Why the readiness gates hold the pod back (a kubelet's wording), None when they do not."""
        for gate in self._gates:
            status = self._gate_status.get(gate)
            if status is None:
                return f'corresponding condition of pod readiness gate "{gate}" does not exist.'
            if status != "True":
                return f'the status of pod readiness gate "{gate}" is not "True", but {status}'
        return None

    def _event(self, etype: str, reason: str, message: str) -> None:
        ts = dt.datetime.now(dt.UTC)
        body = {
            "metadata": {"generateName": f"{self.name}.", "namespace": self.ns},
            "involvedObject": {
                "kind": "Pod",
                "namespace": self.ns,
                "name": self.name,
                "uid": self.uid,
                "apiVersion": "v1",
            },
            "reason": reason,
            "message": message[:1000],
            "type": etype,
            "source": {"component": "sandbox-podrunner", "host": self.pod["spec"].get("nodeName", "")},
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }
        # As a kubelet's event recorder: an Event the apiserver cannot take now is dropped. Raised, a
        # container that exited while the apiserver restarted ended its pod's thread, and the container
        # was never restarted (chaos seed 497077793: the operator's pod stayed in Error for good).
        with contextlib.suppress(ApiException, urllib3.exceptions.HTTPError, OSError):
            self.core.create_namespaced_event(self.ns, body)


class ConfigError(Exception):
    """A container's env refers to a missing Secret/ConfigMap key (kubelet: CreateContainerConfigError)."""


def _expand_env(value: str, env: dict[str, str]) -> str:
    from sandbox.launch import expand_kube_vars

    return expand_kube_vars(value, env)
