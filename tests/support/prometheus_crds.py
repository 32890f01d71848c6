"""The Prometheus Operator's CRDs (PodMonitor, ServiceMonitor, PrometheusRule), fetched once from its Go
module by .ci/fetch-prometheus-crds.sh; their schemas check what the operator and the chart make."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FETCH = ROOT / ".ci" / "fetch-prometheus-crds.sh"


@functools.cache
def crds_dir() -> Path:
    done = subprocess.run(["bash", str(FETCH)], capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(f".ci/fetch-prometheus-crds.sh could not provide the CRDs:\n{done.stderr}", pytrace=False)
    return Path(done.stdout.strip().splitlines()[-1])


def crd_path(plural: str) -> Path:
    """The CRD file of monitoring.coreos.com `plural` (podmonitors, servicemonitors, prometheusrules)."""
    return crds_dir() / f"monitoring.coreos.com_{plural}.yaml"


def crd_schema(plural: str) -> dict[str, Any]:
    """The v1 openAPIV3Schema of the kind."""
    crd = yaml.safe_load(crd_path(plural).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema
