"""Hostile input (issue 12): a Triton pod that answers slowly or with garbage stalls nothing else.

Two TritonServers in one namespace: `healthy` (real Triton, the model `mnist` loaded, traffic flowing)
and `hostile`, whose one pod is handed over to this test's own process once its models are loaded: the
pod runner stops its tritonserver (`HAND_OVER_ANNOTATION`) and leaves the pod Running and Ready, as a
kubelet would report a Triton whose HTTP health still passes, and the fake below binds the pod's IP on
8000 (HTTP), 8001 (gRPC) and 8002 (metrics). On `hostile`: the model `victim` (loaded before the hand-over)
and LOOP_WORKERS more models (`crowd-<i>`, never staged) that read the pod's repository index each pass,
so that passes stuck on the pod would take every worker the operator has.

The fake plays one phase after another (PHASES): transport-level silence and garbage, gRPC that speaks
but never answers or answers nonsense, and a correct gRPC Triton whose /metrics comes one byte a second
or is not Prometheus text (or not HTTP). In each phase a user sees:

- a new generation of `mnist` (keepFilesOnDelete toggled) reaches observedGeneration and Ready within
  CHANGE_BOUND_S, which is arithmetic on the operator's client timeouts and status period;
- `mnist`'s live metrics keep refreshing (no gap over METRICS_BOUND_S);
- `hostile`'s pod entry and `victim`'s conditions say what is wrong with the pod, in words (the victim
  only while its pod's gRPC misbehaves: otherwise the fake loads it and it is Ready);
- and, over the whole test, the operator keeps its process and its container's restart count, and
  logs no Python traceback and no failed pass for these objects.

The run prints each phase's figures: how long the change took with the hostile pod present and absent.

Run alone: `E2E_SANDBOX=hostile SANDBOX_KEEP=1 python -m pytest tests/e2e/test_hostile_triton.py`. The
fake is this module run as a program (`python -m tests.e2e.test_hostile_triton IP MODE_FILE READY_FILE`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import grpc  # type: ignore[import-untyped]
import numpy as np
import pytest
import tritonclient.http as triton_http
import yaml
from kubernetes import client
from triton_operator.handlers.settings import LOOP_WORKERS
from triton_operator.triton.client import CONNECT_TIMEOUT_S, HUNG_HOLD_S, PROBE_TIMEOUT_S
from tritonclient.grpc import service_pb2, service_pb2_grpc

from sandbox.config import REPO_ROOT
from sandbox.mnist import publish_mnist
from sandbox.podrunner import HAND_OVER_ANNOTATION
from tests.e2e import kube
from tests.e2e.conftest import Sandbox
from tests.e2e.incluster import ChartOperator

# alone: its bounds are a status period plus a probe timeout; it ties up the operator's workers on purpose.
pytestmark = [pytest.mark.e2e, pytest.mark.alone]

GROUP, VERSION = "tritonoperator.dev", "v1alpha1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "sandbox", "AWS_SECRET_ACCESS_KEY": "sandbox-secret"}
HEALTHY, HOSTILE = "healthy", "hostile"
MODEL, VICTIM = "mnist", "victim"
CROWD = LOOP_WORKERS  # models on the hostile server besides the victim: as many as the operator has workers
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
BIND_WAIT_S = 30.0  # the fake waits this long for the pod runner to stop the real tritonserver
HANG_S = 300.0  # the longest a fake connection stays open without answering (no test runs longer)
TRICKLE_EVERY_S = 1.0  # /metrics in the trickle phase: one byte this often, each within the read timeout

# --- the bounds ------------------------------------------------------------------------------------
STATUS_PERIOD_S = 3.0  # the test operator's TRITON_OPERATOR_STATUS_PERIOD (ChartOperator's default)
# A pass of an object that never talks to the hostile pod owes it nothing. The bound still grants it one
# Triton call to that pod (a call ends by its deadline, PROBE_TIMEOUT_S, which contains the connection
# attempt, CONNECT_TIMEOUT_S), one connection attempt to its own healthy pod, and a status period (the
# change may land during a pass, which then runs once more, or on a worker freed at the next period).
CHANGE_BOUND_S = STATUS_PERIOD_S + PROBE_TIMEOUT_S + CONNECT_TIMEOUT_S
# Metrics: the healthy server's scrape and the model's pass each come once a period (two periods between
# a figure changing and the model's status showing it), plus the same one call to the hostile pod.
METRICS_BOUND_S = 2 * STATUS_PERIOD_S + PROBE_TIMEOUT_S
# The hostile server's own pass asks the pod up to six things one after another (health: live, ready,
# metadata and, when not ready, the index; then the index and /metrics), each bounded by PROBE_TIMEOUT_S;
# the victim's explanation may wait for one such pass and a period for its own; and what the pod did
# last phase is repeated for HUNG_HOLD_S when it made a call wait out its time.
EXPLAIN_BOUND_S = 2 * STATUS_PERIOD_S + 6 * PROBE_TIMEOUT_S + HUNG_HOLD_S


# === the fake Triton (runs in its own process) ========================================================


def _mode(mode_file: Path) -> str:
    try:
        return mode_file.read_text().strip()
    except OSError:
        return "slow"


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _hang(conn: Conn) -> None:
    """Read and discard whatever comes, answer nothing, until the client gives up (or HANG_S)."""
    reader, _ = conn
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(HANG_S):
            while await reader.read(65536):
                pass


async def _send(conn: Conn, data: bytes, *, then_hang: bool = True) -> None:
    conn[1].write(data)
    await conn[1].drain()
    if then_hang:
        await _hang(conn)


def _random_bytes(n: int) -> bytes:
    return random.randbytes(n)


def _http2_frame(kind: int, flags: int, stream: int, payload: bytes, length: int | None = None) -> bytes:
    size = len(payload) if length is None else length
    return size.to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _grpc_garbage(n: int) -> bytes:
    """What a gRPC client gets instead of HTTP/2: noise, an HTTP/1 answer, or broken HTTP/2 frames."""
    variants = [
        _random_bytes(4096),
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        # An empty SETTINGS frame (a valid start), then a HEADERS frame claiming 16 MiB on stream 1.
        _http2_frame(4, 0, 0, b"") + _http2_frame(1, 4, 1, _random_bytes(64), length=(1 << 24) - 1),
        # SETTINGS with a payload that is not a multiple of 6 (FRAME_SIZE_ERROR), then noise.
        _http2_frame(4, 0, 0, _random_bytes(7)) + _random_bytes(512),
    ]
    return variants[n % len(variants)]


def _http_garbage(n: int) -> bytes:
    """What an HTTP client gets instead of an HTTP answer: noise, a broken status line or framing."""
    variants = [
        _random_bytes(4096),
        b"HTTP/1.1 twohundred OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nnv_inference_count{model=",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + _random_bytes(256),
        b"HTTP/1.1 200 OK\r\n" + b"X-Header: " + b"a" * 70000 + b"\r\n\r\n",
    ]
    return variants[n % len(variants)]


def _not_prometheus(n: int) -> bytes:
    """An HTTP 200 whose body is not Prometheus text: JSON, binary noise, broken sample lines."""
    bodies = [
        b'{"models": [{"name": "mnist", "state": "READY"}]}',
        _random_bytes(8192),
        b'nv_inference_count{model="mnist",version="1" 12\nnv_inference_request_success{model=} x y z\n',
        b'# TYPE nv_inference_count counter\nnv_inference_count{model="m",version="1"} -1e400\n'
        + b"\x00" * 64,
    ]
    body = bodies[n % len(bodies)]
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def _trickle(conn: Conn, mode_file: Path, mode: str) -> None:
    """A 200 with a long body sent one byte every TRICKLE_EVERY_S (each read is quick; the whole never
    ends), until the phase changes."""
    conn[1].write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n")
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline and _mode(mode_file) == mode:
        conn[1].write(b"#")
        await conn[1].drain()
        await asyncio.sleep(TRICKLE_EVERY_S)


async def _proxy(conn: Conn, port: int) -> None:
    """Pass the connection to the fake's own gRPC servicer (gRPC that speaks, but lies or stalls)."""
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        finally:
            dst.close()

    await asyncio.gather(pipe(conn[0], up_writer), pipe(up_reader, conn[1]), return_exceptions=True)


