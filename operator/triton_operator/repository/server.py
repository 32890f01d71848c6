"""`triton-operator repository serve`: serve a model repository's content to the replicas' sync agents.

The only pod that mounts the server's PVC (read-only). A thread rescans the root every interval and
publishes what it finds; a changed scan is published only once a second scan a moment later agrees, so
a version folder met between staging's two renames is never published.

    GET /healthz                           200 once the first scan finished, else 503
    GET /v1/content[?wait=G&timeout=S]     the content (manifest.py's wire format); with `wait`, answered
                                           when the generation differs from G, or after S s (at most 30);
                                           with `fresh=1`, after a scan made for the asking
    GET /v1/files/<model>/<path>           a listed file (Content-Length, X-Sha256); 404 for anything else
    GET /v1/stats                          counters: scans, files and bytes served, files refused
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from triton_operator.repository.httpbase import (
    DEFAULT_MAX_CONNECTIONS,
    BoundedHTTPServer,
    QuietHandler,
    setup_logging,
)
from triton_operator.repository.manifest import (
    FileEntry,
    HashCache,
    RepositoryContent,
    ScanUnstable,
    safe_join,
    scan,
)

log = logging.getLogger("triton_operator.repository")

MAX_WAIT_S = 30.0
SETTLE_S = 0.2  # between a scan that found a change and the scan that confirms it
CONFIRM_TRIES = 5
_CHUNK = 1 << 20


@dataclass
class Stats:
    """What the server did since it started."""

    scans: int = 0
    files_served: int = 0
    bytes_served: int = 0
    files_refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def to_wire(self) -> dict[str, int]:
        with self.lock:
            return {
                "scans": self.scans,
                "files_served": self.files_served,
                "bytes_served": self.bytes_served,
                "files_refused": self.files_refused,
            }


class Published:
    """The latest content, its body and an index of its files; waiters wake when it changes."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.content: RepositoryContent | None = None
        self.body = b""
        self.files: dict[tuple[str, str], FileEntry] = {}

    def publish(self, content: RepositoryContent) -> None:
        body = (content.to_json() + "\n").encode()
        files = {(m.name, f.path): f for m in content.models.values() for f in m.files}
        with self._changed:
            self.content, self.body, self.files = content, body, files
            self._changed.notify_all()

    def current(self) -> tuple[RepositoryContent | None, bytes]:
        with self._changed:
            return self.content, self.body

    def wait_for_change(self, generation: str, timeout_s: float) -> tuple[RepositoryContent | None, bytes]:
        """The content once its generation differs from `generation`, or at the timeout."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self.content is not None and self.content.generation == generation:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self.content, self.body

    def entry(self, model: str, path: str) -> FileEntry | None:
        with self._changed:
            return self.files.get((model, path))


class Scanner(threading.Thread):
    """Rescans the root every interval and publishes a change once a second scan confirms it."""

    def __init__(self, root: Path, interval_s: float, published: Published, stats: Stats) -> None:
        super().__init__(name="scanner", daemon=True)
        self.root = root
        self.interval_s = interval_s
        self.published = published
        self.stats = stats
        self.cache = HashCache()
        self.stopping = threading.Event()
        self._last_error: str | None = None
        # One scan at a time: the loop's and those asked for with `fresh` (they share the hash cache).
        self._scanning = threading.Lock()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.scan_once()
            self.stopping.wait(self.interval_s)

    def _scan(self) -> RepositoryContent:
        self.stats.add(scans=1)
        return scan(self.root, self.cache)

    def scan_once(self) -> None:
        """One scan (and its confirmations); errors are logged once each, the last content stays."""
        with self._scanning:
            self._scan_and_publish()

    def _scan_and_publish(self) -> None:
        try:
            content = self._scan()
            current, _ = self.published.current()
            if current is not None and content.generation == current.generation:
                self._recovered()
                return
            for _ in range(CONFIRM_TRIES):
                if self.stopping.wait(SETTLE_S):
                    return
                again = self._scan()
                if again.generation == content.generation:
                    break
                content = again
            else:
                raise ScanUnstable(f"the content changed in each of {CONFIRM_TRIES + 1} scans in a row")
        except (OSError, ScanUnstable) as exc:
            message = f"{type(exc).__name__}: {exc}"
            if message != self._last_error:
                log.error("scan of %s failed (the last content is kept): %s", self.root, message)
                self._last_error = message
            return
        self._recovered()
        self.published.publish(content)
        log.info(
            "content generation %s: %d models (%d files hashed so far)",
            content.generation,
            len(content.models),
            self.cache.hashed,
        )

    def _recovered(self) -> None:
        if self._last_error is not None:
            log.info("scan of %s works again", self.root)
            self._last_error = None


def _make_handler(root: Path, published: Published, stats: Stats, scanner: Scanner) -> type[QuietHandler]:
    real_root = os.path.realpath(root)

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/healthz":
                content, _ = published.current()
                ok = content is not None
                self.send_bytes(200 if ok else 503, b"ok\n" if ok else b"first scan not finished\n")
            elif url.path == "/v1/content":
                self._content(urllib.parse.parse_qs(url.query))
            elif url.path == "/v1/stats":
                self.send_json(200, stats.to_wire())
            elif url.path.startswith("/v1/files/"):
                self._file(url.path[len("/v1/files/") :])
            else:
                self.not_found()

        def _content(self, query: dict[str, list[str]]) -> None:
            try:
                timeout_s = min(MAX_WAIT_S, max(0.0, float(query.get("timeout", ["25"])[0])))
            except ValueError:
                self.send_bytes(400, b"timeout must be a number of seconds\n")
                return
            wait = query.get("wait", [None])[0]
            if query.get("fresh", ["0"])[0] == "1":
                # The operator asks before loading a model on a pod: what a staging Job placed a moment
                # ago must be in the answer, not wait for the next interval's scan.
                scanner.scan_once()
            if wait is not None:
                content, body = published.wait_for_change(wait, timeout_s)
            else:
                content, body = published.current()
            if content is None:
                self.send_bytes(503, b"first scan not finished\n")
                return
            self.send_bytes(200, body, "application/json")

        def _file(self, quoted: str) -> None:
            model, _, path = urllib.parse.unquote(quoted).partition("/")
            entry = published.entry(model, path)
            if entry is None:
                stats.add(files_refused=1)
                self.not_found()
                return
            try:
                full = safe_join(root, model, path)
                # Listed paths hold no link (the scan skips them), but one may have appeared since:
                # the file must still resolve to the same place under the root.
                if os.path.realpath(full) != os.path.join(real_root, model, *path.split("/")):
                    raise FileNotFoundError(path)
                fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except (OSError, ValueError):
                stats.add(files_refused=1)
                self.not_found()
                return
            with os.fdopen(fd, "rb") as handle:
                if os.fstat(fd).st_size != entry.size:  # changed since the scan: the next scan lists it
                    stats.add(files_refused=1)
                    self.not_found()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(entry.size))
                self.send_header("X-Sha256", entry.sha256)
                self.end_headers()
                sent = self._stream(handle, model, entry)
            stats.add(files_served=1, bytes_served=sent)

        def _stream(self, handle: Any, model: str, entry: FileEntry) -> int:
            """Send the file; the last chunk is held back until the whole file hashed to the listed
            sha256, so a file rewritten in place reaches the client cut short, never complete and wrong."""
            digest = hashlib.sha256()
            pending = b""
            sent = 0
            left = entry.size
            while left > 0:
                chunk = handle.read(min(_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                digest.update(chunk)
                if pending:
                    self.wfile.write(pending)
                    sent += len(pending)
                pending = chunk
            if left == 0 and digest.hexdigest() == entry.sha256:
                self.wfile.write(pending)
                sent += len(pending)
            else:
                log.error("%s/%s changed since it was listed: the download was cut short", model, entry.path)
                self.close_connection = True
            return sent

    return Handler


@dataclass
class RepositoryServer:
    """The scanner and the HTTP server, started and stopped together (also used in-process by tests)."""

    root: Path
    address: str
    port: int
    interval_s: float = 1.0
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def __post_init__(self) -> None:
        self.published = Published()
        self.stats = Stats()
        self.scanner = Scanner(self.root, self.interval_s, self.published, self.stats)
        handler = _make_handler(self.root, self.published, self.stats, self.scanner)
        self.http = BoundedHTTPServer((self.address, self.port), handler, self.max_connections)
        self._thread = threading.Thread(target=self.http.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self.scanner.start()
        self._thread.start()

    def stop(self) -> None:
        self.scanner.stopping.set()
        self.http.shutdown()
        self.http.server_close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `triton-operator repository serve`."""
    parser.add_argument("--root", type=Path, default=Path("/models"), help="the model repository folder")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (default: %(default)s)")
    parser.add_argument("--address", default="0.0.0.0", help="HTTP address (default: %(default)s)")
    parser.add_argument(
        "--rescan-interval",
        type=float,
        default=1.0,
        help="seconds between scans of the root (default: %(default)s); unchanged files are not re-read",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="connections served at once; more are answered 503 (default: %(default)s)",
    )


def _stop_on_sigterm() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def run(args: argparse.Namespace) -> int:
    """Run `repository serve` until SIGTERM or SIGINT; returns the exit code."""
    setup_logging()
    if args.rescan_interval <= 0 or args.max_connections < 1:
        print(
            "triton-operator repository serve: error: --rescan-interval > 0 and --max-connections >= 1",
            file=sys.stderr,
        )
        return 2
    try:
        server = RepositoryServer(
            args.root, args.address, args.port, args.rescan_interval, args.max_connections
        )
    except OSError as exc:
        print(
            f"triton-operator repository serve: error: cannot listen on {args.address}:{args.port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    stop = _stop_on_sigterm()
    server.start()
    log.info(
        "repository server: serving %s on %s:%d, rescan every %.1f s",
        args.root,
        args.address,
        server.http.server_address[1],
        args.rescan_interval,
    )
    while not stop.wait(3600):
        pass
    server.stop()
    log.info("repository server: stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m triton_operator.repository.server ...` (the same as `triton-operator repository serve`)."""
    parser = argparse.ArgumentParser(prog="triton-operator repository serve", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
