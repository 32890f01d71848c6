"""Admission of spec.rollout and spec.experiment by the real apiserver: the CRD's schema and CEL rules.

Each invalid TritonModel is refused with a message naming the field; valid Canary and Experiment models
are admitted with their defaults filled in. Most cases use `kubectl apply --dry-run=server` (nothing is
stored); the status test stores one object, to show the operator's status.rollout and status.traffic
survive the schema (nothing pruned) and fill the CANARY and WEIGHT columns.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.e2e import kube
from tests.e2e.conftest import Sandbox
from tests.support.objects import kubectl_table

pytestmark = pytest.mark.e2e

API_VERSION = "tritonoperator.dev/v1alpha1"
S3_V1 = {"s3": {"bucket": "models", "prefix": "mnist/1"}}
S3_V2 = {"s3": {"bucket": "models", "prefix": "mnist/2"}}

CANARY: dict[str, Any] = {
    "apiVersion": API_VERSION,
    "kind": "TritonModel",
    "metadata": {"name": "mnist"},
    "spec": {
        "serverRef": {"name": "triton"},
        "version": 2,
        "source": S3_V2,
        "rollout": {
            "strategy": "Canary",
            "steps": [
                {"weight": 10, "pauseSeconds": 120},
                {"weight": 50},
                {"weight": 100, "pauseSeconds": 0},
            ],
            "analysis": {"minRequests": 500, "maxFailureRatio": 0.005, "maxLatencyRatio": 1.5},
            "stickyKey": "x-user-id",
        },
    },
}
EXPERIMENT: dict[str, Any] = {
    "apiVersion": API_VERSION,
    "kind": "TritonModel",
    "metadata": {"name": "mnist-ab"},
    "spec": {
        "serverRef": {"name": "triton"},
        "modelName": "mnist",
        "version": 1,
        "source": S3_V1,
        "experiment": {
            "stickyKey": "x-user-id",
            "variants": [{"version": 1, "weight": 90}, {"version": 2, "weight": 10, "source": S3_V2}],
        },
    },
}


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of base with spec.<path> (dotted) set to value."""
    obj = copy.deepcopy(base)
    node = obj["spec"]
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    return obj


def _rollout(**fields: Any) -> dict[str, Any]:
    return _with(CANARY, "rollout", fields)


def _variants(*variants: dict[str, Any]) -> dict[str, Any]:
    return _with(EXPERIMENT, "experiment.variants", list(variants))


@pytest.fixture(scope="module")
def ns(sandbox: Sandbox, crds: None) -> Iterator[str]:
    """One namespace for the module's dry runs (they store nothing), deleted afterwards."""
    name = f"rollout-admission-{uuid.uuid4().hex[:5]}"
    core = client.CoreV1Api(sandbox.api)
    core.create_namespace({"metadata": {"name": name, "labels": {"e2e": "true"}}})
    kube.wait_for(lambda: kube.service_account_exists(core, name, "default"), 30, "default service account")
    yield name
    core.delete_namespace(name)


def dry_run(sb: Sandbox, ns: str, obj: dict[str, Any], check: bool = True, verb: str = "apply") -> Any:
    """What the apiserver would store (defaults filled in), or the failed kubectl run when check=False."""
    result = sb.kubectl(
        verb, "--dry-run=server", "-o", "json", "-n", ns, "-f", "-", input=json.dumps(obj), check=check
    )
    return json.loads(result.stdout) if check else result


def test_valid_canary_is_admitted_with_its_defaults(sandbox: Sandbox, ns: str) -> None:
    stored = dry_run(sandbox, ns, CANARY)["spec"]["rollout"]
    assert [step["pauseSeconds"] for step in stored["steps"]] == [120, 60, 0]
    assert stored["analysis"] == {
        "intervalSeconds": 30,
        "minRequests": 500,
        "maxFailureRatio": 0.005,
        "maxLatencyRatio": 1.5,
        "latencyFloorMs": 1.0,
    }
    # Canary without steps (the default plan) and an analysis of defaults only.
    plain = dry_run(sandbox, ns, _rollout(strategy="Canary", analysis={}))["spec"]["rollout"]
    assert "steps" not in plain
    assert plain["analysis"] == {
        "intervalSeconds": 30,
        "minRequests": 200,
        "maxFailureRatio": 0.01,
        "maxLatencyRatio": 2.0,
        "latencyFloorMs": 1.0,
    }
    # null disables the latency check: the apiserver keeps it (nullable), it does not default it. Sent by
    # create (or apply --server-side): client-side `kubectl apply` drops nulls, so the default returns.
    disabled = _rollout(strategy="Canary", analysis={"maxLatencyRatio": None})
    off = dry_run(sandbox, ns, disabled, verb="create")
    assert off["spec"]["rollout"]["analysis"]["maxLatencyRatio"] is None
    # An empty rollout is Immediate.
    immediate = dry_run(sandbox, ns, _with(CANARY, "rollout", {}))["spec"]["rollout"]
    assert immediate == {"strategy": "Immediate"}