Behaviour = Callable[[Conn, int], Awaitable[None]]


def _plan(mode_file: Path, grpc_port: int) -> dict[str, dict[str, Behaviour]]:
    """Each phase's behaviour per port: (connection, connection number) -> coroutine."""
    hang: Behaviour = lambda conn, n: _hang(conn)  # noqa: E731
    proxy: Behaviour = lambda conn, n: _proxy(conn, grpc_port)  # noqa: E731
    return {
        "slow": {"http": hang, "grpc": hang, "metrics": hang},
        "garbage": {
            "http": lambda conn, n: _send(conn, _http_garbage(n)),
            "grpc": lambda conn, n: _send(conn, _grpc_garbage(n)),
            "metrics": lambda conn, n: _send(conn, _http_garbage(n + 1)),
        },
        "stalling": {"http": hang, "grpc": proxy, "metrics": hang},
        "lying": {
            "http": lambda conn, n: _send(conn, _random_bytes(1024)),
            "grpc": proxy,
            "metrics": hang,  # never read: the index fails first (see "babbling")
        },
        "trickle": {
            "http": hang,
            "grpc": proxy,
            "metrics": lambda conn, n: _trickle(conn, mode_file, "trickle"),
        },
        "babbling": {
            "http": hang,
            "grpc": proxy,
            "metrics": lambda conn, n: _send(
                conn, _not_prometheus(n // 2) if n % 2 else _http_garbage(n // 2), then_hang=False
            ),
        },
    }


class FakeTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Triton's gRPC API, as the phase has it: stalling (health answers, the rest never does), lying
    (everything answers at once, with nonsense), otherwise a correct Triton that loads whatever it is
    asked to (so that the operator goes on to read /metrics)."""

    def __init__(self, mode_file: Path):
        self.mode_file = mode_file
        self.loaded: set[str] = set()

    def _stall(self, context: Any) -> None:
        deadline = time.monotonic() + HANG_S
        while context.is_active() and time.monotonic() < deadline:
            time.sleep(0.1)
        context.abort(grpc.StatusCode.UNAVAILABLE, "the fake stalled this call")

    def _mode(self) -> str:
        return _mode(self.mode_file)

    def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=True)

    def ServerMetadata(self, request: Any, context: Any) -> Any:
        mode = self._mode()
        if mode == "stalling":
            self._stall(context)
        if mode == "lying":
            return service_pb2.ServerMetadataResponse(
                name="\u202enotriton", version="", extensions=["x"] * 50
            )
        return service_pb2.ServerMetadataResponse(name="triton", version="2.51.0-fake")

    def RepositoryIndex(self, request: Any, context: Any) -> Any:
        mode = self._mode()
        if mode == "stalling":
            self._stall(context)
        index = service_pb2.RepositoryIndexResponse
        if mode == "lying":  # rows without a name: no repository index Triton writes
            rows = [index.ModelIndex(name="", version="1", state="READY", reason="\x00" * 16)] * 100
            return index(models=rows)
        return index(
            models=[index.ModelIndex(name=m, version="1", state="READY") for m in sorted(self.loaded)]
        )

    def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        mode = self._mode()
        if mode == "stalling":
            self._stall(context)
        if mode == "lying":
            context.abort(grpc.StatusCode.INTERNAL, "".join(random.choices("ab\t\u202e\U0001f99c", k=300)))
        self.loaded.add(request.model_name)
        return service_pb2.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        self.loaded.discard(request.model_name)
        return service_pb2.RepositoryModelUnloadResponse()

    def ModelReady(self, request: Any, context: Any) -> Any:
        mode = self._mode()
        if mode == "stalling":
            self._stall(context)
        return service_pb2.ModelReadyResponse(ready=mode != "lying" and request.name in self.loaded)


async def _serve_fake(ip: str, mode_file: Path, ready_file: Path) -> None:
    servicer = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(FakeTriton(mode_file), servicer)
    grpc_port = servicer.add_insecure_port("127.0.0.1:0")
    servicer.start()
    plan = _plan(mode_file, grpc_port)
    numbers = itertools.count()

    async def connection(kind: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await plan[_mode(mode_file)][kind]((reader, writer), next(numbers))
        except (OSError, KeyError):  # the client went away (or an unknown mode: close at once)
            pass
        finally:
            writer.close()

    deadline = time.monotonic() + BIND_WAIT_S
    listeners = []
    for kind, port in PORTS.items():
        while True:  # the pod runner is stopping the real tritonserver, which holds these ports
            try:
                listeners.append(await asyncio.start_server(partial(connection, kind), ip, port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
    ready_file.write_text("bound")
    await asyncio.sleep(HANG_S * 2)


def serve_fake(argv: list[str]) -> None:
    ip, mode_file, ready_file = argv
    asyncio.run(_serve_fake(ip, Path(mode_file), Path(ready_file)))


@dataclass
class Fake:
    """The fake's process (this module as a program), bound to the hostile pod's IP."""

    ip: str
    folder: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def mode_file(self) -> Path:
        return self.folder / "mode"

    @property
    def ready_file(self) -> Path:
        return self.folder / "bound"

    def start(self, mode: str) -> None:
        self.set(mode)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "operator"), str(REPO_ROOT)])}
        with open(self.folder / "fake.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.e2e.test_hostile_triton", self.ip, str(self.mode_file),
                 str(self.ready_file)],
                env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def set(self, mode: str) -> None:
        self.mode_file.write_text(mode)

    def wait_bound(self) -> None:
        def bound() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            return self.ready_file.exists()

        kube.wait_for(bound, BIND_WAIT_S + 10, f"the fake Triton to bind {self.ip}", interval_s=0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log(self) -> str:
        path = self.folder / "fake.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


# === the cluster side ====================================================================================


def custom(sb: Sandbox) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(sb.api)


def get(sb: Sandbox, ns: str, plural: str, name: str) -> dict[str, Any]:
    return cast(dict[str, Any], custom(sb).get_namespaced_custom_object(GROUP, VERSION, ns, plural, name))


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == ctype), {})


def messages(obj: dict[str, Any]) -> str:
    """Every condition message and pod message of an object's status, one per line."""
    status = obj.get("status") or {}
    lines = [
        f"{c['type']}={c['status']} {c.get('reason')}: {c.get('message')}"
        for c in status.get("conditions") or []
    ]
    # A server's status.pods and a model's status.replicas (a server's status.replicas is a count).
    for entry in [*(status.get("pods") or []), *_entries(status.get("replicas"))]:
        said = entry.get("message") or entry.get("reason")
        if said:
            lines.append(f"pod {entry.get('name') or entry.get('pod')}: {said}")
    return "\n".join(lines)


def _entries(value: Any) -> list[dict[str, Any]]:
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def server(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"replicas": 1, "resources": {"gpus": 1}, "modelRepository": {"size": "1Gi"}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TritonServer",
        "metadata": {"name": name},
        "spec": spec,
    }


def s3_model(name: str, server_name: str, endpoint: str) -> dict[str, Any]:
    source = {
        "s3": {
            "bucket": "models",
            "prefix": "mnist/1",
            "endpoint": endpoint,
            "region": "us-east-1",
            "credentialsSecret": {"name": "s3-credentials"},
        }
    }
    spec = {"serverRef": {"name": server_name}, "version": 1, "source": source}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TritonModel",
        "metadata": {"name": name},
        "spec": spec,
    }


