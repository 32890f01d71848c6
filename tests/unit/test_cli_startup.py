"""`triton-operator run` start-up problems are one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from kubernetes.config import kube_config
from triton_operator import preflight
from triton_operator.cli import listen_problem, main
from triton_operator.kube.rest import AccessUndecided, access_decision

from tests.support.s3server import free_port_pair


@pytest.mark.parametrize("busy_offset", [0, 1])  # the health port, or the metrics port after it
def test_a_busy_port_is_one_line_and_exit_2(busy_offset: int, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1] - busy_offset
        code = main(["run", "--health-address=127.0.0.1", f"--health-port={port}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot listen on 127.0.0.1:{port + busy_offset}" in err and "--health-port" in err


def test_free_ports_are_no_problem() -> None:
    with socket.socket() as finder:
        finder.bind(("127.0.0.1", 0))
        port = finder.getsockname()[1]
    assert listen_problem("127.0.0.1", (port,)) is None


def test_no_credentials_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "missing"))
    code = main(["run", "--health-address=127.0.0.1", f"--health-port={_free_port()}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "no cluster credentials" in err and "kubeconfig" in err


def test_an_unreachable_api_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    code = main(["run", "--health-address=127.0.0.1", f"--health-port={_free_port()}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "cannot reach the Kubernetes API at https://127.0.0.1:9" in err


@pytest.mark.parametrize(
    ("served", "missing"),
    [
        (None, "tritonservers, tritonmodels"),  # the group is not served at all
        (["tritonservers", "tritonservers/status"], "tritonmodels"),
        (["tritonservers", "tritonmodels", "tritonmodels/status"], None),
    ],
)
def test_missing_crds_name_the_kinds_and_the_fix(served: list[str] | None, missing: str | None) -> None:
    problem = preflight.missing_crds(served)
    if missing is None:
        assert problem is None
    else:
        assert problem is not None and f"does not serve {missing}" in problem and "crds/" in problem


def test_the_first_missing_permission_is_named_with_its_scope() -> None:
    def allowed(permission: preflight.Permission, namespace: str | None) -> bool:
        return not (namespace == "team-b" and permission.resource == "jobs")

    assert preflight.denied(allowed, None) is None
    assert preflight.denied(allowed, ["team-a"]) is None
    problem = preflight.denied(allowed, ["team-a", "team-b"])
    assert problem is not None
    assert "may not create jobs.batch in namespace team-b" in problem and "ClusterRole" in problem
    everything = preflight.denied(lambda p, ns: p.subresource != "status", None)
    assert (
        everything is not None
        and "patch tritonservers/status.tritonoperator.dev in all namespaces" in everything
    )


def test_an_rbac_without_pod_status_leaves_the_readiness_gate_off_not_the_operator() -> None:
    """The sandbox's lifecycle test runs this code under the previous chart's RBAC (no pods/status):
    required, the operator would never start there; instead it runs without the gate and says so."""

    def previous_chart(permission: preflight.Permission, namespace: str | None) -> bool:
        return permission != preflight.GATE_PERMISSION

    assert preflight.denied(previous_chart, None) is None
    assert not preflight.may_open_gates(previous_chart, None)
    assert preflight.may_open_gates(lambda p, ns: True, ["team-a", "team-b"])
    assert not preflight.may_open_gates(lambda p, ns: ns != "team-b", ["team-a", "team-b"])
    assert "patch pods/status" in preflight.GATE_OFF and "readiness gate is off" in preflight.GATE_OFF


def _free_port() -> int:
    """A free health port whose metrics port (the next one) is free too."""
    return free_port_pair("127.0.0.1")


@pytest.mark.parametrize(
    ("status", "decision"),
    [
        ({"allowed": True}, True),
        ({"allowed": False}, False),
        ({}, False),
        ({"allowed": False, "denied": True, "evaluationError": "webhook said no"}, False),
        ({"allowed": False, "evaluationError": 'clusterrole "triton-operator" not found'}, None),
    ],
    ids=["allowed", "not-allowed", "no-answer", "denied-outright", "rules-not-read"],
)
def test_an_access_review_the_api_server_could_not_evaluate_is_undecided(
    status: dict[str, object], decision: bool | None
) -> None:
    if decision is None:
        with pytest.raises(AccessUndecided, match="not found"):
            access_decision(status)
    else:
        assert access_decision(status) is decision


def test_an_undecided_permission_is_asked_again_before_it_stops_the_operator() -> None:
    # A just-restarted API server answered "not allowed" with an evaluation error while it had not read
    # its RBAC objects yet: the operator took it for a denial and exited.
    answers: list[object] = [AccessUndecided("role not found"), AccessUndecided("role not found"), True]
    slept: list[float] = []

    def ask() -> bool:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return bool(answer)

    jobs = preflight.Permission("create", "batch", "jobs")
    assert preflight.decided(ask, jobs, tries=3, wait_s=0.5, sleep=slept.append)
    assert slept == [0.5, 0.5]

    def never() -> bool:
        raise AccessUndecided('clusterrole "triton-operator" not found')

    with pytest.raises(preflight.Undecided) as caught:
        preflight.decided(never, jobs, tries=3, wait_s=0.5, sleep=slept.append)
    message = str(caught.value)
    assert "could not decide whether this identity may create jobs.batch" in message
    assert 'clusterrole "triton-operator" not found' in message and "\n" not in message
