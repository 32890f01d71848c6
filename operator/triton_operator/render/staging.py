"""The Jobs of a TritonModel that run `triton-operator stage` with the server's PVC mounted at /models.

The staging Job puts a version into the repository; the removal Job (`stage --remove`) takes it out when
the TritonModel is deleted with keepFilesOnDelete false. Both share the pod: image, security, volumes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from kubernetes.utils import parse_quantity

from triton_operator.api.tritonmodel import StagedSpec, TritonModelSpec
from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.render.repository import per_replica, staging_placement
from triton_operator.staging.errors import PERMANENT_EXIT_CODES

# The image of the operator's own programs (staging and removal Jobs, the repository server and sync
# sidecars); the chart sets TRITON_OPERATOR_IMAGE to the operator's image.
DEFAULT_OPERATOR_IMAGE = "ghcr.io/tritonoperator/triton-operator:0.1.0"
CONTAINER_NAME = "stage"
REPOSITORY_PATH = "/models"
SOURCE_PATH = "/source"
TERMINATION_LOG = "/dev/termination-log"
# uid/gid of Triton's pods too, so staged files belong to the user that reads them.
STAGING_UID = 1000
BACKOFF_LIMIT = 3
ACTIVE_DEADLINE_SECONDS = 3600
# Removing files takes seconds; the operator's delete handler waits on it, so it must not linger.
REMOVAL_DEADLINE_SECONDS = 600
# Downloads go to the PVC; /tmp only holds boto3's and Python's scratch files.
TMP_SIZE_LIMIT = "256Mi"
JOB_NAME_MAX = 63
_HASH_LENGTH = 10

Manifest = dict[str, Any]


def staged_inputs(model_cr_name: str, spec: TritonModelSpec) -> dict[str, Any]:
    """Everything that decides what is staged where: server, model name, version, source, digest, config."""
    staged = StagedSpec.from_spec(model_cr_name, spec).model_dump(mode="json", exclude_none=True)
    return {"server": spec.server_ref.name, **staged}


def _job_name(model_cr_name: str, action: str, inputs: Mapping[str, Any]) -> str:
    """`<cr>-<action>-<hash of inputs>`, at most 63 characters."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:_HASH_LENGTH]
    suffix = f"-{action}-{digest}"
    prefix = model_cr_name[: JOB_NAME_MAX - len(suffix)].rstrip("-.")
    return prefix + suffix


def staging_job_name(model_cr_name: str, spec: TritonModelSpec) -> str:
    """`<cr>-stage-<hash>`: at most 63 characters, a new name whenever what is staged changes."""
    return _job_name(model_cr_name, "stage", staged_inputs(model_cr_name, spec))


def removal_job_name(model_cr_name: str, spec: TritonModelSpec) -> str:
    """`<cr>-remove-<hash>`: one name per server, model name and version whose files it removes."""
    inputs = {
        "server": spec.server_ref.name,
        "modelName": spec.resolved_model_name(model_cr_name),
        "version": spec.version,
    }
    return _job_name(model_cr_name, "remove", inputs)


def _base_args(model: str, spec: TritonModelSpec) -> list[str]:
    """`stage --spec ... --repository ... --termination-log ...`, common to staging and removal."""
    staged = StagedSpec.from_spec(model, spec).model_dump(mode="json", exclude_none=True)
    return [
        "stage",
        "--spec",
        json.dumps(staged, sort_keys=True, separators=(",", ":")),
        "--repository",
        REPOSITORY_PATH,
        "--termination-log",
        TERMINATION_LOG,
    ]


def stage_args(model: str, spec: TritonModelSpec, *, capacity_bytes: int | None) -> list[str]:
    """Arguments of `triton-operator stage` (no credentials: those come from env)."""
    args = _base_args(model, spec)
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


def _repository_volumes(server_claim: str) -> tuple[list[Manifest], list[Manifest]]:
    """(volumes, volumeMounts): the server's PVC read-write at /models and a writable /tmp."""
    volumes: list[Manifest] = [
        {"name": "models", "persistentVolumeClaim": {"claimName": server_claim}},
        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}},
    ]
    mounts: list[Manifest] = [
        {"name": "models", "mountPath": REPOSITORY_PATH},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    return volumes, mounts


def _volumes(spec: TritonModelSpec, server_claim: str) -> tuple[list[Manifest], list[Manifest]]:
    """(volumes, volumeMounts): the repository volumes plus a source PVC read-only."""
    volumes, mounts = _repository_volumes(server_claim)
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


def _job(
    namespace: str,
    *,
    job_name: str,
    operator_image: str,
    labels: Mapping[str, str],
    args: list[str],
    env: list[Manifest],
    volumes: tuple[list[Manifest], list[Manifest]],
    deadline_s: int,
    placement: Manifest | None,
) -> Manifest:
    """A Job running the operator image once, restricted, with the given arguments and volumes
    (`placement`: pod spec fields saying where it must run)."""
    container: Manifest = {
        "name": CONTAINER_NAME,
        "image": operator_image,
        "args": args,
        "env": env,
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "volumeMounts": volumes[1],
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
        "volumes": volumes[0],
    }
    pod_spec.update(placement or {})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "activeDeadlineSeconds": deadline_s,
            "podFailurePolicy": _pod_failure_policy(),
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
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
    placement: Manifest | None = None,
) -> Manifest:
    """The Job that stages `spec` into the PVC `server_claim`; `model` is the TritonModel's name;
    `placement`: where the PVC can be mounted (render/repository.staging_placement)."""
    return _job(
        namespace,
        job_name=job_name,
        operator_image=operator_image,
        labels=labels,
        args=stage_args(model, spec, capacity_bytes=capacity_bytes),
        env=_env(spec),
        volumes=_volumes(spec, server_claim),
        deadline_s=ACTIVE_DEADLINE_SECONDS,
        placement=placement,
    )


def render_removal_job(
    model: str,
    namespace: str,
    spec: TritonModelSpec,
    *,
    server_claim: str,
    job_name: str,
    operator_image: str,
    labels: Mapping[str, str],
    placement: Manifest | None = None,
) -> Manifest:
    """The Job that removes `spec`'s version from the PVC `server_claim` (no source, no Secret)."""
    return _job(
        namespace,
        job_name=job_name,
        operator_image=operator_image,
        labels=labels,
        args=[*_base_args(model, spec), "--remove"],
        env=[{"name": "HOME", "value": "/tmp"}],
        volumes=_repository_volumes(server_claim),
        deadline_s=REMOVAL_DEADLINE_SECONDS,
        placement=placement,
    )


def jobs_placement(server: str, server_spec: TritonServerSpec) -> dict[str, Any] | None:
    """Where a model's Jobs must run to mount the server's PVC: beside the repository server in layout
    PerReplica (its ReadWriteOnce volume is attached to that node); anywhere in layout Shared."""
    return staging_placement(server) if per_replica(server_spec) else None


def capacity_bytes(spec: TritonServerSpec) -> int | None:
    """The repository's size (an existing claim's size is not known: no limit)."""
    repo = spec.model_repository
    if repo.existing_claim:
        return None
    return int(parse_quantity(repo.size))  # type: ignore[no-untyped-call]
