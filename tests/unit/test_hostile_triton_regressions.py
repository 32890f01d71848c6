"""Regressions found by tests/e2e/test_hostile_triton.py (issue 12: a Triton pod that answers slowly or
with garbage), each named after the fault; a stand-in pod on loopback, no cluster."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from functools import partial
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from triton_operator.reconcile.cache import SharedReads
from triton_operator.reconcile.state import OperatorState
from triton_operator.triton import client
from triton_operator.triton.client import (
    HUNG_HOLD_S,
    PROBE_TIMEOUT_S,
    ModelState,
    TritonEndpoint,
    TritonError,
    TritonTimeout,
    TritonUnreachable,
    repository_index,
    server_health,
)
from triton_operator.triton.metrics import fetch_metrics, parse_metrics
from tritonclient.grpc import service_pb2, service_pb2_grpc

pytestmark = pytest.mark.unit

TIMEOUT_S = 0.6
DRIP_EVERY_S = 0.05  # far within the timeout: every single read is quick


class Pod:
    """A loopback listener that answers each connection with `head`, then drips `drip` a byte at a time."""

    def __init__(self, head: bytes, drip: bytes):
        self.head, self.drip = head, drip
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(self.head)
                deadline = time.monotonic() + 30  # bounded, whatever the client does
                for byte in self.drip:
                    if self.stop.is_set() or time.monotonic() > deadline:
                        return
                    conn.sendall(bytes([byte]))
                    time.sleep(DRIP_EVERY_S)
            except OSError:
                return

    def endpoint(self) -> TritonEndpoint:
        return TritonEndpoint("127.0.0.1", metrics_port=self.port)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.listener.close()


@pytest.fixture
def pods() -> Iterator[list[Pod]]:
    started: list[Pod] = []
    yield started
    for pod in started:
        pod.close()


@pytest.mark.parametrize(
    ("head", "drip"),
    [
        # The body, one byte at a time (Content-Length promises far more than ever comes).
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n", b"#" * 10_000),
        # The headers, one byte at a time: http.client reads them before urlopen returns.
        (b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a" * 10_000),
        # The status line itself.
        (b"", b"HTTP/1.1 200 OK" + b" " * 10_000),
    ],
    ids=["body", "headers", "status-line"],
)
def test_metrics_dripped_a_byte_at_a_time_time_out_as_a_whole(
    pods: list[Pod], head: bytes, drip: bytes
) -> None:
    # fetch_metrics gave urllib a socket timeout, which bounds each read alone: a pod that sent its
    # /metrics a byte a second held the TritonServer's pass (and a worker of the operator) until it
    # stopped, minutes or months; the pass never wrote the server's status meanwhile.
    pod = Pod(head, drip)
    pods.append(pod)
    started = time.monotonic()
    with pytest.raises(TritonTimeout, match="did not answer within"):
        fetch_metrics(pod.endpoint(), timeout_s=TIMEOUT_S)
    assert time.monotonic() - started < TIMEOUT_S + 0.5


def test_metrics_of_random_bytes_are_a_short_printable_error() -> None:
    # The parser's error quotes the offending line: control characters and noise went into the status.
    text = bytes(range(256)).decode("latin-1") * 100
    with pytest.raises(TritonError, match="not Prometheus text") as caught:
        parse_metrics(text)
    assert len(caught.value.message) < 300 and caught.value.message.isprintable(), caught.value.message


def test_metrics_that_arrive_in_time_are_read_whole(pods: list[Pod]) -> None:
    body = b'nv_inference_count{model="m",version="1"} 7\n'
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body)
    pod = Pod(head + body, b"")
    pods.append(pod)
    assert fetch_metrics(pod.endpoint(), timeout_s=TIMEOUT_S) == body.decode()


def test_a_garbage_status_line_is_quoted_short(pods: list[Pod]) -> None:
    # http.client quotes a bad status line whole (up to 64 KiB of the pod's bytes, control characters
    # and all) into the pod's status.
    pod = Pod(b"\xfe\xff\x00\x1b[2J" + b"x" * 60_000 + b"\r\n\r\n", b"")
    pods.append(pod)
    with pytest.raises(TritonUnreachable) as caught:
        fetch_metrics(pod.endpoint(), timeout_s=TIMEOUT_S)
    assert len(caught.value.message) < 400
    assert caught.value.message.isprintable(), caught.value.message


# --- a pod that accepts connections and never answers (gRPC) -----------------------------------------

PROBE_S = 0.4
MODELS = 8  # as many as the operator has workers by default


@pytest.fixture
def hung_pod() -> Iterator[TritonEndpoint]:
    """A listener the kernel completes connections for; nothing ever reads or answers them."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    yield TritonEndpoint("127.0.0.1", grpc_port=listener.getsockname()[1])
    listener.close()


