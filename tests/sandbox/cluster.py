"""Start, check and stop a sandbox: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
kwok with fake GPU nodes, the pod runner (container runtime + volume provisioner) and an S3 server."""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.sandbox import procs
from tests.sandbox.config import Binaries, SandboxConfig, ensure_binaries
from tests.sandbox.pki import ensure_pki, write_kubeconfig

# Start order; stopped in reverse. The pod runner goes before the control plane on the way down so it
# can still report container exits while it stops its processes.
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "s3",
    "podrunner",
)
STARTUP_TIMEOUT_S = 90


def log(msg: str) -> None:
    print(f"sandbox: {msg}", file=sys.stderr, flush=True)


class SandboxError(SystemExit):
    """A failure with a message that says what to do; exits the CLI with status 1."""

    def __init__(self, msg: str) -> None:
        super().__init__(f"sandbox: {msg}")


def env_lines(cfg: SandboxConfig, bins: Binaries) -> str:
    return f"export KUBECONFIG={cfg.kubeconfig}\nexport PATH={bins.dir}:$PATH"


def is_running(cfg: SandboxConfig) -> bool:
    return all(procs.pid_of(cfg, c) for c in COMPONENTS) and _apiserver_ready(cfg)


def up(cfg: SandboxConfig) -> Binaries:
    """Idempotent: reuse a healthy sandbox, clean up a stale one, else start a new one."""
    bins = ensure_binaries()
    if is_running(cfg):
        log(f"'{cfg.name}' is already running")
        return bins
    if any(procs.pid_of(cfg, c) for c in COMPONENTS) or procs.marked_pids(cfg) or (cfg.run_dir).exists():
        log(f"found a stale sandbox '{cfg.name}' (from a killed run?); cleaning it up first")
        down(cfg)
    _check_ports_free(cfg)
    started = time.monotonic()
    try:
        _start_control_plane(cfg, bins)
        _start_nodes_and_runner(cfg, bins)
    except BaseException:
        log(f"start failed; logs are in {cfg.log_dir}. Cleaning up.")
        down(cfg, keep_logs=True)
        raise
    log(
        f"'{cfg.name}' is up in {time.monotonic() - started:.0f}s: {cfg.apiserver_url}, "
        f"{cfg.nodes} GPU nodes x {cfg.gpus_per_node} GPUs, S3 at {cfg.s3_endpoint}"
    )
    return bins


