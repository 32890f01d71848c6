"""Regressions found by tests/e2e/test_hostile_triton.py (issue 12: a Triton pod that answers slowly or
with garbage), each named after the fault; a stand-in pod on loopback, no cluster."""

from __future__ import annotations

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
from triton_operator.triton import client
from triton_operator.triton.client import (
    HUNG_HOLD_S,
    ModelState,
    TritonEndpoint,
    TritonError,
    TritonTimeout,
    TritonUnreachable,
    repository_index,
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
