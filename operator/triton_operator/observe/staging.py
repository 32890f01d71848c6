"""What a TritonModel's staging says: where its staging Job stands (from the Job and its pods), and
what status records was staged, which a restarted operator resumes from (pure)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from triton_operator.conditions import Reason

Obj = Mapping[str, Any]
StagingPhase = Literal["running", "complete", "failed", "blocked"]
CAMEL_CASE = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_FAILURE_LINE = re.compile(r"^([A-Z][A-Za-z0-9]*): (.+)$")
# Job conditions that end it, and pod waiting reasons that mean a reference is missing.
_MISSING_REFERENCE = {"CreateContainerConfigError"}


@dataclass(frozen=True)
class StagingOutcome:
    """Where one staging Job stands; `reason`/`message` explain a failed or blocked one."""

    phase: StagingPhase
    reason: str = ""
    message: str = ""
    digest: str | None = None


def _job_condition(job: Obj, ctype: str) -> Obj | None:
    conditions = (job.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == ctype and c.get("status") == "True"), None)


def _terminated(pod: Obj) -> Obj:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next(((s.get("state") or {}).get("terminated") or {} for s in statuses), {})


def _waiting(pod: Obj) -> Obj:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next(((s.get("state") or {}).get("waiting") or {} for s in statuses), {})


def staged_result(message: str) -> dict[str, Any] | None:
    """The staging program's one-line JSON result in a termination message, if there is one."""
    for line in reversed(message.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and "digest" in data:
            return data
    return None


def failure_reason(message: str) -> tuple[str, str] | None:
    """(Reason, problem) from the staging program's last `Reason: problem; fix` line."""
    for line in reversed(message.strip().splitlines()):
        match = _FAILURE_LINE.match(line.strip())
        if match:
            return match.group(1), match.group(2)
    return None


def _newest(pods: Sequence[Obj]) -> list[Obj]:
    return sorted(pods, key=lambda p: str(p["metadata"].get("creationTimestamp") or ""), reverse=True)


def staging_outcome(job: Obj, pods: Sequence[Obj]) -> StagingOutcome:
    """Complete (with the digest the program printed), failed (its reason), blocked, or running."""
    newest = _newest(pods)
    if _job_condition(job, "Complete") is not None:
        for pod in newest:
            result = staged_result(str(_terminated(pod).get("message") or ""))
            if result is not None:
                return StagingOutcome("complete", digest=str(result["digest"]))
        return StagingOutcome("complete")
    failed = _job_condition(job, "Failed")
    if failed is not None:
        for pod in newest:
            parsed = failure_reason(str(_terminated(pod).get("message") or ""))
            if parsed is not None:
                return StagingOutcome("failed", parsed[0], parsed[1])
        job_reason = str(failed.get("reason") or "")
        detail = f"{job_reason}: {failed.get('message') or 'the Job failed'}" if job_reason else "failed"
        return StagingOutcome(
            "failed", Reason.STAGING_FAILED, f"staging Job {job['metadata']['name']} {detail}"
        )
    for pod in newest:
        waiting = _waiting(pod)
        if waiting.get("reason") in _MISSING_REFERENCE:
            detail = waiting.get("message") or waiting["reason"]
            return StagingOutcome(
                "blocked",
                Reason.MISSING_REFERENCE,
                f"staging pod {pod['metadata']['name']} cannot start: {detail}; "
                "create it or fix spec.source.s3.credentialsSecret",
            )
    return StagingOutcome("running")


@dataclass(frozen=True)
class StagedRecord:
    """A staging Job that completed: its files are in the server's repository."""

    job: str
    version: int
    digest: str | None


def recorded_staging(status: Mapping[str, Any], wanted_job: str, version: int) -> StagedRecord | None:
    """What status says was staged (after an operator restart): stagedDigest is set only on completion."""
    job, digest = status.get("stagingJob"), status.get("stagedDigest")
    if not job or not digest:
        return None
    if job == wanted_job:
        # This spec's Job staged this spec's version. Not servedVersion: mid-canary that is still the
        # old one, and a restarted operator then checked new pods for a version whose files a promotion
        # had removed ("loaded, but version 1 is not ready"; chaos seed 49025936 kill 2).
        return StagedRecord(str(job), version, str(digest))
    served = status.get("servedVersion")
    if served is None:
        return None  # staged for an older spec whose version is not known: stage again
    return StagedRecord(str(job), int(served), str(digest))


def recorded_variant(status: Mapping[str, Any], wanted_job: str, version: int) -> StagedRecord | None:
    """What status says an experiment variant's Job staged, if it is the Job this spec wants."""
    for entry in status.get("stagedVariants") or []:
        if entry.get("version") == version and entry.get("job") == wanted_job:
            return StagedRecord(wanted_job, version, entry.get("digest"))
    return None


def load_token(staged: StagedRecord | None, variants: Mapping[int, StagedRecord]) -> StagedRecord | None:
    """What every pod must have loaded: the spec's staged files and, for an experiment, each variant's
    (the token names all their Jobs: the versions reload once any of them changes)."""
    if staged is None or not variants:
        return staged
    jobs = sorted([staged.job, *(record.job for record in variants.values())])
    return StagedRecord("+".join(jobs), staged.version, staged.digest)
