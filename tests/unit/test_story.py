"""The Events a status write tells (observe/story.py): per kind, the story of a fresh deploy, a canary, a
rollback and a deletion, in order, from statuses as the operator writes them (taken from an e2e run on
the sandbox, trimmed to the fields the story reads)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import pytest
from triton_operator.conditions import Reason
from triton_operator.kube.events import NORMAL, WARNING, Event
from triton_operator.observe.story import deletion_story, event, is_problem, story

Status = dict[str, Any]
NOT_STALLED = ("Stalled", "False", "AsExpected", "No problem observed that only a change can end.")
FINE = ("Degraded", "False", "AsExpected", "No problems observed.")


def status(*conditions: tuple[str, str, str, str], **fields: Any) -> Status:
    return {
        "conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conditions],
        **fields,
    }


def sentence(text: str) -> str:
    """How an Event says a status message: capitalised, with a full stop."""
    return text[:1].upper() + text[1:] + "."


def told(
    kind: str, statuses: Sequence[Status], spec: dict[str, Any] | None = None
) -> list[tuple[str, str, str]]:
    """The Events of writing each status over the one before, in order, as (type, reason, message); the
    first status is where the object stood before ({} for a new object)."""
    out: list[tuple[str, str, str]] = []
    for old, new in itertools.pairwise(statuses):
        out.extend((e.type, str(e.reason), e.message) for e in story(kind, old, new, spec or {}))
    return out


# --- TritonServer ------------------------------------------------------------------------------------

POD_A, POD_B, POD_C = "triton-846cb56f87-ls28d", "triton-846cb56f87-qh8jv", "triton-846cb56f87-zz9x1"


def pods(*ready: tuple[str, bool]) -> list[dict[str, Any]]:
    return [{"name": name, "ready": ok} for name, ok in ready]


def rolling(ready: int, desired: int = 2, generation: int = 1, **fields: Any) -> Status:
    counts = f"{ready} of {desired} replicas ready, {desired} updated"
    return status(
        ("Ready", "False", "RollingOut", f"rolling out generation {generation}: {counts}"),
        (
            "Available",
            *(
                ("True", "MinimumReplicasAvailable", f"{ready} of {desired} replicas serve traffic.")
                if ready
                else ("False", "NoReplicasAvailable", "No replica serves.")
            ),
        ),
        ("Progressing", "True", "RollingOut", f"rolling out generation {generation}: {counts}"),
        FINE,
        ("Reconciling", "True", "RollingOut", f"rolling out generation {generation}: {counts}"),
        NOT_STALLED,
        **fields,
    )


def serving(desired: int = 2, generation: int = 1, **fields: Any) -> Status:
    return status(
        ("Ready", "True", "AllReplicasReady", f"All {desired} replicas ready."),
        ("Available", "True", "MinimumReplicasAvailable", f"{desired} of {desired} replicas serve traffic."),
        ("Progressing", "False", "RolloutComplete", f"Generation {generation} rolled out."),
        FINE,
        ("Reconciling", "False", "AllReplicasReady", f"All {desired} replicas ready."),
        NOT_STALLED,
        **fields,
    )


def not_ready(ready: int, desired: int, unready: str, **fields: Any) -> Status:
    message = f"{ready} of {desired} replicas ready, {desired} updated (not ready: {unready})"
    return status(
        ("Ready", "False", "ReplicasNotReady", message),
        ("Available", "True", "MinimumReplicasAvailable", f"{ready} of {desired} replicas serve traffic."),
        ("Progressing", "False", "RolloutComplete", "Generation 1 rolled out."),
        FINE,
        ("Reconciling", "True", "ReplicasNotReady", message),
        NOT_STALLED,
        **fields,
    )


SERVER_DEPLOY = [
    {},
    rolling(0, replicas=2, pods=pods((POD_A, False), (POD_B, False))),
    rolling(0, replicas=2, pods=pods((POD_A, False), (POD_B, False)), tritonVersion="2.51.0"),
    rolling(1, replicas=2, pods=pods((POD_A, True), (POD_B, False))),
    serving(2, replicas=2, pods=pods((POD_A, True), (POD_B, True))),
    serving(2, replicas=2, pods=pods((POD_A, True), (POD_B, True)), metrics={"rate": 3.0}),
]


@pytest.mark.parametrize(
    ("statuses", "spec", "expected"),
    [
        pytest.param(
            SERVER_DEPLOY,
            {"replicas": 2},
            [
                (NORMAL, "RollingOut", "Rolling out generation 1: 0 of 2 replicas ready, 2 updated."),
                (NORMAL, "AllReplicasReady", "Generation 1 rolled out: all 2 replicas ready."),
            ],
            id="fresh-deploy",
        ),
        pytest.param(
            [
                serving(2, replicas=2, pods=pods((POD_A, True), (POD_B, True))),
                rolling(0, generation=2, replicas=3, pods=pods((POD_A, True), (POD_B, True), (POD_C, False))),
                rolling(1, generation=2, replicas=3, pods=pods((POD_A, True), (POD_C, True))),
                serving(2, generation=2, replicas=2, pods=pods((POD_A, True), (POD_C, True))),
            ],
            {"replicas": 2},
            [
                (NORMAL, "RollingOut", "Rolling out generation 2: 0 of 2 replicas ready, 2 updated."),
                (NORMAL, "AllReplicasReady", "Generation 2 rolled out: all 2 replicas ready."),
            ],
            id="a-new-generation-rolls",
        ),
        pytest.param(
            [
                serving(2, replicas=2, pods=pods((POD_A, True), (POD_B, True))),
                not_ready(2, 3, POD_C, replicas=3, pods=pods((POD_A, True), (POD_B, True), (POD_C, False))),
                serving(3, replicas=3, pods=pods((POD_A, True), (POD_B, True), (POD_C, True))),
            ],
            {"replicas": 3},
            [
                (NORMAL, "Scaled", "Scaling from 2 to 3 replicas."),
                (NORMAL, "AllReplicasReady", "All 3 replicas ready."),
            ],
            id="kubectl-scale-up-is-no-warning",
        ),
        pytest.param(
            [
                serving(3, replicas=3, pods=pods((POD_A, True), (POD_B, True), (POD_C, True))),
                serving(2, replicas=3, pods=pods((POD_A, True), (POD_B, True), (POD_C, True))),
                serving(2, replicas=2, pods=pods((POD_A, True), (POD_B, True))),
            ],
            {"replicas": 2},
            [(NORMAL, "Scaled", "Scaling from 3 to 2 replicas.")],
            id="scale-down-once",
        ),
        pytest.param(
            [
                serving(2, replicas=2, pods=pods((POD_A, True), (POD_B, True))),
                not_ready(1, 2, POD_A, replicas=2, pods=pods((POD_A, False), (POD_B, True))),
                not_ready(
                    1, 2, POD_A, replicas=2, pods=pods((POD_A, False), (POD_B, True)), tritonVersion="x"
                ),
                serving(2, replicas=2, pods=pods((POD_A, True), (POD_B, True))),
            ],
            {"replicas": 2},
            [
                (
                    WARNING,
                    "ReplicasNotReady",
                    f"1 of 2 replicas ready, 2 updated (not ready: {POD_A}).",
                ),
                (NORMAL, "AllReplicasReady", "All 2 replicas ready."),
            ],
            id="a-killed-triton-warns-once-and-recovers",
        ),
        pytest.param(
            [
                serving(2, replicas=2, pods=pods((POD_A, True), (POD_B, True))),
                # The Deployment's counts saw it first; the pod list says so a pass later.
                not_ready(1, 2, POD_A, replicas=2, pods=pods((POD_A, True), (POD_B, True))),
                not_ready(1, 2, POD_A, replicas=2, pods=pods((POD_A, False), (POD_B, True))),
            ],
            {"replicas": 2},
            [(WARNING, "ReplicasNotReady", f"1 of 2 replicas ready, 2 updated (not ready: {POD_A}).")],
            id="a-killed-triton-warns-even-before-the-pod-list-says-so",
        ),
        pytest.param(
            [
                {},
                rolling(0, desired=1, replicas=1, pods=pods((POD_A, False))),
                status(
                    (
                        "Ready",
                        "False",
                        "Unschedulable",
                        "0 of 1 replicas ready: pod x cannot be scheduled: "
                        "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
                    ),
                    (
                        "Available",
                        "False",
                        "NoReplicasAvailable",
                        "No replica serves: pod x cannot be scheduled.",
                    ),
                    ("Progressing", "True", "RollingOut", "rolling out generation 1: 0 of 1 replicas ready"),
                    (
                        "Degraded",
                        "True",
                        "Unschedulable",
                        "pod x cannot be scheduled: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
                    ),
                    ("Reconciling", "True", "Unschedulable", "same as Ready"),
                    NOT_STALLED,
                    replicas=1,
                    pods=pods((POD_A, False)),
                ),
            ],
            {"replicas": 1},
            [
                (NORMAL, "RollingOut", "Rolling out generation 1: 0 of 1 replicas ready, 1 updated."),
                (
                    WARNING,
                    "Unschedulable",
                    "Pod x cannot be scheduled: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
                ),
            ],
            id="unschedulable-warns-in-degradeds-words",
        ),
    ],
)
def test_server_story(
    statuses: list[Status], spec: dict[str, Any], expected: list[tuple[str, str, str]]
) -> None:
    assert told("TritonServer", statuses, spec) == expected


def test_a_deleted_server_tells_nothing_of_its_own() -> None:
    assert deletion_story("TritonServer", ["triton-a"]) == []


# --- TritonModel -------------------------------------------------------------------------------------

JOB1, JOB2, JOB3 = "scorer-stage-7705f74702", "scorer-stage-c58c5a828c", "scorer-stage-2215c68341"
DIGEST1, DIGEST2, DIGEST3 = "sha256:09bc74dd", "sha256:33e19143", "sha256:a00fe18b"


def staging(job: str, version: int, loaded: tuple[str, str, str] | None = None, **fields: Any) -> Status:
    text = f"Job {job} is staging version {version}."
    return status(
        ("Ready", "False", "Staging", text),
        ("Staged", "False", "Staging", text),
        ("Loaded", *(loaded or ("False", "Staging", "Nothing staged yet."))),
        FINE,
        ("Reconciling", "True", "Staging", text),
        NOT_STALLED,
        **fields,
    )


def loaded(version: int, job: str, digest: str, replicas: str = "2/2", **fields: Any) -> Status:
    text = f"Version {version} is ready on {replicas} replicas."
    return status(
        ("Ready", "True", "Loaded", text),
        ("Staged", "True", "Staged", f"Version {version} staged by Job {job}."),
        ("Loaded", "True", "Loaded", text),
        FINE,
        ("Reconciling", "False", "Loaded", text),
        NOT_STALLED,
        stagedDigest=digest,
        loaded=replicas,
        servedVersion=version,
        **fields,
    )


MODEL_DEPLOY = [
    {},
    staging(JOB1, 1, stagingJob=JOB1, loaded="0/0"),
    staging(JOB1, 1, stagingJob=JOB1, loaded="0/2"),
    loaded(1, JOB1, DIGEST1, stagingJob=JOB1),
    loaded(1, JOB1, DIGEST1, stagingJob=JOB1, metrics={"requestRate": 9.97}),
]


def canary_step(
    reason: str,
    message: str,
    canary: int,
    weight: int,
    step: int,
    stable: int = 1,
    phase: str = "Progressing",
) -> Status:
    """A canary's status while it runs: Ready False for the step's reason, Progressing True."""
    job, digest = (JOB2, DIGEST2) if canary == 2 else (JOB3, DIGEST3)
    return status(
        ("Ready", "False", reason, message),
        ("Staged", "True", "Staged", f"Version {canary} staged by Job {job}."),
        ("Loaded", "True", "Loaded", f"Version {canary} is ready on 2/2 replicas."),
        FINE,
        ("Reconciling", "True", reason, message),
        NOT_STALLED,
        ("Progressing", "True", reason, message),
        stagedDigest=digest,
        servedVersion=stable,
        rollout={
            "phase": phase,
            "reason": reason,
            "message": message,
            "stableVersion": str(stable),
            "canaryVersion": str(canary),
            "canaryWeight": weight,
            "stepIndex": step,
            "steps": 3,
        },
    )


def at_rest(version: int, job: str, digest: str, message: str = "") -> Status:
    rest = loaded(version, job, digest)
    rest["conditions"].append(
        {"type": "Progressing", "status": "False", "reason": "RolloutComplete", "message": message}
    )
    rest["rollout"] = {
        "phase": "Promoted",
        "reason": "Serving",
        "message": message or f"version {version} serves 100%",
        "stableVersion": str(version),
        "canaryVersion": str(version),
        "canaryWeight": 100,
        "stepIndex": 0,
        "steps": 3,
    }
    return rest


PASSED_1 = (
    "step 1/3 (20%) passed: 259 canary and 1,035 stable requests (20 required); failure ratio 0.000 <= 0.050 "
    "(0 of 259 requests); p99 33.3 ms is 3.64x stable's 9.1 ms <= 50.0x; now step 2/3 (60%), next decision "
    "at 2026-12-07T15:10:33Z"
)
PASSED_2 = (
    "step 2/3 (60%) passed: 989 canary and 658 stable requests (20 required); failure ratio 0.000 <= 0.050 "
    "(0 of 989 requests); p99 9.1 ms is 0.96x stable's 9.4 ms <= 50.0x; now step 3/3 (100%), next decision "
    "at 2026-12-07T15:10:45Z"
)
PROMOTED = (
    "promoted version 2 (stable was 1) after step 3/3 (100%) passed: 30,274 canary requests (20 required); "
    "failure ratio 0.000 <= 0.050 (0 of 30,274 requests); p99 10.4 ms, not compared: no stable baseline"
)
STARTED = "canary version 2 against stable 1: step 1/3 (20%), next decision at 2026-12-07T15:10:23Z"


def promoted() -> Status:
    done = at_rest(2, JOB2, DIGEST2, PROMOTED)
    done["rollout"] |= {"reason": "Promoted", "stableVersion": "1", "canaryVersion": "2", "stepIndex": 2}
    return done


def staging_canary() -> Status:
    """Version 2's files are being staged while version 1 serves (its router holds 100%)."""
    text = f"Job {JOB2} is staging version 2."
    base = at_rest(1, JOB1, DIGEST1, "version 1 serves 100%")
    base["conditions"] = status(
        ("Ready", "False", "Staging", f"{text} Version 1 staged earlier keeps serving."),
        ("Staged", "False", "Staging", text),
        ("Loaded", "True", "Loaded", "Version 1 is ready on 2/2 replicas."),
        FINE,
        ("Reconciling", "True", "Staging", text),
        NOT_STALLED,
        ("Progressing", "True", "CanaryLoading", "version 2 gets traffic once it is ready on every replica"),
    )["conditions"]
    return base


