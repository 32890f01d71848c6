"""The sandbox's Gateway API implementation (Contour + Envoy, sandbox/gateway.py) routing real traffic.

Everything runs inside a network namespace this test creates (loopback up, 10.244.0.0/16 routed `local`
on lo, so those addresses can be bound and are accepted in EndpointSlices; nothing reaches the host's
network): etcd and kube-apiserver, Contour and Envoy, two HTTP and two gRPC backends on 10.244.9.1 and
10.244.9.2, and the clients. The backends' Services have no selector; the test writes their
EndpointSlices itself (no controller-manager needed). The scenario runs in a fresh interpreter that
was started inside the namespace (a namespace is per thread, and gRPC's threads must be inside too);
its figures come back to this process, which checks them.

Seen (2 busy cores, 6 runs): HTTPRoute 90/10 over 2,000 requests gave b 195-235, the GRPCRoute on the
same HTTP listener 179-204 (Envoy speaks h2c to gRPC backends by itself), 0 failures; a weight patch
90/10 -> 0/100 showed in traffic 0.12-0.40 s after `kubectl patch` started, 0 failures; Contour writes
no status at all on a route whose parentRef names another (missing) Gateway, Accepted=False
NoMatchingParent for a missing listener, ResolvedRefs=False BackendNotFound for a missing Service (and
Envoy drops that share: all 200). Whole test 22-34 s once the binaries are built.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest

from sandbox import gateway, procs
from sandbox.config import SandboxConfig, ensure_binaries
from sandbox.pki import ensure_pki, write_kubeconfig

pytestmark = pytest.mark.integration

APP_NS = "gwtest"
BACKEND_IPS = {"a": "10.244.9.1", "b": "10.244.9.2"}
HTTP_PORT, GRPC_PORT = 9000, 9001
GRPC_SERVICE, GRPC_METHOD = "sandbox.Echo", "Who"
SPLIT = (90, 10)
SHARE_TOLERANCE_PP = 2.0
# Envoy picks a weighted cluster at random for each request: the minor share of n requests is binomial,
# sigma = sqrt(p(1-p)/n). With 2,000 requests 2 pp was only 3 sigma, and a right split failed about one
# run in 200 (a clean-clone rehearsal drew 12.20 %). Enough requests that 2 pp is 5 sigma: a right split
# fails about once in 1.7 million runs (5,625 requests for 90/10).
REQUESTS = math.ceil(25 * (SPLIT[1] / 100) * (1 - SPLIT[1] / 100) / (SHARE_TOLERANCE_PP / 100) ** 2)
SCENARIO_TIMEOUT_S = 170
FLIP_TIMEOUT_S = 10.0
SLOT = 40  # any: the ports are those of the test's own namespace


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture
def sandbox_ns() -> Iterator[tuple[SandboxConfig, str]]:
    """A throwaway sandbox config and the network namespace it runs in; all of it removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nsenter") is None:
        pytest.skip("needs root, ip (iproute2) and nsenter (util-linux) for a network namespace")
    cfg = SandboxConfig(name=f"gwtest-{secrets.token_hex(3)}", slot=SLOT)
    # procs.spawn may start processes in the sandbox's own namespace by name: then it is that one.
    ns = str(getattr(cfg, "netns", cfg.name))
    _ip("netns", "add", ns)
    try:
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "route", "add", "local", "10.244.0.0/16", "dev", "lo", "table", "local")
        yield cfg, ns
    finally:
        procs.stop(procs.marked_pids(cfg), grace_s=5)
        deadline = time.monotonic() + 5  # a SIGKILLed process takes a moment to go
        while (leftovers := procs.marked_pids(cfg)) and time.monotonic() < deadline:
            time.sleep(0.1)
        _ip("netns", "delete", ns)
        shutil.rmtree(cfg.root, ignore_errors=True)
        assert not leftovers, f"processes of {cfg.name} survived: {leftovers}"


