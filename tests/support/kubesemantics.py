"""The API server's semantics the fake Kubernetes shares with its controllers: label selectors, JSON
merge patches, what bumps an object's generation, conditions and timestamps, a 404."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

Obj = dict[str, Any]
Names = list[str]
Objs = list[Obj]  # (a class with a `list` method cannot say list[...] in its body)
Key = tuple[str, str, str]  # (kind, namespace, name)
Watcher = Callable[[str, Obj], None]
Selector = list[Callable[[Mapping[str, str]], bool]]


@dataclass(frozen=True)
class Call:
    """One write the operator made: `verb` is apply (create or update), status, condition or delete."""

    verb: str
    kind: str
    name: str
    created: bool = False


def parse_selector(selector: str | None) -> Selector:
    """A label selector's requirements (=, ==, !=, in, notin, exists, !exists) as predicates."""
    tests: Selector = []
    for term in re.findall(r"[^,(]+(?:\([^)]*\))?", selector or ""):
        term = term.strip()
        if not term:
            continue
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                tests.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                tests.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif m := re.fullmatch(r"([\w./-]+)\s*(!=|==|=)\s*([\w.-]*)", term):
            key, op, value = m.groups()
            if op == "!=":
                tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif m := re.fullmatch(r"(!?)([\w./-]+)", term):
            absent, key = m.group(1) == "!", m.group(2)
            tests.append(lambda labels, k=key, a=absent: (k in labels) != a)
        else:
            raise ValueError(f"unsupported label selector term {term!r} in {selector!r}")
    return tests


def matches(selector: str | None, labels: Mapping[str, str] | None) -> bool:
    return all(test(labels or {}) for test in parse_selector(selector))


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> Obj:
    """RFC 7386 JSON merge patch: None removes a key, dicts merge, anything else replaces."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def spec_part(obj: Mapping[str, Any]) -> Obj:
    """Everything but metadata and status: what a change of bumps the generation."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def not_found(kind: str, name: str) -> ApiException:
    exc = ApiException(status=404, reason="Not Found")
    exc.body = json.dumps({"message": f'{kind} "{name}" not found', "reason": "NotFound", "code": 404})
    return exc


def condition_of(obj: Mapping[str, Any], ctype: str) -> Obj | None:
    return next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), None
    )
