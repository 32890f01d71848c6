"""A real KEDA (v2.20.2: its operator and its metrics apiserver) for the sandbox, started on demand by the
tests and demos that scale on it, never with every sandbox.

`up(cfg, kubeconfig, kubectl=...)` installs KEDA's CRDs and its own RBAC (the module's config/rbac,
config/metrics-server and service account files, cached by .ci/build-keda.sh), and starts both programs as
processes of the sandbox (out of cluster, as upstream's `make run` does), each through a kubeconfig with
the `keda/keda-operator` ServiceAccount's token, so they act with exactly the rights KEDA's manifests give
them. Then it registers `v1beta1.external.metrics.k8s.io`, the way a cluster reaches KEDA's metrics:
- the metrics apiserver listens on node 1's address (cfg.node_ip(1); a hostNetwork pod there, in
  effect), on a port of the slot's second block; a Service `keda/keda-metrics-apiserver` without a
  selector has an EndpointSlice naming that address, and the APIService names the Service, with the CA of
  the server's certificate as its caBundle. Not node 0's address: a ClusterIP dialled inside the namespace
  goes out from node 0's address (netns.py), and an endpoint equal to the source is hairpin traffic that
  kube-proxy masquerades, which on `lo` never connects (seen: the APIService's discovery check timed out);
- kube-apiserver (sandbox/cluster.py) dials the Service's ClusterIP (kube-proxy programs it inside the
  sandbox's network namespace, as for any Service) and proxies with its front-proxy client certificate
  (sandbox/pki.py), so the metrics apiserver authenticates the caller (kube-controller-manager's HPA
  controller) from the X-Remote-* headers and authorizes it with a SubjectAccessReview, as in a cluster.
The two KEDA programs talk gRPC over mutual TLS (KEDA's own design) with a CA and a certificate made here
(KEDA's cert rotation, which writes them into a Secret and patches the APIService, is off).
`up` returns once `kubectl get --raw /apis/external.metrics.k8s.io/v1beta1` answers. Idempotent: running
programs are reused. `stop` removes all of it: the ScaledObjects and ScaledJobs first (KEDA's finalizers
need its operator), the APIService (an APIService without a server blocks namespace deletion), the
programs, the RBAC, the namespace and the CRDs.

Binary and manifests: .ci/build-keda.sh (cached).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox import pki, procs
from sandbox.config import CACHE_ROOT, REPO_ROOT, SandboxConfig

KEDA_VERSION = "v2.20.2"
NAMESPACE = "keda"
SERVICE_ACCOUNT = "keda-operator"
OPERATOR = "keda-operator"
ADAPTER = "keda-metrics-apiserver"
COMPONENTS = (OPERATOR, ADAPTER)
OPERATOR_SERVICE = "keda-operator"
ADAPTER_SERVICE = "keda-metrics-apiserver"
API_GROUP = "external.metrics.k8s.io"
API_SERVICE = f"v1beta1.{API_GROUP}"
API_PATH = f"/apis/{API_GROUP}/v1beta1"
CRD_GROUPS = ("keda.sh", "eventing.keda.sh")
# Offsets of cfg.extra_base_port (Argo CD has 0-3, monitoring 5). All bind 127.0.0.1 except the metrics
# apiserver (node 1's address, dialled by kube-apiserver through its Service) and the metrics apiserver's own
# /metrics (`--port`: KEDA binds it on every address; a port of this block clashes with no pod's).
PORT_OFFSETS = {
    "operator-health": 4,
    "operator-grpc": 6,
    "operator-metrics": 7,
    "adapter": 8,
    "adapter-metrics": 9,
}
START_TIMEOUT_S = 120.0
# The ServiceAccount token the programs use; `up` on running programs reuses theirs.
TOKEN_DURATION = "168h"
BUILD = REPO_ROOT / ".ci" / "build-keda.sh"
KEDA_DIR = CACHE_ROOT / f"keda-{KEDA_VERSION}"
# The ScaledObject kinds whose finalizers KEDA's operator removes: deleted while it still runs.
SCALED_KINDS = ("scaledobjects.keda.sh", "scaledjobs.keda.sh")


def log(msg: str) -> None:
    print(f"keda: {msg}", file=sys.stderr, flush=True)


class KedaError(RuntimeError):
    """KEDA did not come up (or go); the message says what was seen."""


@dataclass(frozen=True)
class KedaBinaries:
    dir: Path

    @property
    def operator(self) -> str:
        return str(self.dir / "keda")

    @property
    def adapter(self) -> str:
        return str(self.dir / "keda-adapter")

    @property
    def crds(self) -> list[Path]:
        return sorted((self.dir / "crds").glob("*.yaml"))

    @property
    def rbac(self) -> list[Path]:
        """KEDA's namespace, ServiceAccount, roles and bindings, as its module ships them."""
        return sorted((self.dir / "rbac").glob("*.yaml"))