def test_a_hung_pod_is_waited_for_once_not_once_per_model(hung_pod: TritonEndpoint) -> None:
    # Each model of a server reads each pod's index through the shared single-flight read, so for one
    # pod they read one after another. Nothing was shared when the read failed: with a hung pod each
    # model waited out its own timeout in turn (100 models: 100 timeouts), holding the operator's
    # workers meanwhile, and every other object's pass waited for a worker (e2e: the victim's status
    # did not move for 36 s, passes of the healthy server's model waited seconds for a worker).
    reads: SharedReads[list[ModelState]] = SharedReads(ttl_s=10)
    failures: list[str] = []

    def model_pass() -> None:
        try:
            reads.get(("pod",), partial(repository_index, hung_pod, timeout_s=PROBE_S))
        except TritonTimeout as exc:
            failures.append(exc.message)

    passes = [threading.Thread(target=model_pass) for _ in range(MODELS)]
    started = time.monotonic()
    for thread in passes:
        thread.start()
    for thread in passes:
        thread.join(timeout=MODELS * PROBE_S + 10)
    took = time.monotonic() - started
    assert len(failures) == MODELS and len(set(failures)) == 1, failures
    assert took < 2 * PROBE_S + 0.5, f"{MODELS} reads of a hung pod took {took:.1f} s"


def test_a_hung_pod_is_asked_again_once_the_hold_is_over(
    hung_pod: TritonEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(TritonTimeout):
        repository_index(hung_pod, timeout_s=PROBE_S)
    started = time.monotonic()
    with pytest.raises(TritonTimeout):
        repository_index(hung_pod, timeout_s=PROBE_S)
    assert time.monotonic() - started < PROBE_S / 2, "held: answered at once"
    later = time.monotonic() + HUNG_HOLD_S
    monkeypatch.setattr(client, "_clock", lambda: later)
    started = time.monotonic()
    with pytest.raises(TritonTimeout):
        repository_index(hung_pod, timeout_s=PROBE_S)
    assert time.monotonic() - started >= 0.9 * PROBE_S, "asked again (and waited) after the hold"


# --- a pod that answers too much (gRPC) --------------------------------------------------------------


class HugeIndex(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Answers the repository index with `rows` rows of 1 KiB names."""

    def __init__(self, rows: int):
        self.rows = rows

    def RepositoryIndex(self, request: Any, context: Any) -> Any:
        index = service_pb2.RepositoryIndexResponse
        return index(models=[index.ModelIndex(name=f"{i:04d}" + "m" * 1020) for i in range(self.rows)])


def test_an_answer_larger_than_the_limit_is_refused_not_read_into_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The client took tritonclient's receive limit, 2 GiB: any pod could make the operator parse
    # (and turn into JSON) 2 GiB. Here with a 1 MiB limit and a 2 MiB answer.
    monkeypatch.setattr(client, "ANSWER_LIMIT", 1 << 20)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(HugeIndex(2048), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        ep = TritonEndpoint("127.0.0.1", grpc_port=port)
        with pytest.raises(TritonError, match="larger than max"):
            repository_index(ep, timeout_s=5)
        monkeypatch.setattr(client, "ANSWER_LIMIT", 4 << 20)
        assert len(repository_index(ep, timeout_s=5)) == 2048  # within the limit: read as before
    finally:
        server.stop(grace=None)


def test_a_more_patient_call_asks_a_held_pod_again(hung_pod: TritonEndpoint) -> None:
    with pytest.raises(TritonTimeout):
        repository_index(hung_pod, timeout_s=PROBE_S)
    started = time.monotonic()
    with pytest.raises(TritonTimeout):
        repository_index(hung_pod, timeout_s=2 * PROBE_S)  # it might answer in the longer time
    assert time.monotonic() - started >= 0.9 * PROBE_S


# --- a pod whose health answers and whose repository index never does (gRPC) ------------------------


class IndexHangs(service_pb2_grpc.GRPCInferenceServiceServicer):
    """A Triton whose health and metadata answer at once and whose index waits for `release` (bounded)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.index_calls = 0

    def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=True)

    def ServerMetadata(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerMetadataResponse(name="triton", version="2.51.0")

    def RepositoryIndex(self, request: Any, context: Any) -> Any:
        self.index_calls += 1
        self.release.wait(timeout=2 * PROBE_TIMEOUT_S)
        return service_pb2.RepositoryIndexResponse()


@pytest.fixture
def index_hangs() -> Iterator[tuple[TritonEndpoint, IndexHangs]]:
    """On a loopback address of its own at Triton's gRPC port, as a pod's IP would be."""
    servicer = IndexHangs()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2 * MODELS))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    host = f"127.{random.randint(64, 250)}.{random.randint(1, 250)}.{random.randint(1, 250)}"
    assert server.add_insecure_port(f"{host}:{TritonEndpoint(host).grpc_port}")
    server.start()
    yield TritonEndpoint(host), servicer
    servicer.release.set()
    server.stop(grace=None)


