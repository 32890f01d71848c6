"""The sandbox's relay (sandbox/relay.py) on loopback: bytes both ways, half-close, many
connections at once, and a refused target. In the sandbox the two sides are in two network
namespaces; here they are two loopback addresses of one (127.50.0.x)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from sandbox.relay import Relay
from tests.support.s3server import free_port

LISTEN, TARGET = "127.50.0.2", "127.50.0.1"


def echo_server(port: int) -> socket.socket:
    """Echoes every connection's bytes, then closes after the client's half-close."""
    srv = socket.create_server((TARGET, port))

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv


@pytest.fixture
def relay() -> Iterator[tuple[int, int]]:
    """A relay from LISTEN:P to TARGET:P (an echo server) and from LISTEN:Q to TARGET:Q (nothing)."""
    port, dead = free_port(TARGET), free_port(TARGET)
    srv = echo_server(port)
    sockets = []
    for p in (port, dead):
        s = socket.create_server((LISTEN, p))
        s.setblocking(False)
        sockets.append(s)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(
        target=loop.run_until_complete,
        args=(Relay([port, dead], target_host=TARGET).serve(sockets, stop),),
        daemon=True,
    )
    thread.start()
    try:
        yield port, dead
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()
        srv.close()
    assert not thread.is_alive()


def roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection((LISTEN, port), timeout=10) as c:
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)  # the half-close reaches the server, whose close ends the relay
        got = b""
        while chunk := c.recv(65536):
            got += chunk
    return got


def test_bytes_go_both_ways_with_half_close(relay: tuple[int, int]) -> None:
    port, _ = relay
    payload = bytes(range(256)) * 4096  # 1 MiB
    assert roundtrip(port, payload) == payload


def test_many_connections_at_once(relay: tuple[int, int]) -> None:
    port, _ = relay
    results: dict[int, bytes] = {}

    def one(i: int) -> None:
        results[i] = roundtrip(port, f"conn {i} ".encode() * 1000)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == {i: f"conn {i} ".encode() * 1000 for i in range(40)}


def test_a_refused_target_closes_the_client(relay: tuple[int, int]) -> None:
    _, dead = relay
    with socket.create_connection((LISTEN, dead), timeout=10) as c:
        c.settimeout(10)
        assert c.recv(10) == b""  # closed by the relay, not left hanging
