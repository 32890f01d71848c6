"""Faults the hostile-input e2e test (tests/e2e/test_hostile_input.py) found, one test each (pure).

1. Long TritonModel names. A TritonModel may be named up to 253 characters (200 without spec.modelName),
and the operator names its copies on servers `<name>-on-<server>`; label values may hold 63. The model's
name went as is into the labels of its staging Jobs, its copies and its routes, and into the label
selectors that find them: the apiserver refused each of them, every pass of the model failed (`pass
failed, retrying next period` in the log, each period, forever) and the model never got a status.

2. A TritonServer spec the CRD admits but the apiserver refuses to turn into a Deployment (junk in the
free-form affinity or env valueFrom): Ready said ApplyFailed with the apiserver's message for one
period, then the next observing pass (seeing no Deployment) said Reconciling "generation 1 is not
applied yet" with Degraded=False "No problems observed" until the drift period applied again.

3. A value of the wrong type inside spec.affinity (free-form): server-side apply answers 500 "failed to
create typed patch object" and echoes the whole value; the condition quoting it was longer than the
CRD allows (32768 bytes), so the apiserver refused every status patch: the server never got a status,
and (a 5xx counting as temporary) its spec was applied again every period, forever.

4. Deleting a namespace: the namespace controller may delete a model's staging Job before the model;
the model's next pass applied the Job again, the apiserver refused (403, the namespace is being
terminated), and every pass until the model's own deletion logged `pass failed ... (403)`.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, cast

import kopf
import pytest
from kubernetes.client.exceptions import ApiException
from triton_operator.api.common import LABEL_VALUE_PATTERN
from triton_operator.handlers.loops import ObjectLoops
from triton_operator.handlers.tritonmodel import model_pass, staging_changed, track_model
from triton_operator.handlers.tritonserver import server_pass
from triton_operator.kube.rest import Kube
from triton_operator.reconcile.files import RepositoryFiles
from triton_operator.reconcile.model import ModelReconciler
from triton_operator.reconcile.server import ServerReconciler
from triton_operator.reconcile.split import SplitReconciler
from triton_operator.reconcile.state import OperatorState, owner_name
from triton_operator.reconcile.status import CONDITION_MESSAGE_MAX_BYTES, fit_message
from triton_operator.render.labels import (
    MODEL_LABEL,
    ROUTE_OWNER_LABEL,
    SPLIT_OF_LABEL,
    name_label,
    route_labels,
    staging_labels,
)
from triton_operator.render.labels import SERVER_NAME_LABEL as SERVER_LABEL
from triton_operator.render.split import copy_name

pytestmark = pytest.mark.unit

LONG = "m" + "-long" * 40  # 201 characters: a valid TritonModel name (with spec.modelName)
LABEL_VALUE = re.compile(LABEL_VALUE_PATTERN)


def is_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(LABEL_VALUE.match(value))


class ListingKube:
    """A Kube that records the label selectors it is asked to list by (and finds nothing)."""

    def __init__(self) -> None:
        self.selectors: list[tuple[str, str | None]] = []

    def list(self, kind: str, namespace: str | None, selector: str | None = None) -> list[dict[str, Any]]:
        self.selectors.append((kind, selector))
        return []


class Loops:
    def __init__(self) -> None:
        self.poked: list[tuple[str, Any]] = []

    def poke(self, kind: str, key: Any) -> None:
        self.poked.append((kind, key))

    def track(self, kind: str, key: Any, body: Any) -> bool:
        return True

    def forget(self, kind: str, key: Any) -> None:
        pass


@pytest.mark.parametrize(
    "name", ["mnist", "a" * 63, "a" * 64, LONG, copy_name(LONG, "s" * 63), "x" * 52 + "-.y"]
)
def test_name_label_is_a_label_value_and_the_name_itself_when_it_fits(name: str) -> None:
    value = name_label(name)
    assert is_label_value(value), value
    assert (value == name) == (len(name) <= 63)


def test_name_label_tells_long_names_apart() -> None:
    assert name_label(LONG) != name_label(LONG[:-1] + "n")
    assert name_label(LONG) == name_label(LONG)  # the same name selects the same objects


def test_long_model_name_staging_job_labels_are_label_values() -> None:
    labels = staging_labels(LONG, "triton")
    assert all(is_label_value(v) for v in labels.values()), labels
    assert labels[MODEL_LABEL] == name_label(LONG) and labels[SERVER_LABEL] == "triton"
    assert staging_labels("mnist", "triton")[MODEL_LABEL] == "mnist"  # short names as before


def test_long_model_name_selects_its_staging_jobs_by_the_same_label() -> None:
    kube = ListingKube()
    RepositoryFiles(cast(Kube, kube), OperatorState(), "operator:test").remove_other_jobs(
        "ns", LONG, frozenset()
    )
    assert kube.selectors == [("Job", f"{MODEL_LABEL}={name_label(LONG)}")]


def test_long_parent_name_copies_are_labelled_and_listed_by_label_values() -> None:
    kube = ListingKube()
    SplitReconciler(cast(Kube, kube), OperatorState())._copies("ns", LONG, "uid")
    assert kube.selectors == [("TritonModel", f"{SPLIT_OF_LABEL}={name_label(LONG)}")]


def test_long_owner_route_labels_are_label_values() -> None:
    labels = route_labels(LONG)
    assert all(is_label_value(v) for v in labels.values()), labels
    assert route_labels("triton")[ROUTE_OWNER_LABEL] == "triton"


def _memo(loops: Loops) -> kopf.Memo:
    memo = kopf.Memo()
    memo.loops = loops
    memo.state = OperatorState()
    return memo


def test_long_named_models_job_event_wakes_the_model_by_its_owner_reference() -> None:
    """The Job's label holds a hash of the long name: its owner reference names the model to wake."""
    loops = Loops()
    owner = {"kind": "TritonModel", "name": LONG, "uid": "u1"}
    job = {
        "kind": "Job",
        "metadata": {
            "name": "j",
            "namespace": "ns",
            "labels": staging_labels(LONG, "t"),
            "ownerReferences": [owner],
        },
    }
    labels = staging_labels(LONG, "t")
    asyncio.run(
        cast(Any, staging_changed)(
            type="ADDED", body=cast(kopf.Body, job), namespace="ns", labels=labels, memo=_memo(loops)
        )
    )
    assert loops.poked == [("TritonModel", ("ns", LONG))]


