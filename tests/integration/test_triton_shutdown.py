"""A rolled Triton pod must not fail the requests of gRPC clients whose connection is still open to it.

kube-proxy balances connections, not requests: a gRPC channel opened before a pod left its Service's
endpoints stays on that pod. On SIGTERM Triton 2.51 unloads every model while its gRPC endpoint still
answers, so each request on such a connection fails ("Server is stopping", then NOT_FOUND "has no
available versions") until Triton exits. The operator starts Triton with a maximum gRPC connection age
shorter than the pod's preStop sleep: Triton ends each connection (GOAWAY) within the sleep, and the
clients' new connections go to a pod still in the Service.

Here two real tritonservers stand for two pods, and a TCP relay for the Service: it picks the backend
for each new connection. The roll, as a pod sees it: pod A leaves the endpoints (new connections go to
B), sleeps PRESTOP_SLEEP_SECONDS, gets SIGTERM. Four clients keep one channel each throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from triton_operator.render.server import GRPC_MAX_CONNECTION_AGE_MS, PRESTOP_SLEEP_SECONDS
from tritonclient.utils import InferenceServerException

from sandbox.tritonserver import RunningTriton, run_tritonserver
from tests.golden.triton.triton_models import write_model

pytestmark = pytest.mark.integration

RELAY = "127.30.0.40"
CLIENTS = 4
STEADY_S = 6.0  # before the roll: more than one connection age
AFTER_SIGTERM_S = 2.0
MAX_RUN_S = 60.0  # every loop here stops by then


class Relay:
    """A TCP relay on RELAY:port that connects each new connection to the backend set at that moment."""

    def __init__(self, port: int, backend: str):
        self.port, self.backend = port, backend
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)

    def __enter__(self) -> Relay:
        self._thread.start()
        assert self._ready.wait(10), "the relay did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, RELAY, self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            backend_r, backend_w = await asyncio.open_connection(self.backend, 8001)
        except OSError:
            client_w.close()  # nothing listens there: as a refused connection
            return
        await asyncio.gather(_pipe(client_r, backend_w), _pipe(backend_r, client_w))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError, ConnectionError):
        writer.close()


@contextlib.contextmanager
def two_pods(
    repo: Path, extra_args: list[str], last_octet: int
) -> Iterator[tuple[RunningTriton, RunningTriton]]:
    write_model(repo, "m")
    args = [*extra_args, "--exit-timeout-secs=5"]
    with (
        run_tritonserver(repo, f"127.30.0.{last_octet}", extra_args=args) as a,
        run_tritonserver(repo, f"127.30.0.{last_octet + 1}", extra_args=args) as b,
    ):
        for pod in (a, b):
            with triton_grpc.InferenceServerClient(pod.grpc_url) as client:
                client.load_model("m")
        yield a, b


def roll_under_grpc_load(a: RunningTriton, b: RunningTriton, relay_port: int) -> Counter[tuple[str, str]]:
    """(phase, outcome) counts of the clients' requests over a roll of pod A."""
    counts: Counter[tuple[str, str]] = Counter()
    lock = threading.Lock()
    phase = ["steady"]
    deadline = time.monotonic() + MAX_RUN_S
    stop = threading.Event()

    def client() -> None:
        with triton_grpc.InferenceServerClient(f"{RELAY}:{relay_port}") as grpc:
            inp = triton_grpc.InferInput("INPUT0", [1, 1], "FP32")
            inp.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
            while not stop.is_set() and time.monotonic() < deadline:
                now = phase[0]
                try:
                    grpc.infer("m", [inp], client_timeout=5)
                    outcome = "ok"
                except InferenceServerException as exc:
                    outcome = f"{exc.status()} {str(exc.message())[:60]}"
                    time.sleep(0.01)
                with lock:
                    counts[(now, outcome)] += 1

    with Relay(relay_port, a.address) as relay:
        threads = [threading.Thread(target=client, name=f"client-{i}") for i in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(STEADY_S)
        phase[0], relay.backend = "prestop", b.address  # A leaves the Service's endpoints
        time.sleep(PRESTOP_SLEEP_SECONDS)
        phase[0] = "sigterm"
        a.process.send_signal(signal.SIGTERM)
        a.process.wait(timeout=30)
        time.sleep(AFTER_SIGTERM_S)
        stop.set()
        for t in threads:
            t.join(10)
    return counts


def failed(counts: Counter[tuple[str, str]]) -> dict[tuple[str, str], int]:
    return {k: n for k, n in counts.items() if k[1] != "ok"}


def test_grpc_clients_of_a_rolled_pod_fail_nothing_with_the_operators_connection_age(
    tmp_path: Path,
) -> None:
    with two_pods(tmp_path / "repo", [f"--grpc-max-connection-age={GRPC_MAX_CONNECTION_AGE_MS}"], 41) as (
        a,
        b,
    ):
        counts = roll_under_grpc_load(a, b, 18441)
    assert failed(counts) == {}, counts
    assert counts[("sigterm", "ok")] > 0, counts  # the clients went on, on pod B


def test_without_it_triton_fails_requests_on_open_grpc_connections_after_sigterm(tmp_path: Path) -> None:
    """The behaviour the flag is for: if a Triton release stops doing this, the flag may go."""
    with two_pods(tmp_path / "repo", [], 43) as (a, b):
        counts = roll_under_grpc_load(a, b, 18443)
    after = {k: n for k, n in failed(counts).items() if k[0] == "sigterm"}
    assert after, counts
    assert not {k: n for k, n in failed(counts).items() if k[0] != "sigterm"}, counts
