"""Start, check and stop a sandbox: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
kube-proxy, kwok with fake GPU nodes, the pod runner (container runtime + volume provisioner), an S3
server and the relay, all inside the sandbox's own network namespace (netns.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from sandbox import gateway, netns, procs
from sandbox.config import Binaries, SandboxConfig, ensure_binaries
from sandbox.pki import (
    FRONT_PROXY_CA,
    FRONT_PROXY_CLIENT,
    ensure_front_proxy_certs,
    ensure_kubelet_cert,
    ensure_pki,
    write_kubeconfig,
)

# Start order; stopped in reverse. The pod runner goes before the control plane on the way down so it
# can still report container exits while it stops its processes.
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kube-proxy",
    "s3",
    "podrunner",
    # The Gateway (Contour + Envoy; sandbox/gateway.py) the examples attach to.
    *gateway.COMPONENTS,
    # Last up, first down: the host's way in.
    "relay",
)
STARTUP_TIMEOUT_S = 90
CHECK_TIMEOUT_S = 10
T = TypeVar("T")


def log(msg: str) -> None:
    print(f"sandbox: {msg}", file=sys.stderr, flush=True)


class SandboxError(SystemExit):
    """A failure with a message that says what to do; exits the CLI with status 1."""

    def __init__(self, msg: str) -> None:
        super().__init__(f"sandbox: {msg}")


def env_lines(cfg: SandboxConfig, bins: Binaries) -> str:
    return f"export KUBECONFIG={cfg.kubeconfig}\nexport PATH={bins.dir}:$PATH"


def in_sandbox(cfg: SandboxConfig, fn: Callable[[], T], timeout_s: float = CHECK_TIMEOUT_S) -> T:
    """`fn()` run from inside the sandbox's network namespace (where its 127.0.0.1 ports and pod IPs are)."""
    return netns.call_in(cfg.netns, fn, timeout_s)


def enter(cfg: SandboxConfig) -> None:
    """Move the calling thread (call it from the main thread, before threads start) into the sandbox's
    network namespace: its clients, and every subprocess it starts, then dial pod IPs and ClusterIPs."""
    if not netns.is_current_thread_inside(cfg.netns):
        netns.enter(cfg.netns)


def is_running(cfg: SandboxConfig) -> bool:
    return (
        netns.exists(cfg.netns)
        and all(procs.pid_of(cfg, c) for c in COMPONENTS)
        and in_sandbox(cfg, lambda: _apiserver_ready(cfg))
    )


PREREQS = Path(__file__).resolve().parents[1] / ".ci" / "prereqs.sh"