def test_valid_experiment_is_admitted(sandbox: Sandbox, ns: str) -> None:
    stored = dry_run(sandbox, ns, EXPERIMENT)["spec"]["experiment"]
    assert [(v["version"], v["weight"]) for v in stored["variants"]] == [(1, 90), (2, 10)]
    # Four variants, one of them dark (weight 0).
    four = _variants(
        {"version": 1, "weight": 50},
        {"version": 2, "weight": 25, "source": S3_V2},
        {"version": 3, "weight": 25, "source": S3_V2},
        {"version": 4, "weight": 0, "source": S3_V2},
    )
    assert len(dry_run(sandbox, ns, four)["spec"]["experiment"]["variants"]) == 4
    # With the Immediate strategy spelled out.
    dry_run(sandbox, ns, _with(EXPERIMENT, "rollout", {"strategy": "Immediate"}))


TOO_MANY_STEPS = [{"weight": w} for w in range(1, 12)]
VARIANT_2 = {"version": 2, "weight": 10, "source": S3_V2}

INVALID = [
    # (id, object, field the apiserver names, text of its message)
    (
        "steps-out-of-order",
        _rollout(strategy="Canary", steps=[{"weight": 50}, {"weight": 10}]),
        "spec.rollout.steps",
        "order of increasing weight",
    ),
    (
        "steps-duplicate",
        _rollout(strategy="Canary", steps=[{"weight": 10}, {"weight": 10}, {"weight": 100}]),
        "spec.rollout.steps",
        "same weight",
    ),
    (
        "step-above-100",
        _rollout(strategy="Canary", steps=[{"weight": 10}, {"weight": 150}]),
        "spec.rollout.steps[1].weight",
        "less than or equal to 100",
    ),
    (
        "step-zero",
        _rollout(strategy="Canary", steps=[{"weight": 0}]),
        "spec.rollout.steps[0].weight",
        "greater than or equal to 1",
    ),
    ("steps-empty", _rollout(strategy="Canary", steps=[]), "spec.rollout.steps", "at least 1 item"),
    ("steps-eleven", _rollout(strategy="Canary", steps=TOO_MANY_STEPS), "spec.rollout.steps", "at most 10"),
    (
        "pause-above-a-day",
        _rollout(strategy="Canary", steps=[{"weight": 100, "pauseSeconds": 86401}]),
        "spec.rollout.steps[0].pauseSeconds",
        "less than or equal to 86400",
    ),
    (
        "steps-with-immediate",
        _rollout(strategy="Immediate", steps=[{"weight": 10}]),
        "spec.rollout.steps",
        "applies only to strategy Canary",
    ),
    (
        "steps-without-strategy",
        _rollout(steps=[{"weight": 10}]),
        "spec.rollout.steps",
        "applies only to strategy Canary",
    ),
    (
        "analysis-with-immediate",
        _rollout(analysis={"minRequests": 10}),
        "spec.rollout.analysis",
        "applies only to strategy Canary",
    ),
    (
        "sticky-key-with-immediate",
        _rollout(stickyKey="x-user-id"),
        "spec.rollout.stickyKey",
        "applies only to strategy Canary",
    ),
    ("unknown-strategy", _rollout(strategy="BlueGreen"), "spec.rollout.strategy", "Unsupported value"),
    (
        "interval-too-short",
        _rollout(strategy="Canary", analysis={"intervalSeconds": 1}),
        "spec.rollout.analysis.intervalSeconds",
        "greater than or equal to 5",
    ),
    (
        "min-requests-zero",
        _rollout(strategy="Canary", analysis={"minRequests": 0}),
        "spec.rollout.analysis.minRequests",
        "greater than or equal to 1",
    ),
    (
        "failure-ratio-above-1",
        _rollout(strategy="Canary", analysis={"maxFailureRatio": 1.5}),
        "spec.rollout.analysis.maxFailureRatio",
        "less than or equal to 1",
    ),
    (
        "latency-ratio-below-1",
        _rollout(strategy="Canary", analysis={"maxLatencyRatio": 0.5}),
        "spec.rollout.analysis.maxLatencyRatio",
        "greater than or equal to 1",
    ),
    (
        "queue-ratio-above-100",
        _rollout(strategy="Canary", analysis={"maxQueueRatio": 101}),
        "spec.rollout.analysis.maxQueueRatio",
        "less than or equal to 100",
    ),
    (
        "latency-floor-negative",
        _rollout(strategy="Canary", analysis={"latencyFloorMs": -1}),
        "spec.rollout.analysis.latencyFloorMs",
        "greater than or equal to 0",
    ),
    (
        "sticky-key-upper-case",
        _rollout(strategy="Canary", stickyKey="X-User-Id"),
        "spec.rollout.stickyKey",
        "should match",
    ),
    (
        "weights-not-100",
        _variants({"version": 1, "weight": 80}, VARIANT_2),
        "spec.experiment.variants",
        "sum to 100",
    ),
    (
        "experiment-with-canary",
        _with(EXPERIMENT, "rollout", {"strategy": "Canary"}),
        "spec.experiment",
        "cannot be combined with spec.rollout.strategy Canary",
    ),
    (
        "variant-without-source",
        _variants({"version": 1, "weight": 90}, {"version": 2, "weight": 10}),
        "spec.experiment.variants",
        "source is required",
    ),
    (
        "duplicate-versions",
        _variants({"version": 1, "weight": 90}, {**VARIANT_2, "version": 1}),
        "spec.experiment.variants",
        "distinct versions",
    ),
    (
        "version-not-a-variant",
        _with(EXPERIMENT, "version", 3),
        "spec.version",
        "must be one of spec.experiment.variants[].version",
    ),
    (
        "own-variant-with-source",
        _variants({"version": 1, "weight": 90, "source": S3_V1}, VARIANT_2),
        "spec.experiment.variants",
        "must be left out",
    ),
    ("one-variant", _variants({"version": 1, "weight": 100}), "spec.experiment.variants", "at least 2 items"),
    (
        "five-variants",
        _variants(*({"version": v, "weight": 20, "source": S3_V2} for v in range(1, 6))),
        "spec.experiment.variants",
        "at most 4 items",
    ),
    (
        "variant-weight-above-100",
        _variants({"version": 1, "weight": 101}, {**VARIANT_2, "weight": -1}),
        "spec.experiment.variants[0].weight",
        "less than or equal to 100",
    ),
    (
        "variant-bad-source",
        _variants({"version": 1, "weight": 90}, {**VARIANT_2, "source": {}}),
        "spec.experiment.variants[1].source",
        "set exactly one of source.s3",
    ),
    (
        "experiment-sticky-key",
        _with(EXPERIMENT, "experiment.stickyKey", "user id"),
        "spec.experiment.stickyKey",
        "should match",
    ),
]


