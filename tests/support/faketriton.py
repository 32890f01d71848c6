"""One fake Triton per fake pod: the part of Triton's API the operator calls, served for real in-process.

The operator reaches Triton over gRPC (port 8001: health, repository index, load with a config and
files, unload, model readiness and config; triton/client.py says why not HTTP) and scrapes /metrics
over HTTP (port 8002); port 8000 answers Triton's HTTP health. Each fake binds its own loopback
address, 127.34.x.y, which becomes its pod's IP, so the operator's own client code talks to it.

What it models of Triton 2.51: a model repository shared by the server's pods (its PVC: staging adds a
version folder, removal deletes one); a load reads every version on disk and serves them all; a load
of files (the router) replaces the model with what it was sent and is not listed in the index (Triton
indexes folders); a failed reload keeps what served before; a restart loses every model. Every load
and unload is recorded. /metrics is written line for line in the format of the captured real answers in
tests/golden/triton/ (the same families, labels, order and `Nan` quantiles), from counters a test adds
with `serve`, plus the router's own family when a router served them.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
from google.protobuf import json_format
from triton_operator.render.repository import SERVER_PORT as REPOSITORY_SERVER_PORT
from triton_operator.render.repository import SYNC_PORT
from triton_operator.triton.metrics import ROUTER_FAMILY
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "triton" / "idle.prom"
TRITON_VERSION = "2.51.0"
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
FAILURE_REASONS = ("OTHER", "BACKEND", "CANCELED", "REJECTED")


def model_config(name: str, max_batch_size: int = 8) -> dict[str, Any]:
    """A python model's config as Triton serves it (protobuf field names), one FP32 tensor in and out."""
    tensor = {"data_type": "TYPE_FP32", "dims": [1]}
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": max_batch_size,
        "input": [{"name": "INPUT0", **tensor}],
        "output": [{"name": "OUTPUT0", **tensor}],
    }


@dataclass
class Repository:
    """A server's model repository (its PVC): model folder -> version folders, and the config on disk."""

    versions: dict[str, set[int]] = field(default_factory=dict)
    # (model, version) -> the digest of the files in its folder (a re-stage writes new ones).
    digests: dict[tuple[str, int], str] = field(default_factory=dict)
    # (model, version) whose files Triton refuses (the load fails with this message).
    broken: dict[tuple[str, int], str] = field(default_factory=dict)

    def stage(self, model: str, version: int, digest: str = "") -> None:
        self.versions.setdefault(model, set()).add(version)
        self.digests[(model, version)] = digest

    def remove(self, model: str, version: int) -> None:
        self.versions.get(model, set()).discard(version)

    def content(self) -> dict[str, Any]:
        """What a repository server or an up-to-date sync sidecar says this repository holds
        (operator/triton_operator/repository's wire format, without the file lists)."""
        models = {}
        for model, versions in sorted(self.versions.items()):
            digests = {str(v): self.digests.get((model, v)) or f"sha256:{model}{v}" for v in sorted(versions)}
            models[model] = {"hash": "sha256:" + json.dumps(digests, sort_keys=True), "versions": digests}
        return {"models": models}


class RepositoryServer:
    """A server's repository server (layout PerReplica): its content on `ip`:8080."""

    def __init__(self, ip: str, repository: Repository) -> None:
        self.ip = ip
        self.repository = repository
        self._http = _json_server((ip, REPOSITORY_SERVER_PORT), "/v1/content", repository.content)

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()


@dataclass
class Loaded:
    versions: tuple[str, ...]
    config: dict[str, Any]
    from_files: bool = False
    digests: tuple[str, ...] = ()  # of each version's files as they were read at the load


@dataclass
class Counts:
    success: int = 0
    failure: int = 0
    latency_us: int = 0  # per request
    queue_us: int = 0


class FakeTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    """One pod's Triton: its loaded models, counters, and a record of every load and unload."""

    def __init__(self, ip: str, repository: Repository) -> None:
        self.ip = ip
        self.repository = repository
        self.loaded: dict[str, Loaded] = {}
        self.failed: dict[str, str] = {}  # model -> why its last load failed (nothing served before)
        self.unloaded: set[str] = set()
        self.loads: list[tuple[str, bool]] = []  # (model, with files) per load asked, in order
        self.unloads: list[str] = []
        self.counts: dict[tuple[str, str], Counts] = {}
        self.routed: dict[tuple[str, str, str], Counts] = {}  # (router, model, version)
        self.lock = threading.Lock()
        self._servers: list[Any] = []
        # Layout PerReplica: the pod's sync sidecar answers on port 8090; a copy `behind` still holds
        # what it held when it fell behind (a new replica still copying, a sidecar that cannot reach).
        self.copy_behind: dict[str, Any] | None = None

    # -- what a test does to it -----------------------------------------------------------------------
    def serve(
        self,
        model: str,
        version: int | str,
        success: int,
        failure: int = 0,
        *,
        latency_us: int = 20_000,
        router: str | None = None,
    ) -> None:
        """Requests served by a version; through `router` (a python model of its own, version 1, which
        Triton counts as any model) that counts them by variant and outcome too."""
        with self.lock:
            served = [(model, str(version))] + ([(router, "1")] if router else [])
            for key in served:
                c = self.counts.setdefault(key, Counts())
                c.success, c.failure = c.success + success, c.failure + failure
                c.latency_us, c.queue_us = latency_us, 100
            if router:
                r = self.routed.setdefault((router, model, str(version)), Counts())
                r.success, r.failure = r.success + success, r.failure + failure

    def restart(self) -> None:
        """Triton restarted: no model loaded, counters from zero."""
        with self.lock:
            for memory in (self.loaded, self.failed, self.counts, self.routed):
                memory.clear()

    def files(self, model: str) -> dict[int, str]:
        """Version -> the digest of the files Triton serves it from (read at its last load)."""
        with self.lock:
            loaded = self.loaded.get(model)
            return (
                dict(zip((int(v) for v in loaded.versions), loaded.digests, strict=False)) if loaded else {}
            )

    def ready_versions(self, model: str) -> set[int]:
        with self.lock:
            loaded = self.loaded.get(model)
            return {int(v) for v in loaded.versions} if loaded else set()

    # -- Triton's gRPC API ----------------------------------------------------------------------------
    def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=True)

    def ServerMetadata(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerMetadataResponse(name="triton", version=TRITON_VERSION)

    def RepositoryIndex(self, request: Any, context: Any) -> Any:
        row = service_pb2.RepositoryIndexResponse.ModelIndex
        rows = []
        with self.lock:
            for model in sorted(self.repository.versions):
                loaded = self.loaded.get(model)
                if loaded is not None:
                    rows += [row(name=model, version=v, state="READY") for v in loaded.versions]
                elif model in self.failed:
                    on_disk = sorted(self.repository.versions[model])
                    rows += [
                        row(name=model, version=str(v), state="UNAVAILABLE", reason=self.failed[model])
                        for v in on_disk
                    ]
                elif model in self.unloaded:
                    rows += [
                        row(name=model, version=str(v), state="UNAVAILABLE", reason="unloaded")
                        for v in sorted(self.repository.versions[model])
                    ]
                else:
                    rows.append(row(name=model))
        return service_pb2.RepositoryIndexResponse(models=rows)

    def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        name, params = request.model_name, request.parameters
        files = {k: p.bytes_param for k, p in params.items() if k.startswith("file:")}
        config = json.loads(params["config"].string_param) if "config" in params else None
        with self.lock:
            self.loads.append((name, bool(files)))
            if files:
                versions = sorted({k.split(":", 1)[1].split("/", 1)[0] for k in files}, key=int)
                self.loaded[name] = Loaded(tuple(versions), config or model_config(name), from_files=True)
                self.unloaded.discard(name)
                return service_pb2.RepositoryModelLoadResponse()
            on_disk = sorted(self.repository.versions.get(name) or ())
            if not on_disk:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"failed to load '{name}', failed to poll from model repository",
                )
            broken = [
                self.repository.broken[(name, v)] for v in on_disk if (name, v) in self.repository.broken
            ]
            if broken:
                if name not in self.loaded:  # a failed reload keeps what served before
                    self.failed[name] = broken[0]
                context.abort(grpc.StatusCode.INTERNAL, f"failed to load '{name}': {broken[0]}")
            digests = tuple(self.repository.digests.get((name, v), "") for v in on_disk)
            self.loaded[name] = Loaded(
                tuple(str(v) for v in on_disk), config or model_config(name), False, digests
            )
            self.failed.pop(name, None)
            self.unloaded.discard(name)
        return service_pb2.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        with self.lock:
            self.unloads.append(request.model_name)
            if self.loaded.pop(request.model_name, None) is not None:
                self.unloaded.add(request.model_name)
        return service_pb2.RepositoryModelUnloadResponse()

    def ModelReady(self, request: Any, context: Any) -> Any:
        with self.lock:
            loaded = self.loaded.get(request.name)
            ready = loaded is not None and (not request.version or request.version in loaded.versions)
        return service_pb2.ModelReadyResponse(ready=ready)

    def ModelConfig(self, request: Any, context: Any) -> Any:
        with self.lock:
            loaded = self.loaded.get(request.name)
            if loaded is None:
                context.abort(
                    grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{request.name}' is not found"
                )
            config = json_format.ParseDict(
                loaded.config, model_config_pb2.ModelConfig(), ignore_unknown_fields=True
            )
        return service_pb2.ModelConfigResponse(config=config)

    # -- /metrics -------------------------------------------------------------------------------------
    def metrics(self) -> str:
        """Triton 2.51's /metrics text: every loaded version's series, then the router's family."""
        with self.lock:
            rows = [(m, v) for m, loaded in sorted(self.loaded.items()) for v in loaded.versions]
            counts = {key: self.counts.get(key, Counts()) for key in rows}
            routed = dict(self.routed)
        out = []
        for header, templates in _golden_families():
            out += header
            for template in templates:
                if 'model="' not in template:
                    out.append(template)
                    continue
                for (model, version), c in counts.items():
                    out.append(_sample(template, model, version, c))
        if routed:
            out += [
                f"# HELP {ROUTER_FAMILY} Requests the router sent, by variant and outcome",
                f"# TYPE {ROUTER_FAMILY} counter",
            ]
            for (router, model, version), c in sorted(routed.items()):
                for outcome, value in (("failure", c.failure), ("success", c.success)):
                    labels = f'model="{model}",outcome="{outcome}",router="{router}",version="{version}"'
                    out.append(f"{ROUTER_FAMILY}{{{labels}}} {value}")
        return "\n".join(out) + "\n"

    # -- serving --------------------------------------------------------------------------------------
    def start(self) -> None:
        """Bind gRPC, metrics and HTTP on this fake's address (OSError/RuntimeError if taken)."""
        # No SO_REUSEPORT (gRPC sets it by default): a second fake on a taken address must fail to bind,
        # not share the port with another test process's fake.
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)])
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self, server)
        if server.add_insecure_port(f"{self.ip}:{GRPC_PORT}") == 0:
            raise OSError(f"cannot bind {self.ip}:{GRPC_PORT}")
        self._servers.append(server)
        for port in (HTTP_PORT, METRICS_PORT):
            http = ThreadingHTTPServer((self.ip, port), _handler(self))
            http.daemon_threads = True
            threading.Thread(target=http.serve_forever, args=(0.05,), daemon=True).start()
            self._servers.append(http)
        self._servers.append(_json_server((self.ip, SYNC_PORT), "/v1/held", self.held))
        server.start()

    def held(self) -> dict[str, Any]:
        """What the pod's sync sidecar says its copy holds: the repository's content unless behind."""
        return self.copy_behind if self.copy_behind is not None else self.repository.content()

    def stop(self) -> None:
        """The pod is gone: nothing answers at its address any more."""
        for server in self._servers:
            if isinstance(server, ThreadingHTTPServer):
                server.shutdown()
                server.server_close()
            else:
                server.stop(0).wait(5)
        self._servers.clear()


