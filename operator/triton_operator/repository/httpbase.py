"""The small HTTP server both programs run: stdlib, a bounded number of handler threads, no access log."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("triton_operator.repository")

# A connection beyond the bound is answered 503 at once instead of queueing a thread. Each sync agent
# holds one long poll and downloads one file at a time: 128 serves some 60 replicas.
DEFAULT_MAX_CONNECTIONS = 128
SOCKET_TIMEOUT_S = 60.0  # a client that stops reading or writing frees its thread after this


class BoundedHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with at most `max_connections` handler threads (daemon threads)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_connections: int
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(
                    b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n"
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-answer is no error of ours; anything else is logged in one line.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        log.error("error answering %s: %s: %s", client_address[0], type(exc).__name__, exc)


class QuietHandler(BaseHTTPRequestHandler):
    """No line per request; JSON helpers."""

    timeout = SOCKET_TIMEOUT_S
    server_version = "triton-operator-repository"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_json(self, status: int, body: Any) -> None:
        """Answer with a JSON body."""
        data = (json.dumps(body, separators=(",", ":")) + "\n").encode()
        self.send_bytes(status, data, "application/json")

    def send_bytes(self, status: int, data: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        """Answer with a small body."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def not_found(self) -> None:
        """404 with a one-line body."""
        self.send_bytes(404, b"not found\n")


def setup_logging() -> None:
    """One line per event on stderr: time, level, message."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )
