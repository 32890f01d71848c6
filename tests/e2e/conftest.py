"""Fixtures for end-to-end tests on the real sandbox cluster (session-scoped, started on first use).

The `sandbox` fixture moves the test process into the sandbox's network namespace (see cluster.enter).

Set SANDBOX_KEEP=1 to leave the `test` sandbox running after the session (faster reruns).

Several pytest processes may use one sandbox at once (make test's e2e workers, pytest-xdist; or two
sessions with the same E2E_SANDBOX): the sandbox and the chart-installed operator are set up by the first
process that needs them and torn down by the last one done (tests/support/shared_use.py). Each test owns
its namespace; what must not overlap with anything is marked `alone`, and make test's scheduler keeps to
two the modules on the sandbox at once (.ci/pytest_phases.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
from kubernetes import client, config

from sandbox import cluster
from sandbox.config import CACHE_ROOT, REPO_ROOT, SandboxConfig
from tests.e2e import kube
from tests.e2e.incluster import ChartOperator
from tests.support.chart import helm_binary
from tests.support.s3server import free_port_pair
from tests.support.shared_use import SharedUse

# Who uses which sandbox (and its operator) right now: outside the sandboxes' own folders, which
# `sandbox down` removes.
SESSIONS_DIR = CACHE_ROOT / "e2e-sessions"


@dataclass
class Sandbox:
    cfg: SandboxConfig
    bin_dir: Path
    api: client.ApiClient

    @property
    def kubeconfig(self) -> str:
        return str(self.cfg.kubeconfig)

    def env(self) -> dict[str, str]:
        """Environment for kubectl and the operator: this sandbox's kubeconfig and binaries."""
        return {**os.environ, "KUBECONFIG": self.kubeconfig, "PATH": f"{self.bin_dir}:{os.environ['PATH']}"}

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["kubectl", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc


def shared(cfg: SandboxConfig, what: str) -> SharedUse:
    return SharedUse(SESSIONS_DIR / f"{cfg.name}.{what}")


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    # E2E_SANDBOX lets two sessions (say, two developers' runs) use separate clusters side by side.
    cfg = SandboxConfig.from_env(os.environ.get("E2E_SANDBOX", "test"))
    helm_binary()  # built (or found cached) before entering the namespace: no registry in there
    users = shared(cfg, "sandbox")
    with users.locked():  # the first process starts it; the others find it running (up is idempotent)
        bins = cluster.up(cfg)
        users.join()
    # From here on this process (its main thread, which runs the tests) and everything it starts (the
    # operator, kubectl, client threads) is inside the sandbox's network namespace: pod IPs and
    # ClusterIPs answer as they would in a cluster. Threads started before stay outside.
    cluster.enter(cfg)
    api = config.new_client_from_config(config_file=str(cfg.kubeconfig))
    yield Sandbox(cfg=cfg, bin_dir=bins.dir, api=api)
    with users.locked():
        if users.leave() and os.environ.get("SANDBOX_KEEP") != "1":  # the last one out stops it
            leftovers = cluster.down(cfg)
            assert not leftovers, f"sandbox teardown left {leftovers}"


class Operator(Protocol):
    """What tests do with the operator, wherever it runs (a pod from the chart, or a local process)."""

    @property
    def metrics_url(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def restart(self) -> None: ...

    def kill(self) -> None: ...

    def log(self) -> str: ...

    def running(self) -> bool: ...


class OperatorProcess:
    """The real operator (`triton-operator run`) as a local process against the sandbox."""

    def __init__(
        self,
        sandbox: Sandbox,
        log_path: Path,
        status_period_s: float = 3,
        env: dict[str, str] | None = None,
    ):
        self.sandbox = sandbox
        self.log_path = log_path
        self.extra_env = env or {}
        # Tests refresh status faster than the operator's default (10 s) to keep waits short.
        self.status_period_s = status_period_s
        self.health_port = free_port_pair("127.0.0.1")  # /metrics listens on the next port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port + 1}/metrics"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        env = {
            **self.sandbox.env(),
            "TRITON_OPERATOR_STATUS_PERIOD": str(self.status_period_s),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "triton_operator",
                    "run",
                    "--health-address=127.0.0.1",
                    f"--health-port={self.health_port}",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        kube.wait_for(
            lambda: cluster.http_ok(f"http://127.0.0.1:{self.health_port}/healthz"),
            60,
            f"the operator's /healthz (log: {self.log_path})",
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL: the operator gets no chance to finish anything."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def crds(sandbox: Sandbox) -> None:
    """The project's CRDs, applied as a user would (kubectl apply -f crds/), and established."""
    with shared(sandbox.cfg, "sandbox").locked():  # one apply at a time: concurrent ones may conflict
        sandbox.kubectl("apply", "-f", str(REPO_ROOT / "crds"))
        sandbox.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")


@pytest.fixture(scope="session")
def operator(sandbox: Sandbox, crds: None) -> Iterator[ChartOperator]:
    """One operator for the session, installed by `helm install` from charts/ into its own namespace and
    running under the chart's ServiceAccount (see incluster.py); a test that restarts it gets it back.
    Processes sharing the sandbox share it: the first installs it, the last one done uninstalls it."""
    installed = ChartOperator(sandbox, helm_binary())
    users = shared(sandbox.cfg, "operator")
    with users.locked():
        if not users.join():
            installed.installed = True  # by another process: start() waits for its ready pod
        installed.start()
    yield installed
    with users.locked():
        if users.leave():
            installed.uninstall()


@pytest.fixture
def namespace(sandbox: Sandbox, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (with everything in it)."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{uuid.uuid4().hex[:5]}"
    core = client.CoreV1Api(sandbox.api)
    core.create_namespace({"metadata": {"name": name, "labels": {"e2e": "true"}}})
    kube.wait_for(lambda: kube.service_account_exists(core, name, "default"), 30, "default service account")
    yield name
    core.delete_namespace(name)