def crowd_model(name: str) -> dict[str, Any]:
    """A model of the hostile server that is never staged (its claim does not exist; its Job's pod waits
    unscheduled): it costs no process, yet each of its passes reads the server's pods' indexes."""
    spec = {
        "serverRef": {"name": HOSTILE},
        "version": 1,
        "source": {"pvc": {"claimName": "nowhere", "path": "m"}},
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TritonModel",
        "metadata": {"name": name},
        "spec": spec,
    }


def apply(sb: Sandbox, ns: str, *objs: dict[str, Any]) -> None:
    sb.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(objs))


def server_pod(sb: Sandbox, ns: str, name: str) -> Any:
    selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=server"
    pods = kube.ready_pods(client.CoreV1Api(sb.api), ns, selector)
    assert len(pods) == 1, [p.metadata.name for p in pods]
    return pods[0]


def change_generation(sb: Sandbox, ns: str) -> float:
    """Toggle mnist's keepFilesOnDelete (a new generation, nothing to stage or load); seconds until its
    status is about that generation and Ready."""
    keep = bool(get(sb, ns, "tritonmodels", MODEL)["spec"].get("keepFilesOnDelete", True))
    started = time.monotonic()
    patched = custom(sb).patch_namespaced_custom_object(
        GROUP, VERSION, ns, "tritonmodels", MODEL, {"spec": {"keepFilesOnDelete": not keep}}
    )
    generation = patched["metadata"]["generation"]

    def caught_up() -> bool:
        obj = get(sb, ns, "tritonmodels", MODEL)
        ready = condition(obj, "Ready")
        return (
            (obj.get("status") or {}).get("observedGeneration") == generation
            and ready.get("status") == "True"
            and ready.get("observedGeneration") == generation
        )

    # Waited for longer than the bound, so that a miss is measured, not just reported.
    kube.wait_for(caught_up, 4 * CHANGE_BOUND_S, f"{MODEL} generation {generation} Ready", interval_s=0.1)
    return time.monotonic() - started


