"""A real Prometheus Operator and Prometheus for the sandbox, started on demand (the monitoring e2e tests'
fixture, `make demo MONITORING=1`), not with every sandbox.

`up(cfg, kubeconfig)` installs the Operator's CRDs (every kind of v0.85.0), a namespace `monitoring` with
a ServiceAccount `prometheus` that may discover and scrape targets (RBAC as the Operator's documentation
gives it), starts the Operator as a process of the sandbox (out of cluster, through the sandbox's
kubeconfig; its /metrics and /healthz on a 127.0.0.1 port of the slot's second block) and creates a
`Prometheus` whose ServiceMonitor, PodMonitor and PrometheusRule selectors are kube-prometheus-stack's
`release: kube-prometheus-stack`, in every namespace, scraping and evaluating every SCRAPE_INTERVAL.
The Operator renders Prometheus's configuration and its StatefulSet as in a cluster; the sandbox's pod
runner runs that pod like any other (sandbox/launch.py: the images `prometheus` and
`prometheus-config-reloader` stand for the locally built programs; its configMap and secret volumes are
kept up to date as a kubelet does, so the config reloader sees each new monitor and rule). Prometheus
listens on its pod's IP, inside the sandbox's network namespace: call `up` and read `prometheus_url`
from there.

Binaries: .ci/build-prometheus-operator.sh (the Operator, its config reloader and CRDs) and
.ci/build-prometheus.sh (Prometheus 3.16), both cached. `stop` (or the sandbox's `down`, which also
stops the pod runner and so Prometheus) ends everything started here.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox import procs
from sandbox.config import CACHE_ROOT, REPO_ROOT, SandboxConfig

OPERATOR_VERSION = "v0.85.0"
PROMETHEUS_MODULE_VERSION = "v0.316.0"  # Prometheus 3.16.0
PROMETHEUS_VERSION = "v3.16.0"
NAMESPACE = "monitoring"
PROMETHEUS_NAME = "sandbox"
SERVICE_ACCOUNT = "prometheus"
# kube-prometheus-stack's Prometheus selects monitors and rules by its release label; so does this one.
SELECTOR_LABELS = {"release": "kube-prometheus-stack"}
SCRAPE_INTERVAL_S = 2
# How long a new pod can take to become a scrape target, whatever the scrape interval: Prometheus's
# discovery manager hands target changes on at most every 5 s (fixed in its code), and its scrape manager
# applies them every --scrape.discovery-reload-interval (5 s by default; 1 s here, set below).
DISCOVERY_RELOAD_S = 1
DISCOVERY_DELAY_S = 5 + DISCOVERY_RELOAD_S
OPERATOR = "prometheus-operator"
COMPONENTS = (OPERATOR,)
PORT_OFFSETS = {"operator-web": 5}  # of cfg.extra_base_port (Argo CD has 0-3)
START_TIMEOUT_S = 120.0
OPERATOR_BUILD = REPO_ROOT / ".ci" / "build-prometheus-operator.sh"
PROMETHEUS_BUILD = REPO_ROOT / ".ci" / "build-prometheus.sh"
# Where the builds leave their programs (the pod runner looks there when a pod asks for these images).
OPERATOR_DIR = CACHE_ROOT / f"prometheus-operator-{OPERATOR_VERSION}"
PROMETHEUS_DIR = CACHE_ROOT / f"prometheus-{PROMETHEUS_MODULE_VERSION}"


def log(msg: str) -> None:
    print(f"monitoring: {msg}", file=sys.stderr, flush=True)


class MonitoringError(RuntimeError):
    """The Prometheus Operator or its Prometheus did not come up; the message says what was seen."""


@dataclass(frozen=True)
class MonitoringBinaries:
    operator_dir: Path
    prometheus: Path

    @property
    def operator(self) -> str:
        return str(self.operator_dir / "prometheus-operator")

    @property
    def crds(self) -> list[Path]:
        return sorted((self.operator_dir / "crds").glob("*.yaml"))


def programs() -> dict[str, str]:
    """Image name -> local program, for the pod runner (launch.PROMETHEUS_IMAGES)."""
    return {
        "prometheus": str(PROMETHEUS_DIR / "prometheus"),
        "prometheus-config-reloader": str(OPERATOR_DIR / "prometheus-config-reloader"),
    }


def ensure_binaries() -> MonitoringBinaries:
    """Build (first time: minutes) or find the Operator, its reloader and CRDs, and Prometheus. Needs the Go
    module proxy when cold: call it outside the sandbox's network namespace."""
    found = []
    for script in (OPERATOR_BUILD, PROMETHEUS_BUILD):
        proc = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True, check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            raise MonitoringError(f"{script.name} failed (its last line above says why)")
        found.append(Path(proc.stdout.strip().splitlines()[-1]))
    return MonitoringBinaries(operator_dir=found[0], prometheus=found[1])


