"""`triton-operator repository sync`: the sidecar that mirrors the repository server into a Triton pod.

Each round: long-poll the server's content, plan (manifest.plan_sync) against what this root holds, build
each new or changed model in `<root>/.sync-<model>-<random>/` (files already held are hardlinked, the
others downloaded and checked for size and sha256 while they stream), swap it in with renames, remove
models no longer wanted, then scan the root again: what it holds is what the scan says, never what the
round meant to do. A download that does not match the listed sha256 (the source changed mid-way) aborts
that model's build; the round is retried (with backoff, up to 5 s) against fresh content.

    GET /healthz   200 while the process runs (the sidecar's liveness)
    GET /v1/held   {"generation", "source_generation", "synced", "models", "error", ...}
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import functools
import hashlib
import http.client
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import FrameType
from typing import Any

from triton_operator.repository.httpbase import BoundedHTTPServer, QuietHandler, setup_logging
from triton_operator.repository.manifest import (
    FileEntry,
    HashCache,
    ModelBuild,
    RepositoryContent,
    SyncPlan,
    hash_file,
    is_listed_path,
    plan_sync,
    safe_join,
    scan,
)

log = logging.getLogger("triton_operator.repository")

BUILD_PREFIX = ".sync-"
TRASH_PREFIX = ".trash-sync-"
POLL_WAIT_S = 25.0  # the server answers a long poll after at most this long
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 5.0
READ_TIMEOUT_S = 30.0  # one socket read; a stalled server fails the round after this
_CHUNK = 1 << 20
MAX_CONTENT_BYTES = 256 << 20  # a /v1/content body larger than this is refused


class SyncError(Exception):
    """A round could not complete (server unreachable, an answer malformed, a file not as listed)."""


@dataclass(frozen=True)
class Source:
    """The repository server's base URL, split."""

    host: str
    port: int
    base: str

    @classmethod
    def parse(cls, url: str) -> Source:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"--source must be http://HOST[:PORT], not {url!r}")
        return cls(parts.hostname, parts.port or 80, parts.path.rstrip("/"))

    def get(self, path: str, timeout_s: float) -> http.client.HTTPResponse:
        """GET base+path; the caller reads and closes the response (its connection goes with it)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)
        try:
            conn.request("GET", self.base + path)
            return conn.getresponse()
        except BaseException:
            conn.close()
            raise


def fetch_content(source: Source, wait: str | None) -> RepositoryContent:
    """The server's content; with `wait`, long-polled until its generation differs (or the wait ends)."""
    query = f"?wait={urllib.parse.quote(wait)}&timeout={POLL_WAIT_S:g}" if wait else ""
    try:
        with source.get("/v1/content" + query, POLL_WAIT_S + READ_TIMEOUT_S) as resp:
            if resp.status != 200:
                raise SyncError(f"GET /v1/content answered {resp.status}")
            body = resp.read(MAX_CONTENT_BYTES + 1)
    except (OSError, http.client.HTTPException) as exc:
        raise SyncError(f"GET /v1/content failed: {type(exc).__name__}: {exc}") from None
    if len(body) > MAX_CONTENT_BYTES:
        raise SyncError(f"GET /v1/content answered more than {MAX_CONTENT_BYTES} bytes")
    try:
        return RepositoryContent.from_json(body)
    except ValueError as exc:
        raise SyncError(f"GET /v1/content answered content this agent refuses: {exc}") from None


def _target(folder: Path, path: str) -> Path:
    if not is_listed_path(path):
        raise SyncError(f"unsafe path {path[:200]!r}")
    target = folder.joinpath(*PurePosixPath(path).parts)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    return target


def download(source: Source, model: str, entry: FileEntry, target: Path) -> None:
    """Download one listed file into `target`, checking its size and sha256 as it streams."""
    url = f"/v1/files/{urllib.parse.quote(model, safe='')}/{urllib.parse.quote(entry.path)}"
    where = f"{model}/{entry.path}"
    digest = hashlib.sha256()
    got = 0
    try:
        with source.get(url, READ_TIMEOUT_S) as resp, open(target, "xb") as out:
            if resp.status != 200:
                raise SyncError(
                    f"GET {where} answered {resp.status} (changed or removed since it was listed)"
                )
            length = resp.getheader("Content-Length")
            if length is not None and int(length) != entry.size:
                raise SyncError(f"{where} is {length} bytes on the server, {entry.size} as listed")
            while chunk := resp.read(min(_CHUNK, entry.size - got + 1)):
                got += len(chunk)
                if got > entry.size:
                    break
                digest.update(chunk)
                out.write(chunk)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise SyncError(f"GET {where} failed: {type(exc).__name__}: {exc}") from None
    if got != entry.size:
        raise SyncError(f"{where}: got {got} bytes, {entry.size} listed (the source changed mid-way?)")
    if digest.hexdigest() != entry.sha256:
        raise SyncError(f"{where}: sha256 {digest.hexdigest()} differs from the listed {entry.sha256}")