@dataclass
class MetricsWatch:
    """Polls mnist's status.metrics.refreshedAt in a thread; the gaps between the refreshes it saw."""

    sb: Sandbox
    ns: str
    refreshes: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="metrics-watch")
        self._thread.start()

    def _run(self) -> None:
        last = None
        deadline = time.monotonic() + 600
        api = client.CustomObjectsApi(self.sb.api)
        while not self._stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(client.ApiException):
                obj = cast(
                    dict[str, Any],
                    api.get_namespaced_custom_object(GROUP, VERSION, self.ns, "tritonmodels", MODEL),
                )
                stamp = ((obj.get("status") or {}).get("metrics") or {}).get("refreshedAt")
                if stamp and stamp != last:
                    last = stamp
                    self.refreshes.append(time.monotonic())
            self._stop.wait(0.25)

    def longest_gap(self, since: float, until: float) -> float:
        """The longest stretch in [since, until] without a refresh."""
        marks = [since, *(t for t in self.refreshes if since < t < until), until]
        return max(b - a for a, b in itertools.pairwise(marks))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


@dataclass
class Traffic:
    """Inference requests to mnist on the healthy pod at an uneven pace, so its figures keep moving."""

    ip: str
    sent: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="traffic")
        self._thread.start()

    def _run(self) -> None:
        c = triton_http.InferenceServerClient(f"{self.ip}:8000", network_timeout=10)
        batch = np.zeros((1, 1, 28, 28), dtype=np.float32)
        pace = random.Random(12)
        deadline = time.monotonic() + 600
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                inp = triton_http.InferInput("input", list(batch.shape), "FP32")
                inp.set_data_from_numpy(batch)
                try:
                    c.infer(MODEL, [inp])
                    self.sent += 1
                except Exception as exc:  # reported by the test
                    self.errors.append(repr(exc))
                self._stop.wait(pace.uniform(0.02, 0.3))
        finally:
            c.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)


