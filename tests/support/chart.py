"""Helm helpers shared by the chart tests, the manifest tests and the e2e/chaos sandboxes: helm itself
(built once by .ci/build-helm.sh), `helm template` of the chart, and the kinds it renders."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "triton-operator"
BUILD_HELM = ROOT / ".ci" / "build-helm.sh"
RELEASE = "triton-operator"
NAMESPACE = "triton-operator"
# The kubernetes client model of every kind the chart renders (the schema checks look them up here).
MODEL_OF_KIND = {
    "Namespace": "V1Namespace",
    "ServiceAccount": "V1ServiceAccount",
    "ClusterRole": "V1ClusterRole",
    "ClusterRoleBinding": "V1ClusterRoleBinding",
    "Role": "V1Role",
    "RoleBinding": "V1RoleBinding",
    "Service": "V1Service",
    "ConfigMap": "V1ConfigMap",
    "Deployment": "V1Deployment",
    "CustomResourceDefinition": "V1CustomResourceDefinition",
}


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
