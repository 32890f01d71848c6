"""The generated CRDs: checked in and current, structural, documented, bounded, with kubectl niceties."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field
from triton_operator.api import crdgen
from triton_operator.api.kinds import KindInfo, PrinterColumn
from triton_operator.api.tritonserver import TRITONSERVER

from tests.support.render_checks import check_against_model

pytestmark = pytest.mark.unit

CRDS = Path(__file__).resolve().parents[2] / "crds"
# Keys a structural schema node may carry (apiextensions v1 JSONSchemaProps we use, plus x-kubernetes-*).
STRUCTURAL_KEYS = set(crdgen._PASSTHROUGH) | {
    "items",
    "properties",
    "additionalProperties",
    "exclusiveMinimum",
}


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CRDS / name).read_text())
    return data


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = _load("tritonservers.tritonoperator.dev.yaml")["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"
    ]
    return schema


def _nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path, e.g. spec.triton.extraArgs[]."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}{{}}")


def test_crds_directory_is_up_to_date() -> None:
    diffs = crdgen.stale_files(CRDS, crdgen.render_crds())
    assert not diffs, "crds/ is stale; run `python -m triton_operator.api.crdgen --out crds/`\n" + "".join(
        diffs
    )


def test_check_mode_reports_stale_and_missing_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1  # nothing written yet
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 0
    target = tmp_path / "tritonservers.tritonoperator.dev.yaml"
    target.write_text(target.read_text().replace("- ts\n", "- tsv\n"))
    (tmp_path / "leftover.tritonoperator.dev.yaml").write_text("kind: CustomResourceDefinition\n")
    capsys.readouterr()
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "-    - tsv\n+    - ts\n" in out
    assert "leftover.tritonoperator.dev.yaml" in out


def test_no_ref_or_defs_anywhere() -> None:
    text = (CRDS / "tritonservers.tritonoperator.dev.yaml").read_text()
    assert "$ref" not in text and "$defs" not in text and "anyOf" not in text and "title:" not in text


def test_schema_is_structural() -> None:
    for path, node in _nodes(_schema()):
        assert "type" in node, f"{path}: a structural schema needs a type on every node"
        unknown = {k for k in node if k not in STRUCTURAL_KEYS and not k.startswith("x-kubernetes-")}
        assert not unknown, f"{path}: keys {unknown} are not structural OpenAPI"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("uniqueItems") is not True, f"{path}: CRDs forbid uniqueItems"
        if node.get("exclusiveMinimum") is not None:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path


def test_every_property_has_a_description() -> None:
    # metadata is the one exception: the apiserver forbids anything but `type` there (kubectl explain
    # shows ObjectMeta's own documentation).
    missing = [
        path
        for path, node in _nodes(_schema())
        if path and path != "metadata" and not path.endswith(("[]", "}")) and not node.get("description")
    ]
    assert not missing, f"no description (kubectl explain would be empty): {missing}"


def test_every_list_is_bounded() -> None:
    unbounded = [
        path for path, node in _nodes(_schema()) if node["type"] == "array" and "maxItems" not in node
    ]
    assert not unbounded


def test_every_free_string_is_bounded() -> None:
    free = [
        path
        for path, node in _nodes(_schema())
        if path not in ("apiVersion", "kind")
        and node["type"] == "string"
        and not ({"enum", "format", "maxLength", "pattern"} & set(node))
    ]
    assert not free, f"strings without enum/format/maxLength/pattern: {free}"


def test_every_map_is_bounded_in_size_and_key_length() -> None:
    for path, node in _nodes(_schema()):
        if isinstance(node.get("additionalProperties"), dict) and path.startswith("spec."):
            assert "maxProperties" in node, path
            assert any("size(k)" in rule["rule"] for rule in node.get("x-kubernetes-validations", [])), path


def test_quantities_are_strings_with_the_quantity_pattern() -> None:
    nodes = dict(_nodes(_schema()))
    for path in (
        "spec.sharedMemorySize",
        "spec.modelRepository.size",
        "spec.resources.limits.memory",
        "spec.resources.requests.cpu",
    ):
        assert nodes[path]["type"] == "string"
        assert "x-kubernetes-int-or-string" not in nodes[path]
        assert nodes[path]["pattern"].startswith("^(([0-9]+"), path


def test_defaults_bounds_and_free_form_fields() -> None:
    nodes = dict(_nodes(_schema()))
    # No default: spec.autoscaling excludes spec.replicas, and a defaulted one would be set on every object.
    assert nodes["spec.replicas"] | {"description": ""} == {
        "description": "",
        "type": "integer",
        "nullable": True,
        "minimum": 0,
        "maximum": 64,
    }
    assert (nodes["spec.resources.gpus"]["minimum"], nodes["spec.resources.gpus"]["maximum"]) == (1, 16)
    assert nodes["spec.triton.modelControlMode"]["enum"] == ["explicit", "poll", "none"]
    assert nodes["spec.modelRepository.retainOnDelete"]["default"] is True
    for free in ("spec.affinity", "spec.env[].valueFrom", "status.kopf"):
        assert nodes[free]["x-kubernetes-preserve-unknown-fields"] is True, free
    assert nodes["spec.modelRepository.storageClassName"]["nullable"] is True


def test_cel_rules_carry_messages_and_valid_field_paths() -> None:
    rules = [
        (path, rule) for path, node in _nodes(_schema()) for rule in node.get("x-kubernetes-validations", [])
    ]
    nodes = dict(_nodes(_schema()))
    assert len(rules) >= 10
    for path, rule in rules:
        assert rule["message"], path
        assert rule.get("reason", "FieldValueInvalid") in {
            "FieldValueInvalid",
            "FieldValueForbidden",
            "FieldValueRequired",
            "FieldValueDuplicate",
        }
        if "fieldPath" in rule:
            # fieldPath must name a property under the node carrying the rule.
            target = ".".join(p for p in (path, rule["fieldPath"].lstrip(".")) if p)
            assert target in nodes, (path, rule["fieldPath"])
    extra_args = nodes["spec.triton.extraArgs"]["x-kubernetes-validations"][0]
    for flag in (
        "--model-repository",
        "--model-control-mode",
        "--http-port",
        "--grpc-port",
        "--metrics-port",
    ):
        assert f"'{flag}'" in extra_args["rule"] and flag in extra_args["message"]
    transitions = [rule for _, rule in rules if "oldSelf" in rule["rule"]]
    assert {r["fieldPath"] for r in transitions} == {
        ".storageClassName",
        ".accessModes",
        ".existingClaim",
        ".size",
    }


def test_kubectl_niceties() -> None:
    crd = _load("tritonservers.tritonoperator.dev.yaml")
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["ts"] and names["categories"] == ["triton"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    assert columns["P99ms"]["jsonPath"] == ".status.metrics.total.p99LatencyMs"
    assert columns["Req/s"]["jsonPath"] == ".status.metrics.total.inferenceRate"
    # Every column path exists in the schema.
    nodes = dict(_nodes(_schema()))
    for column in columns.values():
        path = column["jsonPath"].lstrip(".").split("[")[0]
        assert path.startswith("metadata") or path in nodes, column


def test_status_selector_is_a_string_and_conditions_a_map_list() -> None:
    nodes = dict(_nodes(_schema()))
    assert nodes["status.selector"]["type"] == "string"
    assert nodes["status.conditions"]["x-kubernetes-list-type"] == "map"
    assert nodes["status.conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    assert not [p for p, n in _nodes(nodes["status"]) if "default" in n], "status is never defaulted"


class _Inner(BaseModel):
    """Inner doc."""

    count: int = Field(default=1, gt=0, description="A positive count.")


class _Spec(BaseModel):
    """Spec doc."""

    inner: _Inner | None = Field(default=None, description="Field doc wins over the model doc.")
    tags: list[str] = Field(default=[], max_length=3, description="Tags.")


class _Status(BaseModel):
    """Status doc."""


class _Node(BaseModel):
    """A recursive model."""

    child: _Node | None = Field(default=None, description="Recursion.")


def test_generator_works_for_any_registered_kind_shape() -> None:
    """TritonModel will reuse crd_for; a throwaway kind shows it needs nothing TritonServer-specific."""
    info = KindInfo(
        kind="Widget",
        plural="widgets",
        singular="widget",
        short_names=("wd",),
        description="A widget.",
        spec_model=_Spec,
        status_model=_Status,
        printer_columns=(PrinterColumn("Count", "integer", ".spec.inner.count", "Count."),),
    )
    crd = crdgen.crd_for(info)
    assert crd["metadata"]["name"] == "widgets.tritonoperator.dev"
    assert "scale" not in crd["spec"]["versions"][0]["subresources"]
    inner = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "inner"
    ]
    assert inner["description"] == "Field doc wins over the model doc."
    assert inner["nullable"] is True
    # JSON Schema 2020's numeric exclusiveMinimum becomes OpenAPI 3.0's boolean form.
    assert (
        inner["properties"]["count"]["minimum"] == 0
        and inner["properties"]["count"]["exclusiveMinimum"] is True
    )


def test_recursive_models_are_refused() -> None:
    with pytest.raises(crdgen.SchemaError, match="recursive model"):
        crdgen.openapi_schema(_Node)


def test_crd_matches_the_registered_kind() -> None:
    assert _load("tritonservers.tritonoperator.dev.yaml") == crdgen.crd_for(TRITONSERVER)


def test_crd_fits_the_kubernetes_apiextensions_models() -> None:
    """Every key of the CRD is a field of the client's CustomResourceDefinition models, with the right type.

    This catches misspelled JSONSchemaProps keys and wrong types anywhere in the CRD; whether CEL rules
    compile and the apiserver deems the schema structural is for a real apiserver (the lead's e2e).
    """
    crd = _load("tritonservers.tritonoperator.dev.yaml")
    check_against_model(crd, "V1CustomResourceDefinition", "crd")
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["maxitems"] = 3
    with pytest.raises(AssertionError, match="maxitems"):
        check_against_model(crd, "V1CustomResourceDefinition", "crd")