def _check_tools() -> None:
    """Root and the programs every sandbox runs, checked before any build by the script every entry point
    runs first (.ci/prereqs.sh; `make sandbox-up` installs what is missing, where it may): one line per
    missing program, with the command that installs it."""
    import subprocess

    done = subprocess.run(
        ["bash", str(PREREQS), "--for", "the sandbox", "sandbox"],
        env={**os.environ, "PREREQS_INSTALL": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SandboxError(f"cannot start:\n{done.stderr.strip()}")


def up(cfg: SandboxConfig) -> Binaries:
    """Idempotent: reuse a healthy sandbox, clean up a stale one, else start a new one."""
    _check_tools()  # first: a missing program is named in milliseconds, not after a build
    bins = ensure_binaries()
    gateway_bins = gateway.ensure_gateway_binaries()  # before entering: the namespace has no registry
    if is_running(cfg):
        log(f"'{cfg.name}' is already running")
        return bins
    # The namespace this very process is in is kept (and reused): deleting it would cut us off.
    inside = netns.is_current_process_inside(cfg.netns)
    stale = (
        any(procs.pid_of(cfg, c) for c in COMPONENTS)
        or procs.marked_pids(cfg)
        or cfg.run_dir.exists()
        or netns.exists(cfg.netns)
    )
    if stale:
        log(f"found a stale sandbox '{cfg.name}' (from a killed run?); cleaning it up first")
        down(cfg, keep_netns=inside)
    _check_ports_free(cfg)
    started = time.monotonic()
    try:
        try:
            netns.create(cfg.netns, cfg.node_ip(0))
        except netns.NetnsError as exc:
            raise SandboxError(str(exc)) from None
        _start_control_plane(cfg, bins)
        _start_nodes_and_runner(cfg, bins)
        in_sandbox(
            cfg,
            lambda: gateway.up(cfg, cfg.kubeconfig, kubectl=bins.path("kubectl"), bins=gateway_bins),
            timeout_s=gateway.START_TIMEOUT_S + 30,
        )
        start_relay(cfg, "relay", cfg.relayed_ports)
    except BaseException:
        log(f"start failed; logs are in {cfg.log_dir}. Cleaning up.")
        down(cfg, keep_logs=True, keep_netns=inside)
        raise
    log(
        f"'{cfg.name}' is up in {time.monotonic() - started:.1f}s in network namespace {cfg.netns}: "
        f"{cfg.apiserver_url} (relayed from the host), {cfg.nodes} GPU nodes x {cfg.gpus_per_node} GPUs, "
        f"S3 at {cfg.s3_endpoint}, Gateway {gateway.GATEWAY_NAMESPACE}/{gateway.GATEWAY_NAME} at "
        f"{gateway.gateway_address(cfg)} (inside)"
    )
    return bins


def start_relay(cfg: SandboxConfig, component: str, ports: Sequence[int]) -> int:
    """Serve `ports` of the sandbox's 127.0.0.1 on the host's 127.0.0.1 too (one relay process per call,
    named `component`; `down` stops it with the rest). Returns its pid once every port listens."""
    pid = procs.spawn(
        cfg,
        component,
        [sys.executable, "-m", "sandbox.relay", "--name", cfg.name, *[f"--port={p}" for p in ports]],
        env={**os.environ, "PYTHONPATH": _pythonpath()},
    )
    want = {f"127.0.0.1:{p}" for p in ports}

    def listening() -> bool:
        if procs.pid_of(cfg, component) is None:
            raise SandboxError(f"the {component} exited; see {cfg.log_dir / (component + '.log')}")
        return want <= set(procs.listeners_in([], list(ports), tcp_table=netns.host_tcp_table()))

    _wait(f"the {component} (host 127.0.0.1:{','.join(map(str, ports))})", listening, cfg, inside=False)
    return pid


def down(cfg: SandboxConfig, keep_logs: bool = False, keep_netns: bool = False) -> list[str]:
    """Stop everything of this sandbox, delete its network namespace and its state; returns what was
    still left (empty = clean)."""
    for component in reversed(COMPONENTS):
        pid = procs.pid_of(cfg, component)
        if pid:
            procs.stop([pid], grace_s=15 if component == "podrunner" else 10)
    # Whatever survived (a pod's process orphaned by a killed runner, a half-started component, an
    # extra relay).
    procs.stop(procs.marked_pids(cfg), grace_s=5)
    leftovers = [f"pid {p}" for p in procs.marked_pids(cfg)]
    leftovers += [
        f"host listener {a}"
        for a in procs.listeners_in([], cfg.relayed_ports, tcp_table=netns.host_tcp_table())
        if a.startswith("127.0.0.1:")
    ]
    if netns.exists(cfg.netns):
        leftovers += [
            f"listener {a} in {cfg.netns}"
            for a in in_sandbox(cfg, lambda: procs.listeners_in(["10.244."], list(cfg.ports.values())))
        ]
        if not keep_netns:
            netns.delete(cfg.netns)
            if netns.exists(cfg.netns):
                leftovers.append(f"network namespace {cfg.netns}")
    for sub in ("run", "etcd", "pods", "volumes", "pki-run"):
        shutil.rmtree(cfg.root / sub, ignore_errors=True)
    if not keep_logs:
        shutil.rmtree(cfg.log_dir, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        cfg.kubeconfig.unlink()
    return leftovers


def _check_ports_free(cfg: SandboxConfig) -> None:
    """The relayed ports must be free on the host's 127.0.0.1 (inside, a fresh namespace has all free)."""
    names = {port: name for name, port in cfg.ports.items()}
    taken = netns.call_in_host(
        lambda: [port for port in cfg.relayed_ports if procs.port_in_use(port)], CHECK_TIMEOUT_S
    )
    busy = [f"{port} ({names.get(port, 'relayed')})" for port in taken]
    if busy:
        raise SandboxError(
            f"port(s) {', '.join(busy)} on 127.0.0.1 are in use by another program. Stop it "
            f"(`ss -ltnp` shows which), or give this sandbox another port block with SANDBOX_SLOT=<2..41>."
        )


def _start_control_plane(cfg: SandboxConfig, bins: Binaries) -> None:
    p, pki = cfg.ports, cfg.pki_dir
    ensure_pki(pki, extra_ips=[cfg.apiserver_address, cfg.apiserver_cluster_ip])
    ensure_front_proxy_certs(pki)
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
            # Clients of the sandbox (the kubeconfig, the relay) dial 127.0.0.1; pods dial the
            # `kubernetes` Service (10.96.0.1:443), whose endpoint is the advertised address.
            "--bind-address=0.0.0.0",
            f"--secure-port={p['kube-apiserver']}",
            f"--advertise-address={cfg.apiserver_address}",
            "--endpoint-reconciler-type=lease",
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
            # `kubectl logs`: the apiserver calls the pod's node (kwok's kubelet server) at its
            # InternalIP (nodes' hostnames resolve nowhere) and verifies kwok's certificate.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            f"--cert-dir={cfg.root / 'pki-run'}",
            # The aggregation layer (APIServices backed by a Service: KEDA's external metrics,
            # sandbox/keda.py): kube-apiserver proxies with this client cert and the caller in
            # X-Remote-* headers, which the aggregated apiserver trusts from this CA only (kubeadm's flags).
            f"--requestheader-client-ca-file={pki / (FRONT_PROXY_CA + '.crt')}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / (FRONT_PROXY_CLIENT + '.crt')}",
            f"--proxy-client-key-file={pki / (FRONT_PROXY_CLIENT + '.key')}",
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
    from sandbox import bootstrap  # imports the kubernetes client; keep `down` light

    repo_stages = Path(__file__).with_name("kwok-pod-stages.yaml")
    ensure_kubelet_cert(cfg.pki_dir, bootstrap.node_ips(cfg))
    in_sandbox(cfg, lambda: bootstrap.create_kwok_crds(cfg), STARTUP_TIMEOUT_S)
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
            # The nodes' kubelet endpoint (one server for all nodes: every node's InternalIP is an
            # address of the namespace; --node-port goes into each node's daemonEndpoints). It serves
            # `kubectl logs` from the files the pod runner's Logs objects name (containerlogs.py).
            f"--server-address=0.0.0.0:{cfg.ports['kwok']}",
            f"--node-port={cfg.ports['kwok']}",
            "--enable-crds=Logs",
            f"--tls-cert-file={cfg.pki_dir / 'kubelet.crt'}",
            f"--tls-private-key-file={cfg.pki_dir / 'kubelet.key'}",
            "--node-lease-duration-seconds=40",
            # Only for a node without a podCIDR of its own (ours all have one).
            "--cidr=10.244.250.0/24",
            "--node-ip=10.244.0.250",
        ],
    )
    procs.spawn(
        cfg, "s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(cfg.ports["s3"])]
    )
    in_sandbox(cfg, lambda: bootstrap.create_cluster_objects(cfg), STARTUP_TIMEOUT_S)
    _start_kube_proxy(cfg, bins)
    procs.spawn(
        cfg,
        "podrunner",
        [sys.executable, "-m", "sandbox.podrunner", "--name", cfg.name],
        env={**os.environ, "PYTHONPATH": _pythonpath()},
    )
    _wait("kwok nodes", lambda: bootstrap.nodes_ready(cfg), cfg)
    _wait("kube-proxy", lambda: http_ok(f"http://127.0.0.1:{cfg.ports['kube-proxy-healthz']}/healthz"), cfg)
    _wait("pod runner", lambda: http_ok(f"http://127.0.0.1:{cfg.ports['podrunner']}/healthz"), cfg)
    _wait("S3 server", lambda: http_ok(cfg.s3_endpoint, any_status=True), cfg)
    _wait("service account 'default'", lambda: bootstrap.default_service_account_exists(cfg), cfg)


def _start_kube_proxy(cfg: SandboxConfig, bins: Binaries) -> None:
    """One kube-proxy for all nodes (they share the namespace): ClusterIPs answer inside it."""
    p = cfg.ports
    procs.spawn(
        cfg,
        "kube-proxy",
        [
            bins.path("kube-proxy"),
            f"--kubeconfig={cfg.kubeconfig}",
            "--proxy-mode=nftables",
            f"--hostname-override={cfg.node_name(0)}",
            f"--bind-address={cfg.node_ip(0)}",
            "--cluster-cidr=10.244.0.0/16",
            f"--healthz-bind-address=127.0.0.1:{p['kube-proxy-healthz']}",
            f"--metrics-bind-address=127.0.0.1:{p['kube-proxy-metrics']}",
            # Leave the kernel's conntrack settings alone: some are not writable from a namespace.
            "--conntrack-max-per-core=0",
            "--conntrack-tcp-timeout-established=0",
            "--conntrack-tcp-timeout-close-wait=0",
            "--oom-score-adj=0",
            # Program each endpoint change at once (the default batches changes for 1 s): a pod that
            # just got Ready is reachable through its Service a few ms later.
            "--iptables-min-sync-period=0s",
        ],
    )


def _pythonpath() -> str:
    from sandbox.config import REPO_ROOT

    parts = [str(REPO_ROOT), str(REPO_ROOT / "operator"), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(p for p in parts if p)


def _wait(what: str, check: Callable[[], bool], cfg: SandboxConfig, inside: bool = True) -> None:
    """Poll `check` (from inside the sandbox's namespace unless `inside` is False) until it holds."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if in_sandbox(cfg, check) if inside else check():
                return
        except SandboxError:
            raise
        except Exception:  # not up yet
            pass
        time.sleep(0.2)
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
