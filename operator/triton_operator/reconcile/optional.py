"""A server's child of a kind only some clusters serve (another project's CRD: the Prometheus Operator's
PodMonitor, KEDA's ScaledObject), and the condition that says how it stands.

A cluster without the kind is no fault of the server: it serves as before, the condition says why the
child is missing, and one Normal Event tells it the first time (not again after a restart: the condition
in status already says it). The check runs with each apply of the spec (a new generation, or the drift
period), never in a retry loop of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException

from triton_operator.api.common import ConditionStatus, ConditionType
from triton_operator.conditions import DecidedCondition, Reason
from triton_operator.kube.events import recorder_for
from triton_operator.kube.rest import Kube
from triton_operator.observe.story import event
from triton_operator.reconcile.state import Key, object_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptionalKind:
    """One optional kind: where it is served, and the condition and reasons that speak of it."""

    api_version: str
    kind: str
    plural: str
    condition: ConditionType
    missing: Reason  # the API server does not serve the kind (said once, in a Normal Event)
    failed: Reason  # the API server refused the child
    unaffected: str  # what still holds when the child cannot be there, e.g. "the pods serve as before"


class OptionalChildren:
    """Applies (or removes) one optional child per server and keeps its verdict for the status passes."""

    def __init__(self, kube: Kube, kind: OptionalKind):
        self.kube = kube
        self.kind = kind
        self.verdicts: dict[Key, DecidedCondition] = {}

    def condition(self, key: Key) -> DecidedCondition | None:
        """The server's condition of this kind; None when it wants no such child (or none was applied yet)."""
        return self.verdicts.get(key)

    def forget(self, key: Key) -> None:
        self.verdicts.pop(key, None)

    def served(self) -> bool:
        """Whether the API server serves the kind now (discovery, once per apply)."""
        return self.kind.plural in (self.kube.served_resources(self.kind.api_version) or [])

    def remove(self, owner: Mapping[str, Any]) -> None:
        """No such child wanted: delete one left from an earlier spec (404, or the kind not served: done).
        A refusal (an operator whose RBAC predates the kind, as a previous release's does) is said in the
        condition and the log, never a failure of the server's apply."""
        meta = owner["metadata"]
        self.verdicts.pop(object_key(owner), None)
        try:
            self.kube.delete(self.kind.kind, meta["namespace"], meta["name"])
        except ApiException as exc:
            message = (
                f"deleting {self.kind.kind} {meta['name']} failed: {exc.status} {exc.reason}; "
                f"{self.kind.unaffected}"
            )
            log.warning("%s/%s: %s", meta["namespace"], meta["name"], message)
            self.decide(owner, self._said(ConditionStatus.FALSE, self.kind.failed, message))

    def apply(
        self, owner: Mapping[str, Any], manifest: dict[str, Any], *, missing: str, applied: DecidedCondition
    ) -> bool:
        """Apply `manifest` (owned by the server) where the kind is served; the verdict is `applied`, or
        `missing` (a sentence naming the fix) / the API server's refusal. Whether it was applied."""
        meta = owner["metadata"]
        try:
            if not self.served():
                self.decide(owner, self._said(ConditionStatus.FALSE, self.kind.missing, missing))
                return False
            kopf.adopt(manifest, owner=cast(kopf.Body, owner))
            self.kube.apply(manifest)
        except ApiException as exc:
            message = (
                f"applying {self.kind.kind} {manifest['metadata']['name']} failed: "
                f"{exc.status} {exc.reason}; "
                f"{self.kind.unaffected}"
            )
            log.warning("%s/%s: %s", meta["namespace"], meta["name"], message)
            self.decide(owner, self._said(ConditionStatus.FALSE, self.kind.failed, message))
            return False
        self.decide(owner, applied)
        return True

    def decide(self, owner: Mapping[str, Any], verdict: DecidedCondition) -> None:
        """Keep the verdict; a missing kind newly found is told once in a Normal Event."""
        key = object_key(owner)
        before = self.verdicts.get(key)
        self.verdicts[key] = verdict
        if verdict.reason != self.kind.missing or (before is not None and before.reason == verdict.reason):
            return
        written = [
            c for c in (owner.get("status") or {}).get("conditions") or [] if c.get("type") == verdict.type
        ]
        if written and written[0].get("reason") == verdict.reason:
            return  # said before this process started
        told = event(str(verdict.reason), verdict.message[:1].upper() + verdict.message[1:] + ".")
        recorder_for(self.kube).record({"kind": "TritonServer", **owner}, told)

    def _said(self, status: ConditionStatus, reason: Reason, message: str) -> DecidedCondition:
        return DecidedCondition(self.kind.condition, status, reason, message)