def ensure_binaries() -> KedaBinaries:
    """Build (first time: about 10 minutes on 2 cores) or find KEDA. Needs the Go module proxy when cold:
    call it outside the sandbox's network namespace."""
    proc = subprocess.run(["bash", str(BUILD)], stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise KedaError(f"{BUILD.name} failed (its last line above says why)")
    return KedaBinaries(Path(proc.stdout.strip().splitlines()[-1]))


def ports(cfg: SandboxConfig) -> dict[str, int]:
    return {name: cfg.extra_base_port + offset for name, offset in PORT_OFFSETS.items()}


def adapter_address(cfg: SandboxConfig) -> str:
    """Where the metrics apiserver listens: node 1's address, not node 0's (see the module's doc)."""
    return cfg.node_ip(1)


def state_dir(cfg: SandboxConfig) -> Path:
    """Certificates and the ServiceAccount's kubeconfig (under run/: the sandbox's `down` removes it)."""
    return cfg.run_dir / "keda"


def log_path(cfg: SandboxConfig, component: str) -> Path:
    return cfg.log_dir / f"{component}.log"


def crd_name(path: Path) -> str:
    """A CRD's name from its file's (kubebuilder's `<group>_<plural>.yaml`): `<plural>.<group>`."""
    group, plural = path.stem.split("_", 1)
    return f"{plural}.{group}"


# -- objects --------------------------------------------------------------------------------------
def service_dns_names(service: str) -> list[str]:
    return [
        service,
        f"{service}.{NAMESPACE}",
        f"{service}.{NAMESPACE}.svc",
        f"{service}.{NAMESPACE}.svc.cluster.local",
    ]


def cert_extensions(cfg: SandboxConfig) -> str:
    """KEDA's certificate (both programs use it, as KEDA's rotated one): the metrics apiserver serves with
    it (kube-apiserver checks the Service's DNS name against it), the operator's gRPC server serves with
    it and the metrics apiserver presents it as a client (dialled at 127.0.0.1)."""
    names = [*service_dns_names(OPERATOR_SERVICE), *service_dns_names(ADAPTER_SERVICE), "localhost"]
    sans = [*(f"DNS:{n}" for n in names), "IP:127.0.0.1", f"IP:{adapter_address(cfg)}"]
    return (
        f"subjectAltName={','.join(sans)}\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
    )


def ensure_certs(cfg: SandboxConfig) -> Path:
    """ca.crt, tls.crt and tls.key (the names KEDA reads from its --cert-dir), made once per start."""
    d = state_dir(cfg) / "certs"
    if all((d / f).exists() for f in ("ca.crt", "tls.crt", "tls.key")):
        return d
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    pki.issue_ca(d, "ca", "/O=KEDAORG/CN=KEDA")
    pki.issue_cert(d, "tls", f"/CN={OPERATOR_SERVICE}.{NAMESPACE}.svc", cert_extensions(cfg))
    return d


def service_objects(cfg: SandboxConfig, ca_pem: bytes) -> list[dict[str, Any]]:
    """The Service kube-apiserver reaches the metrics apiserver by (its endpoint: node 1's address, where
    the program listens), and the APIService that sends `external.metrics.k8s.io` there."""
    port = ports(cfg)["adapter"]
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": ADAPTER_SERVICE, "namespace": NAMESPACE, "labels": {"app": ADAPTER}},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port, "protocol": "TCP"}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{ADAPTER_SERVICE}-host",
                "namespace": NAMESPACE,
                "labels": {
                    "kubernetes.io/service-name": ADAPTER_SERVICE,
                    "endpointslice.kubernetes.io/managed-by": "sandbox.tritonoperator.dev",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [adapter_address(cfg)], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": API_SERVICE, "labels": {"app.kubernetes.io/part-of": "keda-operator"}},
            "spec": {
                "service": {"name": ADAPTER_SERVICE, "namespace": NAMESPACE, "port": 443},
                "group": API_GROUP,
                "version": "v1beta1",
                "caBundle": base64.b64encode(ca_pem).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]


def kubeconfig_text(server: str, ca_file: Path, token: str) -> str:
    """A kubeconfig acting as KEDA's ServiceAccount (what its pods' mounted token would do)."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "sandbox", "cluster": {"server": server, "certificate-authority": str(ca_file)}}
            ],
            "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
            "contexts": [{"name": "keda", "context": {"cluster": "sandbox", "user": SERVICE_ACCOUNT}}],
            "current-context": "keda",
        },
        indent=1,
    )


def program_env(kubeconfig: Path) -> dict[str, str]:
    """What KEDA's Deployments set, out of cluster: every namespace watched, KEDA's own namespace named."""
    return {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "WATCH_NAMESPACE": "",
        "POD_NAMESPACE": NAMESPACE,
        "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE,
    }


def operator_argv(cfg: SandboxConfig, bins: KedaBinaries, certs: Path) -> list[str]:
    p = ports(cfg)
    return [
        bins.operator,
        f"--health-probe-bind-address=127.0.0.1:{p['operator-health']}",
        f"--metrics-service-bind-address=127.0.0.1:{p['operator-grpc']}",
        f"--metrics-bind-address=127.0.0.1:{p['operator-metrics']}",
        f"--cert-dir={certs}",
        "--enable-cert-rotation=false",
        "--leader-elect=false",
        "--zap-log-level=info",
        "--zap-encoder=console",
    ]


def adapter_argv(cfg: SandboxConfig, bins: KedaBinaries, certs: Path, kubeconfig: Path) -> list[str]:
    p = ports(cfg)
    return [
        bins.adapter,
        f"--bind-address={adapter_address(cfg)}",
        f"--secure-port={p['adapter']}",
        f"--port={p['adapter-metrics']}",
        f"--cert-dir={certs}",
        f"--tls-cert-file={certs / 'tls.crt'}",
        f"--tls-private-key-file={certs / 'tls.key'}",
        f"--client-ca-file={certs / 'ca.crt'}",
        f"--metrics-service-address=127.0.0.1:{p['operator-grpc']}",
        # Out of cluster: the delegated authentication and authorization, and the listers, through the
        # ServiceAccount's kubeconfig (in a pod, the mounted token).
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--lister-kubeconfig={kubeconfig}",
        "--zap-log-level=info",
        "--zap-encoder=console",
    ]


# -- lifecycle ------------------------------------------------------------------------------------
def up(
    cfg: SandboxConfig,
    kubeconfig: Path,
    spawn: procs.Spawn = procs.spawn,
    *,
    kubectl: str,
    bins: KedaBinaries | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> None:
    """Install KEDA's CRDs and RBAC, start its operator and metrics apiserver, register the external
    metrics API and wait until it answers. Idempotent: running programs are reused."""
    started = time.monotonic()
    bins = bins or ensure_binaries()
    if not bins.crds or not bins.rbac:
        raise KedaError(f"no CRDs or RBAC in {bins.dir}; delete it and re-run {BUILD.name}")
    deadline = time.monotonic() + timeout_s
    certs = ensure_certs(cfg)
    sa_kubeconfig = state_dir(cfg) / "kubeconfig"
    if not all(procs.pid_of(cfg, c) for c in COMPONENTS):
        for component in COMPONENTS:  # a half-started pair: start both afresh
            procs.stop_component(cfg, component)
        # Big CRDs: server-side apply (client-side apply's annotation would not fit).
        _kubectl(
            kubectl, kubeconfig, "apply", "--server-side", "--force-conflicts", *procs.file_args(bins.crds)
        )
        names = [f"crd/{crd_name(p)}" for p in bins.crds]
        _kubectl(kubectl, kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", *names)
        _kubectl(
            kubectl, kubeconfig, "apply", "--server-side", "--force-conflicts", *procs.file_args(bins.rbac)
        )
        token = _kubectl(
            kubectl,
            kubeconfig,
            "-n",
            NAMESPACE,
            "create",
            "token",
            SERVICE_ACCOUNT,
            f"--duration={TOKEN_DURATION}",
        ).strip()
        sa_kubeconfig.write_text(kubeconfig_text(cfg.apiserver_url, cfg.pki_dir / "ca.crt", token))
        sa_kubeconfig.chmod(0o600)
        env = program_env(sa_kubeconfig)
        spawn(cfg, OPERATOR, operator_argv(cfg, bins, certs), env)
        _wait(
            "KEDA's operator /healthz",
            lambda: procs.get_ok(f"http://127.0.0.1:{ports(cfg)['operator-health']}/healthz"),
            cfg,
            deadline,
        )
        spawn(cfg, ADAPTER, adapter_argv(cfg, bins, certs, sa_kubeconfig), env)
    _wait(
        "KEDA's metrics apiserver /readyz",
        lambda: procs.get_ok(
            f"https://{adapter_address(cfg)}:{ports(cfg)['adapter']}/readyz", certs / "ca.crt"
        ),
        cfg,
        deadline,
    )
    _apply(kubectl, kubeconfig, service_objects(cfg, (certs / "ca.crt").read_bytes()))
    _wait(f"kubectl get --raw {API_PATH}", lambda: _api_answers(kubectl, kubeconfig), cfg, deadline)
    log(
        f"KEDA {KEDA_VERSION} up in {time.monotonic() - started:.1f}s: {API_SERVICE} served by "
        f"{adapter_address(cfg)}:{ports(cfg)['adapter']}; logs {log_path(cfg, OPERATOR)}, "
        f"{log_path(cfg, ADAPTER)}"
    )


def stop(cfg: SandboxConfig, kubectl: str, kubeconfig: Path) -> None:
    """Remove everything `up` made: every ScaledObject and ScaledJob (their HPAs go with them), the
    APIService and its Service, the programs, KEDA's RBAC, namespace and CRDs."""

    def quietly(*args: str) -> None:
        with contextlib.suppress(KedaError, subprocess.TimeoutExpired):
            _kubectl(kubectl, kubeconfig, *args)

    crds = _kubectl_or_empty(kubectl, kubeconfig, "get", "crd", "-o", "name").split()
    ours = [c for c in crds if c.endswith(tuple(f".{g}" for g in CRD_GROUPS))]
    for kind in SCALED_KINDS:
        if f"customresourcedefinition.apiextensions.k8s.io/{kind}" in ours:
            quietly("delete", kind, "--all-namespaces", "--all", "--wait=true", "--timeout=60s")
    quietly("delete", "apiservice", API_SERVICE, "--ignore-not-found")
    for component in COMPONENTS:
        procs.stop_component(cfg, component)
    shutil.rmtree(state_dir(cfg), ignore_errors=True)
    bins = KedaBinaries(KEDA_DIR)
    if bins.rbac:  # the namespace with the Service, EndpointSlice and ServiceAccount, and the cluster RBAC
        quietly("delete", "--ignore-not-found", "--wait=true", "--timeout=60s", *procs.file_args(bins.rbac))
    quietly("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=60s")
    if ours:
        quietly("delete", *ours, "--wait=true", "--timeout=60s")


# -- helpers --------------------------------------------------------------------------------------
def _api_answers(kubectl: str, kubeconfig: Path) -> bool:
    found = json.loads(_kubectl(kubectl, kubeconfig, "get", "--raw", API_PATH))
    return bool(
        found.get("kind") == "APIResourceList" and found.get("groupVersion") == f"{API_GROUP}/v1beta1"
    )


def _apply(kubectl: str, kubeconfig: Path, objects: list[dict[str, Any]]) -> None:
    procs.apply_server_side(kubectl, kubeconfig, objects, error=KedaError)


def _kubectl(kubectl: str, kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    return procs.kubectl(kubectl, kubeconfig, *args, stdin=stdin, error=KedaError, shown=3)


def _kubectl_or_empty(kubectl: str, kubeconfig: Path, *args: str) -> str:
    try:
        return _kubectl(kubectl, kubeconfig, *args)
    except (KedaError, subprocess.TimeoutExpired):
        return ""


def _wait(what: str, check: Callable[[], bool], cfg: SandboxConfig, deadline: float) -> None:
    procs.wait_for(
        what,
        check,
        cfg,
        deadline,
        components=COMPONENTS,
        log_of=lambda component: log_path(cfg, component),
        timed_out_hint=(
            f"the logs are {log_path(cfg, OPERATOR)} and {log_path(cfg, ADAPTER)}, the APIService's state "
            f"`kubectl get apiservice {API_SERVICE} -o yaml`"
        ),
        error=KedaError,
    )
