"""The sandbox itself, as a user of it sees it: a real control plane, GPU scheduling, real Triton pods,
Jobs of the operator image, `kubectl logs` (issue 19), and a clean start/stop (issue 2)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from sandbox import netns, procs
from sandbox.config import REPO_ROOT, SandboxConfig
from tests.e2e import kube
from tests.e2e.conftest import Sandbox
from tests.e2e.incluster import ChartOperator

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.08-py3"
OPERATOR_IMAGE = "ghcr.io/tritonoperator/triton-operator:0.1.0"


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def runner_pods(sb: Sandbox) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{sb.cfg.ports['podrunner']}/pods", timeout=3) as resp:
        return list(json.load(resp))


def triton_deployment(name: str, claim: str, extra_args: list[str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "tritonserver",
                            "image": TRITON_IMAGE,
                            "command": ["tritonserver"],
                            "args": [
                                "--model-repository=/models",
                                "--model-control-mode=explicit",
                                *(extra_args or []),
                            ],
                            "ports": [
                                {"name": "http", "containerPort": 8000},
                                {"name": "grpc", "containerPort": 8001},
                                {"name": "metrics", "containerPort": 8002},
                            ],
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                            "readinessProbe": {
                                "httpGet": {"path": "/v2/health/ready", "port": "http"},
                                "periodSeconds": 2,
                                "failureThreshold": 1,
                            },
                            "volumeMounts": [{"name": "models", "mountPath": "/models"}],
                        }
                    ],
                    "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": claim}}],
                },
            },
        },
    }


def create_pvc(core: client.CoreV1Api, ns: str, name: str) -> Path:
    """A claim on the default StorageClass; returns the local folder of the volume it gets bound to."""
    core.create_namespaced_persistent_volume_claim(
        ns,
        {
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    kube.wait_for(
        lambda: core.read_namespaced_persistent_volume_claim(name, ns).status.phase == "Bound",
        60,
        f"PVC {name} to be Bound",
    )
    return kube.pv_folder(core, ns, name)


def triton_service(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 8000, "targetPort": "http"}],
        },
    }


def test_triton_deployment_runs_real_tritonserver_on_its_pod_ip(sandbox: Sandbox, namespace: str) -> None:
    core, apps = client.CoreV1Api(sandbox.api), client.AppsV1Api(sandbox.api)
    create_pvc(core, namespace, "models")
    core.create_namespaced_service(namespace, triton_service("triton"))
    apps.create_namespaced_deployment(namespace, triton_deployment("triton", "models"))

    pod = kube.wait_for(
        lambda: next(iter(kube.ready_pods(core, namespace, "app=triton")), None),
        90,
        "the Triton pod to be Ready",
        interval_s=0.05,
    )
    ready_seen = time.monotonic()
    assert pod.status.phase == "Running"
    assert pod.spec.node_name.startswith("gpu-node-")
    ip = pod.status.pod_ip
    node = core.read_node(pod.spec.node_name)
    # A real (non-loopback) address of its node's podCIDR, bound inside the sandbox's namespace.
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(node.spec.pod_cidr), (ip, node.spec.pod_cidr)
    assert not ipaddress.ip_address(ip).is_loopback
    assert http_status(f"http://{ip}:8000/v2/health/ready") == 200
    with urllib.request.urlopen(f"http://{ip}:8000/v2", timeout=3) as resp:
        meta = json.load(resp)
    assert meta["name"] == "triton" and meta["version"].startswith("2.")

    # The Service gets the ready pod in its EndpointSlice (the apiserver accepts pod IPs now), and its
    # ClusterIP reaches the pod through kube-proxy.
    kube.wait_for(
        lambda: kube.endpoint_slice_ips(sandbox.api, namespace, "triton") == {ip},
        15,
        "the Service's EndpointSlice to list the ready pod",
        interval_s=0.05,
    )
    listed_after_s = time.monotonic() - ready_seen
    assert listed_after_s < 10, f"EndpointSlice listed the pod {listed_after_s:.2f}s after it was Ready"
    service_ip = kube.cluster_ip(core, namespace, "triton")
    assert ipaddress.ip_address(service_ip) in ipaddress.ip_network("10.96.0.0/16")
    kube.wait_for(
        lambda: http_status(f"http://{service_ip}:8000/v2/health/ready") == 200,
        10,
        "the Service's ClusterIP to reach the pod (kube-proxy)",
        interval_s=0.05,
    )
    with urllib.request.urlopen(f"http://{service_ip}:8000/v2", timeout=3) as resp:
        assert json.load(resp)["name"] == "triton"
    (pid,) = [c["pid"] for p in runner_pods(sandbox) if p["uid"] == pod.metadata.uid for c in p["containers"]]
    assert pid and Path(f"/proc/{pid}").exists()
    # Triton's own start-up lines, as `kubectl logs` shows them (the apiserver asks the node: kwok).
    logs = sandbox.kubectl("logs", "-n", namespace, pod.metadata.name).stdout
    assert "Started HTTPService at" in logs and "Started Metrics Service at" in logs, logs[-2000:]

    apps.delete_namespaced_deployment("triton", namespace)
    kube.wait_for(
        lambda: not Path(f"/proc/{pid}").exists() or procs_is_zombie(pid),
        60,
        "the tritonserver process to stop after the Deployment was deleted",
    )
    answer = http_status(f"http://{ip}:8000/v2/health/live")
    if answer is not None:
        # kwok hands a freed pod IP to the next pod of its node at once (its pool prefers released
        # addresses): with other tests' pods starting, what answers must be that pod, never this one.
        holders = [
            f"{p.metadata.namespace}/{p.metadata.name}"
            for p in core.list_pod_for_all_namespaces().items
            if p.status.pod_ip == ip and p.metadata.uid != pod.metadata.uid
        ]
        assert holders, f"{ip}:8000 still answers {answer} after its Triton stopped; no other pod has it"


def procs_is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def gpu_pod(name: str, gpus: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {
                    "name": "hold",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                }
            ],
            "terminationGracePeriodSeconds": 1,
        },
    }


@pytest.mark.alone  # takes every GPU of the sandbox
def test_scheduler_enforces_gpu_capacity(sandbox: Sandbox, namespace: str) -> None:
    core = client.CoreV1Api(sandbox.api)
    capacity = sum(int((n.status.allocatable or {}).get("nvidia.com/gpu", 0)) for n in core.list_node().items)
    assert capacity == 8, "the sandbox has 2 GPU nodes with 4 GPUs each"

    def gpus(pod: Any) -> int:
        return sum(
            int((c.resources.limits or {}).get("nvidia.com/gpu", 0))
            for c in pod.spec.containers
            if c.resources
        )

    def held() -> list[Any]:
        return [
            p
            for p in core.list_pod_for_all_namespaces().items
            if p.spec.node_name and p.status.phase in ("Pending", "Running") and gpus(p)
        ]

    # Earlier tests' namespaces may still be going: count only once no GPU pod is terminating.
    kube.wait_for(
        lambda: not any(p.metadata.deletion_timestamp for p in held()),
        120,
        "GPU pods of earlier tests to finish terminating",
    )
    in_use = sum(gpus(p) for p in held())
    for i in range(capacity - in_use):
        core.create_namespaced_pod(namespace, gpu_pod(f"hold-{i}", 1))
    kube.wait_for(
        lambda: all(p.spec.node_name for p in core.list_namespaced_pod(namespace).items),
        60,
        "every GPU the cluster has to be taken",
    )

    core.create_namespaced_pod(namespace, gpu_pod("one-too-many", 1))
    cond = kube.wait_for(
        lambda: (
            (c := kube.pod_condition(core.read_namespaced_pod("one-too-many", namespace), "PodScheduled"))
            and c.status == "False"
            and c
        ),
        30,
        "the scheduler to refuse the 9th GPU",
    )
    assert cond.reason == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in cond.message
    pod = core.read_namespaced_pod("one-too-many", namespace)
    assert pod.status.phase == "Pending" and not pod.spec.node_name


BROKEN_CONFIG = """name: "broken"
backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
"""


def test_triton_with_a_broken_model_and_strict_readiness_is_not_ready(
    sandbox: Sandbox, namespace: str
) -> None:
    core, apps = client.CoreV1Api(sandbox.api), client.AppsV1Api(sandbox.api)
    folder = create_pvc(core, namespace, "models")
    # As `kubectl cp` would: a model whose code raises while loading.
    (folder / "broken" / "1").mkdir(parents=True)
    (folder / "broken" / "config.pbtxt").write_text(BROKEN_CONFIG)
    (folder / "broken" / "1" / "model.py").write_text(
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise RuntimeError('weights are corrupt')\n"
    )
    apps.create_namespaced_deployment(
        namespace,
        triton_deployment(
            "triton", "models", ["--load-model=broken", "--strict-readiness=true", "--exit-on-error=false"]
        ),
    )

    pod = kube.wait_for(
        lambda: next(
            (
                p
                for p in core.list_namespaced_pod(namespace, label_selector="app=triton").items
                if p.status.container_statuses and p.status.container_statuses[0].state.running
            ),
            None,
        ),
        90,
        "the Triton container to be running",
    )
    ip = pod.status.pod_ip
    kube.wait_for(lambda: http_status(f"http://{ip}:8000/v2/health/live") == 200, 60, "Triton to be live")
    # Live but not ready: Triton's own answer, and so the pod's.
    assert http_status(f"http://{ip}:8000/v2/health/ready") == 400
    kube.wait_for(
        lambda: any(
            e.reason == "Unhealthy" and "Readiness probe failed" in e.message
            for e in core.list_namespaced_event(namespace).items
        ),
        30,
        "an Unhealthy event",
    )
    pod = core.read_namespaced_pod(pod.metadata.name, namespace)
    assert kube.pod_condition(pod, "Ready").status == "False"
    assert pod.status.container_statuses[0].ready is False
    index = json.loads(
        urllib.request.urlopen(
            urllib.request.Request(f"http://{ip}:8000/v2/repository/index", data=b"{}"), timeout=3
        ).read()
    )
    assert [(m["name"], m["state"]) for m in index] == [("broken", "UNAVAILABLE")]
    assert "weights are corrupt" in index[0]["reason"]


def operator_job(name: str, args: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            # A failing exit code fails the Job at once and puts the code in the Job's own status.
            "podFailurePolicy": {
                "rules": [{"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [0]}}]
            },
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": OPERATOR_IMAGE, "args": args}],
                }
            },
        },
    }


def job_condition(batch: client.BatchV1Api, ns: str, name: str) -> Any:
    job = batch.read_namespaced_job(name, ns)
    return next(
        (c for c in job.status.conditions or [] if c.type in ("Complete", "Failed") and c.status == "True"),
        None,
    )


def test_operator_image_jobs_complete_or_fail_with_their_exit_code(sandbox: Sandbox, namespace: str) -> None:
    batch, core = client.BatchV1Api(sandbox.api), client.CoreV1Api(sandbox.api)
    batch.create_namespaced_job(namespace, operator_job("ok", ["version"]))
    batch.create_namespaced_job(namespace, operator_job("bad", ["no-such-command"]))

    ok = kube.wait_for(lambda: job_condition(batch, namespace, "ok"), 90, "Job ok to finish")
    assert ok.type == "Complete"
    assert batch.read_namespaced_job("ok", namespace).status.succeeded == 1

    bad = kube.wait_for(lambda: job_condition(batch, namespace, "bad"), 90, "Job bad to finish")
    assert bad.type == "Failed" and bad.reason == "PodFailurePolicy"
    assert "exit code 2" in bad.message
    (pod,) = core.list_namespaced_pod(namespace, label_selector="job-name=bad").items
    assert pod.status.container_statuses[0].state.terminated.exit_code == 2
    # A finished pod's logs stay until the pod is deleted, as a kubelet keeps them.
    assert sandbox.kubectl("logs", "-n", namespace, "job/ok").stdout == "triton-operator 0.1.0\n"
    assert "invalid choice: 'no-such-command'" in sandbox.kubectl("logs", "-n", namespace, "job/bad").stdout


# Runs in a pod of the operator image: reads its service-account token and the cluster's CA from
# the projected volume (its path arrives rewritten to the local folder) and calls the apiserver where
# a kubelet tells pods it is: KUBERNETES_SERVICE_HOST:PORT, the `kubernetes` Service's ClusterIP.
IN_CLUSTER_CALL = """
import json, os, ssl, sys, urllib.request
folder = sys.argv[1]
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
token = open(os.path.join(folder, "token")).read()
ctx = ssl.create_default_context(cafile=os.path.join(folder, "ca.crt"))
req = urllib.request.Request(f"https://{host}:{port}/version", headers={"Authorization": "Bearer " + token})
version = json.load(urllib.request.urlopen(req, timeout=10, context=ctx))["gitVersion"]
open(sys.argv[2], "w").write(f"{host} {port} {version}")
"""


def test_pods_reach_the_apiserver_through_the_kubernetes_service(sandbox: Sandbox, namespace: str) -> None:
    core, batch = client.CoreV1Api(sandbox.api), client.BatchV1Api(sandbox.api)
    assert kube.endpoint_slice_ips(sandbox.api, "default", "kubernetes") == {sandbox.cfg.apiserver_address}
    assert kube.cluster_ip(core, "default", "kubernetes") == sandbox.cfg.apiserver_cluster_ip == "10.96.0.1"
    job = operator_job("in-cluster", [])
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["command"] = ["python", "-c", IN_CLUSTER_CALL, "/var/run/secrets/kubernetes.io/serviceaccount"]
    container["args"] = ["/dev/termination-log"]
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    batch.create_namespaced_job(namespace, job)
    done = kube.wait_for(
        lambda: job_condition(batch, namespace, "in-cluster"), 90, "Job in-cluster to finish"
    )
    (pod,) = core.list_namespaced_pod(namespace, label_selector="job-name=in-cluster").items
    output = pod.status.container_statuses[0].state.terminated.message or ""
    assert done.type == "Complete", (done.message, output)
    host, port, version = output.split()
    assert (host, port) == ("10.96.0.1", "443") and version.startswith("v1."), output


# A container that fails its first run and then ticks: stdout and stderr, a restart, a line per 0.3 s.
TALKER = """
import os, sys, time
first = not os.path.exists("ran-once")
open("ran-once", "w").close()
print("run", "first" if first else "second", flush=True)
print("to stderr", file=sys.stderr, flush=True)
if first:
    sys.exit(3)
