"""Fixtures for end-to-end tests on the real sandbox cluster (session-scoped, started on first use).

Set SANDBOX_KEEP=1 to leave the `test` sandbox running after the session (faster reruns).
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.e2e import kube
from tests.sandbox import cluster
from tests.sandbox.config import SandboxConfig


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
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["kubectl", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    cfg = SandboxConfig.from_env("test")
    bins = cluster.up(cfg)
    api = config.new_client_from_config(config_file=str(cfg.kubeconfig))
    yield Sandbox(cfg=cfg, bin_dir=bins.dir, api=api)
    if os.environ.get("SANDBOX_KEEP") != "1":
        leftovers = cluster.down(cfg)
        assert not leftovers, f"sandbox teardown left {leftovers}"


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