@pytest.mark.parametrize(("obj", "field", "needle"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_rollouts_and_experiments_are_refused_naming_the_field(
    sandbox: Sandbox, ns: str, obj: dict[str, Any], field: str, needle: str
) -> None:
    result = dry_run(sandbox, ns, obj, check=False)
    assert result.returncode != 0, f"admitted: {json.dumps(obj['spec'])}"
    assert f"{field}:" in result.stderr and needle in result.stderr, result.stderr


STATUS = {
    "rollout": {
        "phase": "Progressing",
        "stableVersion": "1",
        "canaryVersion": "2",
        "stepIndex": 1,
        "steps": 3,
        "canaryWeight": 50,
        "stepStartedAt": "2026-01-02T03:04:05Z",
        "nextDecisionAt": "2026-01-02T03:04:35Z",
        "reason": "StepAdvanced",
        "message": "step 1/3 (10%) passed: ...; now step 2/3 (50%)",
        "lastVerdict": "Successful",
        "lastVerdictMessage": "1,000 canary and 9,000 stable requests (200 required)",
        "lastCommandToken": "t1",
    },
    "traffic": [
        {
            "version": "1",
            "role": "stable",
            "desiredWeight": 50,
            "observedShare": 49.8,
            "requests": 9000,
            "requestsPerSecond": 150.0,
            "failureRatio": 0.0,
            "p50Ms": 1.2,
            "p99Ms": 4.5,
        },
        {"version": "2", "role": "canary", "desiredWeight": 50, "requests": 0},
    ],
}


def test_status_rollout_and_traffic_are_kept_and_shown(sandbox: Sandbox, ns: str) -> None:
    obj = _with(CANARY, "rollout", {"strategy": "Canary"})
    sandbox.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(obj))
    try:
        sandbox.kubectl(
            "patch", "-n", ns, "tritonmodel/mnist", "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": STATUS}),
        )  # fmt: skip
        stored = json.loads(sandbox.kubectl("get", "-n", ns, "tritonmodel/mnist", "-o", "json").stdout)
        assert {k: stored["status"][k] for k in STATUS} == STATUS  # nothing pruned
        row = kubectl_table(sandbox.kubectl("get", "-n", ns, "tm", "mnist").stdout)[0]
        # Issue 25: no STABLE column (VERSION is the served, stable version during a canary); CANARY
        # and WEIGHT from status.traffic's canary entry; SPLIT-OF and SHARE only on a Gateway's copies.
        assert list(row)[:8] == [
            "NAME",
            "READY",
            "SERVER",
            "VERSION",
            "CANARY",
            "WEIGHT",
            "SPLIT-OF",
            "SHARE",
        ]
        assert (row["CANARY"], row["WEIGHT"], row["SPLIT-OF"], row["SHARE"]) == ("2", "50", "", "")
        bad = {"rollout": {"phase": "Paused"}}
        refused = sandbox.kubectl(
            "patch", "-n", ns, "tritonmodel/mnist", "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": bad}), check=False,
        )  # fmt: skip
        assert refused.returncode != 0 and "status.rollout.phase" in refused.stderr, refused.stderr
    finally:
        sandbox.kubectl("delete", "-n", ns, "tritonmodel/mnist", "--wait=false")
