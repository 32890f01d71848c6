"""Layout PerReplica: whether a Triton pod's own copy of a model is the repository server's.

A pod carries its own copy when it runs the sync sidecar (render/repository.py); that is read from the
pod itself, so the pods of a pool moving from layout Shared are each judged by what they run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from triton_operator.render.repository import SYNC_CONTAINER


def has_own_copy(pod: Mapping[str, Any]) -> bool:
    """Whether the pod keeps its own copy of the repository (it runs the sync sidecar)."""
    containers = (pod.get("spec") or {}).get("containers") or []
    return any(c.get("name") == SYNC_CONTAINER for c in containers)


@dataclass(frozen=True)
class CopyFacts:
    """One pod's copy of one model: `current` once it is exactly the repository server's."""

    current: bool
    # The staged digest the copy holds for the wanted version (status.replicas[].copyDigest).
    digest: str | None = None
    reason: str | None = None


def _model(answer: Mapping[str, Any] | None, model: str) -> Mapping[str, Any] | None:
    found = ((answer or {}).get("models") or {}).get(model)
    return found if isinstance(found, Mapping) else None


def _version_digest(entry: Mapping[str, Any] | None, version: int) -> str | None:
    digest = ((entry or {}).get("versions") or {}).get(str(version))
    return str(digest) if digest else None


def copy_facts(
    held: Mapping[str, Any] | None,
    content: Mapping[str, Any] | None,
    model: str,
    version: int,
    staged_digest: str | None,
) -> CopyFacts:
    """Judge one pod's copy of `model` from the sidecar's answer (`held`) and the repository server's
    (`content`); `staged_digest`: what the staging Job of `version` reported (None: not known)."""
    mine = _model(held, model)
    digest = _version_digest(mine, version)
    if held is None:
        return CopyFacts(False, None, "the pod's repository-sync sidecar does not answer yet")
    if content is None:
        return CopyFacts(False, digest, "the repository server does not answer yet")
    wanted = _model(content, model)
    served_digest = _version_digest(wanted, version)
    if wanted is None or served_digest is None or (staged_digest and served_digest != staged_digest):
        waiting = f"the repository server does not list version {version} of {model} yet"
        return CopyFacts(False, digest, waiting)
    if mine is None or mine.get("hash") != wanted.get("hash"):
        error = held.get("error")
        detail = f" ({error})" if error else ""
        return CopyFacts(False, digest, f"copying {model} to the pod{detail}")
    return CopyFacts(True, digest)
