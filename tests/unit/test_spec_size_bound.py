"""Spec sizes against the 256 KiB that all annotations of an object may use together.

kopf's default keeps a copy of each object's spec in an annotation (`last-handled-configuration`),
beside kubectl's own last-applied copy. The operator configures kopf to keep none (handlers.settings.
NoDiffBase): tested here. And the typed part of the largest spec the CRDs admit is bounded from the
schema itself (every string, list and map must be bounded), so a new unbounded field or a raised limit
fails here; the only unbounded parts are the opaque core/v1 structures passed through to the pods.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from triton_operator.handlers.settings import NoDiffBase

pytestmark = pytest.mark.unit

CRDS = Path(__file__).resolve().parents[2] / "crds"
ANNOTATIONS_LIMIT = 256 * 1024  # Kubernetes: all annotations of an object together
# kopf writes the copy with json.dumps (ASCII only): one code point is at most 12 bytes (a surrogate
# pair of \\uXXXX escapes).
BYTES_PER_CHAR = 12
NUMBER_BYTES = 24  # the longest JSON number of an int64 or a double


def max_json_bytes(schema: dict[str, Any], path: str, unbounded: list[str]) -> int:
    """The most bytes the JSON of any value this schema admits can take; unbounded parts are listed."""
    if "enum" in schema:
        return max(len(json.dumps(v)) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        if schema.get("format") in ("date-time",):
            return 40
        if "maxLength" not in schema:
            unbounded.append(path)
            return 0
        return 2 + BYTES_PER_CHAR * int(schema["maxLength"])
    if kind in ("integer", "number"):
        return NUMBER_BYTES
    if kind == "boolean":
        return 5
    if kind == "array":
        if "maxItems" not in schema:
            unbounded.append(path)
        items = max_json_bytes(schema.get("items") or {}, f"{path}[]", unbounded)
        return 2 + int(schema.get("maxItems", 0)) * (items + 1)
    if schema.get("x-kubernetes-int-or-string"):
        return max(NUMBER_BYTES, 2 + BYTES_PER_CHAR * int(schema.get("maxLength", 0)))
    if kind == "object" or "properties" in schema or "additionalProperties" in schema:
        total = 2
        for name, sub in (schema.get("properties") or {}).items():
            total += len(json.dumps(name)) + 2 + max_json_bytes(sub, f"{path}.{name}", unbounded)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            if "maxProperties" not in schema:
                unbounded.append(f"{path}.*")
            key_bytes = 2 + BYTES_PER_CHAR * 253  # a map key: a Kubernetes-style name at most
            value = max_json_bytes(extra, f"{path}.*", unbounded)
            total += int(schema.get("maxProperties", 0)) * (key_bytes + 2 + value)
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            unbounded.append(f"{path} (preserve-unknown-fields)")
        return total
    unbounded.append(f"{path} (no type)")
    return 0


def spec_schema(crd_file: Path) -> dict[str, Any]:
    crd = yaml.safe_load(crd_file.read_text())
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    return dict(version["schema"]["openAPIV3Schema"]["properties"]["spec"])


# Passed to the Deployment as they are (core/v1 Affinity, EnvVarSource): bounded only by the request size.
OPAQUE = {
    "tritonmodels.tritonoperator.dev.yaml": [],
    "tritonservers.tritonoperator.dev.yaml": [
        "spec.affinity (preserve-unknown-fields)",
        "spec.env[].valueFrom (preserve-unknown-fields)",
    ],
}


@pytest.mark.parametrize("crd_file", sorted(CRDS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_field_of_the_spec_is_bounded(crd_file: Path) -> None:
    unbounded: list[str] = []
    largest = max_json_bytes(spec_schema(crd_file), "spec", unbounded)
    assert unbounded == OPAQUE[crd_file.name], f"unbounded in {crd_file.name}: {unbounded}"
    # Admitted specs go well past what one annotation may hold (a TritonModel's config.parameters alone:
    # 64 x 4,096 characters), which is why kopf must keep no copy of them.
    assert largest > ANNOTATIONS_LIMIT


def test_kopf_keeps_no_copy_of_the_spec_in_annotations() -> None:
    storage = NoDiffBase()
    body = kopf.Body({"metadata": {"name": "m", "annotations": {}}, "spec": {"x": "y" * 300_000}})
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert not patch  # nothing written to the object
    assert storage.fetch(body=body) is None


@pytest.mark.parametrize(
    ("schema", "bound", "unbounded"),
    [
        ({"type": "string", "maxLength": 10}, 122, []),
        ({"type": "string"}, 0, ["spec"]),
        ({"type": "array", "maxItems": 2, "items": {"type": "boolean"}}, 14, []),
        ({"type": "array", "items": {"type": "boolean"}}, 2, ["spec"]),
        ({"type": "object", "additionalProperties": {"type": "boolean"}}, 2, ["spec.*"]),
        ({"type": "object", "properties": {"a": {"enum": ["x", "yy"]}}}, 2 + 3 + 2 + 4, []),
    ],
)
def test_the_bound_itself(schema: dict[str, Any], bound: int, unbounded: list[str]) -> None:
    found: list[str] = []
    assert max_json_bytes(schema, "spec", found) == bound
    assert found == unbounded
