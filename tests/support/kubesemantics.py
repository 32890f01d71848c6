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


# -- server-side apply's field ownership (what a pass that leaves a field out relies on) ---------------
Path = tuple[str, ...]


def leaf_paths(obj: Mapping[str, Any], prefix: Path = ()) -> set[Path]:
    """The fields an object sets, as paths to its leaves (a list, or an empty map, is one field)."""
    out: set[Path] = set()
    for key, value in obj.items():
        if isinstance(value, Mapping) and value:
            out |= leaf_paths(value, (*prefix, key))
        else:
            out.add((*prefix, key))
    return out


def value_at(obj: Mapping[str, Any], path: Path) -> Any:
    for key in path:
        if not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
    return obj


def drop_path(obj: Obj, path: Path) -> None:
    """Remove a field, and the maps it leaves empty."""
    parents = [obj]
    for key in path[:-1]:
        child = parents[-1].get(key)
        if not isinstance(child, dict):
            return
        parents.append(child)
    parents[-1].pop(path[-1], None)
    for depth in range(len(parents) - 1, 0, -1):
        if not parents[depth]:
            parents[depth - 1].pop(path[depth - 1], None)


def deep_merge(target: Obj, applied: Mapping[str, Any]) -> Obj:
    """`applied` over `target`: maps merge, anything else replaces."""
    out = copy.deepcopy(target)
    for key, value in applied.items():
        if isinstance(value, Mapping) and value and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def conflict(kind: str, name: str, paths: list[str], manager: str) -> ApiException:
    exc = ApiException(status=409, reason="Conflict")
    exc.body = json.dumps(
        {
            "message": f'Apply failed with {len(paths)} conflict: conflict with "{manager}": '
            + ", ".join(paths),
            "reason": "Conflict",
            "code": 409,
        }
    )
    return exc


class FieldOwners:
    """Which field manager owns which fields of each object's body (all but metadata and status), as
    server-side apply keeps them in managedFields: an apply that leaves out a field its manager alone
    owned deletes it; a field another manager owns stays; an update (a scale, a merge patch) takes the
    fields it changes from everyone."""

    def __init__(self) -> None:
        self.owners: dict[Key, dict[str, set[Path]]] = {}

    def apply(self, key: Key, old_body: Obj, applied_body: Obj, manager: str, *, force: bool) -> Obj:
        """The body after `manager` applied `applied_body` (409 on a conflict without force)."""
        owners = self.owners.setdefault(key, {})
        mine_before, mine_now = owners.get(manager, set()), leaf_paths(applied_body)
        for other, paths in owners.items():
            if other == manager:
                continue
            clashing = sorted(
                p for p in paths & mine_now if value_at(old_body, p) != value_at(applied_body, p)
            )
            if clashing and not force:
                raise conflict(key[0], key[2], [".".join(p) for p in clashing], other)
            paths.difference_update(clashing)
        others = set().union(*(paths for other, paths in owners.items() if other != manager))
        body = copy.deepcopy(old_body)
        for path in mine_before - mine_now:
            if path not in others:
                drop_path(body, path)
        owners[manager] = mine_now
        return deep_merge(body, applied_body)

    def update(self, key: Key, old_body: Obj, new_body: Obj, manager: str) -> None:
        """A non-apply write by `manager`: the fields whose value it changed are its own now."""
        owners = self.owners.setdefault(key, {})
        changed = {
            p
            for p in leaf_paths(new_body) | leaf_paths(old_body)
            if value_at(old_body, p) != value_at(new_body, p)
        }
        for paths in owners.values():
            paths.difference_update(changed)
        owners.setdefault(manager, set()).update(p for p in changed if value_at(new_body, p) is not None)

    def owners_of(self, key: Key, path: Path) -> list[str]:
        return sorted(m for m, paths in self.owners.get(key, {}).items() if path in paths)

    def forget(self, key: Key) -> None:
        self.owners.pop(key, None)
