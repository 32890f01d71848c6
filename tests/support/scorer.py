"""The `scorer` model the rollout, gateway, Argo CD, chart-lifecycle and chaos tests and the benchmarks
serve: a Python adder published to the sandbox's S3 by version, and read back as a TritonModel (its
canary spec, its status.rollout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandbox.mnist import publish_folder
from tests.e2e.conftest import Sandbox
from tests.golden.triton.triton_models import write_model
from tests.support.objects import CREDENTIALS, get_cr, tritonmodel

MODEL = "scorer"


def publish(sb: Sandbox, workdir: Path, prefix: str, model_py: str, version: int) -> None:
    folder = write_model(workdir / prefix.replace("/", "-"), MODEL, model_py, max_queue_delay_us=500)
    publish_folder(sb.cfg.s3_endpoint, folder, prefix, CREDENTIALS, version)


def canary_model(sb: Sandbox, version: int, prefix: str, rollout: dict[str, Any]) -> dict[str, Any]:
    model = tritonmodel(MODEL, sb.cfg.s3_endpoint, prefix=prefix)
    model["spec"]["version"] = version
    model["spec"]["rollout"] = rollout
    return model


def rollout_of(sb: Sandbox, ns: str) -> dict[str, Any]:
    return ((get_cr(sb, ns, "tritonmodels", MODEL) or {}).get("status") or {}).get("rollout") or {}
