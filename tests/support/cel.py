"""A CRD's CEL rules (x-kubernetes-validations) evaluated in Python as the apiserver does at admission:
on the object after the schema's defaults, each rule on every node its schema path reaches, transition
rules (oldSelf) only on an update. cel-python evaluates the expressions; the few functions of the
Kubernetes CEL libraries our rules use (lists: isSorted, sum; strings: split; quantity, compareTo) are
written here, as the apiserver defines them."""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from kubernetes.utils import parse_quantity

Obj = dict[str, Any]


@dataclass(frozen=True)
class Rule:
    """One x-kubernetes-validations entry and the schema node carrying it ("spec.env[]", "" the root)."""

    node: str
    rule: str
    message: str
    field_path: str = ""


@dataclass(frozen=True)
class Violation:
    """A rule an object breaks, and the field path the apiserver names (the node's, then fieldPath)."""

    rule: Rule
    path: str


class _Quantity:
    """What the Kubernetes quantity library's quantity() returns: comparable amounts."""

    def __init__(self, amount: Decimal) -> None:
        self.amount = amount


def _is_sorted(items: celtypes.ListType) -> celtypes.BoolType:
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(items)))


def _sum(items: celtypes.ListType) -> Any:
    return sum(items[1:], items[0]) if items else celtypes.IntType(0)


def _split(text: celtypes.StringType, separator: celtypes.StringType) -> celtypes.ListType:
    return celtypes.ListType([celtypes.StringType(part) for part in str(text).split(str(separator))])


def _quantity(text: celtypes.StringType) -> _Quantity:
    return _Quantity(parse_quantity(str(text)))


def _compare_to(left: _Quantity, right: _Quantity) -> celtypes.IntType:
    return celtypes.IntType((left.amount > right.amount) - (left.amount < right.amount))


KUBERNETES_FUNCTIONS = {
    "isSorted": _is_sorted,
    "sum": _sum,
    "split": _split,
    "quantity": _quantity,
    "compareTo": _compare_to,
}


@functools.cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule), functions=KUBERNETES_FUNCTIONS)


def holds(rule: str, value: Any, old: Any = None) -> bool:
    """Whether one rule holds on `self` (and `oldSelf`); an error evaluating it fails the caller."""
    activation = {"self": json_to_cel(value)}
    if old is not None:
        activation["oldSelf"] = json_to_cel(old)
    verdict = _program(rule).evaluate(activation)
    if not isinstance(verdict, celtypes.BoolType):
        raise AssertionError(f"CEL rule {rule!r} on {value!r} gave {verdict!r}, not a bool")
    return bool(verdict)


def openapi_schema(crd: Obj) -> Obj:
    """The one version's openAPIV3Schema."""
    schema: Obj = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _children(schema: Obj, node: str) -> Iterator[tuple[str, Obj]]:
    """Each sub-schema with its node path: properties, list items ([]), map values ({})."""
    for name, sub in schema.get("properties", {}).items():
        yield f"{node}.{name}" if node else name, sub
    if "items" in schema:
        yield f"{node}[]", schema["items"]
    if isinstance(schema.get("additionalProperties"), dict):
        yield f"{node}{{}}", schema["additionalProperties"]


def _own_rules(schema: Obj, node: str) -> list[Rule]:
    """The rules one schema node carries."""
    entries = schema.get("x-kubernetes-validations", [])
    return [Rule(node, e["rule"], e["message"], e.get("fieldPath", "")) for e in entries]


def rules(crd: Obj) -> list[Rule]:
    """Every CEL rule of a CRD, with the schema node carrying it."""

    def walk(schema: Obj, node: str) -> Iterator[Rule]:
        yield from _own_rules(schema, node)
        for path, sub in _children(schema, node):
            yield from walk(sub, path)

    return list(walk(openapi_schema(crd), ""))


def with_defaults(schema: Obj, value: Any) -> Any:
    """What the apiserver's structural defaulting makes of a value: absent properties from `default`,
    recursively (a default is defaulted in turn)."""
    if isinstance(value, dict) and "properties" in schema:
        out = dict(value)
        for name, sub in schema["properties"].items():
            if name in out:
                out[name] = with_defaults(sub, out[name])
            elif "default" in sub:
                out[name] = with_defaults(sub, copy.deepcopy(sub["default"]))
        return out
    if isinstance(value, list) and "items" in schema:
        return [with_defaults(schema["items"], item) for item in value]
    return value


def violations(crd: Obj, obj: Obj, old: Obj | None = None) -> list[Violation]:
    """The CEL rules `obj` breaks at admission (a create, or an update of `old`)."""
    schema = openapi_schema(crd)
    found: list[Violation] = []

    def walk(schema: Obj, node: str, where: str, value: Any, before: Any) -> None:
        for rule in _own_rules(schema, node):
            if "oldSelf" in rule.rule and before is None:
                continue  # a transition rule: only an update, and only where the old object had the node
            if not holds(rule.rule, value, before):
                found.append(Violation(rule, where + rule.field_path))
        if isinstance(value, dict) and "properties" in schema:
            for name, sub in schema["properties"].items():
                if name in value:
                    old_value = before.get(name) if isinstance(before, dict) else None
                    path = f"{node}.{name}" if node else name
                    walk(sub, path, f"{where}.{name}" if where else name, value[name], old_value)
        elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
            for key, item in value.items():
                walk(schema["additionalProperties"], f"{node}{{}}", f"{where}[{key}]", item, None)
        elif isinstance(value, list) and "items" in schema:
            for index, item in enumerate(value):
                walk(schema["items"], f"{node}[]", f"{where}[{index}]", item, None)

    old_defaulted = with_defaults(schema, old) if old is not None else None
    walk(schema, "", "", with_defaults(schema, obj), old_defaulted)
    return found
