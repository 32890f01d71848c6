"""Schema checks of rendered manifests against the kubernetes client's own models: unknown keys and wrong
JSON types (`check_against_model`), required fields (`deserialize`)."""

from __future__ import annotations

import json
from typing import Any

import kubernetes.client as k8s
from kubernetes.client import ApiClient

# What the check below catches: any key the Kubernetes API does not define at that place (a typo such as
# `containerport`, a field at the wrong level, `readOnly` on the wrong object), wrong JSON types (an int
# where a string is required, e.g. a quantity), and missing required fields (ApiClient.deserialize runs the
# client models' validation). What it does not catch: value rules the apiserver enforces (name formats,
# label syntax, port ranges, enum values, cross-field rules such as requests <= limits), immutability, and
# admission (Pod Security, quotas). Server-side dry-run on the real cluster (the lead's e2e) covers those.
_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "float": (int, float),
    "datetime": (str,),
    "date": (str,),
}


def check_against_model(value: Any, type_name: str, path: str) -> None:
    """Recursively check a manifest against the kubernetes client's model types, failing on unknown keys."""
    if type_name == "object":  # IntOrString and free-form fields
        return
    if type_name in _PRIMITIVES:
        ok = isinstance(value, _PRIMITIVES[type_name]) and not (
            type_name == "int" and isinstance(value, bool)
        )
        assert ok, f"{path}: expected {type_name}, got {value!r}"
        return
    # Older clients spell containers list[X] / dict(str, X), newer ones List[X] / Dict[str, X].
    if type_name.lower().startswith("list["):
        assert isinstance(value, list), f"{path}: expected a list"
        for i, item in enumerate(value):
            check_against_model(item, type_name[5:-1], f"{path}[{i}]")
        return
    if type_name.lower().startswith(("dict(", "dict[")):
        assert isinstance(value, dict), f"{path}: expected a map"
        inner = type_name[len("dict(str, ") : -1]
        for key, item in value.items():
            check_against_model(item, inner, f"{path}.{key}")
        return
    model = getattr(k8s, type_name)
    assert isinstance(value, dict), f"{path}: expected an object for {type_name}"
    by_json_name = {json_name: attr for attr, json_name in model.attribute_map.items()}
    unknown = set(value) - set(by_json_name)
    assert not unknown, f"{path}: {sorted(unknown)} are not fields of {type_name}"
    for key, item in value.items():
        check_against_model(item, model.openapi_types[by_json_name[key]], f"{path}.{key}")


class _Response:
    """The one attribute older clients' ApiClient.deserialize reads."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.data = json.dumps(obj)


def deserialize(obj: dict[str, Any], type_name: str) -> Any:
    """The client's own strict deserialization (required fields, types) of a manifest."""
    deserialize: Any = ApiClient().deserialize  # its signature changed across client versions
    try:  # recent clients (pydantic models) take the response text and its content type
        return deserialize(json.dumps(obj), type_name, "application/json")
    except TypeError:  # older clients take a response object
        return deserialize(_Response(obj), type_name)
