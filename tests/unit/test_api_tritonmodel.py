"""TritonModel models and CRD: defaults, bad input rejected with the field path, kubectl niceties."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from triton_operator.api import crdgen
from triton_operator.api.tritonmodel import (
    DATA_TYPES,
    TRITONMODEL,
    AnalysisVerdict,
    DataType,
    RolloutAnalysis,
    RolloutPhase,
    RolloutSpec,
    RolloutStatus,
    RolloutStrategy,
    StagedSpec,
    TritonModelSpec,
    TritonModelStatus,
)
from triton_operator.render.labels import SPLIT_OF_LABEL, SPLIT_SHARE_ANNOTATION
from triton_operator.rollout.analysis import AnalysisLimits, Verdict, validate_limits
from triton_operator.rollout.plan import RolloutPlan, Step, validate_plan
from triton_operator.rollout.state import Phase, RolloutState
from triton_operator.rollout.traffic import Variant, validate_variants

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
    assert list(columns)[:11] == [
        "Ready",
        "Server",
        "Version",
        "Canary",
        "Weight",
        "Split-Of",
        "Share",
        "Loaded",
        "Req/s",
        "P99ms",
        "Age",
    ]
    # Canary and weight from status.traffic's canary entry: there only while a canary is on its way (or
    # rolled back), so a model at rest shows none (status.rollout keeps the last rollout's 1/1/100).
    assert (columns["Canary"], columns["Weight"]) == (
        '.status.traffic[?(@.role=="canary")].version',
        '.status.traffic[?(@.role=="canary")].desiredWeight',
    )
    # A copy placed by a Gateway split names the model it is a copy of and its share, by the keys the
    # split puts on it (render.labels), dots escaped for JSONPath.
    assert columns["Split-Of"] == ".metadata.labels." + SPLIT_OF_LABEL.replace(".", "\\.")
    assert columns["Share"] == ".metadata.annotations." + SPLIT_SHARE_ANNOTATION.replace(".", "\\.")
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    nodes = _nodes(version["schema"]["openAPIV3Schema"])
    for path in columns.values():
        plain = path.lstrip(".").split("[")[0]
        assert plain.startswith("metadata") or plain in nodes, path


# --- rollout and experiment ----------------------------------------------------------------------

S3_V2 = {"s3": {"bucket": "models", "prefix": "mnist/v2"}}
CANARY = {
    "strategy": "Canary",
    "steps": [{"weight": 10, "pauseSeconds": 120}, {"weight": 50}, {"weight": 100, "pauseSeconds": 0}],
    "analysis": {"minRequests": 500, "maxFailureRatio": 0.005, "maxLatencyRatio": 1.5},
    "stickyKey": "x-user-id",
}
EXPERIMENT = {
    "stickyKey": "x-user-id",
    "variants": [{"version": 1, "weight": 90}, {"version": 2, "weight": 10, "source": S3_V2}],
}


def _canary(**rollout: Any) -> dict[str, Any]:
    return _spec(version=2, rollout={"strategy": "Canary", **rollout})


def _experiment(*variants: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return _spec(experiment={"variants": list(variants)}, **spec)


V2 = {"version": 2, "weight": 10, "source": S3_V2}


@pytest.mark.parametrize(
    "raw",
    [
        _spec(version=2, rollout=CANARY),
        _canary(),
        _canary(steps=[{"weight": 100}], analysis={}),
        _canary(analysis={"maxLatencyRatio": None, "maxQueueRatio": 1.5, "latencyFloorMs": 0}),
        _canary(steps=[{"weight": w, "pauseSeconds": 0} for w in range(10, 101, 10)]),
        _spec(rollout={}),
        _spec(rollout={"strategy": "Immediate"}),
        _spec(rollout={"strategy": "Immediate", "steps": None, "analysis": None, "stickyKey": None}),
        _spec(experiment=EXPERIMENT),
        _spec(experiment=EXPERIMENT, rollout={"strategy": "Immediate"}),
        _experiment({"version": 1, "weight": 100}, {**V2, "weight": 0}),
        _experiment(
            {"version": 3, "weight": 25, "source": S3_V2},
            {"version": 1, "weight": 25},
            {**V2, "weight": 25},
            {"version": 4, "weight": 25, "source": S3_V2},
        ),
    ],
    ids=[
        "canary",
        "canary-defaults",
        "canary-one-step",
        "analysis-latency-off",
        "ten-steps",
        "empty-rollout",
        "immediate",
        "immediate-nulls",
        "experiment",
        "experiment-immediate",
        "dark-variant",
        "four-variants",
    ],
)
def test_valid_rollouts_and_experiments(raw: dict[str, Any]) -> None:
    spec = TritonModelSpec.model_validate(raw)
    # What the apiserver stores reads back the same.
    again = TritonModelSpec.model_validate(spec.model_dump(mode="json", exclude_none=True))
    assert again.effective_rollout().effective_steps() == spec.effective_rollout().effective_steps()


def _steps(*weights: int) -> list[dict[str, int]]:
    return [{"weight": w} for w in weights]


BAD_ROLLOUTS = [
    # (id, spec, pydantic's location, text of the message: the field path and the fix)
    (
        "steps-out-of-order",
        _canary(steps=_steps(50, 10)),
        "rollout.steps",
        "spec.rollout.steps[1].weight: 10",
    ),
    (
        "steps-duplicate",
        _canary(steps=_steps(10, 10, 100)),
        "rollout.steps",
        "spec.rollout.steps[1].weight: 10 is not above the previous step's 10",
    ),
    ("step-above-100", _canary(steps=_steps(10, 150)), "rollout.steps.1.weight", "less than or equal to 100"),
    ("step-zero", _canary(steps=_steps(0)), "rollout.steps.0.weight", "greater than or equal to 1"),
    ("steps-empty", _canary(steps=[]), "rollout.steps", "at least 1 item"),
    ("steps-eleven", _canary(steps=_steps(*range(1, 12))), "rollout.steps", "at most 10 items"),
    (
        "pause-above-a-day",
        _canary(steps=[{"weight": 100, "pauseSeconds": 86_401}]),
        "rollout.steps.0.pauseSeconds",
        "less than or equal to 86400",
    ),
    (
        "pause-negative",
        _canary(steps=[{"weight": 100, "pauseSeconds": -1}]),
        "rollout.steps.0.pauseSeconds",
        "greater than or equal to 0",
    ),
    (
        "steps-with-immediate",
        _spec(rollout={"strategy": "Immediate", "steps": _steps(10)}),
        "rollout",
        "spec.rollout.steps applies only to strategy Canary",
    ),
    (
        "steps-without-strategy",
        _spec(rollout={"steps": _steps(10)}),
        "rollout",
        "set spec.rollout.strategy: Canary",
    ),
    (
        "analysis-with-immediate",
        _spec(rollout={"analysis": {}}),
        "rollout",
        "spec.rollout.analysis applies only to strategy Canary",
    ),
    (
        "sticky-key-with-immediate",
        _spec(rollout={"stickyKey": "x-user-id"}),
        "rollout",
        "spec.rollout.stickyKey applies only to strategy Canary",
    ),
    (
        "unknown-strategy",
        _spec(rollout={"strategy": "BlueGreen"}),
        "rollout.strategy",
        "'Immediate' or 'Canary'",
    ),
    (
        "interval-too-short",
        _canary(analysis={"intervalSeconds": 4}),
        "rollout.analysis.intervalSeconds",
        "greater than or equal to 5",
    ),
    (
        "interval-too-long",
        _canary(analysis={"intervalSeconds": 3601}),
        "rollout.analysis.intervalSeconds",
        "less than or equal to 3600",
    ),
    (
        "min-requests-zero",
        _canary(analysis={"minRequests": 0}),
        "rollout.analysis.minRequests",
        "greater than or equal to 1",
    ),
    (
        "min-requests-huge",
        _canary(analysis={"minRequests": 10_000_001}),
        "rollout.analysis.minRequests",
        "less than or equal to 10000000",
    ),
    (
        "failure-ratio-above-1",
        _canary(analysis={"maxFailureRatio": 1.5}),
        "rollout.analysis.maxFailureRatio",
        "less than or equal to 1",
    ),
    (
        "latency-ratio-below-1",
        _canary(analysis={"maxLatencyRatio": 0.5}),
        "rollout.analysis.maxLatencyRatio",
        "greater than or equal to 1",
    ),
    (
        "queue-ratio-above-100",
        _canary(analysis={"maxQueueRatio": 101}),
        "rollout.analysis.maxQueueRatio",
        "less than or equal to 100",
    ),
    (
        "latency-floor-negative",
        _canary(analysis={"latencyFloorMs": -1}),
        "rollout.analysis.latencyFloorMs",
        "greater than or equal to 0",
    ),
    (
        "latency-floor-above-1000",
        _canary(analysis={"latencyFloorMs": 1001}),
        "rollout.analysis.latencyFloorMs",
        "less than or equal to 1000",
    ),
    (
        "unknown-analysis-field",
        _canary(analysis={"maxErrors": 3}),
        "rollout.analysis.maxErrors",
        "Extra inputs",
    ),
    ("sticky-key-upper-case", _canary(stickyKey="X-User-Id"), "rollout.stickyKey", "should match pattern"),
    ("sticky-key-trailing-dash", _canary(stickyKey="user-"), "rollout.stickyKey", "should match pattern"),
    ("sticky-key-too-long", _canary(stickyKey="k" * 65), "rollout.stickyKey", "at most 64 characters"),
    (
        "weights-not-100",
        _experiment({"version": 1, "weight": 80}, V2),
        "experiment.variants",
        "spec.experiment.variants: weights sum to 90, not 100",
    ),
    (
        "experiment-with-canary",
        _spec(experiment=EXPERIMENT, rollout={"strategy": "Canary"}),
        "",
        "spec.experiment cannot be combined with spec.rollout.strategy Canary",
    ),
    (
        "variant-without-source",
        _experiment({"version": 1, "weight": 90}, {"version": 2, "weight": 10}),
        "",
        "spec.experiment.variants[1].source: spec.experiment.variants[].source is required",
    ),
    (
        "duplicate-versions",
        _experiment({"version": 1, "weight": 90}, {**V2, "version": 1}),
        "experiment.variants",
        "spec.experiment.variants[1].version: 1 is already spec.experiment.variants[0]'s",
    ),
    (
        "version-not-a-variant",
        _experiment({"version": 1, "weight": 90}, V2, version=3),
        "",
        "spec.version must be one of spec.experiment.variants[].version",
    ),
    (
        "own-variant-with-source",
        _experiment({"version": 1, "weight": 90, "source": S3}, V2),
        "",
        "spec.experiment.variants[0].source: spec.experiment.variants[].source must be left out",
    ),
    ("one-variant", _experiment({"version": 1, "weight": 100}), "experiment.variants", "at least 2 items"),
    (
        "five-variants",
        _experiment(*({"version": v, "weight": 20, "source": S3_V2} for v in range(1, 6))),
        "experiment.variants",
        "at most 4 items",
    ),
    (
        "variant-weight-negative",
        _experiment({"version": 1, "weight": 101}, {**V2, "weight": -1}),
        "experiment.variants.0.weight",
        "less than or equal to 100",
    ),
    (
        "variant-version-zero",
        _experiment({"version": 1, "weight": 90}, {**V2, "version": 0}),
        "experiment.variants.1.version",
        "greater than or equal to 1",
    ),
    (
        "variant-bad-source",
        _experiment({"version": 1, "weight": 90}, {**V2, "source": {}}),
        "experiment.variants.1.source",
        "set exactly one of source.s3",
    ),
    (
        "experiment-sticky-key",
        _spec(experiment={**EXPERIMENT, "stickyKey": "user id"}),
        "experiment.stickyKey",
        "should match pattern",
    ),
    ("experiment-without-variants", _spec(experiment={}), "experiment", "exactly one of variants"),
    (
        "experiment-with-variants-and-servers",
        _spec(
            experiment={
                "variants": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}],
                "servers": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}],
            }
        ),
        "experiment",
        "exactly one of variants",
    ),
]


@pytest.mark.parametrize(
    ("raw", "path", "text"), [c[1:] for c in BAD_ROLLOUTS], ids=[c[0] for c in BAD_ROLLOUTS]
)
def test_bad_rollouts_and_experiments_name_the_field(raw: dict[str, Any], path: str, text: str) -> None:
    where, message = _error(raw)
    assert where == path
    assert text in message


def test_rollout_defaults_and_effective_steps() -> None:
    assert TritonModelSpec.model_validate(_spec()).effective_rollout() == RolloutSpec()
    immediate = RolloutSpec()
    assert (immediate.strategy, immediate.steps, immediate.analysis, immediate.sticky_key) == (
        RolloutStrategy.IMMEDIATE,
        None,
        None,
        None,
    )
    assert immediate.effective_steps() == []
    canary = TritonModelSpec.model_validate(_canary()).effective_rollout()
    assert canary.effective_steps() == [(10, 60.0), (50, 60.0), (100, 60.0)]
    analysis = canary.effective_analysis()
    assert analysis == RolloutAnalysis()
    assert (
        analysis.interval_seconds,
        analysis.min_requests,
        analysis.max_failure_ratio,
        analysis.max_latency_ratio,
        analysis.max_queue_ratio,
        analysis.latency_floor_ms,
    ) == (30, 200, 0.01, 2.0, None, 1.0)
    custom = TritonModelSpec.model_validate(_spec(version=2, rollout=CANARY)).effective_rollout()
    assert custom.effective_steps() == [(10, 120.0), (50, 60.0), (100, 0.0)]
    assert custom.effective_analysis().min_requests == 500
    assert custom.effective_analysis().interval_seconds == 30
    off = RolloutAnalysis.model_validate({"maxLatencyRatio": None})
    assert off.max_latency_ratio is None
    dumped = TritonModelSpec.model_validate(_spec(version=2, rollout=CANARY)).model_dump(
        mode="json", exclude_none=True
    )
    assert dumped["rollout"]["steps"][1] == {"weight": 50, "pauseSeconds": 60}
    assert dumped["rollout"]["stickyKey"] == "x-user-id"


def test_the_api_maps_onto_the_rollout_package() -> None:
    """A spec pydantic admits gives a plan, limits and variants the decision code accepts as they are."""
    for raw in (_canary(), _spec(version=2, rollout=CANARY), _canary(analysis={"maxLatencyRatio": None})):
        rollout = TritonModelSpec.model_validate(raw).effective_rollout()
        analysis = rollout.effective_analysis()
        plan = RolloutPlan(
            tuple(Step(weight, pause) for weight, pause in rollout.effective_steps()),
            analysis.interval_seconds,
        )
        limits = AnalysisLimits(
            min_requests=analysis.min_requests,
            max_failure_ratio=analysis.max_failure_ratio,
            max_latency_ratio=analysis.max_latency_ratio,
            max_queue_ratio=analysis.max_queue_ratio,
            latency_floor_ms=analysis.latency_floor_ms,
        )
        assert validate_plan(plan) == [] and validate_limits(limits) == []
    spec = TritonModelSpec.model_validate(_spec(experiment=EXPERIMENT))
    assert spec.experiment is not None
    variants = [Variant(f"v{v.version}", str(v.version), v.weight) for v in spec.experiment.variants]
    assert validate_variants(variants) == []
    assert spec.variant_source(1) == spec.source
    assert spec.variant_source(2) is not None and spec.variant_source(2).s3 is not None
    assert spec.variant_source(3) is None
    # The mirrored messages are the rollout package's.
    bad = RolloutPlan((Step(10), Step(10)))
    assert validate_plan(bad)[0] in _error(_canary(steps=_steps(10, 10)))[1]
    twice = [Variant("a", "1", 90), Variant("b", "1", 10)]
    assert (
        validate_variants(twice)[0].replace("'1'", "1")
        in _error(_experiment({"version": 1, "weight": 90}, {**V2, "version": 1}))[1]
    )


def test_rollout_status_takes_what_the_machine_writes() -> None:
    state = RolloutState(
        Phase.PROGRESSING,
        "1",
        "2",
        1,
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        Verdict.SUCCESSFUL,
        "1,000 canary and 9,000 stable requests (200 required)",
        "t1",
        "StepAdvanced",
        "step 1/3 (10%) passed",
    )
    written = {**state.to_status(), "steps": 3, "canaryWeight": 50, "nextDecisionAt": "2026-01-02T03:04:35Z"}
    status = TritonModelStatus.model_validate({"rollout": written, "traffic": []})
    assert status.rollout is not None
    # Every key the operator writes is a field (a key the schema lacks would be pruned by the apiserver).
    assert status.rollout.model_dump(mode="json", exclude_none=True) == written
    aliases = {field.alias for field in RolloutStatus.model_fields.values()}
    assert aliases == set(state.to_status()) | {"steps", "canaryWeight", "nextDecisionAt", "lastVerdict"} | {
        "lastVerdictMessage",
        "lastCommandToken",
        "stableServer",
        "canaryServer",
    }
    assert [p.value for p in RolloutPhase] == [p.value for p in Phase]
    assert [v.value for v in AnalysisVerdict] == [v.value for v in Verdict]
    assert RolloutState.from_status(written) == state


def test_traffic_status() -> None:
    traffic = [
        {
            "version": "1",
            "role": "stable",
            "desiredWeight": 90,
            "observedShare": 89.7,
            "requests": 9000,
            "requestsPerSecond": 150.0,
            "failureRatio": 0.001,
            "p50Ms": 1.2,
            "p99Ms": 4.5,
        },
        {"version": "2", "role": "canary", "desiredWeight": 10},
        {"version": "3", "role": "variant", "desiredWeight": 0, "requests": 0},
    ]
    status = TritonModelStatus.model_validate({"traffic": traffic})
    assert status.model_dump(mode="json", exclude_none=True)["traffic"] == traffic
    for bad in (
        {"version": "2", "role": "baseline", "desiredWeight": 10},
        {"version": "2", "role": "canary", "desiredWeight": 101},
        {"version": "2", "role": "canary", "desiredWeight": 10, "failureRatio": 2},
    ):
        with pytest.raises(ValidationError):
            TritonModelStatus.model_validate({"traffic": [bad]})


def test_crd_rollout_and_experiment_schema() -> None:
    nodes = _nodes(_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    rollout = "spec.rollout"
    assert nodes[f"{rollout}.strategy"] | {"description": ""} == {
        "description": "",
        "type": "string",
        "default": "Immediate",
        "enum": ["Immediate", "Canary"],
    }
    steps = nodes[f"{rollout}.steps"]
    assert (steps["minItems"], steps["maxItems"], "default" in steps) == (1, 10, False)
    assert [r["rule"] for r in steps["x-kubernetes-validations"]] == [
        "self.map(s, s.weight).isSorted()",
        "self.all(s, self.exists_one(t, t.weight == s.weight))",
    ]
    step = {k: nodes[f"{rollout}.steps[].{k}"] for k in ("weight", "pauseSeconds")}
    assert (step["weight"]["minimum"], step["weight"]["maximum"]) == (1, 100)
    assert (step["pauseSeconds"]["minimum"], step["pauseSeconds"]["maximum"]) == (0, 86_400)
    assert step["pauseSeconds"]["default"] == 60
    bounds = {
        "intervalSeconds": (5, 3600, 30),
        "minRequests": (1, 10_000_000, 200),
        "maxFailureRatio": (0, 1, 0.01),
        "maxLatencyRatio": (1, 100, 2.0),
        "maxQueueRatio": (1, 100, None),
        "latencyFloorMs": (0, 1000, 1.0),
    }
    for name, (low, high, default) in bounds.items():
        node = nodes[f"{rollout}.analysis.{name}"]
        assert (node["minimum"], node["maximum"], node.get("default")) == (low, high, default), name
    assert nodes[f"{rollout}.analysis.maxLatencyRatio"]["nullable"] is True
    assert "default" not in nodes[f"{rollout}.analysis"]  # unset for Immediate; defaults fill in when set
    canary_only = {r["fieldPath"]: r for r in nodes[rollout]["x-kubernetes-validations"]}
    assert set(canary_only) == {".steps", ".analysis", ".stickyKey"}
    assert all(r["reason"] == "FieldValueForbidden" for r in canary_only.values())
    for key in (f"{rollout}.stickyKey", "spec.experiment.stickyKey"):
        assert nodes[key]["pattern"] == "^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$" and nodes[key]["maxLength"] == 64
    variants = nodes["spec.experiment.variants"]
    assert (variants["minItems"], variants["maxItems"]) == (2, 4)
    assert [r["rule"] for r in variants["x-kubernetes-validations"]] == [
        "self.map(v, v.weight).sum() == 100",
        "self.all(v, self.exists_one(w, w.version == v.version))",
    ]
    assert nodes["spec.experiment.variants[].version"]["maximum"] == nodes["spec.version"]["maximum"]
    assert (
        nodes["spec.experiment.variants[].source"]["x-kubernetes-validations"]
        == nodes["spec.source"]["x-kubernetes-validations"]
    )
    spec_rules = {r["fieldPath"]: r for r in nodes["spec"]["x-kubernetes-validations"][1:]}
    assert spec_rules[".experiment"]["rule"] == (
        "!has(self.experiment) || !has(self.rollout) || self.rollout.strategy != 'Canary'"
    )
    assert "self.experiment.variants.exists(v, v.version == self.version)" in spec_rules[".version"]["rule"]
    for path, rule in [(p, r) for p, n in nodes.items() for r in n.get("x-kubernetes-validations", [])]:
        # No FieldValueDuplicate: the apiserver prints a bare "Duplicate value" without the message.
        assert rule.get("reason", "FieldValueInvalid") != "FieldValueDuplicate", path
        if "fieldPath" in rule:
            assert f"{path}.{rule['fieldPath'].lstrip('.')}" in nodes, (path, rule["fieldPath"])


def test_crd_status_keeps_rollout_and_traffic() -> None:
    nodes = _nodes(_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    rollout = {p.split(".")[-1] for p in nodes if p.startswith("status.rollout.")}
    assert rollout == {field.alias for field in RolloutStatus.model_fields.values()}
    assert nodes["status.rollout.phase"]["enum"] == ["Progressing", "Promoted", "RolledBack", "Aborted"]
    assert nodes["status.rollout.lastVerdict"]["enum"] == ["Successful", "Inconclusive", "Failed"]
    assert nodes["status.rollout.stepStartedAt"]["format"] == "date-time"
    assert (
        nodes["status.rollout.canaryWeight"]["minimum"],
        nodes["status.rollout.canaryWeight"]["maximum"],
    ) == (
        0,
        100,
    )
    traffic = nodes["status.traffic"]
    assert traffic["maxItems"] == 8 and traffic["items"]["required"] == ["version", "role", "desiredWeight"]
    assert set(traffic["items"]["properties"]) == {
        "version",
        "server",
        "role",
        "desiredWeight",
        "observedShare",
        "requests",
        "requestsPerSecond",
        "failureRatio",
        "p50Ms",
        "p99Ms",
    }
    assert nodes["status.traffic[].role"]["enum"] == ["stable", "canary", "variant"]
    assert not [p for p, n in nodes.items() if p.startswith("status") and "default" in n]
