"""A real Gateway API implementation for the sandbox: Contour (the controller) and Envoy (the data plane).

`up(cfg, kubeconfig)` installs the Gateway API CRDs (standard channel) and Contour's own, a GatewayClass
`contour`, the Gateway `gateway-system/sandbox` with one HTTP listener open to routes of every
namespace, then starts `contour serve` (out of cluster, static Gateway) and Envoy, and waits until the
Gateway is Programmed and Envoy is ready. HTTPRoutes and GRPCRoutes attach to the same listener: Envoy
speaks HTTP/1.1 and h2c on it. Clients dial `gateway_address(cfg)`.

Binaries come from sandbox/build-gateway.sh (cached). Everything binds loopback addresses only:
Contour's and Envoy's side ports are 127.0.0.1 ports of the sandbox slot's port block (offsets 12-17,
`PORT_OFFSETS`), the listener is on an address of the slot's own 127/8 block (local in any network
namespace). Contour and Envoy start through `spawn` (default `procs.spawn`: where the sandbox's other
processes run). Call `up` from where the sandbox's clients run: its readiness probe dials Envoy like
any client, and Envoy dials the backends' pod IPs. `stop` (or the sandbox's `down`) ends both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox import procs
from sandbox.config import REPO_ROOT, SandboxConfig

GATEWAY_CLASS = "contour"
CONTROLLER_NAME = "projectcontour.io/gateway-controller"
GATEWAY_NAMESPACE = "gateway-system"
GATEWAY_NAME = "sandbox"
LISTENER_NAME = "http"
LISTENER_PORT = 80
# Contour serves a Gateway listener on port N with an Envoy listener on N + 8000 (skipping 1-1023).
ENVOY_PORT = LISTENER_PORT + 8000
GATEWAY_API_GROUP = "gateway.networking.k8s.io"

# 127.0.0.1 ports, as offsets from cfg.base_port. The slot's block is 20 wide: 0-9 are the cluster's
# (config.SandboxConfig.ports), 10-11 the demo operator's (health, metrics); 18-19 are free.
PORT_OFFSETS = {
    "contour-xds": 12,  # Envoy's xDS (gRPC, plaintext)
    "contour-metrics": 13,  # Contour's /metrics
    "contour-health": 14,  # Contour's /healthz
    "contour-debug": 15,  # Contour's /debug/pprof and /debug/dag
    "envoy-stats": 16,  # Envoy's /ready and /stats/prometheus (a listener Contour programs into Envoy)
    "envoy-admin": 17,  # Envoy's admin API, read-only subset (a listener Contour programs into Envoy)
}
COMPONENTS = ("contour", "envoy")  # start order; stopped in reverse
START_TIMEOUT_S = 60.0
BUILD_SCRIPT = REPO_ROOT / "sandbox" / "build-gateway.sh"


def log(msg: str) -> None:
    print(f"gateway: {msg}", file=sys.stderr, flush=True)


class GatewayError(RuntimeError):
    """The gateway did not come up; the message says what was seen and where the logs are."""


@dataclass(frozen=True)
class GatewayBinaries:
    dir: Path

    @property
    def contour(self) -> str:
        return str(self.dir / "contour")

    @property
    def envoy(self) -> str:
        return str(self.dir / "envoy")

    @property
    def crds(self) -> list[Path]:
        return sorted((self.dir / "crds").glob("*.yaml"))


def ensure_gateway_binaries() -> GatewayBinaries:
    """Build (first time: about 3 min on 2 cores) or find contour, envoy and the CRDs in the cache."""
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise GatewayError(f"{BUILD_SCRIPT.name} failed (its last line above says why)")
    return GatewayBinaries(Path(proc.stdout.strip().splitlines()[-1]))


# -- where things are -----------------------------------------------------------------------------
def ports(cfg: SandboxConfig) -> dict[str, int]:
    return {name: cfg.base_port + offset for name, offset in PORT_OFFSETS.items()}


def gateway_host(cfg: SandboxConfig) -> str:
    """The address Envoy's Gateway listeners bind: one of the slot's own, so no pod port can clash."""
    return f"127.{100 + cfg.slot}.0.254"


def gateway_address(cfg: SandboxConfig) -> str:
    """What clients dial (host:port) for HTTP and gRPC (h2c) through the Gateway's listener."""
    return f"{gateway_host(cfg)}:{ENVOY_PORT}"