def _copy_checked(source: Path, target: Path, entry: FileEntry) -> None:
    """Copy a held file where a link is refused (another filesystem), checking its sha256 again."""
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(target, "xb") as out:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != entry.sha256:
        raise SyncError(f"held {source} no longer hashes to {entry.sha256}")


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@functools.cache
def _renameat2() -> Any:
    """libc's renameat2, or None (not Linux, or a libc without it)."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):
        return False  # the filesystem cannot: two renames instead
    raise OSError(code, os.strerror(code), str(a))


def _discard(path: Path, root: Path, name: str) -> None:
    """Rename `path` into the trash (one step), then delete it."""
    trash = Path(tempfile.mkdtemp(prefix=f"{TRASH_PREFIX}{name[:64]}-", dir=root))
    os.rename(path, trash / "old")
    shutil.rmtree(trash, ignore_errors=True)


def disk_usage(root: Path) -> int:
    """Bytes the files under `root` take on disk, each linked file once (as du and the kubelet count)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.stat(os.path.join(folder, name), follow_symlinks=False)
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


@dataclass
class Counters:
    downloaded: int = 0
    linked: int = 0
    copied: int = 0
    builds: int = 0
    removals: int = 0


class Mirror:
    """The agent's root and what it does to it."""

    def __init__(self, root: Path, source: Source, capacity_bytes: int | None = None) -> None:
        self.root = root
        self.source = source
        self.capacity_bytes = capacity_bytes
        self.cache = HashCache()
        self.counters = Counters()

    def check_space(self, build: ModelBuild) -> None:
        """Refuse a build whose downloads do not fit, before downloading anything: free space on the
        volume, and the capacity the pod gives the folder (an emptyDir's sizeLimit is enforced by
        evicting the pod, not by the filesystem)."""
        need = sum(entry.size for entry in build.download)
        st = os.statvfs(self.root)
        free = st.f_bavail * st.f_frsize
        if need > free:
            raise SyncError(f"its new files need {need} bytes, {free} are free in {self.root}")
        if self.capacity_bytes is not None:
            used = disk_usage(self.root)
            if used + need > self.capacity_bytes:
                raise SyncError(
                    f"its new files need {need} bytes; {self.root} holds {used} of the "
                    f"{self.capacity_bytes} bytes of --capacity-bytes: raise the volume's size limit"
                )

    def remove_leftovers(self) -> None:
        """Remove build and trash folders of an earlier run that was killed mid-round."""
        for entry in os.scandir(self.root):
            if entry.name.startswith((BUILD_PREFIX, TRASH_PREFIX)) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)

    def scan(self) -> RepositoryContent:
        return scan(self.root, self.cache)

    def _held_file(self, model: str, path: str, entry: FileEntry) -> Path:
        """The held file to link for `entry`, checked to still hold those bytes (by the hash cache, or
        read again when the cache does not know it)."""
        held = safe_join(self.root, model, path)
        st = os.stat(held, follow_symlinks=False)
        sha = self.cache.get(str(held), st)
        if sha is None:
            _size, sha = hash_file(held, self.cache)
        if sha != entry.sha256 or st.st_size != entry.size:
            raise SyncError(f"held {model}/{path} no longer holds what the last scan saw")
        return held

    def prepare(self, build: ModelBuild) -> Path:
        """Build one model in a new `.sync-*` folder beside the held ones, which stay as they are."""
        self.check_space(build)
        temp = Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{build.name[:64]}-", dir=self.root))
        try:
            temp.chmod(0o755)  # mkdtemp makes it 0700; Triton may run as another user
            for version in build.wanted.versions:
                (temp / str(version)).mkdir(mode=0o755, exist_ok=True)
            for reuse in build.reuse:
                held = self._held_file(reuse.model, reuse.path, reuse.entry)
                target = _target(temp, reuse.entry.path)
                try:
                    os.link(held, target, follow_symlinks=False)
                    self.counters.linked += 1
                except OSError:
                    _copy_checked(held, target, reuse.entry)
                    st = os.stat(held)
                    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # as a link would keep it
                    self.counters.copied += 1
            for entry in build.download:
                target = _target(temp, entry.path)
                download(self.source, build.name, entry, target)
                target.chmod(0o644)
                self.counters.downloaded += 1
            for folder in build.keep_times:  # after every file is in place: adding one moves the time
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(safe_join(self.root, build.name, folder), follow_symlinks=False)
                    os.utime(_target(temp, folder), ns=(st.st_atime_ns, st.st_mtime_ns))
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        return temp

    def commit(self, temp: Path, build: ModelBuild) -> None:
        """Swap a prepared model in for the held one."""
        try:
            self._swap(temp, build.name)
        finally:
            if temp.exists():
                shutil.rmtree(temp, ignore_errors=True)
        self.counters.builds += 1
        for entry in build.wanted.files:  # checked as they came: the next scan need not read them again
            path = safe_join(self.root, build.name, entry.path)
            with contextlib.suppress(OSError):
                self.cache.put(str(path), os.stat(path, follow_symlinks=False), entry.sha256, trusted=True)

    def _swap(self, temp: Path, name: str) -> None:
        final = self.root / name
        if final.exists() or final.is_symlink():
            if _exchange(temp, final):  # Triton never sees the folder missing
                shutil.rmtree(temp, ignore_errors=True)
                return
            _discard(final, self.root, name)
        os.rename(temp, final)

    def remove(self, name: str) -> None:
        _discard(self.root / name, self.root, name)
        self.counters.removals += 1

    def apply(self, plan: SyncPlan) -> Round:
        """Carry out a plan: every model is prepared before any is swapped in (a build may link files of
        another model that this round replaces), then swapped, then the unwanted ones removed. Each model
        alone: one that fails leaves the others done and its held copy as it was."""
        done = Round()
        prepared: list[tuple[Path, ModelBuild]] = []
        try:
            for build in plan.build:
                try:
                    prepared.append((self.prepare(build), build))
                except (SyncError, OSError, ValueError) as exc:
                    done.problems.append(f"model {build.name}: {exc}")
            while prepared:
                temp, build = prepared.pop(0)
                try:
                    self.commit(temp, build)
                    done.built.append(build)
                except OSError as exc:
                    done.problems.append(f"model {build.name}: swapping in failed: {exc}")
        finally:
            for temp, _build in prepared:  # left by an exit mid-round
                shutil.rmtree(temp, ignore_errors=True)
        for name in plan.remove:
            try:
                self.remove(name)
                done.removed.append(name)
            except OSError as exc:
                done.problems.append(f"model {name}: removing failed: {exc}")
        return done


