"""The shipped install (manifests/install.yaml, rendered from the Helm chart) on a real API server:
least-privilege RBAC as `kubectl auth can-i` sees it, and every object accepted by a server-side dry run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sandbox.config import REPO_ROOT
from tests.e2e.conftest import Sandbox
from tests.support.s3server import free_port_pair

INSTALL = REPO_ROOT / "manifests" / "install.yaml"
OPERATOR_SA = "system:serviceaccount:triton-operator:triton-operator"
RBAC_KINDS = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
# The session's chart release first: these tests apply install.yaml's RBAC over the release's objects (the
# same names), and a `helm install` after them (by a process sharing the sandbox) would refuse to own them.
pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture(scope="module")
def rbac_installed(sandbox: Sandbox, crds: None) -> None:
    # The CRDs first: `kubectl auth can-i` on tritonservers needs the API server to know the resource.
    docs = [d for d in yaml.safe_load_all(INSTALL.read_text()) if d and d["kind"] in RBAC_KINDS]
    assert {d["kind"] for d in docs} == RBAC_KINDS
    sandbox.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))


def can_i(sandbox: Sandbox, verb: str, resource: str, namespace: str = "default") -> bool:
    """Whether the operator may: a SelfSubjectAccessReview created as the operator, for `resource.group`
    (`kind/sub` a subresource). Not `kubectl auth can-i`: for a kind the API server does not serve (KEDA's
    ScaledObject where KEDA is not installed) it asks for the whole string as a resource of the core
    group, which no rule grants; RBAC itself needs no CRD."""
    kind, _, sub = resource.partition("/")
    name, _, group = kind.partition(".")
    attributes = {"namespace": namespace, "verb": verb, "group": group, "resource": name}
    if sub:
        attributes["subresource"] = sub
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    result = sandbox.kubectl(
        "create", "-f", "-", "-o", "jsonpath={.status.allowed}", f"--as={OPERATOR_SA}",
        input=json.dumps(review), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip() == "true"


@pytest.mark.parametrize(
    ("verb", "resource"),
    [
        ("patch", "tritonservers.tritonoperator.dev/status"),
        ("watch", "tritonmodels.tritonoperator.dev"),
        ("patch", "deployments.apps"),
        ("create", "jobs.batch"),
        ("delete", "poddisruptionbudgets.policy"),
        ("list", "pods"),
        ("create", "events"),
        ("patch", "scaledobjects.keda.sh"),  # RBAC needs no CRD (KEDA is not installed here)
        ("get", "horizontalpodautoscalers.autoscaling"),
    ],
)
def test_the_operator_may_do_its_work(
    sandbox: Sandbox, rbac_installed: None, verb: str, resource: str
) -> None:
    assert can_i(sandbox, verb, resource)


@pytest.mark.parametrize(
    ("verb", "resource"),
    [
        ("get", "secrets"),  # it never reads Secrets: Jobs and pods reference them
        ("list", "secrets"),
        ("create", "pods"),  # pods come from Deployments and Jobs, not from the operator
        ("delete", "nodes"),
        ("patch", "tritonservers.tritonoperator.dev/scale"),
        ("patch", "horizontalpodautoscalers.autoscaling"),  # KEDA owns the HPA; the operator reads it
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("*", "*"),
    ],
)
def test_the_operator_may_do_nothing_more(
    sandbox: Sandbox, rbac_installed: None, verb: str, resource: str
) -> None:
    assert not can_i(sandbox, verb, resource)


@pytest.mark.parametrize(
    ("verb", "lease", "allowed"),
    [
        ("get", "triton-operator", True),
        ("update", "triton-operator", True),
        ("create", "", True),  # create cannot be limited to a name
        ("update", "someone-elses", False),
        ("delete", "triton-operator", False),
        ("list", "", False),
    ],
)
def test_the_operator_may_hold_its_own_lease_and_no_other(
    sandbox: Sandbox, rbac_installed: None, verb: str, lease: str, allowed: bool
) -> None:
    target = f"leases.coordination.k8s.io/{lease}" if lease else "leases.coordination.k8s.io"
    result = sandbox.kubectl(
        "auth", "can-i", verb, target, "-n", "triton-operator", f"--as={OPERATOR_SA}", check=False
    )
    assert (result.stdout.strip() == "yes") is allowed, result.stdout


def test_every_installed_object_passes_a_server_side_dry_run(sandbox: Sandbox, rbac_installed: None) -> None:
    # rbac_installed made the namespace: a dry run does not create it for the objects that live in it.
    result = sandbox.kubectl("apply", "--dry-run=server", "-f", str(INSTALL), check=False)
    assert result.returncode == 0, result.stderr


def test_an_operator_without_its_rbac_stops_with_one_line(
    sandbox: Sandbox, crds: None, namespace: str
) -> None:
    """Started under an identity with no RBAC (a ServiceAccount nobody bound), `triton-operator run`
    says which permission it lacks and exits 2: not a pod that looks alive and logs 403s forever."""
    sandbox.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = sandbox.kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()
    admin = yaml.safe_load(Path(sandbox.kubeconfig).read_text())
    kubeconfig = sandbox.cfg.root / f"nobody-{namespace}.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": admin["clusters"],
                "users": [{"name": "nobody", "user": {"token": token}}],
                "contexts": [
                    {"name": "nobody", "context": {"cluster": admin["clusters"][0]["name"], "user": "nobody"}}
                ],
                "current-context": "nobody",
            }
        )
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "triton_operator",
            "run",
            "--health-address=127.0.0.1",
            f"--health-port={free_port_pair('127.0.0.1')}",
        ],
        env={**sandbox.env(), "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "may not list tritonservers.tritonoperator.dev in all namespaces" in done.stderr