@pytest.mark.alone  # timing bounds (the weight flip within its request budget): nothing beside it
def test_gateway_routes_http_and_grpc_splits(sandbox_ns: tuple[SandboxConfig, str]) -> None:
    cfg, ns = sandbox_ns
    # Builds (cached) happen out here: nothing inside the namespace reaches a registry.
    k8s_dir = ensure_binaries().dir
    gw_dir = gateway.ensure_gateway_binaries().dir
    out = cfg.root / "figures.json"
    cfg.root.mkdir(parents=True, exist_ok=True)
    # A fresh interpreter inside the namespace (nsenter execs it): every thread it starts is inside too.
    proc = subprocess.run(
        [
            "nsenter",
            f"--net=/run/netns/{ns}",
            "--",
            sys.executable,
            "-c",
            f"import sys; from {__name__} import scenario_main; scenario_main(sys.argv[1:])",
            cfg.name,
            str(k8s_dir),
            str(gw_dir),
            str(out),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, f"scenario failed:\n{proc.stderr[-6000:]}\n{_log_tails(cfg)}"
    figures = json.loads(out.read_text())
    print(proc.stderr, json.dumps(figures, indent=2))

    for kind, minor in (("http", "b"), ("grpc", "grpc-b")):
        split = figures[f"{kind}_split"]
        assert split["failed"] == 0, split
        assert sum(split["counts"].values()) == REQUESTS, split
        assert set(split["counts"]) <= {minor, minor.replace("b", "a")}, split
        share_b = 100 * split["counts"].get(minor, 0) / REQUESTS
        assert abs(share_b - SPLIT[1]) <= SHARE_TOLERANCE_PP, (
            f"{kind}: b got {share_b:.2f} %, want {SPLIT[1]}"
        )

    flip = figures["weight_flip"]
    assert flip["failed"] == 0, flip
    assert flip["delay_s"] is not None and flip["delay_s"] < FLIP_TIMEOUT_S, flip
    assert flip["b_after"] >= 200, flip  # the new weights held: only b after the last a

    # Contour and Envoy listen on loopback only: the slot's 127.0.0.1 ports and the gateway's address.
    want = {f"127.0.0.1:{p}" for p in gateway.ports(cfg).values()} | {figures["gateway_address"]}
    assert set(figures["gateway_listeners"]) <= want, figures["gateway_listeners"]
    assert figures["gateway_address"] in figures["gateway_listeners"]

    # A parentRef to a Gateway nobody implements: Contour ignores it and writes no status at all.
    assert figures["missing_gateway"]["status_parents"] == [], figures["missing_gateway"]
    # A parentRef to the sandbox Gateway naming a listener it does not have.
    refused = figures["missing_listener"]["Accepted"]
    assert (refused["status"], refused["reason"]) == ("False", "NoMatchingParent"), refused
    unresolved = figures["missing_service"]["ResolvedRefs"]
    assert (unresolved["status"], unresolved["reason"]) == ("False", "BackendNotFound"), unresolved
    assert figures["missing_service"]["Accepted"]["status"] == "True", figures["missing_service"]


# -- in the namespace (a fresh interpreter) ---------------------------------------------------------
def scenario_main(argv: list[str]) -> None:
    name, k8s_dir, gw_dir, out = argv
    figures = _scenario(SandboxConfig(name=name, slot=SLOT), k8s_dir, gw_dir)
    Path(out).write_text(json.dumps(figures))


def _scenario(cfg: SandboxConfig, k8s_dir: str, gw_dir: str) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    kubectl = str(Path(k8s_dir) / "kubectl")
    kc = cfg.kubeconfig
    started = time.monotonic()
    _start_apiserver(cfg, Path(k8s_dir), kubectl)
    figures["apiserver_up_s"] = round(time.monotonic() - started, 2)

    before_gateway = _listeners()
    t = time.monotonic()
    address = gateway.up(cfg, kc, procs.spawn, kubectl=kubectl, bins=gateway.GatewayBinaries(Path(gw_dir)))
    figures["gateway_up_s"] = round(time.monotonic() - t, 2)
    figures["gateway_address"] = address
    host, port = address.rsplit(":", 1)

    stop_backends = _start_backends()
    try:
        t = time.monotonic()
        _kubectl(kubectl, kc, "apply", "--server-side", "-f", "-", stdin=json.dumps(_app_objects()))
        for kind, name in (("HTTPRoute", "split"), ("GRPCRoute", "grpc-split")):
            _until(
                lambda k=kind, n=name: gateway.route_ready(kubectl, kc, k, APP_NS, n), f"{kind} {name} ready"
            )
        figures["routes_ready_s"] = round(time.monotonic() - t, 2)
        _until(lambda: _http_get(host, int(port))[0] == 200, "a routed HTTP 200")
        figures["first_routed_200_s"] = round(time.monotonic() - t, 2)
        figures["stack_to_first_200_s"] = round(time.monotonic() - started, 2)
        _until(lambda: _grpc_who(address) is not None, "a routed gRPC answer")

        figures["http_split"] = _http_split(host, int(port))
        figures["grpc_split"] = _grpc_split(address)
        gw = gateway.get_object(
            kubectl, kc, "gateways.gateway.networking.k8s.io", gateway.GATEWAY_NAMESPACE, gateway.GATEWAY_NAME
        )
        gw_status = (gw or {}).get("status") or {}
        figures["gateway_status"] = {
            "conditions": _brief(gateway.conditions(gw_status.get("conditions"))),
            "addresses": gw_status.get("addresses"),
            "listeners": [
                {
                    "name": li["name"],
                    "attachedRoutes": li.get("attachedRoutes"),
                    "supportedKinds": li.get("supportedKinds"),
                }
                for li in gw_status.get("listeners") or ()
            ],
        }
        figures["weight_flip"] = _weight_flip(kubectl, kc, host, int(port))
        figures.update(_refused_routes(kubectl, kc, host, int(port)))
        figures["rss_mb"] = {name: _rss_mb(procs.pid_of(cfg, name)) for name in gateway.COMPONENTS}
        figures["gateway_listeners"] = sorted(_listeners() - before_gateway - set(_backend_addresses()))
    finally:
        stop_backends()
        gateway.stop(cfg)
    return figures


def _start_apiserver(cfg: SandboxConfig, k8s: Path, kubectl: str) -> None:
    p, pki = cfg.ports, cfg.pki_dir
    ensure_pki(pki)
    write_kubeconfig(cfg.kubeconfig, f"https://127.0.0.1:{p['kube-apiserver']}", pki)
    etcd_url = f"http://127.0.0.1:{p['etcd-client']}"
    peer_url = f"http://127.0.0.1:{p['etcd-peer']}"
    procs.spawn(
        cfg,
        "etcd",
        [
            str(k8s / "etcd"),
            "--name=gwtest",
            f"--data-dir={cfg.root / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=gwtest={peer_url}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
    )
    procs.spawn(
        cfg,
        "kube-apiserver",
        [
            str(k8s / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={p['kube-apiserver']}",
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
            "--profiling=false",
            f"--cert-dir={cfg.root / 'pki-run'}",
        ],
    )

    def ready() -> bool:
        proc = subprocess.run(
            [kubectl, f"--kubeconfig={cfg.kubeconfig}", "get", "--raw=/readyz"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return proc.returncode == 0 and proc.stdout.strip() == "ok"

    _until(ready, "kube-apiserver ready", timeout_s=90)


def _app_objects() -> dict[str, Any]:
    items: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APP_NS}}]
    for backend, ip in BACKEND_IPS.items():
        for proto, port in (("http", HTTP_PORT), ("grpc", GRPC_PORT)):
            svc = f"{'web' if proto == 'http' else 'grpc'}-{backend}"
            items.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": svc, "namespace": APP_NS},
                    # No selector: the EndpointSlice below is the Service's, written by hand.
                    "spec": {"ports": [{"name": proto, "port": port, "targetPort": port, "protocol": "TCP"}]},
                }
            )
            items.append(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": f"{svc}-manual",
                        "namespace": APP_NS,
                        "labels": {
                            "kubernetes.io/service-name": svc,
                            "endpointslice.kubernetes.io/managed-by": "gwtest.tritonoperator.dev",
                        },
                    },
                    "addressType": "IPv4",
                    "ports": [{"name": proto, "port": port, "protocol": "TCP"}],
                    "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
                }
            )
    parent = [gateway.parent_ref()]
    items += [
        _httproute("split", parent, [("web-a", SPLIT[0]), ("web-b", SPLIT[1])]),
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GRPCRoute",
            "metadata": {"name": "grpc-split", "namespace": APP_NS},
            "spec": {
                "parentRefs": parent,
                "rules": [
                    {
                        # Contour needs both service and method in a match, or no match at all.
                        "matches": [{"method": {"service": GRPC_SERVICE, "method": GRPC_METHOD}}],
                        "backendRefs": [
                            {"name": "grpc-a", "port": GRPC_PORT, "weight": SPLIT[0]},
                            {"name": "grpc-b", "port": GRPC_PORT, "weight": SPLIT[1]},
                        ],
                    }
                ],
            },
        },
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _httproute(
    name: str,
    parents: list[dict[str, Any]],
    backends: list[tuple[str, int]],
    hostname: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "parentRefs": parents,
        "rules": [{"backendRefs": [{"name": n, "port": HTTP_PORT, "weight": w} for n, w in backends]}],
    }
    if hostname:
        spec["hostnames"] = [hostname]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": APP_NS},
        "spec": spec,
    }