@dataclass
class Round:
    """What one round did."""

    built: list[ModelBuild] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class AgentState:
    """What `/v1/held` answers; written by the loop, read by the HTTP threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.held: RepositoryContent | None = None
        self.source: RepositoryContent | None = None
        self.error: str | None = None
        self.counters: dict[str, int] = {}

    def update(self, **values: Any) -> None:
        with self._lock:
            for name, value in values.items():
                setattr(self, name, value)

    def to_wire(self) -> dict[str, Any]:
        with self._lock:
            held, source, error, counters = self.held, self.source, self.error, dict(self.counters)
        models = held.to_wire(with_files=False)["models"] if held else {}
        return {
            "generation": held.generation if held else None,
            "source_generation": source.generation if source else None,
            "synced": held is not None and source is not None and held.generation == source.generation,
            "models": models,
            "error": error,
            **counters,
        }


def _make_handler(state: AgentState) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            if path == "/healthz":
                self.send_bytes(200, b"ok\n")
            elif path == "/v1/held":
                self.send_json(200, state.to_wire())
            else:
                self.not_found()

    return Handler


class Agent:
    """The sync loop."""

    def __init__(self, mirror: Mirror, state: AgentState) -> None:
        self.mirror = mirror
        self.state = state
        self.stopping = threading.Event()
        self._logged_error: str | None = None

    def _publish(self, held: RepositoryContent, source: RepositoryContent | None, error: str | None) -> None:
        c = self.mirror.counters
        counters = {
            "files_downloaded": c.downloaded,
            "files_linked": c.linked,
            "files_copied": c.copied,
            "models_built": c.builds,
            "models_removed": c.removals,
        }
        self.state.update(held=held, source=source, error=error, counters=counters)
        if error and error != self._logged_error:
            log.error("sync: %s", error)
        elif not error and self._logged_error:
            log.info("sync works again")
        self._logged_error = error

    def run(self) -> None:
        """Rounds until stopped; the first round scans the root before asking the server anything."""
        self.mirror.root.mkdir(parents=True, exist_ok=True)
        self.mirror.remove_leftovers()
        held = self.mirror.scan()
        log.info(
            "sync: %s holds %d models (generation %s)", self.mirror.root, len(held.models), held.generation
        )
        source: RepositoryContent | None = None
        self._publish(held, None, None)
        backoff = BACKOFF_FIRST_S
        wait: str | None = None
        while not self.stopping.is_set():
            try:
                source = fetch_content(self.mirror.source, wait)
                plan = plan_sync(source, held)
                if not plan.empty:
                    # Not synced from here until the round ends: /v1/held must not say "synced" for the
                    # files the round is about to change (a reader saw synced while a model was going).
                    self._publish(held, source, None)
                done = self.mirror.apply(plan) if not plan.empty else Round()
                held = self.mirror.scan()
                if done.built or done.removed:
                    self._log_round(done, held, source)
                if done.problems:
                    raise SyncError("; ".join(done.problems))
                if held.generation != source.generation:
                    raise SyncError(f"held {held.generation} after the round, not {source.generation}")
            except Exception as exc:  # the sidecar stays up: the error shows in /v1/held and the log
                with contextlib.suppress(Exception):
                    held = self.mirror.scan()
                message = str(exc) if isinstance(exc, SyncError) else f"{type(exc).__name__}: {exc}"
                self._publish(held, source, message[:2000])
                wait = None  # retry against fresh content, not only on the next change
                self.stopping.wait(backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)
                continue
            self._publish(held, source, None)
            backoff = BACKOFF_FIRST_S
            wait = source.generation

    def _log_round(self, done: Round, held: RepositoryContent, source: RepositoryContent) -> None:
        log.info(
            "sync to generation %s: built %s (%d files downloaded, %d reused), removed %s; holds %s",
            source.generation,
            ", ".join(b.name for b in done.built) or "none",
            sum(len(b.download) for b in done.built),
            sum(len(b.reuse) for b in done.built),
            ", ".join(done.removed) or "none",
            held.generation,
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `triton-operator repository sync`."""
    parser.add_argument("--source", required=True, help="the repository server, http://HOST:PORT")
    parser.add_argument("--root", type=Path, default=Path("/models"), help="the folder to mirror into")
    parser.add_argument("--port", type=int, default=8090, help="HTTP port of /v1/held (default: %(default)s)")
    parser.add_argument("--address", default="0.0.0.0", help="HTTP address (default: %(default)s)")
    parser.add_argument(
        "--capacity-bytes",
        type=int,
        default=None,
        help="the most bytes the root may hold (the emptyDir's sizeLimit): a model whose files would "
        "cross it is refused before any download, and the error says so",
    )