@dataclass(frozen=True)
class Phase:
    mode: str
    what: str
    # Text that explains the phase in the hostile server's pod entry and (`victim_explains`) in the
    # victim's conditions: any of `explained_by`, none of `not_by` (the phase before may still show).
    explained_by: tuple[str, ...]
    not_by: tuple[str, ...] = ()
    victim_explains: bool = True


PHASES = [
    Phase(
        "slow", "accepts connections, answers nothing", ("did not complete a connection", "did not answer")
    ),
    Phase(
        "garbage",
        "random bytes, broken HTTP/2 and HTTP",
        ("Triton not reachable",),
        not_by=("did not complete a connection", "did not answer"),
    ),
    Phase("stalling", "gRPC health answers; index, load and /metrics never do", ("did not answer within",)),
    Phase(
        "lying", "gRPC answers nonsense (nameless index rows, odd metadata)", ("unexpected repository index",)
    ),
    Phase(
        "trickle",
        "a correct gRPC Triton; /metrics one byte a second",
        ("Triton metrics at",),
        victim_explains=False,  # its pod's gRPC loads it: the victim is Ready again
    ),
    Phase(
        "babbling",
        "a correct gRPC Triton; /metrics not Prometheus text, or not HTTP",
        ("not Prometheus text", "cannot read Triton metrics at"),
        victim_explains=False,
    ),
]


@pytest.fixture(scope="module")
def published(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return publish_mnist(sandbox.cfg.s3_endpoint, tmp_path_factory.mktemp("mnist"), CREDENTIALS)


@pytest.fixture
def pools(sandbox: Sandbox, operator: ChartOperator, published: Path) -> Iterator[str]:
    """A namespace with both servers Ready, mnist Ready on `healthy`, the victim Ready on `hostile` and
    the crowd on `hostile` too."""
    core = client.CoreV1Api(sandbox.api)
    ns = f"hostile-triton-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"e2e": "true"}}})
    kube.wait_for(lambda: kube.service_account_exists(core, ns, "default"), 30, "default service account")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3-credentials"},
        "stringData": CREDENTIALS,
    }
    apply(sandbox, ns, secret, server(HEALTHY), server(HOSTILE))
    endpoint = sandbox.cfg.s3_endpoint
    apply(sandbox, ns, s3_model(MODEL, HEALTHY, endpoint), s3_model(VICTIM, HOSTILE, endpoint))
    apply(sandbox, ns, *(crowd_model(f"crowd-{i}") for i in range(CROWD)))
    for model in (MODEL, VICTIM):
        sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", f"tritonmodel/{model}", "--timeout=150s")
    # A model is Ready once loaded on its server's pods; each pod takes traffic (Ready) once the operator
    # opened its models-loaded gate, a server pass later.
    for name in (HEALTHY, HOSTILE):
        sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", f"tritonserver/{name}", "--timeout=60s")
    yield ns
    core.delete_namespace(ns)