# -- backends ---------------------------------------------------------------------------------------
class _Named(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Envoy reuses its upstream connections
    # Headers and body go out in two writes: with Nagle on, the body waits for Envoy's delayed ACK
    # (40 ms a request).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        body = str(getattr(self.server, "backend_name", "?")).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _start_backends() -> Any:
    http_servers, grpc_servers = [], []
    for name, ip in BACKEND_IPS.items():
        httpd = ThreadingHTTPServer((ip, HTTP_PORT), _Named)
        httpd.daemon_threads = True
        httpd.backend_name = name  # type: ignore[attr-defined]
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        http_servers.append(httpd)

        server = grpc.server(ThreadPoolExecutor(max_workers=4))
        answer = f"grpc-{name}".encode()  # not the HTTP backends' answer: proves which route served it
        handler = grpc.method_handlers_generic_handler(
            GRPC_SERVICE,
            {GRPC_METHOD: grpc.unary_unary_rpc_method_handler(lambda _req, _ctx, a=answer: a)},
        )
        server.add_generic_rpc_handlers((handler,))
        if server.add_insecure_port(f"{ip}:{GRPC_PORT}") == 0:
            raise RuntimeError(f"gRPC backend could not bind {ip}:{GRPC_PORT}")
        server.start()
        grpc_servers.append(server)

    def stop() -> None:
        for httpd in http_servers:
            httpd.shutdown()
            httpd.server_close()
        for server in grpc_servers:
            server.stop(grace=None)

    return stop


# -- clients ----------------------------------------------------------------------------------------
def _http_get(
    host: str, port: int, conn: HTTPConnection | None = None, hostname: str | None = None
) -> tuple[int, str]:
    own = conn is None
    conn = conn or HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": hostname} if hostname else {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        if own:
            conn.close()


def _http_split(host: str, port: int) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    failed = 0
    conn = HTTPConnection(host, port, timeout=5)
    t = time.monotonic()
    for _ in range(REQUESTS):
        try:
            status, body = _http_get(host, port, conn)
        except OSError:
            conn.close()
            conn = HTTPConnection(host, port, timeout=5)
            failed += 1
            continue
        if status == 200:
            counts[body] += 1
        else:
            failed += 1
    conn.close()
    return {"counts": dict(counts), "failed": failed, "seconds": round(time.monotonic() - t, 2)}


def _grpc_who(address: str) -> str | None:
    with grpc.insecure_channel(address) as channel:
        try:
            return bytes(channel.unary_unary(f"/{GRPC_SERVICE}/{GRPC_METHOD}")(b"", timeout=5)).decode()
        except grpc.RpcError:
            return None


def _grpc_split(address: str) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    failed = 0
    t = time.monotonic()
    with grpc.insecure_channel(address) as channel:
        who = channel.unary_unary(f"/{GRPC_SERVICE}/{GRPC_METHOD}")
        for _ in range(REQUESTS):
            try:
                counts[bytes(who(b"", timeout=5)).decode()] += 1
            except grpc.RpcError:
                failed += 1
    return {"counts": dict(counts), "failed": failed, "seconds": round(time.monotonic() - t, 2)}


def _weight_flip(kubectl: str, kc: Path, host: str, port: int) -> dict[str, Any]:
    """Patch the HTTPRoute from 90/10 to 0/100 under steady traffic: when did the last `a` answer come?"""
    samples: list[tuple[float, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        conn = HTTPConnection(host, port, timeout=5)
        deadline = time.monotonic() + FLIP_TIMEOUT_S + 5
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                status, body = _http_get(host, port, conn)
                samples.append((time.monotonic(), body if status == 200 else f"HTTP {status}"))
            except OSError as exc:
                samples.append((time.monotonic(), f"error {exc}"))
                conn.close()
                conn = HTTPConnection(host, port, timeout=5)
        conn.close()

    runner = threading.Thread(target=traffic, daemon=True)
    runner.start()
    time.sleep(0.5)
    patch = [
        {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 0},
        {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 100},
    ]
    patched_at = time.monotonic()
    _kubectl(kubectl, kc, "patch", "-n", APP_NS, "httproute", "split", "--type=json", "-p", json.dumps(patch))
    patch_returned = time.monotonic()
    # Traffic until 1 s has passed with only b answering (bounded).
    deadline = patched_at + FLIP_TIMEOUT_S
    while time.monotonic() < deadline:
        after = [(ts, who) for ts, who in samples if ts > patch_returned]
        last_a = max((ts for ts, who in after if who == "a"), default=patch_returned)
        if after and after[-1][0] - last_a > 1.0:
            break
        time.sleep(0.1)
    stop.set()
    runner.join(10)
    last_a_at = max((ts for ts, who in samples if who == "a"), default=None)
    return {
        "patch_call_s": round(patch_returned - patched_at, 3),
        # From the start of `kubectl patch` (a process start, ~0.1 s, included) to the last answer of a.
        "delay_s": None if last_a_at is None else round(max(0.0, last_a_at - patched_at), 3),
        "requests": len(samples),
        "failed": sum(1 for _, who in samples if who not in ("a", "b")),
        "b_after": sum(1 for ts, who in samples if last_a_at is not None and ts > last_a_at and who == "b"),
    }


def _refused_routes(kubectl: str, kc: Path, host: str, port: int) -> dict[str, Any]:
    ours = gateway.parent_ref()
    missing_gw = {**ours, "name": "no-such-gateway"}
    objects = [
        _httproute("to-missing-gateway", [missing_gw], [("web-a", 1)], hostname="missing-gateway.test"),
        _httproute(
            "to-missing-listener",
            [{**ours, "sectionName": "no-such-listener"}],
            [("web-a", 1)],
            "missing-listener.test",
        ),
        _httproute(
            "to-missing-service", [ours], [("web-a", 50), ("no-such-service", 50)], "missing-service.test"
        ),
    ]
    _kubectl(
        kubectl,
        kc,
        "apply",
        "--server-side",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )
    out: dict[str, Any] = {}
    listener = gateway.wait_route_conditions(
        kubectl, kc, "HTTPRoute", APP_NS, "to-missing-listener", parent=ours, timeout_s=30
    )
    out["missing_listener"] = _brief(listener)
    service = gateway.wait_route_conditions(
        kubectl, kc, "HTTPRoute", APP_NS, "to-missing-service", timeout_s=30
    )
    out["missing_service"] = _brief(service)
    # Contour has written the routes applied with it by now; give it one more second for the orphan.
    time.sleep(1.0)
    orphan = gateway.get_object(
        kubectl, kc, "httproutes.gateway.networking.k8s.io", APP_NS, "to-missing-gateway"
    )
    out["missing_gateway"] = {"status_parents": ((orphan or {}).get("status") or {}).get("parents") or []}
    # What a client of the half-resolved route sees: the missing Service's share.
    codes: Counter[int] = Counter()
    conn = HTTPConnection(host, port, timeout=5)
    for _ in range(200):
        codes[_http_get(host, port, conn, hostname="missing-service.test")[0]] += 1
    conn.close()
    out["missing_service"]["http_codes_of_200"] = dict(codes)
    return out


def _brief(conds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {t: {k: c.get(k) for k in ("status", "reason", "message")} for t, c in conds.items()}


# -- helpers ----------------------------------------------------------------------------------------
def _kubectl(kubectl: str, kc: Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [kubectl, f"--kubeconfig={kc}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args[:3])} failed: {proc.stderr.strip()}")
    return proc.stdout


def _until(check: Any, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(Exception):
            if check():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f}s")
        time.sleep(0.1)


def _listeners() -> set[str]:
    """Listening TCP sockets of this (the test's) network namespace, as ip:port."""
    out = set()
    for line in Path("/proc/thread-self/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A":  # LISTEN
            hex_ip, hex_port = fields[1].split(":")
            ip = ".".join(str(int(hex_ip[i : i + 2], 16)) for i in (6, 4, 2, 0))
            out.add(f"{ip}:{int(hex_port, 16)}")
    return out


def _backend_addresses() -> list[str]:
    return [f"{ip}:{port}" for ip in BACKEND_IPS.values() for port in (HTTP_PORT, GRPC_PORT)]


def _log_tails(cfg: SandboxConfig, lines: int = 15) -> str:
    """The end of each process log (the fixture removes them afterwards)."""
    out = []
    for log in sorted(cfg.log_dir.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {log.name}\n" + "\n".join(tail))
    return "\n".join(out)


def _rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None