def down(cfg: SandboxConfig, keep_logs: bool = False) -> list[str]:
    """Stop everything of this sandbox and remove its state; returns what was still left (empty = clean)."""
    for component in reversed(COMPONENTS):
        pid = procs.pid_of(cfg, component)
        if pid:
            procs.stop([pid], grace_s=15 if component == "podrunner" else 10)
    # Whatever survived (a pod's process orphaned by a killed runner, a half-started component).
    procs.stop(procs.marked_pids(cfg), grace_s=5)
    leftovers = [f"pid {p}" for p in procs.marked_pids(cfg)]
    prefix = f"127.{100 + cfg.slot}."
    leftovers += [f"listener {a}" for a in procs.listeners_in([prefix], list(cfg.ports.values()))]
    for sub in ("run", "etcd", "pods", "volumes", "pki-run"):
        shutil.rmtree(cfg.root / sub, ignore_errors=True)
    if not keep_logs:
        shutil.rmtree(cfg.log_dir, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        cfg.kubeconfig.unlink()
    return leftovers


def _check_ports_free(cfg: SandboxConfig) -> None:
    busy = [f"{port} ({name})" for name, port in cfg.ports.items() if procs.port_in_use(port)]
    if busy:
        raise SandboxError(
            f"port(s) {', '.join(busy)} on 127.0.0.1 are in use by another program. Stop it "
            f"(`ss -ltnp` shows which), or give this sandbox another port block with SANDBOX_SLOT=<2..41>."
        )


def _start_control_plane(cfg: SandboxConfig, bins: Binaries) -> None:
    p, pki = cfg.ports, cfg.pki_dir
    ensure_pki(pki)
    write_kubeconfig(cfg.kubeconfig, cfg.apiserver_url, pki)
    kc = str(cfg.kubeconfig)
    procs.spawn(
        cfg,
        "etcd",
        [
            bins.path("etcd"),
            "--name=sandbox",
            f"--data-dir={cfg.root / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{p['etcd-client']}",
            f"--advertise-client-urls=http://127.0.0.1:{p['etcd-client']}",
            f"--listen-peer-urls=http://127.0.0.1:{p['etcd-peer']}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{p['etcd-peer']}",
            f"--initial-cluster=sandbox=http://127.0.0.1:{p['etcd-peer']}",
            "--unsafe-no-fsync",  # a throwaway cluster: durability costs more than it gives here
            "--log-level=warn",
        ],
    )
    _wait("etcd", lambda: http_ok(f"http://127.0.0.1:{p['etcd-client']}/health"), cfg)
    procs.spawn(
        cfg,
        "kube-apiserver",
        [
            bins.path("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{p['etcd-client']}",
            "--bind-address=127.0.0.1",
            f"--secure-port={p['kube-apiserver']}",
            # No default route on these machines: the apiserver cannot guess an address to advertise.
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--authorization-mode=RBAC",
            # Pods asking for nvidia.com/gpu get a toleration for the GPU nodes' taint, as on GKE/EKS pools.
            "--enable-admission-plugins=ExtendedResourceToleration",
            "--allow-privileged=true",
            "--profiling=false",
            f"--cert-dir={cfg.root / 'pki-run'}",
            # Every request, with its user agent: benches count the operator's own API traffic from it.
            f"--audit-policy-file={_audit_policy(cfg)}",
            f"--audit-log-path={cfg.audit_log}",
            "--audit-log-maxsize=200",
            "--audit-log-format=json",
        ],
    )
    _wait("kube-apiserver", lambda: _apiserver_ready(cfg), cfg)
    common = [
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        "--bind-address=127.0.0.1",
        "--leader-elect=false",
    ]
    procs.spawn(
        cfg,
        "kube-controller-manager",
        [
            bins.path("kube-controller-manager"),
            *common,
            f"--secure-port={p['kube-controller-manager']}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cert-dir={cfg.root / 'pki-run'}",
        ],
    )
    procs.spawn(
        cfg,
        "kube-scheduler",
        [
            bins.path("kube-scheduler"),
            *common,
            f"--secure-port={p['kube-scheduler']}",
            f"--cert-dir={cfg.root / 'pki-run'}",
        ],
    )


def _audit_policy(cfg: SandboxConfig) -> Path:
    path = cfg.root / "audit-policy.yaml"
    path.write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\n"
        "rules:\n- level: Metadata\n"
    )
    return path


def _start_nodes_and_runner(cfg: SandboxConfig, bins: Binaries) -> None:
    from tests.sandbox import bootstrap  # imports the kubernetes client; keep `down` light

    repo_stages = Path(__file__).with_name("kwok-pod-stages.yaml")
    procs.spawn(
        cfg,
        "kwok",
        [
            bins.path("kwok"),
            f"--kubeconfig={cfg.kubeconfig}",
            "--manage-nodes-with-label-selector=type=kwok",
            f"--config={bins.kwok_stages / 'node' / 'fast' / 'node-initialize.yaml'}",
            f"--config={bins.kwok_stages / 'node' / 'heartbeat-with-lease'}/node-heartbeat-with-lease.yaml",
            f"--config={repo_stages}",
            f"--server-address=127.0.0.1:{cfg.ports['kwok']}",
            "--node-lease-duration-seconds=40",
            f"--cidr=127.{100 + cfg.slot}.250.0/24",
            f"--node-ip=127.{100 + cfg.slot}.0.250",
        ],
    )
    procs.spawn(
        cfg, "s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(cfg.ports["s3"])]
    )
    bootstrap.create_cluster_objects(cfg)
    procs.spawn(
        cfg,
        "podrunner",
        [sys.executable, "-m", "tests.sandbox.podrunner", "--name", cfg.name],
        env={**os.environ, "PYTHONPATH": _pythonpath()},
    )
    _wait("kwok nodes", lambda: bootstrap.nodes_ready(cfg), cfg)
    _wait("pod runner", lambda: http_ok(f"http://127.0.0.1:{cfg.ports['podrunner']}/healthz"), cfg)
    _wait("S3 server", lambda: http_ok(cfg.s3_endpoint, any_status=True), cfg)
    _wait("service account 'default'", lambda: bootstrap.default_service_account_exists(cfg), cfg)


def _pythonpath() -> str:
    from tests.sandbox.config import REPO_ROOT

    parts = [str(REPO_ROOT), str(REPO_ROOT / "operator"), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(p for p in parts if p)


def _wait(what: str, check: object, cfg: SandboxConfig) -> None:
    assert callable(check)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.3)
    raise SandboxError(f"{what} did not come up within {STARTUP_TIMEOUT_S}s; see the logs in {cfg.log_dir}")


def http_ok(url: str, any_status: bool = False) -> bool:
    """Whether `url` answers 200 (any HTTP answer with any_status); False when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200 or any_status)
    except urllib.error.HTTPError:
        return any_status
    except OSError:
        return False


def _apiserver_ready(cfg: SandboxConfig) -> bool:
    ctx = ssl.create_default_context(cafile=str(cfg.pki_dir / "ca.crt"))
    ctx.load_cert_chain(str(cfg.pki_dir / "admin.crt"), str(cfg.pki_dir / "admin.key"))
    try:
        with urllib.request.urlopen(f"{cfg.apiserver_url}/readyz", timeout=2, context=ctx) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False
