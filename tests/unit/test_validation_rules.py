"""Every validation rule, one table of examples run through every place that checks it.

A rule lives as a CEL rule in the CRD (what the apiserver refuses at admission), as a pydantic validator
(what the operator refuses when a spec got past an older CRD) and, for a rollout's steps and an
experiment's weights, as the engine's precondition (rollout.plan.validate_plan,
rollout.traffic.validate_variants). Each bad spec below must be refused by all of them, and each good
one accepted by all: a rule changed in one place and not the others fails here. The CEL rules are
evaluated in Python (tests/support/cel.py); a CEL rule in crds/ without an example fails too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError
from triton_operator.api.tritonmodel import TritonModelSpec
from triton_operator.api.tritonserver import TritonServerSpec
from triton_operator.rollout.plan import RolloutPlan, Step, validate_plan
from triton_operator.rollout.traffic import Variant, validate_variants

from tests.support.cel import Obj, violations
from tests.support.cel import rules as cel_rules

pytestmark = pytest.mark.unit

CRDS = {
    crd["spec"]["names"]["kind"]: crd
    for crd in (yaml.safe_load(p.read_text()) for p in (Path(__file__).parents[2] / "crds").glob("*.yaml"))
}
SPEC_MODELS: dict[str, type[BaseModel]] = {"TritonModel": TritonModelSpec, "TritonServer": TritonServerSpec}

DIGEST = "sha256:" + "ab" * 32
S3 = {"s3": {"bucket": "models", "prefix": "mnist/v1"}, "digest": DIGEST}
S3_V2 = {"s3": {"bucket": "models", "prefix": "mnist/v2"}}
HTTP = {"url": "https://example.com/m.onnx", "sha256": "ab" * 32}
GATEWAY = {"parentRefs": [{"name": "gw"}]}
V1 = {"version": 1, "weight": 90}
V2 = {"version": 2, "weight": 10, "source": S3_V2}
EXPERIMENT = {"variants": [V1, V2]}
SERVERS = {"servers": [{"name": "triton-a", "weight": 90}, {"name": "triton-b", "weight": 10}]}
PYTHON = {"backend": "python"}
AUTOSCALING = {"minReplicas": 2, "maxReplicas": 6, "target": {"value": 4}}


def _model(name: str = "mnist", **spec: Any) -> Obj:
    body = {"serverRef": {"name": "triton-a"}, "source": S3, **spec}
    return {
        "apiVersion": "tritonoperator.dev/v1alpha1",
        "kind": "TritonModel",
        "metadata": {"name": name},
        "spec": body,
    }


def _canary(*weights: int) -> Obj:
    return _model(version=2, rollout={"strategy": "Canary", "steps": [{"weight": w} for w in weights]})


def _experiment(*variants: Obj, **spec: Any) -> Obj:
    return _model(experiment={"variants": list(variants)}, **spec)


def _server(name: str = "triton-a", **spec: Any) -> Obj:
    return {
        "apiVersion": "tritonoperator.dev/v1alpha1",
        "kind": "TritonServer",
        "metadata": {"name": name},
        "spec": spec,
    }


def _repository(**repository: Any) -> Obj:
    return _server(modelRepository=repository)


# The engine's preconditions, fed as the operator feeds them (rollout/spec.plan_of, reconcile/routing.py's
# and reconcile/split.py's variants), from the spec as written.
def _plan_problems(obj: Obj) -> list[str]:
    steps = obj["spec"]["rollout"]["steps"]
    return validate_plan(
        RolloutPlan(tuple(Step(s["weight"], float(s.get("pauseSeconds", 60))) for s in steps))
    )


def _variant_problems(obj: Obj) -> list[str]:
    experiment = obj["spec"]["experiment"]
    if "servers" in experiment:
        arms = [Variant(s["name"], s["name"], s["weight"]) for s in experiment["servers"]]
        return validate_variants(arms, "spec.experiment.servers")
    return validate_variants(
        [Variant(f"v{v['version']}", str(v["version"]), v["weight"]) for v in experiment["variants"]]
    )


Engine = Callable[[Obj], list[str]]
TRANSITION = "a transition rule: the model sees the new spec alone"
METADATA = "a rule on metadata: the model sees the spec alone"


@dataclass(frozen=True)
class Bad:
    """An object exactly one CEL rule refuses, and what each check says of it."""

    name: str
    obj: Obj
    path: str  # the field the apiserver names ("" the object itself)
    says: str  # in the rule's message: what the user reads at admission
    model_says: str | None = None  # in pydantic's message, where its words differ (None: `says`)
    old: Obj | None = None  # an update from this object
    engine: Engine | None = None
    model_blind: str = ""  # why pydantic cannot refuse it


BAD = [
    # --- TritonModel ---
    Bad(
        "model-name-too-long",
        _model("m" * 201),
        "",
        "metadata.name is not a valid Triton model name",
        model_blind=METADATA,
    ),
    Bad(
        "model-name-changed",
        _model(modelName="other"),
        "spec.modelName",
        "modelName is immutable",
        old=_model(),
        model_blind=TRANSITION,
    ),
    Bad(
        "model-name-removed",
        _model(),
        "spec.modelName",
        "modelName is immutable",
        old=_model(modelName="mnist"),
        model_blind=TRANSITION,
    ),
    Bad(
        "gateway-added",
        _model(gateway=GATEWAY),
        "spec.gateway",
        "spec.gateway cannot be added or removed",
        old=_model(),
        model_blind=TRANSITION,
    ),
    Bad(
        "gateway-removed",
        _model(),
        "spec.gateway",
        "spec.gateway cannot be added or removed",
        old=_model(gateway=GATEWAY),
        model_blind=TRANSITION,
    ),
    Bad(
        "source-none",
        _model(source={"digest": DIGEST}),
        "spec.source",
        "set exactly one of source.s3, source.http or source.pvc",
    ),
    Bad(
        "source-two",
        _model(source={**S3, "http": HTTP}),
        "spec.source",
        "set exactly one of source.s3, source.http or source.pvc",
    ),
    Bad(
        "http-digest-differs",
        _model(source={"http": HTTP, "digest": "sha256:" + "cd" * 32}),
        "spec.source.digest",
        "source.digest must be 'sha256:' + source.http.sha256",
    ),
    Bad(
        "pvc-path-escapes",
        _model(source={"pvc": {"claimName": "data", "path": "a/../../etc"}}),
        "spec.source.pvc.path",
        "source.pvc.path must stay inside the claim: remove '..'",
    ),
    Bad(
        "config-without-backend",
        _model(config={"maxBatchSize": 4}),
        "spec.config",
        "config needs backend (e.g. python, onnxruntime) or platform",
    ),
    Bad(
        "batcher-without-batches",
        _model(config={**PYTHON, "dynamicBatching": {}}),
        "spec.config.dynamicBatching",
        "config.dynamicBatching needs config.maxBatchSize > 0",
    ),
    Bad(
        "dims-zero",
        _model(config={**PYTHON, "outputs": [{"name": "y", "dataType": "FP32", "dims": [4, 0]}]}),
        "spec.config.outputs[0].dims",
        "dims must be >= 1, or -1 for any size",
    ),
    Bad(
        "parameter-key-too-long",
        _model(config={**PYTHON, "parameters": {"k" * 129: "v"}}),
        "spec.config.parameters",
        "keys must be at most 128 characters",
        model_says="at most 128 characters",
    ),
    Bad(
        "steps-with-immediate",
        _model(rollout={"strategy": "Immediate", "steps": [{"weight": 10}]}),
        "spec.rollout.steps",
        "spec.rollout.steps applies only to strategy Canary",
    ),
    Bad(
        "analysis-without-canary",
        _model(rollout={"analysis": {}}),
        "spec.rollout.analysis",
        "spec.rollout.analysis applies only to strategy Canary",
    ),
    Bad(
        "sticky-key-without-canary",
        _model(rollout={"stickyKey": "x-user-id"}),
        "spec.rollout.stickyKey",
        "spec.rollout.stickyKey applies only to strategy Canary",
    ),
    Bad(
        "steps-out-of-order",
        _canary(50, 10),
        "spec.rollout.steps",
        "spec.rollout.steps must raise the weight from step to step",
        model_says="spec.rollout.steps[1].weight: 10 is not above the previous step's 50",
        engine=_plan_problems,
    ),
    Bad(
        "steps-repeat-a-weight",
        _canary(10, 10, 100),
        "spec.rollout.steps",
        "spec.rollout.steps has two steps with the same weight",
        model_says="spec.rollout.steps[1].weight: 10 is not above the previous step's 10",
        engine=_plan_problems,
    ),
    Bad(
        "experiment-with-canary",
        _model(experiment=EXPERIMENT, rollout={"strategy": "Canary"}),
        "spec.experiment",
        "spec.experiment cannot be combined with spec.rollout.strategy Canary",
    ),
    Bad(
        "experiment-empty",
        _model(experiment={}),
        "spec.experiment",
        "spec.experiment needs exactly one of variants (versions inside one server) or servers",
    ),
    Bad(
        "version-not-a-variant",
        _experiment({**V1, "source": S3_V2}, V2, version=3),
        "spec.version",
        "spec.version must be one of spec.experiment.variants[].version",
    ),
    Bad(
        "variant-without-source",
        _experiment(V1, {"version": 2, "weight": 10}),
        "spec.experiment.variants",
        "spec.experiment.variants[].source is required for every variant whose version is not spec.version",
    ),
    Bad(
        "own-variant-with-source",
        _experiment({**V1, "source": S3}, V2),
        "spec.experiment.variants",
        "spec.experiment.variants[].source must be left out on the variant with spec.version",
    ),
    Bad(
        "variant-weights-not-100",
        _experiment({**V1, "weight": 80}, V2),
        "spec.experiment.variants",
        "spec.experiment.variants weights must sum to 100",
        model_says="spec.experiment.variants: weights sum to 90, not 100",
        engine=_variant_problems,
    ),
    Bad(
        "variant-versions-repeat",
        _experiment(V1, {"version": 1, "weight": 10}),
        "spec.experiment.variants",
        "spec.experiment.variants must have distinct versions",
        model_says="spec.experiment.variants[1].version: 1 is already spec.experiment.variants[0]'s",
        engine=_variant_problems,
    ),
    Bad(
        "servers-without-gateway",
        _model(experiment=SERVERS),
        "spec.gateway",
        "spec.experiment.servers splits traffic between TritonServers through a Gateway: set spec.gateway",
    ),
    Bad(
        "server-ref-not-a-server",
        _model(experiment=SERVERS, gateway=GATEWAY, serverRef={"name": "triton-c"}),
        "spec.serverRef",
        "spec.serverRef.name must be one of spec.experiment.servers[].name",
    ),
    Bad(
        "gateway-with-version-variants",
        _model(experiment=EXPERIMENT, gateway=GATEWAY),
        "spec.experiment.variants",
        "spec.experiment.variants (versions inside one server) cannot be combined with spec.gateway",
    ),
    Bad(
        "server-weights-not-100",
        _model(
            experiment={"servers": [{"name": "triton-a", "weight": 80}, {"name": "b", "weight": 10}]},
            gateway=GATEWAY,
        ),
        "spec.experiment.servers",
        "spec.experiment.servers weights must sum to 100",
        model_says="spec.experiment.servers: weights sum to 90, not 100",
        engine=_variant_problems,
    ),
    Bad(
        "servers-repeat",
        _model(experiment={"servers": [{"name": "triton-a", "weight": 50}] * 2}, gateway=GATEWAY),
        "spec.experiment.servers",
        "spec.experiment.servers must name distinct TritonServers",
        model_says="spec.experiment.servers[1].name: triton-a is named twice",
        engine=_variant_problems,
    ),
    # --- TritonServer ---
    Bad(
        "server-name-too-long",
        _server("t" * 64),
        "",
        "metadata.name must be at most 63 characters",
        model_blind=METADATA,
    ),
    Bad(
        "pod-labels-select-pods",
        _server(podLabels={"app.kubernetes.io/instance": "other"}),
        "spec.podLabels",
        "podLabels must not set the labels the operator uses to select pods",
        model_says="podLabels must not set app.kubernetes.io/instance",
    ),
    Bad(
        "node-selector-key-too-long",
        _server(nodeSelector={"k" * 318: "v"}),
        "spec.nodeSelector",
        "keys must be at most 317 characters",
        model_says="at most 317 characters",
    ),
    Bad(
        "cpu-request-above-limit",
        _server(resources={"requests": {"cpu": "4"}, "limits": {"cpu": "2000m"}}),
        "spec.resources.requests.cpu",
        "resources.requests.cpu must not exceed resources.limits.cpu",
    ),
    Bad(
        "memory-request-above-limit",
        _server(resources={"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}}),
        "spec.resources.requests.memory",
        "resources.requests.memory must not exceed resources.limits.memory",
    ),
    Bad(
        "storage-class-changed",
        _repository(storageClassName="b"),
        "spec.modelRepository.storageClassName",
        "modelRepository.storageClassName is immutable",
        old=_repository(storageClassName="a"),
        model_blind=TRANSITION,
    ),
    Bad(
        "access-modes-changed",
        _repository(accessModes=["ReadWriteMany"]),
        "spec.modelRepository.accessModes",
        "modelRepository.accessModes is immutable",
        old=_repository(),
        model_blind=TRANSITION,
    ),
    Bad(
        "existing-claim-changed",
        _repository(existingClaim="b"),
        "spec.modelRepository.existingClaim",
        "modelRepository.existingClaim is immutable",
        old=_repository(existingClaim="a"),
        model_blind=TRANSITION,
    ),
    Bad(
        "size-shrunk",
        _repository(size="10Gi"),
        "spec.modelRepository.size",
        "modelRepository.size cannot shrink",
        old=_repository(size="20Gi"),
        model_blind=TRANSITION,
    ),
    Bad(
        "shared-without-rwx",
        _repository(layout="Shared"),
        "spec.modelRepository.layout",
        "modelRepository.layout Shared mounts the PVC on every Triton pod's node",
    ),
    Bad(
        "owned-flag",
        _server(triton={"extraArgs": ["--log-info=true", "--model-repository=/elsewhere"]}),
        "spec.triton.extraArgs",
        "triton.extraArgs must not set flags the operator owns",
        model_says="sets --model-repository, which the operator owns; use the matching spec field instead",
    ),
    Bad(
        "env-value-and-value-from",
        _server(env=[{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
        "spec.env[0].valueFrom",
        "set either value or valueFrom, not both",
    ),
    Bad(
        "autoscaling-min-above-max",
        _server(autoscaling={**AUTOSCALING, "minReplicas": 7}),
        "spec.autoscaling.minReplicas",
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas: lower minReplicas or raise",
    ),
    Bad(
        "autoscaling-max-under-default-min",
        _server(autoscaling={"maxReplicas": 0, "target": {"value": 4}}),
        "spec.autoscaling.minReplicas",
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        # pydantic refuses maxReplicas 0 by its own bound first (so does the schema's minimum)
        model_says="greater than or equal to 1",
    ),
    Bad(
        "replicas-with-autoscaling",
        _server(replicas=2, autoscaling=AUTOSCALING),
        "spec.replicas",
        "remove spec.replicas: the autoscaler owns the replica count",
    ),
    Bad(
        "env-from-neither",
        _server(envFrom=[{"prefix": "X_"}]),
        "spec.envFrom[0]",
        "set exactly one of secretRef or configMapRef",
    ),
]


@dataclass(frozen=True)
class Good:
    """An object every check accepts, at the edge of some rule."""

    name: str
    obj: Obj
    old: Obj | None = None
    engine: Engine | None = None


GOOD = [
    Good("model", _model()),
    Good(
        "canary",
        _model(
            version=2,
            rollout={
                "strategy": "Canary",
                "steps": [{"weight": 10, "pauseSeconds": 0}, {"weight": 50}, {"weight": 100}],
                "analysis": {},
                "stickyKey": "x-user-id",
            },
        ),
        engine=_plan_problems,
    ),
    Good("canary-one-step", _canary(100), engine=_plan_problems),
    Good("immediate", _model(rollout={"strategy": "Immediate"})),
    Good("experiment", _model(experiment={**EXPERIMENT, "stickyKey": "x-user-id"}), engine=_variant_problems),
    Good("dark-variant", _experiment({**V1, "weight": 100}, {**V2, "weight": 0}), engine=_variant_problems),
    Good("experiment-across-servers", _model(experiment=SERVERS, gateway=GATEWAY), engine=_variant_problems),
    Good("http-digest-matches", _model(source={"http": HTTP, "digest": DIGEST})),
    Good("pvc-path-with-dots", _model(source={"pvc": {"claimName": "data", "path": "a/..b/c.."}})),
    Good(
        "batcher-with-batches",
        _model(
            config={
                **PYTHON,
                "maxBatchSize": 4,
                "dynamicBatching": {},
                "inputs": [{"name": "x", "dataType": "FP32", "dims": [-1, 4]}],
            }
        ),
    ),
    Good("platform-only", _model(config={"platform": "onnxruntime_onnx", "parameters": {"k" * 128: "v"}})),
    Good(
        "model-name-kept", _model(modelName="a", gateway=GATEWAY), old=_model(modelName="a", gateway=GATEWAY)
    ),
    Good("model-name-set-on-metadata-that-is-no-model-name", _model("m" * 201, modelName="m")),
    Good("server", _server()),
    Good("autoscaled-server", _server(autoscaling=AUTOSCALING)),
    Good("autoscaled-min-equals-max", _server(autoscaling={**AUTOSCALING, "minReplicas": 6})),
    Good("autoscaled-default-min", _server(autoscaling={"maxReplicas": 1, "target": {"value": 1}})),
    Good("scaled-server", _server(replicas=0)),
    Good("server-name-63", _server("t" * 63, podLabels={"team": "a"}, nodeSelector={"k" * 317: "v"})),
    Good(
        "request-equals-limit",
        _server(
            resources={
                "requests": {"cpu": "2", "memory": "1Gi"},
                "limits": {"cpu": "2000m", "memory": "1024Mi"},
            }
        ),
    ),
    Good(
        "repository-grows",
        _repository(size="20Gi", storageClassName="a", existingClaim="c"),
        old=_repository(size="10Gi", storageClassName="a", existingClaim="c"),
    ),
    Good("shared-with-rwx", _repository(layout="Shared", accessModes=["ReadWriteMany"])),
    Good("shared-on-existing-claim", _repository(layout="Shared", existingClaim="c")),
    Good(
        "flag-that-looks-owned",
        _server(triton={"extraArgs": ["--model-repository-poll-secs=5", "--http-thread-count=8"]}),
    ),
    Good(
        "env",
        _server(
            env=[{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {}}],
            envFrom=[{"secretRef": {"name": "s"}}],
        ),
    ),
]


def _ids(rows: list[Bad] | list[Good]) -> list[str]:
    return [row.name for row in rows]


def _validate(obj: Obj) -> BaseModel:
    return SPEC_MODELS[obj["kind"]].model_validate(obj["spec"])


@pytest.mark.parametrize("bad", BAD, ids=_ids(BAD))
def test_the_apiserver_refuses_it_with_the_field(bad: Bad) -> None:
    found = violations(CRDS[bad.obj["kind"]], bad.obj, bad.old)
    assert [v.path for v in found] == [bad.path], [(v.path, v.rule.message) for v in found]
    assert bad.says in found[0].rule.message


@pytest.mark.parametrize("bad", BAD, ids=_ids(BAD))
def test_the_model_refuses_it_too(bad: Bad) -> None:
    if bad.model_blind:  # only admission can: say so, so the row cannot hide a missing check
        _validate(bad.obj)
        return
    with pytest.raises(ValidationError) as refused:
        _validate(bad.obj)
    messages = [error["msg"] for error in refused.value.errors()]
    assert any((bad.model_says or bad.says) in message for message in messages), messages


@pytest.mark.parametrize("bad", [b for b in BAD if b.engine], ids=_ids([b for b in BAD if b.engine]))
def test_the_engine_refuses_it_too(bad: Bad) -> None:
    assert bad.engine is not None and bad.engine(bad.obj)


@pytest.mark.parametrize("good", GOOD, ids=_ids(GOOD))
def test_every_check_accepts_it(good: Good) -> None:
    assert violations(CRDS[good.obj["kind"]], good.obj, good.old) == []
    _validate(good.obj)
    if good.engine is not None:
        assert good.engine(good.obj) == []


def test_every_cel_rule_has_an_example() -> None:
    """A rule added to the CRD without a row above fails here (a rule used at several places, like a
    source's, or a map's key length, needs one example)."""
    refused = {
        (v.rule.rule, v.rule.message)
        for bad in BAD
        for v in violations(CRDS[bad.obj["kind"]], bad.obj, bad.old)
    }
    every = {(rule.rule, rule.message) for crd in CRDS.values() for rule in cel_rules(crd)}
    assert sorted(every - refused) == []
