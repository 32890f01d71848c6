"""The `scorer` model the rollout, gateway, Argo CD, chart-lifecycle and chaos tests and the benchmarks
serve: a Python adder published to the sandbox's S3 by version, and read back as a TritonModel (its
canary spec, its status.rollout)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from triton_operator.render.labels import COMMAND_ANNOTATION

from sandbox.mnist import publish_folder
from tests.e2e.conftest import Sandbox
from tests.golden.triton.triton_models import write_model
from tests.support.objects import CREDENTIALS, get_cr, tritonmodel

MODEL = "scorer"
# The versions a routed scorer serves behind its router.
VERSIONS = f"{MODEL}~versions"


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


def rollout_command(sb: Sandbox, ns: str, command: str) -> None:
    """A manual rollout command (abort, retry, promote) on the model, as README says to give it."""
    value = f"{command} {time.time_ns()}"
    sb.kubectl("annotate", "-n", ns, f"tritonmodel/{MODEL}", f"{COMMAND_ANNOTATION}={value}", "--overwrite")


def inference_counts(ips: list[str]) -> Counter[str]:
    """nv_inference_count of the versions behind the router, summed over pods, by version."""
    counts: Counter[str] = Counter()
    for ip in ips:
        with urllib.request.urlopen(f"http://{ip}:8002/metrics", timeout=10) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("nv_inference_count{") and f'model="{VERSIONS}"' in line:
                    version = line.split('version="', 1)[1].split('"', 1)[0]
                    counts[version] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def loaded_versions(ip: str) -> set[str]:
    """The versions behind the router that the Triton at `ip` lists READY."""
    req = urllib.request.Request(f"http://{ip}:8000/v2/repository/index", data=b"{}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        rows = json.load(resp)
    return {r["version"] for r in rows if r["name"] == VERSIONS and r.get("state") == "READY"}