def _sample(template: str, model: str, version: str, c: Counts) -> str:
    """One golden sample line for `adder` version 1, said of `model` `version` with its counters."""
    name_labels, _, _ = template.rpartition(" ")
    line = name_labels.replace('model="adder"', f'model="{model}"').replace(
        'version="1"', f'version="{version}"'
    )
    name = name_labels.split("{", 1)[0]
    quantile = "quantile=" in name_labels
    value: float | str
    if name == "nv_inference_request_failure":
        value = c.failure if 'reason="BACKEND"' in name_labels else 0
    elif name in (
        "nv_inference_request_success",
        "nv_inference_count",
        "nv_inference_exec_count",
    ) or name.endswith("_summary_us_count"):
        value = c.success
    elif name.startswith(("nv_inference_request_duration", "nv_inference_request_summary_us_sum")):
        value = c.success * c.latency_us
    elif name.startswith(("nv_inference_queue_duration", "nv_inference_queue_summary_us_sum")):
        value = c.success * c.queue_us
    elif quantile and name.startswith("nv_inference_request_summary"):
        value = c.latency_us if c.success else "Nan"
    elif quantile and name.startswith("nv_inference_queue_summary"):
        value = c.queue_us if c.success else "Nan"
    elif quantile:
        value = 0 if c.success else "Nan"
    else:
        value = 0
    return f"{line} {value}"