def run(args: argparse.Namespace) -> int:
    """Run `repository sync` until SIGTERM or SIGINT; returns the exit code."""
    setup_logging()
    try:
        source = Source.parse(args.source)
        if args.capacity_bytes is not None and args.capacity_bytes < 0:
            raise ValueError("--capacity-bytes must be >= 0")
    except ValueError as exc:
        print(f"triton-operator repository sync: error: {exc}", file=sys.stderr)
        return 2
    state = AgentState()
    try:
        http_server = BoundedHTTPServer((args.address, args.port), _make_handler(state), 16)
    except OSError as exc:
        print(
            f"triton-operator repository sync: error: cannot listen on {args.address}:{args.port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    threading.Thread(target=http_server.serve_forever, name="http", daemon=True).start()
    agent = Agent(Mirror(args.root, source, args.capacity_bytes), state)

    def stop(signum: int, frame: FrameType | None) -> None:
        agent.stopping.set()
        raise SystemExit(0)  # leaves a long poll or a download at once; leftovers go on the next start

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "sync agent: mirroring %s into %s, /v1/held on %s:%d",
        args.source,
        args.root,
        args.address,
        http_server.server_address[1],
    )
    with contextlib.suppress(SystemExit):
        agent.run()
    http_server.server_close()
    log.info("sync agent: stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m triton_operator.repository.sync ...` (the same as `triton-operator repository sync`)."""
    parser = argparse.ArgumentParser(prog="triton-operator repository sync", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