def gateway_url(cfg: SandboxConfig) -> str:
    return f"http://{gateway_address(cfg)}"


def state_dir(cfg: SandboxConfig) -> Path:
    return cfg.root / "gateway"


def _admin_socket(cfg: SandboxConfig) -> Path:
    path = state_dir(cfg) / "envoy-admin.sock"
    if len(str(path)) < 100:  # sun_path holds 108 bytes
        return path
    digest = hashlib.sha256(str(cfg.root).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"triton-sandbox-envoy-{digest}.sock"


def parent_ref() -> dict[str, Any]:
    """The parentRef a route of any namespace uses to attach to the sandbox's Gateway."""
    return {
        "group": GATEWAY_API_GROUP,
        "kind": "Gateway",
        "namespace": GATEWAY_NAMESPACE,
        "name": GATEWAY_NAME,
        "sectionName": LISTENER_NAME,
    }


def manifests() -> list[dict[str, Any]]:
    """GatewayClass, namespace and Gateway: one HTTP listener, for HTTPRoutes and GRPCRoutes of every
    namespace."""
    return [
        {
            "apiVersion": f"{GATEWAY_API_GROUP}/v1",
            "kind": "GatewayClass",
            "metadata": {"name": GATEWAY_CLASS},
            "spec": {"controllerName": CONTROLLER_NAME},
        },
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": GATEWAY_NAMESPACE}},
        {
            "apiVersion": f"{GATEWAY_API_GROUP}/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE},
            "spec": {
                "gatewayClassName": GATEWAY_CLASS,
                "listeners": [
                    {
                        "name": LISTENER_NAME,
                        "protocol": "HTTP",
                        "port": LISTENER_PORT,
                        "allowedRoutes": {
                            "namespaces": {"from": "All"},
                            "kinds": [
                                {"group": GATEWAY_API_GROUP, "kind": "HTTPRoute"},
                                {"group": GATEWAY_API_GROUP, "kind": "GRPCRoute"},
                            ],
                        },
                    }
                ],
            },
        },
    ]


def contour_config(cfg: SandboxConfig, kubeconfig: Path) -> dict[str, Any]:
    return {
        "kubeconfig": str(kubeconfig),
        "gateway": {"gatewayRef": {"namespace": GATEWAY_NAMESPACE, "name": GATEWAY_NAME}},
        # Contour cannot read an Envoy Service's load balancer here: the Gateway's address is given.
        "ingress-status-address": gateway_host(cfg),
        # Envoy's access log costs CPU and grows ~22 MB per 100k requests: off.
        "accesslog-level": "disabled",
        "network": {"admin-port": ports(cfg)["envoy-admin"]},
    }


def contour_argv(cfg: SandboxConfig, bins: GatewayBinaries, config_path: Path) -> list[str]:
    p = ports(cfg)
    return [
        bins.contour,
        "serve",
        f"--config-path={config_path}",
        "--insecure",
        "--disable-leader-election",
        "--xds-address=127.0.0.1",
        f"--xds-port={p['contour-xds']}",
        # The Gateway API v1.6 CRDs no longer serve the versions Contour v1.33 asks for: without these
        # three it exits.
        "--disable-feature=tlsroutes",
        "--disable-feature=tcproutes",
        "--disable-feature=backendtlspolicies",
        # Defaults are 0.0.0.0:8000 (collides with pods' :8000), 0.0.0.0:8002 and 127.0.0.1:6060.
        "--http-address=127.0.0.1",
        f"--http-port={p['contour-metrics']}",
        "--health-address=127.0.0.1",
        f"--health-port={p['contour-health']}",
        "--debug-http-address=127.0.0.1",
        f"--debug-http-port={p['contour-debug']}",
        "--stats-address=127.0.0.1",
        f"--stats-port={p['envoy-stats']}",
        f"--envoy-service-http-address={gateway_host(cfg)}",
        f"--envoy-service-https-address={gateway_host(cfg)}",
        "--envoy-http-access-log=/dev/null",
        "--envoy-https-access-log=/dev/null",
    ]


def envoy_argv(cfg: SandboxConfig, bins: GatewayBinaries, bootstrap: Path) -> list[str]:
    return [
        bins.envoy,
        "-c",
        str(bootstrap),
        # Hot restart shares memory across processes by base id: off, and a distinct id per slot anyway.
        # (Envoy's flags take their value as the next argument: `--base-id=N` is refused.)
        "--disable-hot-restart",
        "--base-id",
        str(1000 + cfg.slot),
        # Contour's own manifests set these from the pod; without them Envoy refuses its xDS cluster.
        "--service-cluster",
        GATEWAY_NAMESPACE,
        "--service-node",
        f"envoy-{cfg.name}",
        "--concurrency",
        "2",
        "--log-level",
        "warn",
    ]


# -- lifecycle ------------------------------------------------------------------------------------
def up(
    cfg: SandboxConfig,
    kubeconfig: Path,
    spawn: procs.Spawn = procs.spawn,
    *,
    kubectl: str | None = None,
    bins: GatewayBinaries | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> str:
    """Install the CRDs and the Gateway, start Contour and Envoy; returns `gateway_address(cfg)` once the
    Gateway is Programmed and Envoy is ready. Idempotent: a running gateway is reused."""
    kubectl = kubectl or default_kubectl()
    if is_running(cfg) and _gateway_programmed(kubectl, kubeconfig):
        return gateway_address(cfg)
    stop(cfg)
    started = time.monotonic()
    bins = bins or ensure_gateway_binaries()
    state = state_dir(cfg)
    state.mkdir(parents=True, exist_ok=True)
    crds = bins.crds
    if not crds:
        raise GatewayError(
            f"no CRDs in {bins.dir / 'crds'}; delete {bins.dir} and re-run {BUILD_SCRIPT.name}"
        )
    applied = _kubectl(
        kubectl,
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-o",
        "name",
        *procs.file_args(crds),
    )
    # The standard install also holds a ValidatingAdmissionPolicy (safe upgrades): wait on the CRDs only.
    crd_names = [line for line in applied.split() if line.startswith("customresourcedefinition")]
    _kubectl(kubectl, kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", *crd_names)
    _kubectl(
        kubectl,
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        stdin=_as_list(manifests()),
    )
    applied_at = time.monotonic()

    config_path = state / "contour.yaml"
    config_path.write_text(json.dumps(contour_config(cfg, kubeconfig), indent=2))  # JSON is YAML
    try:
        spawn(cfg, "contour", contour_argv(cfg, bins, config_path))
        bootstrap = state / "envoy.json"
        admin = _admin_socket(cfg)
        with contextlib.suppress(FileNotFoundError):
            admin.unlink()
        subprocess.run(
            [
                bins.contour,
                "bootstrap",
                str(bootstrap),
                "--xds-address=127.0.0.1",
                f"--xds-port={ports(cfg)['contour-xds']}",
                f"--admin-address={admin}",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        spawn(cfg, "envoy", envoy_argv(cfg, bins, bootstrap))
        deadline = time.monotonic() + timeout_s
        _wait("Gateway Programmed=True", lambda: _gateway_programmed(kubectl, kubeconfig), cfg, deadline)
        _wait("Envoy ready", lambda: envoy_ready(cfg), cfg, deadline)
    except BaseException:
        stop(cfg)
        raise
    done = time.monotonic()
    log(
        f"Gateway {GATEWAY_NAMESPACE}/{GATEWAY_NAME} programmed, {gateway_address(cfg)} ready in "
        f"{done - started:.1f}s (CRDs and Gateway {applied_at - started:.1f}s, Contour and Envoy "
        f"{done - applied_at:.1f}s)"
    )
    return gateway_address(cfg)


def stop(cfg: SandboxConfig) -> None:
    """Stop Envoy and Contour (nothing else of the sandbox) and remove their files."""
    for name in reversed(COMPONENTS):
        pid = procs.pid_of(cfg, name)
        if pid:
            procs.stop([pid], grace_s=5)
        with contextlib.suppress(FileNotFoundError):
            (cfg.run_dir / f"{name}.pid").unlink()
    with contextlib.suppress(FileNotFoundError):
        _admin_socket(cfg).unlink()
    shutil.rmtree(state_dir(cfg), ignore_errors=True)


def is_running(cfg: SandboxConfig) -> bool:
    return all(procs.pid_of(cfg, c) for c in COMPONENTS)


def envoy_ready(cfg: SandboxConfig) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports(cfg)['envoy-stats']}/ready", timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# -- status of the Gateway and of routes ----------------------------------------------------------
def get_object(kubectl: str, kubeconfig: Path, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    proc = subprocess.run(
        [kubectl, f"--kubeconfig={kubeconfig}", "get", kind, "-n", namespace, name, "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if proc.returncode != 0:
        if "NotFound" in proc.stderr:
            return None
        raise GatewayError(f"kubectl get {kind} {namespace}/{name}: {proc.stderr.strip()}")
    obj: dict[str, Any] = json.loads(proc.stdout)
    return obj


def conditions(items: Sequence[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Conditions by type."""
    return {c["type"]: c for c in items or ()}


def _gateway_programmed(kubectl: str, kubeconfig: Path) -> bool:
    gw = get_object(
        kubectl, kubeconfig, "gateways.gateway.networking.k8s.io", GATEWAY_NAMESPACE, GATEWAY_NAME
    )
    if gw is None:
        return False
    status = gw.get("status") or {}
    programmed = conditions(status.get("conditions")).get("Programmed", {})
    return bool(
        programmed.get("status") == "True"
        and programmed.get("observedGeneration") == gw["metadata"]["generation"]
    )


def route_conditions(
    kubectl: str,
    kubeconfig: Path,
    kind: str,
    namespace: str,
    name: str,
    parent: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]] | None:
    """A route's conditions for one parentRef (default: the sandbox's Gateway), only when written for its
    current generation; None while nobody has reported on this spec (or the route does not exist)."""
    parent = parent or parent_ref()
    route = get_object(kubectl, kubeconfig, f"{kind.lower()}s.{GATEWAY_API_GROUP}", namespace, name)
    if route is None:
        return None
    generation = route["metadata"]["generation"]
    for entry in (route.get("status") or {}).get("parents") or ():
        ref = entry.get("parentRef") or {}
        if ref.get("name") != parent["name"] or ref.get("namespace", namespace) != parent.get(
            "namespace", namespace
        ):
            continue
        conds = conditions(entry.get("conditions"))
        if conds and all(c.get("observedGeneration") == generation for c in conds.values()):
            return conds
    return None


def route_ready(kubectl: str, kubeconfig: Path, kind: str, namespace: str, name: str) -> bool:
    """The route is Accepted and its backendRefs resolved by the sandbox's Gateway, for its current spec."""
    conds = route_conditions(kubectl, kubeconfig, kind, namespace, name) or {}
    return all(conds.get(t, {}).get("status") == "True" for t in ("Accepted", "ResolvedRefs"))


def wait_route_conditions(
    kubectl: str,
    kubeconfig: Path,
    kind: str,
    namespace: str,
    name: str,
    parent: dict[str, Any] | None = None,
    timeout_s: float = 30.0,
) -> dict[str, dict[str, Any]]:
    """Wait (bounded) for the route's conditions about its current spec; raises GatewayError if none come."""
    deadline = time.monotonic() + timeout_s
    while True:
        conds = route_conditions(kubectl, kubeconfig, kind, namespace, name, parent)
        if conds is not None:
            return conds
        if time.monotonic() > deadline:
            raise GatewayError(f"no status on {kind} {namespace}/{name} after {timeout_s:.0f}s")
        time.sleep(0.2)


# -- helpers --------------------------------------------------------------------------------------
def default_kubectl() -> str:
    found = shutil.which("kubectl")
    if found:
        return found
    from sandbox.config import ensure_binaries

    return ensure_binaries().path("kubectl")


def _as_list(objects: Sequence[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})


def _kubectl(kubectl: str, kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    return procs.kubectl(kubectl, kubeconfig, *args, stdin=stdin, error=GatewayError, shown=2)


def _wait(what: str, check: Any, cfg: SandboxConfig, deadline: float) -> None:
    procs.wait_for(
        what,
        check,
        cfg,
        deadline,
        components=COMPONENTS,
        log_of=lambda name: cfg.log_dir / f"{name}.log",
        timed_out_hint=f"logs in {cfg.log_dir} (contour.log, envoy.log)",
        error=GatewayError,
        interval_s=0.2,
    )
