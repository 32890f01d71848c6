"""The staging Job: golden files, Kubernetes schema validity, job names, security, failure policy."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from triton_operator.api.tritonmodel import StagedSpec, TritonModelSpec
from triton_operator.render.staging import (
    removal_job_name,
    render_removal_job,
    render_staging_job,
    staging_job_name,
)
from triton_operator.staging.errors import PERMANENT_EXIT_CODES, ExitCode

from tests.support.render_checks import check_against_model, deserialize

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "staging"
IMAGE = "ghcr.io/tritonoperator/triton-operator:0.1.0"
LABELS = {
    "app.kubernetes.io/name": "triton",
    "app.kubernetes.io/instance": "mnist",
    "app.kubernetes.io/component": "staging",
    "app.kubernetes.io/managed-by": "triton-operator",
}
DIGEST = "sha256:" + "0123456789abcdef" * 4

S3_WITH_CREDENTIALS: dict[str, Any] = {
    "serverRef": {"name": "triton-a"},
    "modelName": "mnist_mlp",
    "version": 2,
    "source": {
        "s3": {
            "bucket": "models",
            "prefix": "mnist/v2",
            "endpoint": "http://minio.storage:9000",
            "region": "eu-west-1",
            "credentialsSecret": {
                "name": "s3-credentials",
                "accessKeyIdKey": "id",
                "secretAccessKeyKey": "key",
            },
        },
        "digest": DIGEST,
    },
}
HTTP_WITH_CONFIG: dict[str, Any] = {
    "serverRef": {"name": "triton-a"},
    "source": {"http": {"url": "https://models.example.com/add.tar.gz", "sha256": "f" * 64}},
    "config": {
        "backend": "python",
        "maxBatchSize": 8,
        "inputs": [{"name": "INPUT0", "dataType": "FP32", "dims": [4]}],
        "outputs": [{"name": "OUTPUT0", "dataType": "FP32", "dims": [4]}],
        "dynamicBatching": {"maxQueueDelayMicroseconds": 100},
    },
}
PVC: dict[str, Any] = {
    "serverRef": {"name": "triton-a"},
    "source": {"pvc": {"claimName": "training-output", "path": "exports/mnist"}},
}
CASES = {"s3": S3_WITH_CREDENTIALS, "http": HTTP_WITH_CONFIG, "pvc": PVC}


def _render(raw: dict[str, Any], capacity: int | None = 10 * 2**30) -> dict[str, Any]:
    spec = TritonModelSpec.model_validate(raw)
    return render_staging_job(
        "mnist",
        "ml",
        spec,
        server_claim="triton-a-models",
        job_name=staging_job_name("mnist", spec),
        operator_image=IMAGE,
        labels=LABELS,
        capacity_bytes=capacity,
    )


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    """Full expected Jobs; regenerate with UPDATE_GOLDEN=1 and review the diff."""
    rendered = _render(CASES[case])
    path = GOLDEN / f"job-{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(rendered, sort_keys=False, width=110))
    assert rendered == yaml.safe_load(path.read_text())


@pytest.mark.parametrize("case", sorted(CASES))
def test_job_fits_the_kubernetes_schema(case: str) -> None:
    job = _render(CASES[case])
    check_against_model(job, "V1Job", "Job")
    assert deserialize(job, "V1Job").metadata.name == job["metadata"]["name"]


def test_args_carry_the_staged_spec_and_no_credentials() -> None:
    job = _render(S3_WITH_CREDENTIALS)
    container = _pod(job)["containers"][0]
    args = container["args"]
    assert args[0] == "stage" and container["image"] == IMAGE and "command" not in container
    staged = StagedSpec.model_validate_json(args[args.index("--spec") + 1])
    assert staged == StagedSpec.from_spec("mnist", TritonModelSpec.model_validate(S3_WITH_CREDENTIALS))
    assert args[args.index("--repository") + 1] == "/models"
    assert args[args.index("--capacity-bytes") + 1] == str(10 * 2**30)
    assert "--source-root" not in args
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ACCESS_KEY_ID"] == {
        "name": "AWS_ACCESS_KEY_ID",
        "valueFrom": {"secretKeyRef": {"name": "s3-credentials", "key": "id"}},
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "s3-credentials",
        "key": "key",
    }
    assert all("value" not in e for name, e in env.items() if name.startswith("AWS_"))
    assert (
        "--capacity-bytes" not in _pod(_render(S3_WITH_CREDENTIALS, capacity=None))["containers"][0]["args"]
    )


def test_anonymous_s3_and_http_get_no_credentials() -> None:
    anonymous = json.loads(json.dumps(S3_WITH_CREDENTIALS))
    del anonymous["source"]["s3"]["credentialsSecret"]
    for raw in (anonymous, HTTP_WITH_CONFIG):
        names = {e["name"] for e in _pod(_render(raw))["containers"][0]["env"]}
        assert not any(n.startswith("AWS_") for n in names)


def test_volumes() -> None:
    pod = _pod(_render(PVC))
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "triton-a-models"}
    assert mounts["/models"]["name"] == "models" and not mounts["/models"].get("readOnly")
    assert volumes["source"]["persistentVolumeClaim"] == {"claimName": "training-output", "readOnly": True}
    assert mounts["/source"] == {"name": "source", "mountPath": "/source", "readOnly": True}
    assert "emptyDir" in volumes["tmp"] and mounts["/tmp"]["name"] == "tmp"
    args = pod["containers"][0]["args"]
    assert args[args.index("--source-root") + 1] == "/source"
    assert "source" not in {v["name"] for v in _pod(_render(S3_WITH_CREDENTIALS))["volumes"]}


def test_failure_policy_fails_fast_on_permanent_errors_only() -> None:
    job = _render(HTTP_WITH_CONFIG)
    spec = job["spec"]
    assert spec["backoffLimit"] == 3 and spec["activeDeadlineSeconds"] > 0
    assert _pod(job)["restartPolicy"] == "Never"
    fail_job = spec["podFailurePolicy"]["rules"][0]
    assert fail_job["action"] == "FailJob"
    codes = fail_job["onExitCodes"]["values"]
    assert fail_job["onExitCodes"]["containerName"] == _pod(job)["containers"][0]["name"]
    assert codes == sorted(codes) == list(PERMANENT_EXIT_CODES)  # the apiserver wants them sorted
    for permanent in ("SOURCE_NOT_FOUND", "ACCESS_DENIED", "DIGEST_MISMATCH", "CONFIG_REJECTED", "TOO_LARGE"):
        assert int(ExitCode[permanent]) in codes
    for transient in (ExitCode.INTERNAL, ExitCode.SOURCE_UNAVAILABLE):
        assert int(transient) not in codes
    container = _pod(job)["containers"][0]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "nvidia.com/gpu" not in json.dumps(job)


def test_restricted_security_context() -> None:
    pod = _pod(_render(S3_WITH_CREDENTIALS))
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]["securityContext"]
    assert container == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }


def _name(raw: dict[str, Any], cr: str = "mnist") -> str:
    return staging_job_name(cr, TritonModelSpec.model_validate(raw))


def _with(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(raw))
    node = copy
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return copy


def test_job_name_changes_with_every_staged_input() -> None:
    base = _name(S3_WITH_CREDENTIALS)
    assert base == _name(S3_WITH_CREDENTIALS)  # deterministic
    assert base.startswith("mnist-stage-") and len(base) <= 63
    changes = [
        ("version", 3),
        ("modelName", "mnist_v2"),
        ("serverRef.name", "triton-b"),
        ("source.digest", "sha256:" + "1" * 64),
        ("source.s3.prefix", "mnist/v3"),
        ("source.s3.bucket", "other"),
        ("source.s3.endpoint", "http://minio.other:9000"),
        ("config", HTTP_WITH_CONFIG["config"]),
    ]
    names = {base}
    for path, value in changes:
        name = _name(_with(S3_WITH_CREDENTIALS, path, value))
        assert name not in names, path
        names.add(name)
    config_change = _with(HTTP_WITH_CONFIG, "config.maxBatchSize", 4)
    assert _name(config_change) != _name(HTTP_WITH_CONFIG)
    assert _name(_with(HTTP_WITH_CONFIG, "source.http.sha256", "e" * 64)) != _name(HTTP_WITH_CONFIG)


def test_job_name_ignores_unrelated_fields() -> None:
    base = _name(S3_WITH_CREDENTIALS)
    assert _name(_with(S3_WITH_CREDENTIALS, "keepFilesOnDelete", False)) == base
    # Pointing at another Secret is how a user fixes AccessDenied (a FailJob): it must get a new Job.
    assert _name(_with(S3_WITH_CREDENTIALS, "source.s3.credentialsSecret.name", "rotated")) != base


@pytest.mark.parametrize("cr", ["m", "a" * 63, "model.with.dots-" + "x" * 60, "a-" * 30 + "b"])
def test_job_name_is_a_valid_label_value_for_any_cr_name(cr: str) -> None:
    name = _name(S3_WITH_CREDENTIALS, cr)
    assert len(name) <= 63
    assert name[0].isalnum() and name[-1].isalnum()
    assert all(c.isalnum() or c in "-." for c in name) and name == name.lower()


# --- the removal Job (keepFilesOnDelete: false) ----------------------------------------------------


def _render_removal(raw: dict[str, Any]) -> dict[str, Any]:
    spec = TritonModelSpec.model_validate(raw)
    return render_removal_job(
        "mnist",
        "ml",
        spec,
        server_claim="triton-a-models",
        job_name=removal_job_name("mnist", spec),
        operator_image=IMAGE,
        labels=LABELS,
    )


def test_removal_golden() -> None:
    """The full removal Job of the S3 model; regenerate with UPDATE_GOLDEN=1 and review the diff."""
    rendered = _render_removal(S3_WITH_CREDENTIALS)
    path = GOLDEN / "job-remove.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(yaml.safe_dump(rendered, sort_keys=False, width=110))
    assert rendered == yaml.safe_load(path.read_text())


@pytest.mark.parametrize("case", sorted(CASES))
def test_removal_job_fits_the_kubernetes_schema(case: str) -> None:
    job = _render_removal(CASES[case])
    check_against_model(job, "V1Job", "Job")
    assert deserialize(job, "V1Job").metadata.name == job["metadata"]["name"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_removal_job_removes_the_staged_version_with_only_the_repository_mounted(case: str) -> None:
    raw = CASES[case]
    removal, staging = _pod(_render_removal(raw)), _pod(_render(raw))
    container = removal["containers"][0]
    args = container["args"]
    assert args[0] == "stage" and "--remove" in args
    spec = TritonModelSpec.model_validate(raw)
    assert StagedSpec.model_validate_json(args[args.index("--spec") + 1]) == StagedSpec.from_spec(
        "mnist", spec
    )
    assert args[args.index("--repository") + 1] == "/models"
    assert "--source-root" not in args and "--capacity-bytes" not in args
    assert container["env"] == [{"name": "HOME", "value": "/tmp"}]  # no credentials
    assert {v["name"] for v in removal["volumes"]} == {"models", "tmp"}
    # The same pod as staging otherwise: security, the repository claim, the termination log.
    assert removal["securityContext"] == staging["securityContext"]
    assert container["securityContext"] == staging["containers"][0]["securityContext"]
    assert removal["volumes"][0] == staging["volumes"][0]
    assert container["terminationMessagePath"] == staging["containers"][0]["terminationMessagePath"]
    job = _render_removal(raw)
    assert job["metadata"]["labels"] == LABELS and job["spec"]["template"]["metadata"]["labels"] == LABELS
    assert job["spec"]["podFailurePolicy"] == _render(raw)["spec"]["podFailurePolicy"]
    assert 0 < job["spec"]["activeDeadlineSeconds"] <= 600


def test_removal_job_name_is_per_model_version_and_server_and_never_a_staging_name() -> None:
    spec = TritonModelSpec.model_validate(S3_WITH_CREDENTIALS)
    name = removal_job_name("mnist", spec)
    assert name == removal_job_name("mnist", spec) and name.startswith("mnist-remove-")
    assert name != staging_job_name("mnist", spec)
    names = {name}
    for path, value in (("version", 3), ("modelName", "other"), ("serverRef.name", "triton-b")):
        changed = removal_job_name(
            "mnist", TritonModelSpec.model_validate(_with(S3_WITH_CREDENTIALS, path, value))
        )
        assert changed not in names, path
        names.add(changed)
    # What is removed does not depend on where the files came from.
    moved = _with(S3_WITH_CREDENTIALS, "source.s3.prefix", "mnist/elsewhere")
    assert removal_job_name("mnist", TritonModelSpec.model_validate(moved)) == name
    long = removal_job_name("a-" * 40, spec)
    assert len(long) <= 63 and long[0].isalnum() and long[-1].isalnum()
