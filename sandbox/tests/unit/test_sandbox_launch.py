"""How the sandbox's pod runner turns a container spec into a local process (pure planning)."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.launch import Mount, UnsupportedContainer, expand_kube_vars, plan_container, rewrite_paths

MOUNTS = [
    Mount("/models", "/var/sb/pvc-1"),
    Mount("/models/cache", "/var/sb/cache"),
    Mount("/etc/s3", "/var/sb/s3"),
]
COMMON = dict(
    pod_ip="10.244.1.4",
    mounts=MOUNTS,
    env={},
    triton_binary="/opt/triton/bin/tritonserver",
    triton_backend_dir="/opt/triton/backends",
    triton_library_path="/opt/triton/libs",
    operator_bin_dir="/venv/bin",
    base_env={"PATH": "/usr/bin"},
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("--model-repository=/models", "--model-repository=/var/sb/pvc-1"),
        ("/models/resnet/1", "/var/sb/pvc-1/resnet/1"),
        ("/models/cache/x", "/var/sb/cache/x"),  # the longest mount wins
        ("/modelsX", "/modelsX"),  # a different path that only shares a prefix
        ("--creds=/etc/s3/key,/models", "--creds=/var/sb/s3/key,/var/sb/pvc-1"),
        ("s3://bucket/models", "s3://bucket/models"),  # not a path start
    ],
)
def test_rewrite_paths(value: str, expected: str) -> None:
    assert rewrite_paths(value, MOUNTS) == expected


def test_a_local_folder_under_another_mount_path_is_not_rewritten_twice() -> None:
    mounts = [Mount("/models", "/tmp/cache/volumes/pvc-1"), Mount("/tmp", "/var/pod/volumes/tmp")]
    assert rewrite_paths("/models", mounts) == "/tmp/cache/volumes/pvc-1"
    assert rewrite_paths("/tmp/x", mounts) == "/var/pod/volumes/tmp/x"


def test_kube_var_expansion_matches_kubernetes() -> None:
    env = {"NAME": "m1"}
    assert expand_kube_vars("--load-model=$(NAME)", env) == "--load-model=m1"
    assert expand_kube_vars("$$(NAME)", env) == "$(NAME)"
    assert expand_kube_vars("$(MISSING)", env) == "$(MISSING)"


def test_triton_binds_pod_ip_and_uses_local_backends() -> None:
    container = {
        "image": "nvcr.io/nvidia/tritonserver:24.08-py3",
        "command": ["tritonserver"],
        "args": ["--model-repository=/models", "--backend-directory=/opt/tritonserver/backends"],
    }
    plan = plan_container(container, **COMMON)
    assert plan.argv == [
        "/opt/triton/bin/tritonserver",
        "--model-repository=/var/sb/pvc-1",
        "--http-address=10.244.1.4",
        "--grpc-address=10.244.1.4",
        "--metrics-address=10.244.1.4",
        "--backend-directory=/opt/triton/backends",
    ]
    assert plan.env["LD_LIBRARY_PATH"] == "/opt/triton/libs"


def test_operator_image_runs_console_scripts_with_rewritten_args() -> None:
    container = {
        "image": "ghcr.io/tritonoperator/triton-operator:0.1.0",
        "args": ["stage", "--repository", "/models"],
    }
    plan = plan_container(container, **COMMON)
    assert plan.argv == ["/venv/bin/triton-operator", "stage", "--repository", "/var/sb/pvc-1"]


@pytest.mark.parametrize(
    ("container", "needle"),
    [
        ({"image": "busybox:1.36"}, "has no local stand-in"),
        (
            {"image": "nvcr.io/nvidia/tritonserver:24.08-py3", "command": ["/bin/sh", "-c", "tritonserver"]},
            "not tritonserver",
        ),
        (
            {"image": "ghcr.io/tritonoperator/triton-operator:0.1.0", "command": ["bash"]},
            "not in the operator image",
        ),
    ],
)
def test_unsupported_containers_say_why(container: dict[str, object], needle: str) -> None:
    with pytest.raises(UnsupportedContainer, match=needle):
        plan_container(container, **COMMON)


def test_the_operator_runs_in_its_pod_with_the_service_account_at_its_fixed_path() -> None:
    """A kubelet mounts the ServiceAccount token at /var/run/secrets/...; client libraries read it there,
    so the process gets that folder bound in a private mount namespace (not a rewritten argument)."""
    sa = Mount("/var/run/secrets/kubernetes.io/serviceaccount", "/var/sb/pod-1/kube-api-access")
    container = {
        "image": "ghcr.io/tritonoperator/triton-operator:0.2.0",
        "args": ["run", "--health-port=8080"],
    }
    plan = plan_container(container, **{**COMMON, "mounts": [*MOUNTS, sa]})
    assert plan.argv[:5] == ["unshare", "--mount", "--propagation", "private", "--"]
    script = plan.argv[7]
    assert (
        "mount --bind /var/sb/pod-1/kube-api-access /var/run/secrets/kubernetes.io/serviceaccount" in script
    )
    assert script.endswith('exec "$@"')
    # What runs: the image's entry point, bound to the pod's IP like a pod's own network namespace.
    assert plan.argv[9:] == [
        "/venv/bin/triton-operator",
        "run",
        "--health-port=8080",
        "--health-address=10.244.1.4",
    ]


def test_an_explicit_health_address_and_other_programs_are_left_alone() -> None:
    run = {"image": "x/triton-operator:1", "args": ["run", "--health-address=127.0.0.1"]}
    assert plan_container(run, **COMMON).argv == [
        "/venv/bin/triton-operator",
        "run",
        "--health-address=127.0.0.1",
    ]
    stage = {"image": "x/triton-operator:1", "command": ["triton-operator", "stage", "--to=/models/m"]}
    assert plan_container(stage, **COMMON).argv == [
        "/venv/bin/triton-operator",
        "stage",
        "--to=/var/sb/pvc-1/m",
    ]


def test_the_repository_server_and_sync_sidecar_bind_their_pods_ip() -> None:
    for words in (
        ["repository", "serve", "--port", "8080"],
        ["repository", "sync", "--source", "http://x:8080"],
    ):
        container = {"image": "x/triton-operator:1", "args": words}
        assert plan_container(container, **COMMON).argv == [
            "/venv/bin/triton-operator",
            *words,
            "--address=10.244.1.4",
        ]


def test_prometheus_operator_images_run_the_local_programs_on_the_pod_ip(tmp_path: Any) -> None:
    """The Prometheus Operator's StatefulSet: Prometheus listens on the pod's IP, the reloader too and
    reaches Prometheus there; mounts under /etc/prometheus are bound where the rendered config names them."""
    prometheus, reloader = tmp_path / "prometheus", tmp_path / "prometheus-config-reloader"
    for program in (prometheus, reloader):
        program.write_text("")
        program.chmod(0o755)
    programs = {"prometheus": str(prometheus), "prometheus-config-reloader": str(reloader)}
    rules = tmp_path / "rules"
    rules.mkdir()
    mounts = [
        Mount("/etc/prometheus/rules/prometheus-sandbox-rulefiles-0", str(rules)),
        Mount("/prometheus", "/var/sb/db"),
    ]
    common = {**COMMON, "mounts": mounts, "programs": programs}
    plan = plan_container(
        {"image": "quay.io/prometheus/prometheus:v3.16.0", "args": ["--storage.tsdb.path=/prometheus"]},
        **common,
    )
    assert plan.argv[-3:] == [
        str(prometheus),
        "--storage.tsdb.path=/var/sb/db",
        "--web.listen-address=10.244.1.4:9090",
    ]
    assert (
        plan.argv[0] == "unshare" and "/etc/prometheus/rules/prometheus-sandbox-rulefiles-0" in plan.argv[-5]
    )
    plan = plan_container(
        {
            "image": "quay.io/prometheus-operator/prometheus-config-reloader:v0.85.0",
            "command": ["/bin/prometheus-config-reloader"],
            "args": ["--listen-address=:8080", "--reload-url=http://localhost:9090/-/reload"],
        },
        **common,
    )
    assert plan.argv[-3:] == [
        str(reloader),
        "--listen-address=10.244.1.4:8080",
        "--reload-url=http://10.244.1.4:9090/-/reload",
    ]
    with pytest.raises(UnsupportedContainer, match=r"build-prometheus\.sh"):
        plan_container({"image": "prometheus:v3"}, **{**common, "programs": {}})
