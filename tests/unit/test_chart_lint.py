"""`helm lint` passes with the defaults and documented options; values.schema.json rejects bad values.

Also home of the helm helpers the other chart tests import (`helm`, `render_chart`).
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "triton-operator"
BUILD_HELM = ROOT / ".ci" / "build-helm.sh"
RELEASE = "triton-operator"
NAMESPACE = "triton-operator"


@functools.cache
def helm_binary() -> str:
    """Path of helm, built once from Go modules by .ci/build-helm.sh; fails with the script's message."""
    done = subprocess.run(
        ["bash", str(BUILD_HELM)], capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        pytest.fail(f".ci/build-helm.sh could not provide helm:\n{done.stderr}", pytrace=False)
    return done.stdout.strip().splitlines()[-1]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm with the given arguments; the caller checks returncode."""
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120, check=False)


def set_args(values: dict[str, str]) -> list[str]:
    """`--set` arguments for the given dotted keys (strings, so the schema sees what helm parses)."""
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def render_chart(*extra: str, include_crds: bool = False) -> list[dict[str, Any]]:
    """`helm template` of the chart as the objects it would apply; fails with helm's message."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra]
    if include_crds:
        args.append("--include-crds")
    done = helm(*args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def lint(*extra: str) -> subprocess.CompletedProcess[str]:
    """`helm lint --strict` of the chart with extra arguments."""
    return helm("lint", str(CHART), "--strict", "--namespace", NAMESPACE, *extra)


def test_lint_passes_with_defaults() -> None:
    done = lint()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize(
    "values",
    [
        {"watchNamespaces": "{serving,staging}"},
        {"replicaCount": "2"},
        {"leaderElection.enabled": "false", "leaderElection.leaseName": "ops-leader"},
        {"metrics.serviceMonitor.enabled": "true", "metrics.serviceMonitor.labels.release": "prom"},
        {"serviceAccount.create": "false", "serviceAccount.name": "ops", "rbac.create": "false"},
        {"image.tag": "0.2.0-rc.1", "image.pullPolicy": "Always", "resources.limits.cpu": "1"},
        {"replicaCount": "0"},
    ],
    ids=[
        "namespaced",
        "standbys",
        "no-election",
        "servicemonitor",
        "bring-your-own-rbac",
        "image-and-limits",
        "paused",
    ],
)
def test_lint_passes_with_documented_options(values: dict[str, str]) -> None:
    done = lint(*set_args(values))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCount": "two"}, "/replicaCount': got string, want integer"),
        ({"replicaCount": "-1"}, "/replicaCount': minimum"),
        (
            {"replicaCount": "2", "leaderElection.enabled": "false"},
            "/replicaCount': maximum: got 2, want 1",
        ),
        ({"replicaCount": "1", "replicas": "1"}, "additional properties 'replicas' not allowed"),
        ({"image.pullPolicy": "Sometimes"}, "/image/pullPolicy': value must be one of"),
        ({"image.registry": "quay.io"}, "additional properties 'registry' not allowed"),
        ({"resources.requests.cpu": "lots"}, "/resources/requests/cpu'"),
        ({"resources.request.cpu": "1"}, "additional properties 'request' not allowed"),
        ({"watchNamespaces": "{Serving}"}, "/watchNamespaces/0'"),
        ({"metrics.service.port": "70000"}, "/metrics/service/port': maximum"),
        ({"metrics.serviceMonitor.interval": "30 seconds"}, "/metrics/serviceMonitor/interval'"),
        (
            {"metrics.serviceMonitor.enabled": "true", "metrics.service.enabled": "false"},
            "/metrics/service/enabled'",
        ),
        ({"leaderElection.enabled": "yes please"}, "/leaderElection/enabled': got string, want boolean"),
        ({"leaderElection.leaseName": "Bad_Name"}, "/leaderElection/leaseName'"),
        ({"peering.enabled": "true"}, "additional properties 'peering' not allowed"),
        ({"rbac.create": "true", "rbac.secrets": "true"}, "additional properties 'secrets' not allowed"),
    ],
    ids=lambda v: ",".join(v) if isinstance(v, dict) else "",
)
def test_lint_rejects_bad_values(values: dict[str, str], complaint: str) -> None:
    done = lint(*set_args(values))
    assert done.returncode != 0, f"helm lint accepted {values}"
    assert complaint in done.stdout + done.stderr
