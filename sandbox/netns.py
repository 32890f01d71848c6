"""A sandbox's own network namespace: its pods, nodes and Services get real (non-loopback) addresses
there, and nothing of it reaches the host's network.

Inside it, `lo` is up and 10.244.0.0/16 (nodes and pods) and 10.96.0.0/16 (ClusterIPs) are routed
`local` on it, so any of those addresses can be bound or dialled like 127/8, with no veth and no
address on the host. Processes are started in it with `nsenter --net=...` (which execs, keeping the
pid); a Python thread enters it with setns(2) (os.setns is Python 3.12+, so through libc here).

A namespace is per thread: `enter` moves the calling thread only, and threads and subprocesses it
starts afterwards inherit it. `call_in` runs one function in a short-lived thread that entered a
namespace, leaving the caller where it is.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
PREFIX = "tritonsbx-"
NODE_NETWORK = "10.244.0.0/16"  # node IPs (10.244.0.x) and the nodes' pod CIDRs (10.244.N.0/24)
SERVICE_NETWORK = "10.96.0.0/16"  # the apiserver's --service-cluster-ip-range
# "The host" for what we relay (a user's shell, kubectl): the namespace of pid 1 or, where pid 1 cannot be
# opened (a VM's init with more capabilities than we have), of kthreadd: kernel threads live in the
# initial network namespace.
HOST_NETNS_CANDIDATES = (Path("/proc/1/ns/net"), Path("/proc/2/ns/net"))
CLONE_NEWNET = 0x40000000
TOOLS = {
    "ip": "Debian: apt-get install iproute2",
    "nsenter": "Debian: apt-get install util-linux",
    "nft": "Debian: apt-get install nftables (kube-proxy's nftables mode runs it)",
}


class NetnsError(RuntimeError):
    """A namespace could not be made or entered; the message says what to do."""


def path(ns: str) -> Path:
    return NETNS_DIR / ns


def nsenter_argv(ns: str) -> list[str]:
    """Prefix that runs a command inside `ns` (nsenter execs it: the pid is the command's)."""
    return ["nsenter", f"--net={path(ns)}", "--"]


def setup_commands(ns: str, node0_ip: str) -> list[list[str]]:
    """The `ip` commands that make a fresh (or reused) namespace ready; each is idempotent."""
    return [
        ["ip", "-n", ns, "link", "set", "lo", "up"],
        ["ip", "-n", ns, "route", "replace", "local", NODE_NETWORK, "dev", "lo", "table", "local"],
        # A ClusterIP dialled from inside goes out from node 0's address, which kube-proxy counts as
        # in the cluster (no masquerade) and which its DNAT to a pod IP can answer.
        [
            "ip", "-n", ns, "route", "replace", "local", SERVICE_NETWORK,
            "dev", "lo", "src", node0_ip, "table", "local",
        ],
    ]  # fmt: skip


def missing_tools() -> list[str]:
    """The programs a sandbox namespace needs that are not installed, each with how to install it."""
    return [f"{tool} ({how})" for tool, how in TOOLS.items() if shutil.which(tool) is None]


def exists(ns: str) -> bool:
    return path(ns).exists()


def list_ours() -> list[str]:
    with contextlib.suppress(FileNotFoundError):
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(PREFIX))
    return []


def _ip(*argv: str) -> None:
    proc = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise NetnsError(f"`ip {' '.join(argv)}` failed: {proc.stderr.strip()}")


def create(ns: str, node0_ip: str) -> None:
    """Create `ns` (if it does not exist) with loopback up and the sandbox's local routes."""
    if not exists(ns):
        try:
            _ip("netns", "add", ns)
        except NetnsError as exc:
            raise NetnsError(
                f"{exc}. A sandbox runs in a network namespace of its own: that needs root "
                "(or CAP_SYS_ADMIN and CAP_NET_ADMIN)."
            ) from None
    for argv in setup_commands(ns, node0_ip):
        _ip(*argv[1:])


def delete(ns: str) -> None:
    """Remove `ns` (a process still inside keeps it alive, unnamed, until it exits)."""
    if exists(ns):
        _ip("netns", "delete", ns)


def _inode(p: Path | str) -> tuple[int, int]:
    st = os.stat(p)
    return st.st_dev, st.st_ino


def is_current_process_inside(ns: str) -> bool:
    """Whether this process (its main thread) is in `ns`."""
    try:
        return _inode("/proc/self/ns/net") == _inode(path(ns))
    except FileNotFoundError:
        return False


def is_current_thread_inside(ns: str) -> bool:
    try:
        return _inode("/proc/thread-self/ns/net") == _inode(path(ns))
    except FileNotFoundError:
        return False


def _setns(target: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"setns({target}) failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def enter(ns: str) -> None:
    """Move the calling thread into `ns`; threads and subprocesses it starts from now on are inside too.

    Call it from the main thread before starting threads: threads that already run stay outside.
    """
    if not exists(ns):
        raise NetnsError(f"network namespace {ns} does not exist (is the sandbox up?)")
    _setns(path(ns))


def host_netns() -> Path:
    """A file of the host's network namespace that this process can open."""
    for candidate in HOST_NETNS_CANDIDATES:
        try:
            os.close(os.open(candidate, os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            continue
        return candidate
    own = Path("/proc/self/ns/net")
    if not any(is_current_process_inside(ns) for ns in list_ours()):
        return own
    raise NetnsError("cannot find the host's network namespace (neither pid 1's nor pid 2's can be opened)")


def host_tcp_table() -> Path:
    """/proc/PID/net/tcp of a process in the host's network namespace: its listeners, from anywhere."""
    return host_netns().parent.parent / "net" / "tcp"


def enter_host() -> None:
    """Move the calling thread into the host's network namespace."""
    _setns(host_netns())


def call_in(target: str | Path, fn: Callable[[], T], timeout_s: float | None = None) -> T:
    """Run `fn` in a new thread that entered `target` (a namespace name or a ns file); its result or error.

    Sockets `fn` creates belong to that namespace for their whole life, whichever thread uses them later.
    """
    ns_file = path(target) if isinstance(target, str) else target
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            _setns(ns_file)
            results.append(fn())
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"netns-{ns_file.name}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"call in network namespace {ns_file} did not return within {timeout_s}s")
    if errors:
        raise errors[0]
    return results[0]


def call_in_host(fn: Callable[[], T], timeout_s: float | None = None) -> T:
    return call_in(host_netns(), fn, timeout_s)