CANARY = [
    at_rest(1, JOB1, DIGEST1, "version 1 serves 100%"),
    staging_canary(),
    canary_step("CanaryStarted", STARTED, 2, 20, 0),
    canary_step("WaitingForMetrics", "step 1/3 (20%): waiting for metrics", 2, 20, 0),
    canary_step("StepAdvanced", PASSED_1, 2, 60, 1),
    canary_step("WaitingForMetrics", "step 2/3 (60%): waiting for metrics", 2, 60, 1),
    canary_step("AnalysisPassing", "step 2/3 (60%): canary passing, 500 canary requests", 2, 60, 1),
    canary_step("StepAdvanced", PASSED_2, 2, 100, 2),
    canary_step("AnalysisPassing", "step 3/3 (100%): canary passing, 27,306 canary requests", 2, 100, 2),
    promoted(),
    at_rest(2, JOB2, DIGEST2, "version 2 promoted and serves 100%; version 1 unloaded"),
]

ROLLED_BACK = "rolled back to version 2 at step 1/3 (20%): failure ratio 0.199 > 0.050 (148 of 743 requests)"


def rolled_back() -> Status:
    back = canary_step("RolledBack", ROLLED_BACK, 3, 0, 0, stable=2, phase="RolledBack")
    conditions = {c["type"]: c for c in back["conditions"]}
    for ctype, cstatus in (("Degraded", "True"), ("Progressing", "False"), ("Stalled", "True")):
        conditions[ctype] = {"type": ctype, "status": cstatus, "reason": "RolledBack", "message": ROLLED_BACK}
    conditions["Reconciling"] = {
        "type": "Reconciling",
        "status": "False",
        "reason": "RolledBack",
        "message": "x",
    }
    back["conditions"] = list(conditions.values())
    return back


