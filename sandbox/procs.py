"""Background processes of a sandbox: start detached with a pidfile, stop, and sweep leftovers.

Every process starts inside the sandbox's network namespace (`nsenter --net=...`, which execs: the
pid recorded is the program's) and gets MARKER_ENV=<sandbox root> in its environment (children
inherit both), so `down` finds and stops everything of ours, even what a killed run left behind, by
reading /proc.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from sandbox import netns
from sandbox.config import MARKER_ENV, SandboxConfig


def kubectl(
    program: str,
    kubeconfig: Path,
    *args: str,
    stdin: str | None = None,
    error: type[Exception] = RuntimeError,
    shown: int = 3,
) -> str:
    """kubectl's output for `args` against `kubeconfig`; a failure raises `error` with the command's first
    `shown` words and kubectl's own message (each sandbox part raises its own error type)."""
    proc = subprocess.run(
        [program, f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        raise error(f"kubectl {' '.join(args[:shown])} failed: {proc.stderr.strip()}")
    return proc.stdout


def apply_server_side(
    program: str, kubeconfig: Path, objects: Sequence[dict[str, Any]], error: type[Exception] = RuntimeError
) -> None:
    """`kubectl apply --server-side --force-conflicts` of `objects`: each sandbox part owns its objects."""
    stream = "\n".join(json.dumps(o) for o in objects)
    apply = ("apply", "--server-side", "--force-conflicts", "-f", "-")
    kubectl(program, kubeconfig, *apply, stdin=stream, error=error, shown=3)


def get_ok(url: str, ca_file: Path | None = None) -> bool:
    """Whether a GET of `url` answers 200 within 2 s (over https verified against `ca_file` if given)."""
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_for(
    what: str,
    check: Callable[[], bool],
    cfg: SandboxConfig,
    deadline: float,
    *,
    components: Sequence[str],
    log_of: Callable[[str], Path],
    timed_out_hint: str,
    error: type[Exception] = RuntimeError,
    interval_s: float = 0.5,
) -> None:
    """Poll `check` (its exceptions count as not yet) until it is true. One of `components` exiting, or
    the deadline, raises `error`: the one that exited with its log (`log_of`), the deadline with
    `timed_out_hint` (where to look)."""
    while True:
        with contextlib.suppress(Exception):
            if check():
                return
        for name in components:
            if (cfg.run_dir / f"{name}.pid").exists() and not pid_of(cfg, name):
                raise error(f"{name} exited while waiting for {what}; see {log_of(name)}")
        if time.monotonic() > deadline:
            raise error(f"timed out waiting for {what}; {timed_out_hint}")
        time.sleep(interval_s)


def stop_component(cfg: SandboxConfig, name: str, grace_s: float = 10.0) -> None:
    """Stop the process `spawn` started as `name`, if it runs, and forget its pid file."""
    pid = pid_of(cfg, name)
    if pid:
        stop([pid], grace_s=grace_s)
    with contextlib.suppress(FileNotFoundError):
        (cfg.run_dir / f"{name}.pid").unlink()


def file_args(paths: Sequence[Path]) -> list[str]:
    """`-f path` for each path, as kubectl takes several files."""
    return [arg for p in paths for arg in ("-f", str(p))]


class Spawn(Protocol):
    """How a sandbox part starts its processes: `spawn` below, or a test's wrapper around it."""

    def __call__(
        self, cfg: SandboxConfig, name: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> int: ...


def spawn(cfg: SandboxConfig, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Start `argv` inside the sandbox's namespace in its own session; logs to logs/<name>.log, pid to
    run/<name>.pid."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ if env is None else env)
    full_env[MARKER_ENV] = str(cfg.root)
    with open(cfg.log_dir / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            [*netns.nsenter_argv(cfg.netns), *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
            cwd=cfg.root,
        )
    (cfg.run_dir / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def pid_of(cfg: SandboxConfig, name: str) -> int | None:
    """The pid recorded for `name`, if that process still runs."""
    try:
        pid = int((cfg.run_dir / f"{name}.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def pid_alive(pid: int) -> bool:
    """Whether the process runs (a zombie, exited but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not alive for our purposes.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def stop(pids: Iterable[int], grace_s: float = 10.0) -> None:
    """SIGTERM each process group, then SIGKILL whatever is left after `grace_s`."""
    pids = [p for p in pids if pid_alive(p)]
    for pid in pids:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if pid_alive(pid):
            _signal_group(pid, signal.SIGKILL)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def marked_pids(cfg: SandboxConfig) -> list[int]:
    """Processes (ours excluded) whose environment says they belong to this sandbox."""
    needle = f"{MARKER_ENV}={cfg.root}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def listeners_in(
    prefixes: Sequence[str], ports: Sequence[int], tcp_table: Path = Path("/proc/thread-self/net/tcp")
) -> list[str]:
    """Listening TCP sockets on one of `ports` (of 127.0.0.1 or any address) or on an address under one
    of `prefixes`, in the network namespace `tcp_table` shows (by default the calling thread's;
    /proc/1/net/tcp: the host's)."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for line in tcp_table.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            ip = ".".join(str(int(hex_ip[i : i + 2], 16)) for i in (6, 4, 2, 0))
            port = int(hex_port, 16)
            if (port in ports and ip in ("127.0.0.1", "0.0.0.0")) or any(ip.startswith(p) for p in prefixes):
                out.append(f"{ip}:{port}")
    return out