for i in range(2000):
    print(f"tick {i}", flush=True)
    time.sleep(0.3)
"""


SIDE_CAR = "import time; print('side car up', flush=True); time.sleep(600)"


def talker_pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "talker"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "main", "image": OPERATOR_IMAGE, "command": ["python", "-c", TALKER]},
                {
                    "name": "side",
                    "image": OPERATOR_IMAGE,
                    "command": ["python", "-c", SIDE_CAR],
                },
            ],
        },
    }


def follow_until(sb: Sandbox, args: list[str], done: Any, timeout_s: float) -> list[str]:
    """`kubectl logs -f ...`'s lines until `done(lines)` holds (bounded), then stops it."""
    proc = subprocess.Popen(["kubectl", "logs", "-f", *args], env=sb.env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not done(lines) and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                break
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
    finally:
        proc.kill()
        proc.wait(timeout=10)
    return lines


def test_kubectl_logs_shows_a_pods_output(sandbox: Sandbox, namespace: str) -> None:
    """`kubectl logs` goes apiserver -> the node's kubelet endpoint (kwok's server on its InternalIP) ->
    the CRI log files the pod runner keeps: per container, --tail, -f, --previous and --timestamps."""
    core = client.CoreV1Api(sandbox.api)
    core.create_namespaced_pod(namespace, talker_pod())

    def restarted_and_ticking() -> bool:
        pod = core.read_namespaced_pod("talker", namespace)
        main = next((c for c in pod.status.container_statuses or [] if c.name == "main"), None)
        return bool(main and main.restart_count >= 1 and main.state.running)

    kube.wait_for(restarted_and_ticking, 60, "the talker's main container to fail once and run again")

    def logs(*args: str, check: bool = True) -> str:
        done = sandbox.kubectl("logs", "-n", namespace, "talker", *args, check=check)
        return done.stdout if done.returncode == 0 else ""

    kube.wait_for(lambda: "tick 1\n" in logs("-c", "main", check=False), 20, "ticks in kubectl logs")
    current = logs("-c", "main")
    assert current.startswith("run second\nto stderr\ntick 0\ntick 1\n"), current[:300]
    assert "run first" not in current
    assert logs("-c", "main", "--previous") == "run first\nto stderr\n"
    assert logs("-c", "side") == "side car up\n"
    (last,) = logs("-c", "main", "--tail=1").splitlines()
    assert last.startswith("tick ")
    stamp, line = logs("-c", "side", "--timestamps").rstrip("\n").split(" ", 1)
    assert line == "side car up"
    age = dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert dt.timedelta(0) <= age < dt.timedelta(minutes=2), stamp

    # -f: what the container writes after the call arrives while it runs.
    def two_new_ticks(lines: list[str]) -> bool:
        return len(lines) >= 3

    followed = follow_until(sandbox, ["-n", namespace, "talker", "-c", "main", "--tail=1"], two_new_ticks, 15)
    assert len(followed) >= 3, followed
    numbers = [int(line.split()[1]) for line in followed]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), followed

    # A wrong container name is the apiserver's answer, as in any cluster.
    wrong = sandbox.kubectl("logs", "-n", namespace, "talker", "-c", "nope", check=False)
    assert wrong.returncode != 0 and "container nope is not valid" in wrong.stderr, wrong.stderr