def test_copy_event_wakes_its_long_named_parent_by_its_owner_reference() -> None:
    loops = Loops()
    copy = {
        "kind": "TritonModel",
        "metadata": {
            "name": copy_name(LONG, "t"),
            "namespace": "ns",
            "labels": {SPLIT_OF_LABEL: name_label(LONG)},
            "ownerReferences": [{"kind": "TritonModel", "name": LONG, "uid": "u1"}],
        },
    }
    asyncio.run(cast(Any, track_model)(type="ADDED", body=cast(kopf.Body, copy), memo=_memo(loops)))
    assert loops.poked == [("TritonModel", ("ns", LONG))]


def test_owner_name_reads_the_owner_of_the_kind() -> None:
    body = {
        "metadata": {"ownerReferences": [{"kind": "Job", "name": "j"}, {"kind": "TritonModel", "name": "m"}]}
    }
    assert owner_name(body, "TritonModel") == "m"
    assert owner_name(body, "TritonServer") is None
    assert owner_name({"metadata": {}}, "TritonModel") is None


class RefusingKube:
    """The apiserver refusing the Deployment (422), taking every other child; statuses land in `body`."""

    def __init__(
        self, body: dict[str, Any], status: int = 422, message: str = "spec.template.spec.affinity"
    ) -> None:
        self.body = body
        self.refuse = True
        self.status, self.message = status, message
        self.applies = 0

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return None

    def list(self, kind: str, namespace: str | None, selector: str | None = None) -> list[dict[str, Any]]:
        return []

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["kind"] == "Deployment":
            self.applies += 1
        if obj["kind"] == "Deployment" and self.refuse:
            exc = ApiException(status=self.status, reason="refused")
            exc.body = json.dumps({"message": f'Deployment.apps "s" is invalid: {self.message}'})
            raise exc
        return obj

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        pass

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        for cond in status.get("conditions") or []:  # the CRD's limit, enforced by the apiserver
            if len(cond["message"].encode()) > CONDITION_MESSAGE_MAX_BYTES:
                exc = ApiException(status=422, reason="Invalid")
                exc.body = json.dumps({"message": "status.conditions[0].message: Too long"})
                raise exc
        self.body["status"] = dict(status)
        self.body["metadata"]["resourceVersion"] = str(int(self.body["metadata"]["resourceVersion"]) + 1)
        return dict(self.body)