ROLLBACK = [
    at_rest(2, JOB2, DIGEST2, "version 2 serves 100%"),
    canary_step("CanaryStarted", "canary version 3 against stable 2: step 1/3 (20%)", 3, 20, 0, stable=2),
    canary_step("WaitingForMetrics", "step 1/3 (20%): waiting for metrics", 3, 20, 0, stable=2),
    rolled_back(),
    rolled_back(),  # the next pass writes metrics only: nothing new to tell
]


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        pytest.param(
            MODEL_DEPLOY,
            [
                (NORMAL, "Staging", f"Job {JOB1} is staging version 1."),
                (NORMAL, "Staged", f"Version 1 staged by Job {JOB1}, digest {DIGEST1}."),
                (NORMAL, "Loaded", "Version 1 is ready on 2/2 replicas."),
            ],
            id="fresh-deploy",
        ),
        pytest.param(
            CANARY,
            [
                (NORMAL, "Staging", f"Job {JOB2} is staging version 2."),
                (NORMAL, "Staged", f"Version 2 staged by Job {JOB2}, digest {DIGEST2}."),
                (NORMAL, "Loaded", "Version 2 is ready on 2/2 replicas."),
                (NORMAL, "CanaryStarted", sentence(STARTED)),
                (NORMAL, "StepAdvanced", sentence(PASSED_1)),
                (NORMAL, "StepAdvanced", sentence(PASSED_2)),
                (NORMAL, "Promoted", sentence(PROMOTED)),
                (NORMAL, "RolloutComplete", "Rollout complete: version 2 serves all the traffic."),
            ],
            id="canary-v1-to-v2",
        ),
        pytest.param(
            ROLLBACK,
            [
                (NORMAL, "Staged", f"Version 3 staged by Job {JOB3}, digest {DIGEST3}."),
                (NORMAL, "Loaded", "Version 3 is ready on 2/2 replicas."),
                (NORMAL, "CanaryStarted", "Canary version 3 against stable 2: step 1/3 (20%)."),
                (WARNING, "RolledBack", sentence(ROLLED_BACK)),
            ],
            id="rollback-one-warning-with-the-failure-ratio",
        ),
    ],
)
def test_model_story(statuses: list[Status], expected: list[tuple[str, str, str]]) -> None:
    assert told("TritonModel", statuses) == expected