def test_kubectl_logs_shows_the_operators_pod(sandbox: Sandbox, operator: ChartOperator) -> None:
    """README: start-up problems are one line in `kubectl logs`; here they are the operator pod's own."""
    (pod,) = operator.pods()
    pod_dir = f"{operator.namespace}_{pod.metadata.name}_{pod.metadata.uid}"
    raw = sandbox.cfg.pods_dir / pod_dir / "operator.log"

    def logs() -> str:
        done = sandbox.kubectl(
            "logs", "-n", operator.namespace, f"deployment/{operator.release}", check=False
        )
        return done.stdout if done.returncode == 0 else ""

    shown = kube.wait_for(logs, 30, "the operator's pod to have logged something")
    # The current container's output, as the operator wrote it (its file holds earlier runs too).
    assert shown in raw.read_text(errors="replace"), shown[-2000:]
    assert shown.endswith("\n")


def test_no_endpoint_slice_warnings(sandbox: Sandbox) -> None:
    """The endpoint controllers accept every pod IP: no FailedToUpdateEndpointSlices (loopback) Events."""
    events = json.loads(sandbox.kubectl("get", "events", "-A", "-o", "json").stdout)["items"]
    bad = [
        f"{e['metadata']['namespace']}/{e['involvedObject']['name']}: {e['reason']}: {e.get('message')}"
        for e in events
        if e["reason"] in ("FailedToUpdateEndpointSlices", "FailedToUpdateEndpoint")
        or "loopback" in (e.get("message") or "")
    ]
    assert not bad, bad[:5]