def test_a_pod_whose_health_answers_stays_held_for_its_index(
    index_hangs: tuple[TritonEndpoint, IndexHangs],
) -> None:
    # The hold was by pod: while the index was held the pod's health was refused too (a pod that
    # answers its health shown unreachable), and whichever call came first once the hold was over,
    # often the server's health check, lifted it for the index as well. Every model's next read then
    # queued behind one more index call that ran out its time: with a crowd of models on that pod, all
    # the operator's workers waited 5 s every other hold (e2e, the stalling phase: the healthy server's
    # model went 12.7 s without fresh metrics, bound 11).
    endpoint, servicer = index_hangs
    with pytest.raises(TritonTimeout):
        repository_index(endpoint, timeout_s=PROBE_S)
    assert server_health(endpoint, timeout_s=PROBE_S).ready
    started = time.monotonic()
    with pytest.raises(TritonTimeout):
        repository_index(endpoint, timeout_s=PROBE_S)
    assert time.monotonic() - started < PROBE_S / 2, "the index is still held"
    assert servicer.index_calls == 1


def test_while_a_held_pod_is_asked_again_its_other_readers_are_answered_at_once(
    index_hangs: tuple[TritonEndpoint, IndexHangs], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once a hold was over, the first reader asked the pod again through the shared single-flight read
    # and every other model's pass queued behind it, each holding a worker for the whole timeout.
    endpoint, servicer = index_hangs
    state = OperatorState()
    pod = {"metadata": {"namespace": "ns", "name": "hung", "uid": "u1"}, "status": {"podIP": endpoint.host}}
    with pytest.raises(TritonTimeout):
        state.pod_index(pod)  # the operator's own timeout: waits it out once, then the pod is held
    later = time.monotonic() + HUNG_HOLD_S
    monkeypatch.setattr(client, "_clock", lambda: later)
    probe = futures.ThreadPoolExecutor(max_workers=1).submit(state.pod_index, pod)
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    while servicer.index_calls < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert servicer.index_calls == 2, "the hold is over: one reader asks the pod again"

    def model_pass() -> float:
        started = time.monotonic()
        with pytest.raises(TritonTimeout):
            state.pod_index(pod)
        return time.monotonic() - started

    with futures.ThreadPoolExecutor(max_workers=MODELS) as passes:
        took = list(passes.map(lambda _: model_pass(), range(MODELS)))
    assert max(took) < PROBE_S / 2, f"readers waited for the probe: {took}"
    servicer.release.set()  # the pod answers the probe: it is not held any more
    assert probe.result(timeout=PROBE_TIMEOUT_S) == []
    assert state.pod_index(pod, fresh=True) == [] and servicer.index_calls == 3