def test_a_deleted_model_says_where_it_was_unloaded_from() -> None:
    assert deletion_story("TritonModel", ["triton-a", "triton-b"]) == [
        Event(NORMAL, "Unloaded", "Unloaded from 2 replicas: triton-a, triton-b.")
    ]
    assert deletion_story("TritonModel", []) == [
        Event(NORMAL, "Unloaded", "Unloaded from 0 replicas (none reachable).")
    ]


def test_a_staging_failure_warns_once_with_its_own_reason() -> None:
    failed = "staging Job m-stage-1 SourceNotFound: s3://models/mnist/9 has no files"
    stuck = status(
        ("Ready", "False", "SourceNotFound", failed),
        ("Staged", "False", "SourceNotFound", failed),
        ("Loaded", "False", "Staging", "Nothing staged yet."),
        ("Degraded", "True", "SourceNotFound", failed),
        ("Reconciling", "False", "SourceNotFound", "Stalled"),
        ("Stalled", "True", "SourceNotFound", failed),
    )
    assert told("TritonModel", [{}, MODEL_DEPLOY[1], stuck, stuck]) == [
        (NORMAL, "Staging", f"Job {JOB1} is staging version 1."),
        (WARNING, "SourceNotFound", sentence(failed)),
    ]


def test_a_route_accepted_is_normal_and_refused_is_a_warning() -> None:
    waiting = status(("Routed", "Unknown", "WaitingForGateway", "no gateway has accepted the HTTPRoute yet"))
    accepted = status(("Routed", "True", "Accepted", "the HTTPRoute is accepted by its Gateway(s)"))
    refused = status(("Routed", "False", "NotAllowedByListeners", "HTTPRoute Accepted=False on Gateway gw"))
    assert told("TritonModel", [waiting, accepted, refused]) == [
        (NORMAL, "Accepted", "The HTTPRoute is accepted by its Gateway(s)."),
        (WARNING, "NotAllowedByListeners", "HTTPRoute Accepted=False on Gateway gw."),
    ]