_FAMILIES: list[tuple[list[str], list[str]]] = []


def _golden_families() -> list[tuple[list[str], list[str]]]:
    """The captured answer's families in order: their HELP/TYPE lines and the sample lines of model
    `adder` version 1 (the templates) and of series with no model (copied as they are)."""
    if not _FAMILIES:
        for line in GOLDEN.read_text().splitlines():
            if line.startswith("# HELP"):
                _FAMILIES.append(([line], []))
            elif line.startswith("#"):
                _FAMILIES[-1][0].append(line)
            elif 'model="' not in line or 'model="adder"' in line:
                _FAMILIES[-1][1].append(line)
    return _FAMILIES


def _handler(triton: FakeTriton) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, kind = triton.metrics().encode(), "text/plain; charset=utf-8; version=0.0.4"
            elif self.path in ("/v2/health/ready", "/v2/health/live"):
                body, kind = b"", "text/plain"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _json_server(address: tuple[str, int], path: str, answer: Callable[[], Any]) -> ThreadingHTTPServer:
    """An HTTP server answering GET `path` (any query) with `answer()` as JSON, serving in a thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != path:
                self.send_error(404)
                return
            body = json.dumps(answer()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    http = ThreadingHTTPServer(address, Handler)
    http.daemon_threads = True
    threading.Thread(target=http.serve_forever, args=(0.05,), daemon=True).start()
    return http


class TritonPool:
    """Fake Tritons on addresses 127.34.x.y (x chosen at random per pool, so pools of tests run at the
    same time on this machine do not collide); `stop_all` at the end."""

    def __init__(self) -> None:
        self.subnet = random.randint(1, 254)
        self._hosts = iter(range(1, 255))
        self.by_ip: dict[str, FakeTriton] = {}
        self.repository_servers: list[RepositoryServer] = []

    def start(self, repository: Repository) -> FakeTriton:
        for host in self._hosts:
            triton = FakeTriton(f"127.34.{self.subnet}.{host}", repository)
            try:
                triton.start()
            except (OSError, RuntimeError):
                triton.stop()
                continue
            self.by_ip[triton.ip] = triton
            return triton
        raise RuntimeError(f"no free address left in 127.34.{self.subnet}.0/24")

    def start_repository_server(self, repository: Repository) -> RepositoryServer:
        """A repository server (layout PerReplica) on the next free address of the pool."""
        for host in self._hosts:
            try:
                server = RepositoryServer(f"127.34.{self.subnet}.{host}", repository)
            except OSError:
                continue
            self.repository_servers.append(server)
            return server
        raise RuntimeError(f"no free address left in 127.34.{self.subnet}.0/24")

    def stop(self, ip: str) -> None:
        triton = self.by_ip.pop(ip, None)
        if triton is not None:
            triton.stop()

    def stop_all(self) -> None:
        for ip in list(self.by_ip):
            self.stop(ip)
        for server in self.repository_servers:
            server.stop()
        self.repository_servers.clear()

    def __iter__(self) -> Iterator[FakeTriton]:
        return iter(list(self.by_ip.values()))
