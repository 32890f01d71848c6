"""Generate CustomResourceDefinitions from the pydantic models: `python -m triton_operator.api.crdgen`.

Written by hand rather than with kube-custom-resource: that library wants models to subclass its own
CustomResource base and has no hook for our CEL rules or the scale subresource, while inlining pydantic's
JSON schema into a structural OpenAPI v3 schema takes a hundred lines we fully control.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import pkgutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from triton_operator.api.common import GROUP
from triton_operator.api.kinds import KindInfo, PrinterColumn, registered_kinds

# JSONSchemaProps keywords the apiserver accepts that we pass through unchanged.
_PASSTHROUGH = {
    "description",
    "type",
    "format",
    "default",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
    "required",
    "nullable",
}
# Key order in the output, so the YAML reads top-down like `kubectl explain`.
_ORDER = [
    "description",
    "type",
    "format",
    "nullable",
    "default",
    "enum",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "items",
    "properties",
    "additionalProperties",
]
HEADER = (
    "# Generated from operator/triton_operator/api by `python -m triton_operator.api.crdgen`; do not edit.\n"
)


class SchemaError(ValueError):
    """A pydantic schema construct that has no structural OpenAPI equivalent."""


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """Known keys in _ORDER, then x-kubernetes-* keys sorted."""
    rank = {key: i for i, key in enumerate(_ORDER)}
    return dict(sorted(node.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def _key_length_rule(names: Mapping[str, Any]) -> dict[str, str]:
    """A CEL rule for map keys: OpenAPI has no propertyNames, so bound key length with self.all()."""
    if set(names) - {"maxLength", "type"}:
        raise SchemaError(f"only maxLength is supported on map keys, got {sorted(names)}")
    limit = names["maxLength"]
    return {"rule": f"self.all(k, size(k) <= {limit})", "message": f"keys must be at most {limit} characters"}


def _rule_order(rule: Mapping[str, str]) -> dict[str, str]:
    """A CEL rule with its keys as people write them: rule, message, fieldPath, reason."""
    order = ["rule", "message", "fieldPath", "reason"]
    return {key: rule[key] for key in order if key in rule}


def _without_defaults(node: Any) -> Any:
    """A schema with every default removed (status is written by the operator, never defaulted)."""
    if isinstance(node, dict):
        return {k: _without_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_without_defaults(v) for v in node]
    return node


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any], stack: tuple[str, ...]) -> dict[str, Any]:
    """Turn one pydantic JSON-schema node into a structural OpenAPI v3 node."""
    node = dict(node)
    if "$ref" in node:
        name = node.pop("$ref").rsplit("/", 1)[-1]
        if name in stack:
            raise SchemaError(f"recursive model {name} cannot be inlined into a structural schema")
        target = _resolve(defs[name], defs, (*stack, name))
        # Keys next to $ref (the field's description, default, CEL rules) win over the model's own.
        return _ordered({**target, **_resolve(node, defs, stack)})
    if "allOf" in node and len(node["allOf"]) == 1:
        return _resolve({**node.pop("allOf")[0], **node}, defs, stack)
    if "anyOf" in node:
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        if len(variants) != 1:
            raise SchemaError(f"only Optional[X] unions are supported, got {len(variants)} variants")
        # Optional[X]: X, and null is a valid value (it also deletes the field in a merge-patch).
        return _ordered(
            {**_resolve(variants[0], defs, stack), **_resolve(node, defs, stack), "nullable": True}
        )
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {prop: _resolve(sub, defs, stack) for prop, sub in value.items()}
        elif key == "items":
            out[key] = _resolve(value, defs, stack)
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif value is not False:  # False (extra="forbid"): the apiserver prunes unknown fields instead.
                out[key] = _resolve(value, defs, stack)
        elif key == "propertyNames":
            out.setdefault("x-kubernetes-validations", []).append(_key_length_rule(value))
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True  # JSON Schema 2020 -> OpenAPI 3.0 form
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "x-kubernetes-validations":
            out[key] = [_rule_order(rule) for rule in value]
        elif key in _PASSTHROUGH or key.startswith("x-kubernetes-"):
            out[key] = value
        else:
            raise SchemaError(f"JSON schema keyword {key!r} has no structural OpenAPI equivalent")
    if out.get("x-kubernetes-preserve-unknown-fields") and "type" not in out:
        out["type"] = "object"
    return _ordered(out)


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Structural OpenAPI v3 schema of a model: $defs inlined, titles dropped, OpenAPI 3.0 keywords."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _resolve(raw, defs, ())


def _printer_column(column: PrinterColumn) -> dict[str, Any]:
    """additionalPrinterColumns entry."""
    entry: dict[str, Any] = {
        "name": column.name,
        "type": column.type,
        "jsonPath": column.json_path,
        "description": column.description,
    }
    if column.priority:
        entry["priority"] = column.priority
    if column.format:
        entry["format"] = column.format
    return entry


def crd_for(info: KindInfo) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    spec = openapi_schema(info.spec_model)
    if not spec.get("required"):
        # So an object without spec still gets every nested default (only valid when nothing is required).
        spec["default"] = {}
    root: dict[str, Any] = {
        "description": info.description,
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "description": "API version of the object: " + info.api_version + ".",
                "type": "string",
            },
            "kind": {"description": "Kind of the object: " + info.kind + ".", "type": "string"},
            "metadata": {"type": "object"},  # the apiserver forbids anything else here
            "spec": _ordered(spec),
            "status": _without_defaults(openapi_schema(info.status_model)),
        },
    }
    if info.root_validations:
        root["x-kubernetes-validations"] = list(info.root_validations)
    subresources: dict[str, Any] = {"status": {}}
    if info.scale is not None:
        subresources["scale"] = {
            "specReplicasPath": info.scale.spec_replicas_path,
            "statusReplicasPath": info.scale.status_replicas_path,
            "labelSelectorPath": info.scale.label_selector_path,
        }
    version: dict[str, Any] = {
        "name": info.version,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": root},
        "subresources": subresources,
    }
    if info.printer_columns:
        version["additionalPrinterColumns"] = [_printer_column(c) for c in info.printer_columns]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": info.crd_name, "labels": {"app.kubernetes.io/name": "triton-operator"}},
        "spec": {
            "group": info.group,
            "names": {
                "kind": info.kind,
                "listKind": info.kind + "List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            },
            "scope": "Namespaced",
            "versions": [version],
        },
    }


def load_kinds() -> list[KindInfo]:
    """Import every module of the api package so each kind registers itself, then list them."""
    package = importlib.import_module("triton_operator.api")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name != "crdgen":
            importlib.import_module(f"triton_operator.api.{module.name}")
    return registered_kinds()


def render_crds() -> dict[str, str]:
    """File name -> YAML text of every registered kind's CRD."""
    return {
        f"{info.crd_name}.yaml": HEADER + yaml.safe_dump(crd_for(info), sort_keys=False, width=110)
        for info in load_kinds()
    }