def ports(cfg: SandboxConfig) -> dict[str, int]:
    return {name: cfg.extra_base_port + offset for name, offset in PORT_OFFSETS.items()}


def log_path(cfg: SandboxConfig) -> Path:
    return cfg.log_dir / f"{OPERATOR}.log"


# -- objects --------------------------------------------------------------------------------------
def rbac() -> list[dict[str, Any]]:
    """Prometheus's ServiceAccount and what its service discovery reads (the Operator's documented RBAC)."""
    name = f"{NAMESPACE}-{SERVICE_ACCOUNT}"
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["nodes", "nodes/metrics", "services", "endpoints", "pods"],
                    "verbs": ["get", "list", "watch"],
                },
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["get", "list", "watch"],
                },
                {"nonResourceURLs": ["/metrics"], "verbs": ["get"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}],
        },
    ]


def prometheus_resource() -> dict[str, Any]:
    """The `Prometheus` the Operator runs: kube-prometheus-stack's selectors, every namespace, quick
    scrapes and evaluations (tests wait for a few of them)."""
    selector = {"matchLabels": dict(SELECTOR_LABELS)}
    interval = f"{SCRAPE_INTERVAL_S}s"
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "Prometheus",
        "metadata": {"name": PROMETHEUS_NAME, "namespace": NAMESPACE},
        "spec": {
            "version": PROMETHEUS_VERSION,
            "image": f"quay.io/prometheus/prometheus:{PROMETHEUS_VERSION}",
            "replicas": 1,
            "serviceAccountName": SERVICE_ACCOUNT,
            "scrapeInterval": interval,
            "evaluationInterval": interval,
            "serviceMonitorSelector": selector,
            "serviceMonitorNamespaceSelector": {},
            "podMonitorSelector": selector,
            "podMonitorNamespaceSelector": {},
            "ruleSelector": selector,
            "ruleNamespaceSelector": {},
            # The sandbox's nodes are GPU nodes with the nvidia.com/gpu taint.
            "tolerations": [{"operator": "Exists"}],
            "additionalArgs": [
                {"name": "scrape.discovery-reload-interval", "value": f"{DISCOVERY_RELOAD_S}s"}
            ],
        },
    }


def operator_argv(cfg: SandboxConfig, bins: MonitoringBinaries) -> list[str]:
    return [
        bins.operator,
        f"--web.listen-address=127.0.0.1:{ports(cfg)['operator-web']}",
        f"--prometheus-config-reloader=quay.io/prometheus-operator/prometheus-config-reloader:{OPERATOR_VERSION}",
        "--log-format=logfmt",
    ]


