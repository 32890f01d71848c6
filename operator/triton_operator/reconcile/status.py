"""Writing a custom resource's status: only when it says something new; the Events its story tells."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from triton_operator.conditions import DecidedCondition, rfc3339, set_conditions
from triton_operator.kube.events import recorder_for
from triton_operator.kube.rest import Kube
from triton_operator.observe.story import story

# The CRDs' limit on a condition's message (Condition.message, in bytes as the apiserver counts them).
CONDITION_MESSAGE_MAX_BYTES = 32768
TRUNCATED = " ... (truncated)"


def fit_message(message: str, limit: int = CONDITION_MESSAGE_MAX_BYTES) -> str:
    """A message cut to `limit` UTF-8 bytes. The apiserver refuses a whole status patch with one message
    too long, and messages quote others' text (an apiserver error can echo a whole object): without
    this the status was never written and every pass failed again."""
    raw = message.encode()
    if len(raw) <= limit:
        return message
    keep = limit - len(TRUNCATED.encode())
    return raw[:keep].decode(errors="ignore") + TRUNCATED


def _fit_conditions(status: dict[str, Any]) -> dict[str, Any]:
    conditions = status.get("conditions")
    if not isinstance(conditions, list):
        return status
    fitted = [
        {**c, "message": fit_message(c["message"])} if isinstance(c.get("message"), str) else c
        for c in conditions
    ]
    return {**status, "conditions": fitted}


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _comparable(status: Mapping[str, Any]) -> dict[str, Any]:
    """Status without kopf's bookkeeping and without the metrics' own timestamp."""
    out = {k: v for k, v in status.items() if k != "kopf"}
    if isinstance(out.get("metrics"), Mapping):
        out["metrics"] = {k: v for k, v in out["metrics"].items() if k != "refreshedAt"}
    return out


def stamp_metrics(new: dict[str, Any], old: Mapping[str, Any], when: dt.datetime) -> None:
    """metrics.refreshedAt moves only when the figures change, so idle pools cause no writes."""
    metrics = new.get("metrics")
    if not isinstance(metrics, dict):
        return
    old_metrics: Mapping[str, Any] = old.get("metrics") or {}
    unchanged = {k: v for k, v in old_metrics.items() if k != "refreshedAt"} == metrics
    kept = old_metrics.get("refreshedAt") if unchanged else None
    metrics["refreshedAt"] = kept or rfc3339(when)


def with_removals(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """`new` as a JSON merge patch over `old`: a key of a nested object that `new` no longer has is sent
    as null, or the merge would keep it. Used for status.metrics: an idle model's figures leave out
    their latencies, and without the nulls the old ones stayed in status, so every pass saw a
    difference and wrote again, forever. (Other fields keep merge-patch semantics: the rollout's state
    is read back from status.)"""
    patch = dict(new)
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            patch[key] = with_removals(before, value)
            for gone in before.keys() - value.keys():
                patch[key][gone] = None
    return patch


# Nested keys a pass computes afresh and leaves out once they no longer apply (the next decision of a
# rollout that ended). A merge patch keeps a key it is not told to remove, so these go as null; the
# rollout's other keys keep merge-patch semantics (its state is read back from status).
DROPPED_WHEN_GONE: Mapping[str, tuple[str, ...]] = {"rollout": ("nextDecisionAt",)}


def _drop_gone_keys(patch: dict[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    for field, keys in DROPPED_WHEN_GONE.items():
        before, after = old.get(field), new.get(field)
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            gone = [k for k in keys if k in before and k not in after]
            if gone:
                patch[field] = {**after, **dict.fromkeys(gone)}


def write_conditions(
    kube: Kube,
    kind: str,
    body: Mapping[str, Any],
    decided: Sequence[DecidedCondition],
    owned_fields: Sequence[str],
) -> None:
    """Write the `decided` conditions of this generation; the rest of the status stays as it is."""
    generation = int(body["metadata"].get("generation", 1))
    old: Mapping[str, Any] = body.get("status") or {}
    new = {k: v for k, v in old.items() if k in owned_fields}
    new["observedGeneration"] = generation
    new["conditions"] = set_conditions(old.get("conditions") or [], decided, generation, now())
    write_status(kube, kind, body, new, owned_fields)


def write_status(
    kube: Kube, kind: str, body: Mapping[str, Any], new: dict[str, Any], owned_fields: Sequence[str]
) -> dict[str, Any] | None:
    """Patch status when it differs from what is there; post the Events of what changed (story.py).

    `new` holds every field the operator owns (the whole conditions list, as merge-patch replaces
    lists). Fields it no longer reports are removed by sending null. Returns the object as written,
    or None when there was nothing new to write.
    """
    new = _fit_conditions(new)
    old: Mapping[str, Any] = body.get("status") or {}
    dropped = [k for k in owned_fields if k in old and k not in new and old.get(k) is not None]
    if not dropped and _comparable(new) == _comparable({k: v for k, v in old.items() if k in new}):
        return None
    patch = dict(new)
    if isinstance(new.get("metrics"), Mapping) and isinstance(old.get("metrics"), Mapping):
        patch["metrics"] = with_removals({"m": old["metrics"]}, {"m": new["metrics"]})["m"]
    _drop_gone_keys(patch, old, new)
    for key in dropped:
        patch[key] = None
    meta = body["metadata"]
    written = kube.patch_status(kind, meta["namespace"], meta["name"], patch)
    recorder = recorder_for(kube)
    spec: Mapping[str, Any] = body.get("spec") or {}
    for event in story(kind, old, new, spec):
        recorder.record({"kind": kind, **body}, event)
    return written