def test_a_hostile_triton_pod_stalls_no_other_object(
    sandbox: Sandbox, operator: ChartOperator, pools: str, tmp_path: Path
) -> None:
    ns = pools
    assert operator.status_period_s == STATUS_PERIOD_S, "the bounds assume the test operator's period"
    pids_before = operator.pids()
    restarts_before = {p.metadata.name: _restarts(p) for p in operator.pods()}
    log_start = len(operator.log())
    healthy_ip = server_pod(sandbox, ns, HEALTHY).status.pod_ip
    hostile = server_pod(sandbox, ns, HOSTILE)
    traffic, watch = Traffic(healthy_ip), MetricsWatch(sandbox, ns)
    traffic.start()
    watch.start()
    fake = Fake(hostile.status.pod_ip, tmp_path)
    report: list[str] = []
    try:
        kube.wait_for(lambda: len(watch.refreshes) >= 2, METRICS_BOUND_S * 2, f"{MODEL}'s metrics in status")
        absent = [change_generation(sandbox, ns) for _ in range(2)]
        report.append(
            f"no hostile pod: {MODEL}'s new generation Ready in {', '.join(f'{s:.2f}' for s in absent)} s"
        )

        # The hand-over: the runner stops the pod's tritonserver; the fake takes its IP's ports.
        fake.start(PHASES[0].mode)
        client.CoreV1Api(sandbox.api).patch_namespaced_pod(
            hostile.metadata.name, ns, {"metadata": {"annotations": {HAND_OVER_ANNOTATION: "true"}}}
        )
        fake.wait_bound()
        for phase in PHASES:
            fake.set(phase.mode)
            started = time.monotonic()
            explained = kube.wait_for(
                lambda phase=phase: _explained(sandbox, ns, phase),
                EXPLAIN_BOUND_S,
                f"phase {phase.mode}: {HOSTILE} (and {VICTIM}) saying {phase.explained_by}",
            )
            took = [change_generation(sandbox, ns) for _ in range(2)]
            gap = watch.longest_gap(started, time.monotonic())
            report.append(
                f"{phase.mode} ({phase.what}): explained after {time.monotonic() - started:.1f} s "
                f"[{explained}]; {MODEL}'s new generation Ready in {', '.join(f'{s:.2f}' for s in took)} s "
                f"(bound {CHANGE_BOUND_S:g}); longest metrics gap {gap:.1f} s (bound {METRICS_BOUND_S:g})"
            )
            assert max(took) <= CHANGE_BOUND_S, "\n".join(report)
            assert gap <= METRICS_BOUND_S, "\n".join(report)
            assert operator.pids() == pids_before, "the operator restarted"
    finally:
        print("\n" + "\n".join(report))
        fake.stop()
        traffic.stop()
        watch.stop()
    assert not traffic.errors, traffic.errors[:5]
    assert traffic.sent > 0
    assert operator.pids() == pids_before, "the operator restarted"
    assert {p.metadata.name: _restarts(p) for p in operator.pods()} == restarts_before
    log = operator.log()[log_start:]
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
    failed = [line for line in log.splitlines() if ns in line and "pass failed" in line]
    assert not failed, failed[:10]


def _restarts(pod: Any) -> int:
    return sum(int(c.restart_count or 0) for c in pod.status.container_statuses or [])


def _explained(sb: Sandbox, ns: str, phase: Phase) -> str | None:
    """The status lines of the hostile server (and the victim) that explain the phase, once all do."""
    said = []
    asked = [("tritonservers", HOSTILE)] + ([("tritonmodels", VICTIM)] if phase.victim_explains else [])
    for plural, name in asked:
        line = next(
            (
                line
                for line in messages(get(sb, ns, plural, name)).splitlines()
                if any(text in line for text in phase.explained_by)
                and not any(text in line for text in phase.not_by)
                and "Traceback" not in line
            ),
            None,
        )
        if line is None:
            return None
        said.append(f"{name}: {line[:300]}")
    return "; ".join(said)


if __name__ == "__main__":
    serve_fake(sys.argv[1:])
