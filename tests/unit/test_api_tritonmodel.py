"""TritonModel models and CRD: defaults, bad input rejected with the field path, kubectl niceties."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from triton_operator.api import crdgen
from triton_operator.api.tritonmodel import (
    DATA_TYPES,
    TRITONMODEL,
    DataType,
    StagedSpec,
    TritonModelSpec,
    TritonModelStatus,
)

from model_builders.signature import DATATYPES

pytestmark = pytest.mark.unit

CRDS = Path(__file__).resolve().parents[2] / "crds"
DIGEST = "sha256:" + "ab" * 32
S3 = {"s3": {"bucket": "models", "prefix": "mnist/v1"}, "digest": DIGEST}


def _spec(**overrides: Any) -> dict[str, Any]:
    return {"serverRef": {"name": "triton-a"}, "source": S3, **overrides}


def _error(raw: dict[str, Any]) -> tuple[str, str]:
    """(field path, message) of the first validation error."""
    with pytest.raises(ValidationError) as info:
        TritonModelSpec.model_validate(raw)
    first = info.value.errors()[0]
    return ".".join(str(p) for p in first["loc"]), first["msg"]


def test_defaults_and_camel_case() -> None:
    spec = TritonModelSpec.model_validate(_spec())
    assert (spec.version, spec.keep_files_on_delete, spec.model_name, spec.config) == (1, True, None, None)
    assert spec.resolved_model_name("mnist") == "mnist"
    dumped = spec.model_dump(mode="json", exclude_none=True)
    assert dumped["serverRef"] == {"name": "triton-a"} and dumped["keepFilesOnDelete"] is True
    staged = StagedSpec.from_spec("mnist", spec)
    assert staged.model_name == "mnist" and staged.source.expected_digest() == DIGEST


@pytest.mark.parametrize(
    ("raw", "path", "text"),
    [
        (_spec(version=0), "version", "greater than or equal to 1"),
        (_spec(version="two"), "version", "valid integer"),
        (
            _spec(source={**S3, "http": {"url": "http://h/m.onnx", "sha256": "a" * 64}}),
            "source",
            "exactly one",
        ),
        (_spec(source={"digest": DIGEST}), "source", "exactly one"),
        (_spec(source={**S3, "digest": "md5:abc"}), "source.digest", "sha256"),
        (_spec(source={**S3, "digest": "sha256:" + "AB" * 32}), "source.digest", "sha256"),
        (_spec(source={"http": {"url": "ftp://h/m.onnx", "sha256": "a" * 64}}), "source.http.url", "http"),
        (_spec(source={"http": {"url": "http://h/m.onnx", "sha256": "abc"}}), "source.http.sha256", "0-9a-f"),
        (_spec(source={"pvc": {"claimName": "data", "path": "a/../../etc"}}), "source.pvc.path", "'..'"),
        (_spec(modelName="a/b"), "modelName", "pattern"),
        (_spec(modelName=".hidden"), "modelName", "pattern"),
        (
            _spec(
                config={"backend": "python", "inputs": [{"name": "x", "dataType": "FLOAT32", "dims": [1]}]}
            ),
            "config.inputs.0.dataType",
            "FP32",
        ),
        (
            _spec(config={"backend": "python", "inputs": [{"name": "x", "dataType": "FP32", "dims": [0]}]}),
            "config.inputs.0.dims",
            "-1 for any size",
        ),
        (_spec(config={"maxBatchSize": 4}), "config", "backend"),
        (_spec(config={"backend": "python", "dynamicBatching": {}}), "config", "maxBatchSize > 0"),
        (
            _spec(config={"backend": "python", "instanceGroups": [{"kind": "TPU"}]}),
            "config.instanceGroups.0.kind",
            "CPU",
        ),
        (_spec(unknownField=1), "unknownField", "Extra inputs"),
    ],
)
def test_bad_specs_name_the_field(raw: dict[str, Any], path: str, text: str) -> None:
    where, message = _error(raw)
    assert where == path
    assert text in message


def test_http_digest_must_match_its_sha256() -> None:
    http = {"url": "https://example.com/m.tar.gz", "sha256": "c" * 64}
    ok = TritonModelSpec.model_validate(_spec(source={"http": http, "digest": "sha256:" + "c" * 64}))
    assert ok.source.expected_digest() == "sha256:" + "c" * 64
    assert (
        TritonModelSpec.model_validate(_spec(source={"http": http})).source.expected_digest()
        == ok.source.digest
    )
    where, message = _error(_spec(source={"http": http, "digest": DIGEST}))
    assert where == "source" and "'sha256:' + source.http.sha256" in message


def test_data_types_are_tritons() -> None:
    assert DATA_TYPES == DATATYPES
    assert tuple(t.value for t in DataType) == DATATYPES


def test_declared_config_round_trips() -> None:
    config = {
        "backend": "python",
        "maxBatchSize": 8,
        "inputs": [{"name": "INPUT0", "dataType": "FP32", "dims": [-1, 4]}],
        "outputs": [{"name": "OUTPUT0", "dataType": "INT64", "dims": [1]}],
        "dynamicBatching": {"preferredBatchSizes": [4, 8], "maxQueueDelayMicroseconds": 100},
        "instanceGroups": [{"kind": "CPU", "count": 2}],
        "parameters": {"EXECUTION_ENV_PATH": "$$TRITON_MODEL_DIRECTORY/env.tar.gz"},
    }
    spec = TritonModelSpec.model_validate(_spec(config=config))
    assert spec.model_dump(mode="json", exclude_none=True)["config"] == config


def test_status_model_accepts_what_the_operator_writes() -> None:
    status = TritonModelStatus.model_validate(
        {
            "observedGeneration": 3,
            "conditions": [
                {
                    "type": t,
                    "status": "True",
                    "reason": "Loaded",
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                }
                for t in ("Ready", "Staged", "Loaded", "Degraded")
            ],
            "servedVersion": 2,
            "stagedDigest": DIGEST,
            "loaded": "2/3",
            "replicas": [{"pod": "triton-a-0", "ip": "10.0.0.5", "state": "READY"}],
            "endpoints": {
                "http": "triton-a.ml.svc:8000",
                "grpc": "triton-a.ml.svc:8001",
                "model": "/v2/models/m",
            },
            "metrics": {"requestRate": 1.5, "p99LatencyMs": 12.0, "refreshedAt": "2025-01-01T00:00:00Z"},
            "stagingJob": "mnist-stage-0123456789",
            "kopf": {"progress": {}},
            "somethingNewer": True,
        }
    )
    assert status.replicas[0].state.value == "READY" and status.loaded == "2/3"
    with pytest.raises(ValidationError):
        TritonModelStatus.model_validate({"replicas": [{"pod": "p", "state": "RUNNING"}]})


def _crd() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CRDS / "tritonmodels.tritonoperator.dev.yaml").read_text())
    return data


def _nodes(node: dict[str, Any], path: str = "") -> dict[str, dict[str, Any]]:
    found = {path: node}
    for name, sub in node.get("properties", {}).items():
        found.update(_nodes(sub, f"{path}.{name}" if path else name))
    if isinstance(node.get("items"), dict):
        found.update(_nodes(node["items"], f"{path}[]"))
    if isinstance(node.get("additionalProperties"), dict):
        found.update(_nodes(node["additionalProperties"], f"{path}{{}}"))
    return found


def test_crd_is_generated_and_current_for_both_kinds() -> None:
    assert {"tritonmodels.tritonoperator.dev.yaml", "tritonservers.tritonoperator.dev.yaml"} <= set(
        crdgen.render_crds()
    )
    assert crdgen.main(["--check", "--out", str(CRDS)]) == 0
    assert _crd() == crdgen.crd_for(TRITONMODEL)


def test_crd_every_field_described_and_bounded() -> None:
    schema = _crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    text = yaml.safe_dump(schema)
    assert "$ref" not in text and "anyOf" not in text
    for path, node in _nodes(schema).items():
        assert "type" in node, path
        if path not in ("", "metadata") and not path.endswith(("[]", "}")):
            assert node.get("description"), f"{path} has no description"
        if node["type"] == "array":
            assert "maxItems" in node, path
        if node["type"] == "string" and path not in ("apiVersion", "kind"):
            assert {"enum", "format", "maxLength", "pattern"} & set(node), path


def test_crd_cel_rules() -> None:
    nodes = _nodes(_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    source_rules = [r["message"] for r in nodes["spec.source"]["x-kubernetes-validations"]]
    assert "set exactly one of source.s3, source.http or source.pvc" in source_rules
    immutable = nodes["spec"]["x-kubernetes-validations"][0]
    assert "oldSelf.modelName" in immutable["rule"] and immutable["fieldPath"] == ".modelName"
    assert nodes["spec.source.digest"]["pattern"] == r"^sha256:[0-9a-f]{64}$"
    assert nodes["spec.config.inputs[].dataType"]["enum"] == list(DATATYPES)
    assert nodes["spec.version"]["minimum"] == 1 and nodes["spec.version"]["default"] == 1
    assert nodes["spec.keepFilesOnDelete"]["default"] is True
    assert nodes["status.kopf"]["x-kubernetes-preserve-unknown-fields"] is True
    assert nodes["status.replicas[].state"]["enum"] == [
        "READY",
        "LOADING",
        "UNAVAILABLE",
        "UNLOADED",
        "PENDING",
    ]


def test_kubectl_niceties() -> None:
    crd = _crd()
    assert crd["spec"]["names"]["shortNames"] == ["tm"] and crd["spec"]["names"]["categories"] == ["triton"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert list(columns)[:7] == ["Ready", "Server", "Version", "Loaded", "Req/s", "P99ms", "Age"]
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    nodes = _nodes(version["schema"]["openAPIV3Schema"])
    for path in columns.values():
        plain = path.lstrip(".").split("[")[0]
        assert plain.startswith("metadata") or plain in nodes, path