def test_conditions_that_stay_or_turn_healthy_tell_nothing() -> None:
    rest = MODEL_DEPLOY[-1]
    assert story("TritonModel", rest, rest, {}) == []
    assert story("TritonServer", SERVER_DEPLOY[-1], SERVER_DEPLOY[-1], {"replicas": 2}) == []
    # A Degraded that clears, and the Reconciling and Stalled flips with it, are no Events.
    degraded = {
        **rest,
        "conditions": [
            {**c, "status": "True", "reason": "LoadFailed"} if c["type"] in ("Degraded", "Reconciling") else c
            for c in rest["conditions"]
        ],
    }
    assert story("TritonModel", degraded, rest, {}) == []


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (Reason.ROLLED_BACK, WARNING),
        (Reason.UNSCHEDULABLE, WARNING),
        (Reason.REPLICAS_NOT_READY, WARNING),
        (Reason.SOURCE_NOT_FOUND, WARNING),
        (Reason.LOADED, NORMAL),
        (Reason.PROMOTED, NORMAL),
        (Reason.STEP_ADVANCED, NORMAL),
        (Reason.ROLLOUT_COMPLETE, NORMAL),
        (Reason.SCALED, NORMAL),
    ],
)
def test_an_events_type_is_its_reasons_own_severity(reason: Reason, expected: str) -> None:
    assert event(reason, "x").type == expected
    assert event(reason, "x", problem=True).type == expected  # the reason decides, not the caller


def test_a_reason_outside_the_vocabulary_is_a_warning_only_as_a_problem() -> None:
    assert event("NotAllowedByListeners", "x", problem=True).type == WARNING
    assert event("SomethingNew", "x").type == NORMAL


def test_progress_reasons_are_never_a_problem() -> None:
    """Not ready for a reason time fixes (Reason's severity PROGRESS) tells nothing; a problem does."""
    for reason in (
        "Staging",
        "Loading",
        "CanaryLoading",
        "RouterLoading",
        "PlacingCopies",
        "WaitingForGateway",
    ):
        cond = {"type": "Ready", "status": "False", "reason": reason}
        assert not is_problem(cond, [cond])
    failed = {"type": "Ready", "status": "False", "reason": "LoadFailed"}
    assert is_problem(failed, [failed])