# -- lifecycle ------------------------------------------------------------------------------------
def up(
    cfg: SandboxConfig,
    kubeconfig: Path,
    spawn: procs.Spawn = procs.spawn,
    *,
    kubectl: str,
    bins: MonitoringBinaries | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> str:
    """Install the CRDs and RBAC, start the Operator, create the Prometheus and wait until its pod is
    Ready and its API answers; returns Prometheus's URL. Idempotent: a running Operator is reused."""
    started = time.monotonic()
    bins = bins or ensure_binaries()
    if not bins.crds:
        raise MonitoringError(f"no CRDs in {bins.operator_dir}; delete it and re-run {OPERATOR_BUILD.name}")
    deadline = time.monotonic() + timeout_s
    if not procs.pid_of(cfg, OPERATOR):
        # Big CRDs: server-side apply (client-side apply's annotation would not fit).
        _kubectl(
            kubectl, kubeconfig, "apply", "--server-side", "--force-conflicts", *procs.file_args(bins.crds)
        )
        _kubectl(kubectl, kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        _apply(kubectl, kubeconfig, rbac())
        spawn(cfg, OPERATOR, operator_argv(cfg, bins), {**os.environ, "KUBECONFIG": str(kubeconfig)})
        _wait(
            "the Operator's /healthz", lambda: _http_ok(ports(cfg)["operator-web"], "/healthz"), cfg, deadline
        )
    _apply(kubectl, kubeconfig, [prometheus_resource()])
    url = ""

    def ready() -> bool:
        nonlocal url
        ip = _ready_pod_ip(kubectl, kubeconfig)
        if not ip:
            return False
        url = f"http://{ip}:9090"
        return procs.get_ok(f"{url}/api/v1/status/config")

    _wait(f"Prometheus {NAMESPACE}/{PROMETHEUS_NAME} Ready", ready, cfg, deadline)
    log(
        f"Prometheus Operator {OPERATOR_VERSION} and Prometheus {PROMETHEUS_VERSION} up in "
        f"{time.monotonic() - started:.1f}s at {url}; Operator log {log_path(cfg)}"
    )
    return url


def prometheus_url(kubectl: str, kubeconfig: Path) -> str:
    """Prometheus's URL (its pod's IP), or '' while no pod is Ready."""
    ip = _ready_pod_ip(kubectl, kubeconfig)
    return f"http://{ip}:9090" if ip else ""


def stop(cfg: SandboxConfig, kubectl: str, kubeconfig: Path) -> None:
    """Delete the Prometheus (its pod goes with its StatefulSet) and stop the Operator. The CRDs and the
    namespace stay."""
    with contextlib.suppress(MonitoringError, subprocess.TimeoutExpired):
        _kubectl(
            kubectl,
            kubeconfig,
            "-n",
            NAMESPACE,
            "delete",
            "prometheus",
            PROMETHEUS_NAME,
            "--ignore-not-found",
        )
        # Without the Operator no one deletes its StatefulSet: delete it too (its pod goes with it).
        _kubectl(
            kubectl,
            kubeconfig,
            "-n",
            NAMESPACE,
            "delete",
            "statefulset",
            f"prometheus-{PROMETHEUS_NAME}",
            "--ignore-not-found",
            "--wait=true",
            "--timeout=60s",
        )
    procs.stop_component(cfg, OPERATOR)


# -- helpers --------------------------------------------------------------------------------------
def _ready_pod_ip(kubectl: str, kubeconfig: Path) -> str:
    out = _kubectl(
        kubectl,
        kubeconfig,
        "-n",
        NAMESPACE,
        "get",
        "pods",
        "-l",
        f"prometheus={PROMETHEUS_NAME}",
        "-o",
        "json",
    )
    for pod in json.loads(out).get("items", []):
        conditions = (pod.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            return str(pod["status"].get("podIP") or "")
    return ""


def _http_ok(port: int, path: str) -> bool:
    return procs.get_ok(f"http://127.0.0.1:{port}{path}")


def _apply(kubectl: str, kubeconfig: Path, objects: list[dict[str, Any]]) -> None:
    procs.apply_server_side(kubectl, kubeconfig, objects, error=MonitoringError)


def _kubectl(kubectl: str, kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    return procs.kubectl(kubectl, kubeconfig, *args, stdin=stdin, error=MonitoringError, shown=3)


def _wait(what: str, check: Callable[[], bool], cfg: SandboxConfig, deadline: float) -> None:
    procs.wait_for(
        what,
        check,
        cfg,
        deadline,
        components=COMPONENTS,
        log_of=lambda _: log_path(cfg),
        timed_out_hint=(
            f"the Operator's log is {log_path(cfg)}, the pod's "
            f"`kubectl -n {NAMESPACE} describe pod prometheus-{PROMETHEUS_NAME}-0`"
        ),
        error=MonitoringError,
    )
