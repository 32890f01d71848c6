"""Client load generators: threads that call the scorer model until stopped and count every request,
through a server's Service (`Load`) or through a Gateway by host name (`GatewayLoad`)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from kubernetes import client

from tests.e2e import kube
from tests.e2e.conftest import Sandbox
from tests.support.objects import server_pods
from tests.support.scorer import MODEL


class Failure(NamedTuple):
    """A failed request: when it failed, why, and when it was sent (a request in flight when a fault
    struck may fail only at its timeout)."""

    at: float
    message: str
    sent: float


@dataclass
class Load:
    """Client threads calling the public name, HTTP and gRPC, until stopped (bounded): a pair of threads
    per address in `ips` (pass the Service's ClusterIP once per replica: `service_clients`)."""

    ips: list[str]
    max_s: float = 600
    ok: Counter[str] = field(default_factory=Counter)
    failed: list[Failure] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for ip in self.ips:
            for proto in ("http", "grpc"):
                t = threading.Thread(target=self._run, args=(ip, proto), daemon=True)
                t.start()
                self.threads.append(t)
        return self

    def _run(self, ip: str, proto: str) -> None:
        data = np.ones((1, 1), dtype=np.float32)
        deadline = time.monotonic() + self.max_s
        if proto == "http":
            http = triton_http.InferenceServerClient(f"{ip}:8000", network_timeout=30)
            inp = triton_http.InferInput("INPUT0", [1, 1], "FP32")
            inp.set_data_from_numpy(data)
            call = lambda: http.infer(MODEL, [inp]).as_numpy("OUTPUT0")  # noqa: E731
        else:
            grpc = triton_grpc.InferenceServerClient(f"{ip}:8001")
            ginp = triton_grpc.InferInput("INPUT0", [1, 1], "FP32")
            ginp.set_data_from_numpy(data)
            call = lambda: grpc.infer(MODEL, [ginp], client_timeout=30).as_numpy("OUTPUT0")  # noqa: E731
        while not self.stop.is_set() and time.monotonic() < deadline:
            sent = time.monotonic()
            try:
                out = call()
                if out is None or float(out[0][0]) != 2.0:
                    raise AssertionError(f"unexpected output {out!r}")
                self.ok[proto] += 1
            except Exception as exc:
                self.failed.append(Failure(time.monotonic(), f"{proto} {ip}: {exc}", sent))

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def service_clients(sb: Sandbox, ns: str) -> list[str]:
    """The server's Service ClusterIP once per ready replica (as many clients as there are pods)."""
    ip = kube.cluster_ip(client.CoreV1Api(sb.api), ns, "triton")
    return [ip] * len(server_pods(sb, ns))


def http_infer(address: str, host: str) -> None:
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]})
    req = urllib.request.Request(
        f"http://{address}/v2/models/{MODEL}/infer",
        data=body.encode(),
        headers={"Host": host, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        out = json.load(resp)["outputs"][0]["data"][0]
    if float(out) != 2.0:
        raise AssertionError(f"unexpected output {out!r}")


def grpc_caller(address: str, host: str) -> Callable[[], None]:
    c = triton_grpc.InferenceServerClient(address, channel_args=[("grpc.default_authority", host)])
    inp = triton_grpc.InferInput("INPUT0", [1, 1], "FP32")
    inp.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))

    def call() -> None:
        out = c.infer(MODEL, [inp], client_timeout=30).as_numpy("OUTPUT0")
        if out is None or float(out[0][0]) != 2.0:
            raise AssertionError(f"unexpected output {out!r}")

    return call


@dataclass
class GatewayLoad:
    """Client threads through the Gateway (HTTP and gRPC) until stopped or `max_s` (bounded)."""

    address: str
    host: str
    threads_per_protocol: int = 2
    max_s: float = 600
    ok: Counter[str] = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> GatewayLoad:
        for proto in ("http", "grpc"):
            for _ in range(self.threads_per_protocol):
                t = threading.Thread(target=self._run, args=(proto,), daemon=True)
                t.start()
                self.threads.append(t)
        return self

    def _run(self, proto: str) -> None:
        if proto == "http":
            call = lambda: http_infer(self.address, self.host)  # noqa: E731
        else:
            call = grpc_caller(self.address, self.host)
        deadline = time.monotonic() + self.max_s
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                call()
                self.ok[proto] += 1
            except Exception as exc:  # every failure is counted, whatever it is
                self.failed.append(f"{proto}: {exc}")

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
