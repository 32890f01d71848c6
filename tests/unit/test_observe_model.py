"""observe/staging.py and observe/model.py: staging Job outcomes, per-replica states, TritonModel
conditions and metrics (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from triton_operator.api.tritonmodel import ReplicaState, TritonModelSpec
from triton_operator.observe.metrics import Scrape
from triton_operator.observe.model import (
    ObservedModel,
    ReplicaFacts,
    loaded_fraction,
    model_conditions,
    model_metrics,
    replica_state,
)
from triton_operator.observe.staging import StagingOutcome, failure_reason, staging_outcome
from triton_operator.render.labels import MODEL_LABEL, selector_labels, staging_labels
from triton_operator.render.labels import SERVER_NAME_LABEL as SERVER_LABEL
from triton_operator.triton.client import ModelState
from triton_operator.triton.metrics import MetricsSnapshot, ModelCounters

from sandbox.config import REPO_ROOT

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32
RESULT = json.dumps({"model": "mnist", "version": 1, "digest": DIGEST, "bytes": 10, "skipped": False})


def job(*conditions: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "mnist-stage-abc"},
        "status": {
            "conditions": [{"type": t, "status": "True", "reason": r, "message": m} for t, r, m in conditions]
        },
    }


def pod(
    name: str, created: str, *, terminated: str | None = None, waiting: str | None = None
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if terminated is not None:
        state["terminated"] = {"exitCode": 0, "message": terminated}
    if waiting is not None:
        state["waiting"] = {"reason": waiting, "message": 'secret "s3" not found'}
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {"containerStatuses": [{"name": "stage", "state": state}]},
    }


@pytest.mark.parametrize(
    ("the_job", "pods", "expected"),
    [
        pytest.param(job(), [pod("p", "t1")], StagingOutcome("running"), id="running"),
        pytest.param(
            job(("Complete", "", "")),
            [pod("p", "t1", terminated=RESULT + "\n")],
            StagingOutcome("complete", digest=DIGEST),
            id="complete-with-digest",
        ),
        pytest.param(
            job(("Complete", "", "")), [pod("p", "t1")], StagingOutcome("complete"), id="complete-no-message"
        ),
        pytest.param(
            job(("Failed", "PodFailurePolicy", "exit 13")),
            [
                pod("old", "t1", terminated="SourceUnavailable: timeout; retry"),
                pod("new", "t2", terminated="DigestMismatch: has digest x, not y; fix it\n"),
            ],
            StagingOutcome("failed", "DigestMismatch", "has digest x, not y; fix it"),
            id="failed-newest-pod-reason",
        ),
        pytest.param(
            job(("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")),
            [],
            StagingOutcome(
                "failed",
                "StagingFailed",
                "staging Job mnist-stage-abc DeadlineExceeded: Job was active longer than specified deadline",
            ),
            id="failed-without-pod-message",
        ),
    ],
)
def test_staging_outcome(
    the_job: dict[str, Any], pods: list[dict[str, Any]], expected: StagingOutcome
) -> None:
    assert staging_outcome(the_job, pods) == expected


def test_a_missing_secret_blocks_staging_with_missing_reference() -> None:
    outcome = staging_outcome(job(), [pod("p", "t1", waiting="CreateContainerConfigError")])
    assert outcome.phase == "blocked" and outcome.reason == "MissingReference"
    assert 'secret "s3" not found' in outcome.message and "credentialsSecret" in outcome.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SourceNotFound: s3://b/p missing; publish it", ("SourceNotFound", "s3://b/p missing; publish it")),
        ("Traceback...\nAccessDenied: credentials rejected\n", ("AccessDenied", "credentials rejected")),
        ("no reason here", None),
        ("", None),
    ],
)  # fmt: skip
def test_failure_reason(text: str, expected: tuple[str, str] | None) -> None:
    assert failure_reason(text) == expected


def row(version: str | None, state: str | None, reason: str | None = None, name: str = "mnist") -> ModelState:
    return ModelState(name=name, version=version, state=state, reason=reason)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], (ReplicaState.PENDING, None)),
        ([row(None, None)], (ReplicaState.PENDING, None)),
        ([row("1", "READY", name="other")], (ReplicaState.PENDING, None)),
        ([row("1", "READY")], (ReplicaState.READY, None)),
        ([row("1", "LOADING")], (ReplicaState.LOADING, None)),
        ([row("1", "UNAVAILABLE", "unloaded")], (ReplicaState.UNLOADED, "unloaded")),
        ([row("1", "UNAVAILABLE", "bad config")], (ReplicaState.UNAVAILABLE, "bad config")),
        ([row("2", "READY")], (ReplicaState.PENDING, "version 2 is loaded, not 1")),
        ([row("2", "READY"), row("1", "READY")], (ReplicaState.READY, None)),
    ],
)
def test_replica_state(rows: list[ModelState], expected: tuple[ReplicaState, str | None]) -> None:
    assert replica_state(rows, "mnist", 1) == expected


READY = ReplicaState.READY


def replica(name: str, state: ReplicaState = READY, **kw: Any) -> ReplicaFacts:
    return ReplicaFacts(pod=name, ip="10.0.0.1", pod_ready=kw.pop("pod_ready", True), state=state, **kw)


def observed(**kw: Any) -> ObservedModel:
    base: dict[str, Any] = {
        "server": "triton",
        "namespace": "ml",
        "version": 1,
        "wanted_job": "job-b",
        "staged_job": "job-b",
        "staged_version": 1,
        "replicas": (replica("a", current=True), replica("b", current=True)),
    }
    return ObservedModel(**(base | kw))


def summary(obs: ObservedModel) -> dict[str, tuple[str, str]]:
    return {c.type: (str(c.status), c.reason) for c in model_conditions(obs)}


FAILED = StagingOutcome("failed", "DigestMismatch", "has digest x, not y")
CASES = [
    pytest.param(
        observed(),
        {"Ready": ("True", "Loaded"), "Staged": ("True", "Staged"), "Loaded": ("True", "Loaded"),
         "Degraded": ("False", "AsExpected")},
        id="all-loaded",
    ),
    pytest.param(
        # Loaded into a pod whose models-loaded gate is not open yet: not served through the Service.
        observed(replicas=(replica("a", current=True), replica("b", current=True, in_service=False))),
        {"Ready": ("False", "Loading"), "Staged": ("True", "Staged"), "Loaded": ("False", "Loading"),
         "Degraded": ("False", "AsExpected")},
        id="loaded-into-a-pod-not-taking-traffic-yet",
    ),
    pytest.param(
        observed(server_found=False),
        {"Ready": ("False", "ServerNotFound"), "Staged": ("False", "ServerNotFound"),
         "Loaded": ("False", "ServerNotFound"), "Degraded": ("True", "ServerNotFound")},
        id="server-missing",
    ),
    # Regression: one GitOps sync applies the model before its server (Argo CD did, so every fresh
    # quickstart showed Degraded for a moment): a new model waits for its server before it is a problem.
    pytest.param(
        observed(server_found=False, young=True),
        {"Ready": ("False", "WaitingForServer"), "Staged": ("False", "WaitingForServer"),
         "Loaded": ("False", "WaitingForServer"), "Degraded": ("False", "AsExpected")},
        id="server-missing-for-a-new-model",
    ),
    pytest.param(
        observed(staged_job=None, staged_version=None, staging=StagingOutcome("running"), replicas=()),
        {"Ready": ("False", "Staging"), "Staged": ("False", "Staging"), "Loaded": ("False", "Staging"),
         "Degraded": ("False", "AsExpected")},
        id="first-staging",
    ),
    pytest.param(
        observed(staged_job="job-a", staging=StagingOutcome("running")),
        {"Ready": ("False", "Staging"), "Staged": ("False", "Staging"), "Loaded": ("True", "Loaded"),
         "Degraded": ("False", "AsExpected")},
        id="restaging-while-old-serves",
    ),
    pytest.param(
        observed(staged_job="job-a", staging=FAILED),
        {"Ready": ("False", "DigestMismatch"), "Staged": ("False", "DigestMismatch"),
         "Loaded": ("True", "Loaded"), "Degraded": ("True", "DigestMismatch")},
        id="restaging-failed-old-keeps-serving",
    ),
    pytest.param(
        observed(staged_job=None, staging=StagingOutcome("blocked", "MissingReference", "no secret")),
        {"Ready": ("False", "MissingReference"), "Staged": ("False", "MissingReference"),
         "Loaded": ("False", "Staging"), "Degraded": ("True", "MissingReference")},
        id="blocked-on-secret",
    ),
    pytest.param(
        observed(staged_job=None, staging=StagingOutcome("failed", "not camel", "x")),
        {"Ready": ("False", "StagingFailed"), "Staged": ("False", "StagingFailed"),
         "Loaded": ("False", "Staging"), "Degraded": ("True", "StagingFailed")},
        id="reason-that-is-not-camel-case",
    ),
    pytest.param(
        observed(replicas=(replica("a", current=True), replica("b", ReplicaState.PENDING))),
        {"Ready": ("False", "Loading"), "Staged": ("True", "Staged"), "Loaded": ("False", "Loading"),
         "Degraded": ("False", "AsExpected")},
        id="one-replica-pending",
    ),
    pytest.param(
        observed(replicas=(replica("a", current=False), replica("b", current=True))),
        {"Ready": ("False", "Loading"), "Staged": ("True", "Staged"), "Loaded": ("False", "Loading"),
         "Degraded": ("False", "AsExpected")},
        id="old-files-still-loaded-on-one",
    ),
    pytest.param(
        observed(replicas=(replica("a", ReplicaState.UNAVAILABLE, load_error="no GPUs"),
                           replica("b", current=True))),
        {"Ready": ("False", "LoadFailed"), "Staged": ("True", "Staged"), "Loaded": ("False", "LoadFailed"),
         "Degraded": ("True", "LoadFailed")},
        id="load-failed-on-one",
    ),
    pytest.param(
        observed(replicas=(replica("a", ReplicaState.PENDING, pod_ready=False),)),
        {"Ready": ("False", "WaitingForReplicas"), "Staged": ("True", "Staged"),
         "Loaded": ("False", "WaitingForReplicas"), "Degraded": ("False", "AsExpected")},
        id="no-ready-replica",
    ),
    pytest.param(
        observed(replicas=(replica("a", current=True),), wanted_replicas=3),
        {"Ready": ("False", "WaitingForReplicas"), "Staged": ("True", "Staged"),
         "Loaded": ("False", "WaitingForReplicas"), "Degraded": ("False", "AsExpected")},
        id="loaded-on-every-ready-pod-but-the-server-wants-more",
    ),
    pytest.param(
        observed(wanted_replicas=2),
        {"Ready": ("True", "Loaded"), "Staged": ("True", "Staged"), "Loaded": ("True", "Loaded"),
         "Degraded": ("False", "AsExpected")},
        id="loaded-on-all-the-server-wants",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("obs", "expected"), CASES)
def test_model_conditions(obs: ObservedModel, expected: dict[str, tuple[str, str]]) -> None:
    assert summary(obs) == expected


def test_messages_name_the_fix_and_tritons_words() -> None:
    missing = {c.type: c.message for c in model_conditions(observed(server_found=False))}
    assert "TritonServer 'triton' not found in namespace 'ml'" in missing["Ready"]
    assert "spec.serverRef.name" in missing["Ready"]
    failed = observed(
        replicas=(replica("a", ReplicaState.UNAVAILABLE, load_error="kind KIND_GPU but no GPUs"),)
    )
    loaded = {c.type: c.message for c in model_conditions(failed)}["Loaded"]
    assert "pod a" in loaded and "kind KIND_GPU but no GPUs" in loaded
    serving = {c.type: c.message for c in model_conditions(observed(staged_job="job-a", staging=FAILED))}
    assert "has digest x, not y" in serving["Ready"] and "keeps serving" in serving["Ready"]


def test_loaded_fraction_counts_current_ready_replicas_of_ready_pods() -> None:
    obs = observed(
        replicas=(
            replica("a", current=True),
            replica("b", current=False),
            replica("c", ReplicaState.PENDING, pod_ready=False),
        )
    )
    assert loaded_fraction(obs) == "1/2"


def scrape(at: float, **models: ModelCounters) -> Scrape:
    return Scrape(MetricsSnapshot(models={(c.model, c.version): c for c in models.values()}), at)


def counters(success: int, inferences: int, executions: int, *, model: str = "mnist", version: str = "1",
             failure: int = 0, queue_us: int = 0, p99_us: float | None = None) -> ModelCounters:  # fmt: skip
    return ModelCounters(
        model=model,
        version=version,
        success_count=success,
        failure_count=failure,
        inference_count=inferences,
        execution_count=executions,
        request_duration_us=success * 1000,
        queue_duration_us=queue_us,
        request_p99_us=p99_us,
    )


def test_model_metrics_sum_counters_and_window_rates_over_pods() -> None:
    scrapes = {
        "a": (
            scrape(10.0, m=counters(100, 100, 100)),
            scrape(12.0, m=counters(140, 140, 20 + 100, queue_us=4000, p99_us=3000.0)),
        ),
        "b": (
            scrape(10.0, m=counters(0, 0, 0)),
            scrape(
                12.0, m=counters(20, 20, 10, failure=2, p99_us=9000.0), o=counters(50, 50, 50, model="other")
            ),
        ),
    }
    # Window: pod a served 40 in 2 s (20 executions), pod b 20 plus 2 failures (10 executions).
    assert model_metrics(scrapes, "mnist", 1) == {
        "successCount": 160,
        "failureCount": 2,
        "requestRate": 31.0,
        "failureRate": 1.0,
        "p99LatencyMs": 9.0,
        "avgQueueMs": round(4000 / 60 / 1000, 3),
        "inferencesPerExecution": 2.0,
    }


def test_model_metrics_without_a_window_give_counts_only_and_nothing_for_unknown_models() -> None:
    first = {"a": (None, scrape(5.0, m=counters(7, 7, 7)))}
    assert model_metrics(first, "mnist", 1) == {"successCount": 7, "failureCount": 0}
    assert model_metrics(first, "mnist", 2) == {}
    assert model_metrics({}, "mnist", 1) == {}


def test_quickstart_model_is_valid_and_placed_on_the_quickstart_server() -> None:
    docs = list(yaml.safe_load_all((REPO_ROOT / "examples/quickstart/tritonmodel.yaml").read_text()))
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    (model,) = [d for d in docs if d["kind"] == "TritonModel"]
    server = yaml.safe_load((REPO_ROOT / "examples/quickstart/tritonserver.yaml").read_text())
    spec = TritonModelSpec.model_validate(model["spec"])
    assert spec.server_ref.name == server["metadata"]["name"]
    s3 = spec.source.s3
    assert s3 is not None and (s3.bucket, s3.prefix) == ("models", "mnist/1")
    assert s3.credentials_secret is not None and s3.credentials_secret.name == secret["metadata"]["name"]
    assert all(secret["stringData"][k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))


def test_staging_jobs_are_labelled_with_model_and_server_but_never_select_server_pods() -> None:
    labels = staging_labels("mnist", "triton")
    assert labels[MODEL_LABEL] == "mnist" and labels[SERVER_LABEL] == "triton"
    server_selector = selector_labels("triton")
    assert not all(labels.get(k) == v for k, v in server_selector.items())
    # Also not the pods' selector of a server named like the model.
    assert not all(labels.get(k) == v for k, v in selector_labels("mnist").items())
