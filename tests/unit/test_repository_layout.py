"""Layout PerReplica (issue 21): which layout a spec gets, what it renders, and how a pod's own copy is
judged before a load."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from triton_operator.api.tritonmodel import TritonModelSpec
from triton_operator.api.tritonserver import RepositoryLayout, TritonServerSpec
from triton_operator.observe.copies import CopyFacts, copy_facts, has_own_copy
from triton_operator.render.repository import (
    SYNC_CONTAINER,
    repository_selector,
    source_url,
)
from triton_operator.render.server import Copies, copies_for, render_all
from triton_operator.render.staging import jobs_placement, render_staging_job


def server(**repository: Any) -> TritonServerSpec:
    return TritonServerSpec.model_validate({"replicas": 2, "modelRepository": repository})


@pytest.mark.parametrize(
    ("repository", "layout"),
    [
        ({}, RepositoryLayout.PER_REPLICA),  # the default class is ReadWriteOnce almost everywhere
        ({"accessModes": ["ReadWriteOnce"]}, RepositoryLayout.PER_REPLICA),
        ({"accessModes": ["ReadWriteMany"]}, RepositoryLayout.SHARED),
        ({"accessModes": ["ReadOnlyMany"]}, RepositoryLayout.PER_REPLICA),  # staging cannot write to it
        ({"accessModes": ["ReadWriteMany"], "layout": "PerReplica"}, RepositoryLayout.PER_REPLICA),
        ({"existingClaim": "models"}, RepositoryLayout.PER_REPLICA),  # its modes are not known
        ({"existingClaim": "models", "layout": "Shared"}, RepositoryLayout.SHARED),
    ],
)
def test_the_layout_in_effect(repository: dict[str, Any], layout: RepositoryLayout) -> None:
    assert server(**repository).model_repository.resolved_layout() == layout


def test_layout_shared_on_a_volume_of_one_node_is_refused_naming_the_field_and_the_fix() -> None:
    with pytest.raises(ValidationError) as refused:
        server(layout="Shared")
    assert "modelRepository.layout Shared" in str(refused.value)
    assert "ReadWriteMany" in str(refused.value) and "PerReplica" in str(refused.value)


def _kinds(children: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c["kind"], c["metadata"]["name"]) for c in children]


def test_per_replica_renders_the_repository_server_and_a_sidecar_in_every_triton_pod() -> None:
    spec = server()
    copies = copies_for("t", "ns", spec, operator_image="op:1", cluster_ip="10.96.0.9")
    assert copies == Copies("http://10.96.0.9:8080", "op:1")
    children = render_all("t", "ns", "uid", spec, copies=copies)
    assert _kinds(children) == [
        ("PersistentVolumeClaim", "t-models"),
        ("Deployment", "t-repository"),
        ("Service", "t-repository"),
        ("Deployment", "t"),
        ("Service", "t"),
        ("PodDisruptionBudget", "t"),
    ]
    repository, triton = children[1], children[3]
    repo_pod = repository["spec"]["template"]["spec"]
    # The one pod mounting the claim, read-only; one at a time (a ReadWriteOnce volume moves nodes).
    assert repo_pod["volumes"] == [
        {"name": "models", "persistentVolumeClaim": {"claimName": "t-models", "readOnly": True}}
    ]
    assert repository["spec"]["strategy"] == {"type": "Recreate"}
    assert repository_selector("t").items() <= repository["spec"]["template"]["metadata"]["labels"].items()
    pod = triton["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["tritonserver", SYNC_CONTAINER]
    assert pod["volumes"][0] == {"name": "models", "emptyDir": {"sizeLimit": "10Gi"}}
    sync = pod["containers"][1]
    assert sync["args"][:4] == ["repository", "sync", "--source", "http://10.96.0.9:8080"]
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])
    # The Service of the Triton pods does not select the repository server, nor the reverse.
    assert children[4]["spec"]["selector"]["app.kubernetes.io/component"] == "server"
    assert children[2]["spec"]["selector"]["app.kubernetes.io/component"] == "repository"


def test_shared_renders_the_pvc_in_every_triton_pod_and_no_repository_server() -> None:
    spec = server(accessModes=["ReadWriteMany"])
    assert copies_for("t", "ns", spec, operator_image="op:1", cluster_ip="10.96.0.9") is None
    children = render_all("t", "ns", "uid", spec)
    assert ("Deployment", "t-repository") not in _kinds(children)
    pod = children[1]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["tritonserver"]
    assert pod["volumes"][0] == {"name": "models", "persistentVolumeClaim": {"claimName": "t-models"}}


def test_without_a_cluster_ip_yet_the_sidecar_reads_the_service_by_name() -> None:
    assert source_url("t", "ns", None) == "http://t-repository.ns.svc:8080"


def test_staging_jobs_run_beside_the_repository_server_only_in_layout_per_replica() -> None:
    model = TritonModelSpec.model_validate(
        {
            "serverRef": {"name": "t"},
            "version": 1,
            "source": {"http": {"url": "http://x/m.onnx", "sha256": "a" * 64}},
        }
    )
    placement = jobs_placement("t", server())
    job = render_staging_job(
        "m",
        "ns",
        model,
        server_claim="t-models",
        job_name="j",
        operator_image="op",
        labels={},
        capacity_bytes=None,
        placement=placement,
    )
    term = job["spec"]["template"]["spec"]["affinity"]["podAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term == [
        {"labelSelector": {"matchLabels": repository_selector("t")}, "topologyKey": "kubernetes.io/hostname"}
    ]
    assert jobs_placement("t", server(accessModes=["ReadWriteMany"])) is None


def test_a_pod_has_its_own_copy_when_it_runs_the_sidecar() -> None:
    assert has_own_copy({"spec": {"containers": [{"name": "tritonserver"}, {"name": SYNC_CONTAINER}]}})
    assert not has_own_copy({"spec": {"containers": [{"name": "tritonserver"}]}})


def _answer(hash_: str, **versions: str) -> dict[str, Any]:
    return {"models": {"m": {"hash": hash_, "versions": {k.lstrip("v"): d for k, d in versions.items()}}}}


SERVER = _answer("h2", v1="sha256:a", v2="sha256:b")


@pytest.mark.parametrize(
    ("held", "content", "staged_digest", "facts"),
    [
        # Exactly the server's copy: load.
        (_answer("h2", v1="sha256:a", v2="sha256:b"), SERVER, "sha256:b", CopyFacts(True, "sha256:b")),
        # The staged digest not known (an older status): the hashes decide.
        (_answer("h2", v1="sha256:a", v2="sha256:b"), SERVER, None, CopyFacts(True, "sha256:b")),
        # Still copying version 2: not yet.
        (_answer("h1", v1="sha256:a"), SERVER, "sha256:b", CopyFacts(False, None, "copying m to the pod")),
        # Version 2 there, but another file differs (config.pbtxt rewritten): not yet.
        (
            _answer("h1", v1="sha256:a", v2="sha256:b"),
            SERVER,
            "sha256:b",
            CopyFacts(False, "sha256:b", "copying m to the pod"),
        ),
        # The sidecar's own error is quoted.
        (
            {**_answer("h1"), "error": "GET /v1/files/m/2/model.onnx: 404"},
            SERVER,
            "sha256:b",
            CopyFacts(False, None, "copying m to the pod (GET /v1/files/m/2/model.onnx: 404)"),
        ),
        # The server has not scanned the completed staging yet (or holds other files for version 2).
        (
            _answer("h2", v1="sha256:a", v2="sha256:b"),
            SERVER,
            "sha256:c",
            CopyFacts(False, "sha256:b", "the repository server does not list version 2 of m yet"),
        ),
        (
            _answer("h1", v1="sha256:a"),
            _answer("h1", v1="sha256:a"),
            "sha256:b",
            CopyFacts(False, None, "the repository server does not list version 2 of m yet"),
        ),
        # Nobody answers.
        (
            None,
            SERVER,
            "sha256:b",
            CopyFacts(False, None, "the pod's repository-sync sidecar does not answer yet"),
        ),
        (
            _answer("h2", v1="sha256:a", v2="sha256:b"),
            None,
            "sha256:b",
            CopyFacts(False, "sha256:b", "the repository server does not answer yet"),
        ),
    ],
)
def test_a_pods_copy_is_current_only_when_it_is_exactly_the_servers(
    held: dict[str, Any] | None, content: dict[str, Any] | None, staged_digest: str | None, facts: CopyFacts
) -> None:
    assert copy_facts(held, content, "m", 2, staged_digest) == facts
