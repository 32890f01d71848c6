"""The staging Job of a TritonModel: runs `triton-operator stage` with the server's PVC mounted at /models."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from triton_operator.api.tritonmodel import StagedSpec, TritonModelSpec
from triton_operator.staging.errors import PERMANENT_EXIT_CODES

CONTAINER_NAME = "stage"
REPOSITORY_PATH = "/models"
SOURCE_PATH = "/source"
TERMINATION_LOG = "/dev/termination-log"
# uid/gid of Triton's pods too, so staged files belong to the user that reads them.
STAGING_UID = 1000
BACKOFF_LIMIT = 3
ACTIVE_DEADLINE_SECONDS = 3600
# Downloads go to the PVC; /tmp only holds boto3's and Python's scratch files.
TMP_SIZE_LIMIT = "256Mi"
JOB_NAME_MAX = 63
_HASH_LENGTH = 10

Manifest = dict[str, Any]


def staged_inputs(model_cr_name: str, spec: TritonModelSpec) -> dict[str, Any]:
    """Everything that decides what is staged where: server, model name, version, source, digest, config."""
    staged = StagedSpec.from_spec(model_cr_name, spec).model_dump(mode="json", exclude_none=True)
    return {"server": spec.server_ref.name, **staged}


def staging_job_name(model_cr_name: str, spec: TritonModelSpec) -> str:
    """`<cr>-stage-<hash>`: at most 63 characters, a new name whenever what is staged changes."""
    canonical = json.dumps(staged_inputs(model_cr_name, spec), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:_HASH_LENGTH]
    suffix = f"-stage-{digest}"
    prefix = model_cr_name[: JOB_NAME_MAX - len(suffix)].rstrip("-.")
    return prefix + suffix


def stage_args(model: str, spec: TritonModelSpec, *, capacity_bytes: int | None) -> list[str]:
    """Arguments of `triton-operator stage` (no credentials: those come from env)."""
    staged = StagedSpec.from_spec(model, spec).model_dump(mode="json", exclude_none=True)
    args = [
        "stage",
        "--spec",
        json.dumps(staged, sort_keys=True, separators=(",", ":")),
        "--repository",
        REPOSITORY_PATH,
        "--termination-log",
        TERMINATION_LOG,
    ]
    if spec.source.pvc is not None:
        args += ["--source-root", SOURCE_PATH]
    if capacity_bytes is not None:
        args += ["--capacity-bytes", str(capacity_bytes)]
    return args


def _env(spec: TritonModelSpec) -> list[Manifest]:
    """HOME on the writable /tmp, and S3 credentials from the Secret (never literal values)."""
    env: list[Manifest] = [{"name": "HOME", "value": "/tmp"}]
    s3 = spec.source.s3
    if s3 is not None and s3.credentials_secret is not None:
        secret = s3.credentials_secret
        for name, key in (
            ("AWS_ACCESS_KEY_ID", secret.access_key_id_key),
            ("AWS_SECRET_ACCESS_KEY", secret.secret_access_key_key),
        ):
            env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": key}}})
    return env


def _volumes(spec: TritonModelSpec, server_claim: str) -> tuple[list[Manifest], list[Manifest]]:
    """(volumes, volumeMounts): the server's PVC read-write, a source PVC read-only, /tmp."""
    volumes: list[Manifest] = [
        {"name": "models", "persistentVolumeClaim": {"claimName": server_claim}},
        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}},
    ]
    mounts: list[Manifest] = [
        {"name": "models", "mountPath": REPOSITORY_PATH},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    pvc = spec.source.pvc
    if pvc is not None:
        volumes.append(
            {"name": "source", "persistentVolumeClaim": {"claimName": pvc.claim_name, "readOnly": True}}
        )
        mounts.append({"name": "source", "mountPath": SOURCE_PATH, "readOnly": True})
    return volumes, mounts


def _pod_failure_policy() -> Manifest:
    """Fail the Job at once on permanent errors; evictions and preemptions do not count as failures."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER_NAME,
                    "operator": "In",
                    "values": list(PERMANENT_EXIT_CODES),
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }


def render_staging_job(
    model: str,
    namespace: str,
    spec: TritonModelSpec,
    *,
    server_claim: str,
    job_name: str,
    operator_image: str,
    labels: Mapping[str, str],
    capacity_bytes: int | None,
) -> Manifest:
    """The Job that stages `spec` into the PVC `server_claim`; `model` is the TritonModel's name."""
    volumes, mounts = _volumes(spec, server_claim)
    container: Manifest = {
        "name": CONTAINER_NAME,
        "image": operator_image,
        "args": stage_args(model, spec, capacity_bytes=capacity_bytes),
        "env": _env(spec),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        },
    }
    pod_spec: Manifest = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": STAGING_UID,
            "runAsGroup": STAGING_UID,
            "fsGroup": STAGING_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "activeDeadlineSeconds": ACTIVE_DEADLINE_SECONDS,
            "podFailurePolicy": _pod_failure_policy(),
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }
