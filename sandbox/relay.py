"""TCP relay from the host's 127.0.0.1 into a sandbox's network namespace (no veth, no socat).

`python -m sandbox.relay --name NAME --port P [--port Q ...]` runs inside the sandbox's namespace
(started there like every component): a short-lived thread enters the host's namespace (netns.host_netns) and
opens the listening sockets on the host's 127.0.0.1:P, which stay there; each accepted connection is
joined to a connection to 127.0.0.1:P made by the main thread, inside the sandbox. So a root-namespace
`kubectl` reaches the apiserver with the very kubeconfig the sandbox's own processes use.

One asyncio loop, one thread: at most MAX_CONNECTIONS relayed at once (further ones wait for a free
slot), a bounded connect, and both sides closed once both directions are done or either fails.
Extra ports (say, a gateway's HTTP listener) get a relay of their own: cluster.start_relay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Sequence

from sandbox import netns
from sandbox.config import SandboxConfig

log = logging.getLogger("relay")
MAX_CONNECTIONS = 256
CONNECT_TIMEOUT_S = 5.0
CHUNK = 256 * 1024
HOST = "127.0.0.1"


def listen_on_host(ports: Sequence[int]) -> list[socket.socket]:
    """Listening sockets on the host's 127.0.0.1 (made from a thread that entered the host's namespace)."""

    def make() -> list[socket.socket]:
        made: list[socket.socket] = []
        try:
            for port in ports:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                made.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((HOST, port))
                s.listen(128)
                s.setblocking(False)
        except BaseException:
            for s in made:
                s.close()
            raise
        return made

    return netns.call_in_host(make, timeout_s=10)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Copy until EOF (passed on as a half-close: True) or an error (False)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        return False
    return True


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


class Relay:
    """Joins each connection accepted on a listening socket of port P to a new one to target_host:P."""

    def __init__(self, ports: Sequence[int], target_host: str = HOST) -> None:
        self.ports = list(ports)
        self.target_host = target_host
        self.slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self.handlers: set[asyncio.Task[None]] = set()

    async def handle(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self.slots:
            try:
                inner_r, inner_w = await asyncio.wait_for(
                    asyncio.open_connection(self.target_host, port), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError) as exc:
                log.warning("cannot reach %s:%d in the sandbox: %s", self.target_host, port, exc)
                await _close(writer)
                return
            pending = {
                asyncio.ensure_future(_pump(reader, inner_w)),
                asyncio.ensure_future(_pump(inner_r, writer)),
            }
            try:
                while pending:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    if not all(t.result() for t in done):
                        break  # one side failed: drop both, so the other direction cannot hang
            finally:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                await _close(inner_w)
                await _close(writer)

    async def serve(self, sockets: Sequence[socket.socket], stop: asyncio.Event) -> None:
        servers = []
        for port, sock in zip(self.ports, sockets, strict=True):

            async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter, port: int = port) -> None:
                # Python 3.11's start_server keeps no reference to the task it runs this in, and the
                # loop keeps only weak ones: under many connections at once a pending handler was
                # garbage-collected ("Task was destroyed but it is pending!") and its client got a
                # bare close. Hold each handler's task until it ends.
                task = asyncio.current_task()
                if task is not None:
                    self.handlers.add(task)
                try:
                    await self.handle(port, r, w)
                finally:
                    if task is not None:
                        self.handlers.discard(task)

            servers.append(await asyncio.start_server(on_conn, sock=sock))
        log.info("relaying host 127.0.0.1:%s into the sandbox", ",".join(map(str, self.ports)))
        await stop.wait()
        for server in servers:
            server.close()
        for server in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.relay")
    parser.add_argument("--name", required=True, help="the sandbox")
    parser.add_argument("--port", type=int, action="append", required=True, help="a port to relay")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = SandboxConfig.from_env(args.name)
    if not netns.is_current_process_inside(cfg.netns):
        prefix = " ".join(netns.nsenter_argv(cfg.netns))
        print(f"relay: start me inside {cfg.netns} ({prefix} ...)", file=sys.stderr)
        return 2
    sockets = listen_on_host(args.port)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Relay(args.port).serve(sockets, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