def _conditions(body: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in body["status"]["conditions"]}


def test_apply_failure_stays_in_the_servers_status_after_the_next_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kopf, "event", lambda *args, **kwargs: None)
    body: dict[str, Any] = {
        "apiVersion": "tritonoperator.dev/v1alpha1",
        "kind": "TritonServer",
        "metadata": {"name": "s", "namespace": "ns", "uid": "u", "generation": 1, "resourceVersion": "1"},
        "spec": {"affinity": {"nodeAffinity": {"junk": 1}}},
    }
    kube = RefusingKube(body)
    servers = ServerReconciler(cast(Kube, kube), OperatorState())
    for _ in range(3):  # the failing apply, then observing passes (the spec is not applied again)
        server_pass(servers, body, lambda: False)
        conditions = _conditions(body)
        assert conditions["Ready"] == ("False", "ApplyFailed"), conditions
        assert conditions["Degraded"] == ("True", "ApplyFailed"), conditions
        ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
        assert "spec.template.spec.affinity" in ready["message"]
    # A new generation that applies clears it.
    kube.refuse = False
    body["metadata"]["generation"] = 2
    server_pass(servers, body, lambda: False)
    assert _conditions(body)["Ready"][1] != "ApplyFailed"
    assert _conditions(body)["Degraded"] == ("False", "AsExpected")


def _server_body() -> dict[str, Any]:
    return {
        "apiVersion": "tritonoperator.dev/v1alpha1",
        "kind": "TritonServer",
        "metadata": {"name": "s", "namespace": "ns", "uid": "u", "generation": 1, "resourceVersion": "1"},
        "spec": {"affinity": {"nodeAffinity": {"junk": 1}}},
    }


def test_an_apply_error_echoing_a_huge_value_still_gets_a_status_and_is_not_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kopf, "event", lambda *args, **kwargs: None)
    body = _server_body()
    echo = "failed to create typed patch object (ns/s; apps/v1, Kind=Deployment): " + "{a:[" * 20_000
    kube = RefusingKube(body, status=500, message=echo)
    servers = ServerReconciler(cast(Kube, kube), OperatorState())
    for _ in range(3):
        server_pass(servers, body, lambda: False)
        assert _conditions(body)["Ready"] == ("False", "ApplyFailed")
    ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
    assert "failed to create typed patch object" in ready["message"] and "truncated" in ready["message"]
    assert kube.applies == 1  # permanent: applied again only by a new spec (or the drift period)


def test_a_server_error_without_a_type_error_is_still_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kopf, "event", lambda *args, **kwargs: None)
    body = _server_body()
    kube = RefusingKube(body, status=500, message="etcdserver: request timed out")
    servers = ServerReconciler(cast(Kube, kube), OperatorState())
    for _ in range(2):
        server_pass(servers, body, lambda: False)
    assert kube.applies == 2 and _conditions(body)["Ready"] == ("False", "ApplyFailed")


@pytest.mark.parametrize("message", ["short", "x" * 40_000, "\U0001f680" * 9_000, "e\u0301" * 20_000])
def test_fit_message_keeps_a_condition_message_within_the_crds_limit(message: str) -> None:
    fitted = fit_message(message)
    assert len(fitted.encode()) <= CONDITION_MESSAGE_MAX_BYTES
    assert fitted == message or fitted.endswith("(truncated)")


class TerminatingModels:
    """A ModelReconciler whose pass hits a namespace being deleted (or another refusal)."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.state = OperatorState()

    def reconcile(self, body: Any, stopped: Any = None) -> None:
        exc = ApiException(status=403, reason="Forbidden")
        exc.body = json.dumps({"message": self.message})
        raise exc


def test_a_model_pass_in_a_namespace_being_deleted_is_not_a_failure() -> None:
    terminating = (
        'jobs.batch "m-stage-1" is forbidden: unable to create new content in namespace ns '
        "because it is being terminated"
    )
    body = {"metadata": {"name": "m", "namespace": "ns"}}
    loops = ObjectLoops(workers=1)
    assert (
        model_pass(cast(ModelReconciler, TerminatingModels(terminating)), loops, body, lambda: False) is None
    )
    with pytest.raises(ApiException):  # any other refusal is still a failed pass (logged by the loop)
        model_pass(cast(ModelReconciler, TerminatingModels("RBAC: forbidden")), loops, body, lambda: False)