def host_netns_argv() -> list[str]:
    """Prefix that runs a command in the host's network namespace (where a user's shell is)."""
    return ["nsenter", f"--net={netns.host_netns()}", "--"]


def sandbox_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def port_in_use_on_host(port: int) -> bool:
    return netns.call_in_host(lambda: procs.port_in_use(port), 10)


def run_make(target: str, name: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", target, f"SANDBOX_NAME={name}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env or os.environ.copy(),
        check=False,
    )


def test_sandbox_up_down_is_idempotent_recovers_stale_state_and_leaves_nothing(sandbox: Sandbox) -> None:
    cfg = SandboxConfig.from_env(f"{sandbox.cfg.name}-updown")  # one per session: sessions run side by side
    up = run_make("sandbox-up", cfg.name)
    assert up.returncode == 0, up.stderr
    lines = up.stdout.strip().splitlines()
    assert lines[0] == f"export KUBECONFIG={cfg.kubeconfig}"
    assert lines[1].startswith("export PATH=/") and lines[1].endswith(":$PATH")
    assert cfg.netns in sandbox_namespaces()
    env = dict(os.environ)
    # As a user's shell on the host would: through the relay, with the printed kubeconfig.
    nodes = subprocess.run(
        [*host_netns_argv(), "bash", "-c", f"{up.stdout}\nkubectl get nodes -o name"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "node/gpu-node-0" in nodes.stdout.split()

    again = run_make("sandbox-up", cfg.name)
    assert again.returncode == 0 and "already running" in again.stderr

    # A killed run: the apiserver dies, everything else is left behind.
    apiserver = procs.pid_of(cfg, "kube-apiserver")
    assert apiserver
    os.kill(apiserver, 9)
    kube.wait_for(lambda: procs.pid_of(cfg, "kube-apiserver") is None, 10, "the apiserver to die")
    stale = run_make("sandbox-up", cfg.name)
    assert stale.returncode == 0, stale.stderr
    assert "stale sandbox" in stale.stderr

    down = run_make("sandbox-down", cfg.name)
    assert down.returncode == 0, down.stderr
    assert procs.marked_pids(cfg) == []
    assert [p for p in cfg.ports.values() if port_in_use_on_host(p)] == []
    assert cfg.netns not in sandbox_namespaces()


def test_sandbox_up_names_a_busy_port(sandbox: Sandbox) -> None:
    cfg = SandboxConfig.from_env(f"{sandbox.cfg.name}-busyport")

    def hold() -> socket.socket:
        s = socket.socket()
        s.bind(("127.0.0.1", cfg.ports["kube-apiserver"]))
        s.listen()
        return s

    # Taken on the host, where the relay would serve it (the test process itself is in its sandbox).
    with netns.call_in_host(hold, 10):
        up = run_make("sandbox-up", cfg.name)
    assert up.returncode != 0
    assert f"{cfg.ports['kube-apiserver']} (kube-apiserver)" in up.stderr and "in use" in up.stderr
    assert procs.marked_pids(cfg) == []
    assert cfg.netns not in sandbox_namespaces()


def test_cached_binaries_are_reused_without_go(sandbox: Sandbox, tmp_path: Path) -> None:
    """A second run needs neither Go nor the network: PATH without go, and still the same binaries."""
    script = REPO_ROOT / "sandbox" / "build-binaries.sh"
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    warm = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert warm.returncode == 0, warm.stderr
    assert Path(warm.stdout.strip()) == sandbox.bin_dir
    assert "cached" in warm.stderr


def test_build_without_go_says_what_to_do(tmp_path: Path) -> None:
    script = REPO_ROOT / "sandbox" / "build-binaries.sh"
    env = {**os.environ, "PATH": "/usr/bin:/bin", "TRITON_SANDBOX_CACHE": str(tmp_path)}
    cold = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert cold.returncode == 1
    assert "Go is not installed" in cold.stderr and "Install Go" in cold.stderr


def test_failed_module_download_says_what_to_do(tmp_path: Path) -> None:
    script = REPO_ROOT / "sandbox" / "build-binaries.sh"
    env = {
        **os.environ,
        "TRITON_SANDBOX_CACHE": str(tmp_path / "cache"),
        "GOMODCACHE": str(tmp_path / "mod"),
        "GOPROXY": "http://127.0.0.1:9",
        "GOFLAGS": "-mod=mod",
        "GONOSUMDB": "*",
        "GOSUMDB": "off",
    }
    cold = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert cold.returncode == 1
    assert "Go module proxy (http://127.0.0.1:9) is reachable" in cold.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
