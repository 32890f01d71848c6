"""Run the real `tritonserver` that ships inside the `nvidia-pytriton` wheel, on a loopback address.

The wheel carries Triton 2.51 with only the python backend. Its backend needs the python stub that
matches our interpreter copied next to it, so we assemble a small "distribution" folder in the cache
(symlinks to the wheel's files plus that one copy) instead of writing into site-packages.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

CACHE_ROOT = Path(
    os.environ.get("TRITON_SANDBOX_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "triton-operator-sandbox"
)


@dataclass(frozen=True)
class TritonDist:
    """Where the bundled tritonserver lives and the environment it needs to start."""

    binary: Path
    backend_dir: Path
    library_path: str

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (self.library_path, env.get("LD_LIBRARY_PATH")) if p
        )
        # The python backend stub starts our interpreter's libpython; models import numpy from this venv.
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
        return env

    def command(self, args: Sequence[str]) -> list[str]:
        """`tritonserver ARGS`, with the backend folder pointed at the assembled one unless given."""
        cmd = [str(self.binary), *args]
        if not any(a.startswith("--backend-directory") for a in args):
            cmd.append(f"--backend-directory={self.backend_dir}")
        return cmd


def triton_dist() -> TritonDist:
    """Locate the wheel's tritonserver and assemble its backend folder (idempotent)."""
    try:
        import pytriton  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - message for humans
        raise RuntimeError(
            "nvidia-pytriton is not installed; run `make venv` (it provides the real tritonserver)"
        ) from exc
    wheel_root = Path(pytriton.__file__).parent / "tritonserver"
    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = wheel_root / "python_backend_stubs" / py / "triton_python_backend_stub"
    if not stub.exists():
        raise RuntimeError(f"nvidia-pytriton has no python backend stub for Python {py}")

    backends = CACHE_ROOT / f"triton-backends-py{py}-{_wheel_stamp(wheel_root)}"
    if not (backends / "python" / "triton_python_backend_stub").exists():
        staging = backends.with_name(backends.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "python").mkdir(parents=True)
        for item in (wheel_root / "backends" / "python").iterdir():
            (staging / "python" / item.name).symlink_to(item)
        shutil.copy2(stub, staging / "python" / "triton_python_backend_stub")
        shutil.rmtree(backends, ignore_errors=True)
        staging.rename(backends)

    library_path = os.pathsep.join(str(p) for p in (libs, wheel_root / "external_libs") if p.exists())
    return TritonDist(
        binary=wheel_root / "bin" / "tritonserver", backend_dir=backends, library_path=library_path
    )


def _wheel_stamp(wheel_root: Path) -> str:
    st = (wheel_root / "bin" / "tritonserver").stat()
    return f"{st.st_size}-{int(st.st_mtime)}"


@dataclass
class RunningTriton:
    """A started tritonserver; addresses are host:port strings as tritonclient expects."""

    process: subprocess.Popen[bytes]
    address: str
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"{self.address}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}:{self.metrics_port}/metrics"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_http_ok(url: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None) -> bool:
    """Poll `url` until it answers 200; False on timeout or when `process` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=2) as resp,
        ):
            if resp.status == 200:
                return True
        time.sleep(0.2)
    return False


@contextlib.contextmanager
def run_tritonserver(
    repository: Path,
    address: str = "127.10.0.5",
    *,
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    extra_args: Sequence[str] = (),
    log_path: Path | None = None,
    wait_ready: bool = True,
    timeout_s: float = 60.0,
) -> Iterator[RunningTriton]:
    """Start tritonserver in explicit model-control mode on `address` and stop it afterwards.

    Use a distinct 127/8 address per concurrent server: the ports are the same as in a real pod.
    """
    dist = triton_dist()
    log_path = log_path or repository.parent / f"tritonserver-{address}.log"
    args = [
        f"--model-repository={repository}",
        "--model-control-mode=explicit",
        f"--http-address={address}",
        f"--http-port={http_port}",
        f"--grpc-address={address}",
        f"--grpc-port={grpc_port}",
        f"--metrics-address={address}",
        f"--metrics-port={metrics_port}",
        # Triton waits up to 30 s for open client connections on SIGTERM; tests need not.
        "--exit-timeout-secs=3",
        *extra_args,
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(dist.command(args), env=dist.env(), stdout=log, stderr=subprocess.STDOUT)
    server = RunningTriton(proc, address, http_port, grpc_port, metrics_port, log_path)
    try:
        if wait_ready and not wait_http_ok(f"http://{address}:{http_port}/v2/health/ready", timeout_s, proc):
            raise RuntimeError(f"tritonserver on {address} did not become ready:\n{server.log()[-4000:]}")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