def stale_files(out: Path, expected: Mapping[str, str]) -> list[str]:
    """Unified diffs of every file in `out` that differs from `expected` (missing and extra files too)."""
    diffs = []
    present = {p.name for p in out.glob(f"*.{GROUP}.yaml")} if out.is_dir() else set()
    for name in sorted(set(expected) | present):
        current = (out / name).read_text() if name in present else ""
        wanted = expected.get(name, "")
        if current != wanted:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                wanted.splitlines(keepends=True),
                fromfile=f"{out / name} (on disk)",
                tofile=f"{out / name} (generated)",
            )
            diffs.append("".join(diff))
    return diffs


def main(argv: Sequence[str] | None = None) -> int:
    """Write the CRDs, or with --check report (exit 1) when the files on disk are stale."""
    parser = argparse.ArgumentParser(prog="python -m triton_operator.api.crdgen", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("crds"), help="directory of the CRD files")
    parser.add_argument("--check", action="store_true", help="exit 1 with a diff when the files are stale")
    args = parser.parse_args(argv)
    expected = render_crds()
    if args.check:
        diffs = stale_files(args.out, expected)
        for diff in diffs:
            sys.stdout.write(diff)
        if diffs:
            print(f"\n{args.out} is stale; run: python -m triton_operator.api.crdgen --out {args.out}")
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.glob(f"*.{GROUP}.yaml"):
        if stale.name not in expected:
            stale.unlink()
    for name, text in expected.items():
        (args.out / name).write_text(text)
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
