"""`make demo`: a local cluster with the operator and an example model serving real requests.

1. the sandbox (real control plane, kwok GPU nodes, real Triton per pod, S3 on loopback);
2. the operator installed by README's own commands (`helm install` of charts/, into a namespace that
   enforces Pod Security "restricted"), running as a pod under the chart's ServiceAccount;
3. the MNIST MLP built with model_builders and published to the sandbox's S3;
4. examples/quickstart/ applied (TritonServer + TritonModel), waited on until Ready;
5. `curl` through the sandbox's Gateway (Contour + Envoy) to the routes the operator owns, then real
   inference requests to the TritonServer's Service (its ClusterIP), checked against onnxruntime: at least
   100, at 10/s, until the operator's status shows them;
6. `kubectl get tritonservers,tritonmodels` with their numbers, and the cluster's Warning events (none
   expected: no endpoint warnings, nothing else).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from sandbox import cluster, monitoring
from sandbox import gateway as gw
from sandbox.config import REPO_ROOT, SandboxConfig
from sandbox.mnist import BUCKET, PREFIX, publish_mnist
from sandbox.readme import readme_commands

QUICKSTART = REPO_ROOT / "examples" / "quickstart"
# moto accepts any keys; the quickstart's Secret carries the same placeholders.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "demo",
    "AWS_SECRET_ACCESS_KEY": "demo-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# The operator's status refresh period when its Deployment does not set TRITON_OPERATOR_STATUS_PERIOD.
OPERATOR_STATUS_PERIOD_S = 10.0
# Requests to the Service: at least this many, at this steady rate, this many per connection.
REQUESTS, REQUEST_RATE, PER_CONNECTION = 100, 10.0, 5


def say(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def run(cmd: list[str], env: dict[str, str], capture: bool = False, quiet: bool = False) -> str:
    """Run a command as the user would, failing loudly; returns its stdout when captured."""
    stdout = subprocess.PIPE if capture else subprocess.DEVNULL if quiet else None
    return subprocess.run(cmd, env=env, check=True, text=True, stdout=stdout).stdout or ""


def apply_quickstart(s3_endpoint: str, env: dict[str, str]) -> None:
    """`kubectl apply -f examples/quickstart/`; the files name the `default` sandbox's S3 endpoint, so in
    another sandbox (SANDBOX_NAME) the model's endpoint is that sandbox's."""
    texts = [path.read_text() for path in sorted(QUICKSTART.glob("*.yaml"))]
    named = {
        m for text in texts for m in re.findall(r"^[ \t]*endpoint:[ \t]*(\S+)[ \t]*$", text, re.MULTILINE)
    }
    if named <= {s3_endpoint}:
        run(["kubectl", "apply", "-f", str(QUICKSTART)], env)
        return
    print(
        f"  (this sandbox's S3 is {s3_endpoint}: the model's endpoint is set to it, "
        f"not {', '.join(sorted(named))})"
    )
    mine = [
        re.sub(r"^([ \t]*endpoint:[ \t]*)\S+[ \t]*$", rf"\g<1>{s3_endpoint}", t, flags=re.MULTILINE)
        for t in texts
    ]
    subprocess.run(
        ["kubectl", "apply", "-f", "-"], env=env, check=True, text=True, input="\n---\n".join(mine)
    )


def helm_binary() -> str:
    """helm, built once from Go modules (cached); before entering the namespace: no registry in there."""
    done = subprocess.run(
        ["bash", str(REPO_ROOT / ".ci" / "build-helm.sh")], check=True, text=True, stdout=subprocess.PIPE
    )
    return done.stdout.strip().splitlines()[-1]


def install_operator(env: dict[str, str]) -> None:
    """README's install commands, as written (skipped when a demo before already installed it)."""
    installed = subprocess.run(
        ["helm", "status", "triton-operator", "--namespace", "triton-operator"],
        env=env,
        capture_output=True,
        check=False,
    )
    if installed.returncode == 0:
        print("  already installed (helm status triton-operator -n triton-operator)")
        return
    for line in readme_commands("install"):
        print(f"  $ {line}")
        subprocess.run(["bash", "-c", line], env=env, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)


def operator_metrics_url(env: dict[str, str]) -> str:
    pods = json.loads(
        run(
            [
                "kubectl",
                "get",
                "pods",
                "-n",
                "triton-operator",
                "-o",
                "json",
                "-l",
                "app.kubernetes.io/name=triton-operator",
            ],
            env,
            capture=True,
        )
    )["items"]
    ip = next(p["status"]["podIP"] for p in pods if p["status"].get("podIP"))
    return f"http://{ip}:8081/metrics"


def served_requests(ip: str) -> int:
    """nv_inference_request_success of the demo model on one pod (its /metrics)."""
    with urllib.request.urlopen(f"http://{ip}:8002/metrics", timeout=5) as resp:
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in resp.read().decode().splitlines()
            if line.startswith("nv_inference_request_success{") and 'model="mnist"' in line
        )


def infer_through_the_service(env: dict[str, str], onnx_path: Path, period: float) -> None:
    """Real requests to the TritonServer's Service (its ClusterIP), as a client in the cluster sends them:
    at least REQUESTS at a steady REQUEST_RATE, going on (at most two status periods more) until the
    operator's status shows them, so the closing `kubectl get` has their numbers. Req/s is a rate over the
    window between the operator's last two reads of each pod's /metrics (every `period`): it is the rate
    sent once that window lies within the load, which is what is waited for."""
    import onnxruntime as ort
    import tritonclient.http as http

    service = json.loads(run(["kubectl", "get", "service", "triton", "-o", "json"], env, capture=True))
    ip = service["spec"]["clusterIP"]
    pods = json.loads(
        run(
            [
                "kubectl",
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/instance=triton,app.kubernetes.io/component=server",
                "-o",
                "json",
            ],
            env,
            capture=True,
        )
    )["items"]
    before = {p["metadata"]["name"]: served_requests(p["status"]["podIP"]) for p in pods}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(7).random((4, 1, 28, 28), dtype=np.float32)
    expected = session.run(None, {"input": batch})[0]
    began, began_iso = time.monotonic(), datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    sent, shown = 0, False
    limit = REQUESTS + int(REQUEST_RATE * (2 * period + 5))
    while sent < limit:
        # A new connection every few requests: kube-proxy picks a replica per connection.
        client = http.InferenceServerClient(f"{ip}:8000")
        try:
            for _ in range(PER_CONNECTION):
                tensor = http.InferInput("input", list(batch.shape), "FP32")
                tensor.set_data_from_numpy(batch)
                got = client.infer("mnist", [tensor]).as_numpy("output")
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        finally:
            client.close()
        sent += PER_CONNECTION
        time.sleep(max(began + sent / REQUEST_RATE - time.monotonic(), 0))
        if sent >= REQUESTS and sent % (2 * PER_CONNECTION) == 0:
            # Most of what was sent (a window partly before the load would show a fraction of it).
            least = 0.8 * sent / (time.monotonic() - began)
            if status_shows_traffic(env, began_iso, least):
                shown = True
                break
    served = {
        p["metadata"]["name"]: served_requests(p["status"]["podIP"]) - before[p["metadata"]["name"]]
        for p in pods
    }
    print(
        f"  Service triton ({ip}:8000): {sent} requests of a batch of 4 in {time.monotonic() - began:.0f}s, "
        f"classes {got.argmax(axis=1).tolist()} - equal to onnxruntime's; served by "
        + ", ".join(f"{name} ({n})" for name, n in sorted(served.items()))
    )
    if not shown:
        print(f"  (the operator's status did not show them within {2 * period + 5:g}s after {REQUESTS})")


def status_shows_traffic(env: dict[str, str], since: str, least: float) -> bool:
    """Whether the TritonServer's and the TritonModel's status metrics, refreshed since `since` (RFC 3339,
    whole seconds as status has them), both show at least `least` requests/s in their last window."""
    listed = run(["kubectl", "get", "tritonserver/triton", "tritonmodel/mnist", "-o=json"], env, True)
    items = json.loads(listed)["items"]
    metrics = {i["kind"]: (i.get("status") or {}).get("metrics") or {} for i in items}
    model, server = metrics.get("TritonModel", {}), metrics.get("TritonServer", {})
    model_rate = model.get("requestRate") or 0
    server_rate = (server.get("total") or {}).get("inferenceRate") or 0
    fresh = min(model.get("refreshedAt") or "", server.get("refreshedAt") or "") >= since
    return bool(fresh and model_rate >= least and server_rate >= least)


def operator_status_period(env: dict[str, str]) -> float:
    """The in-cluster operator's status period: its container's TRITON_OPERATOR_STATUS_PERIOD (the chart's
    extraEnv), else the operator's default."""
    deployments = json.loads(
        run(
            [
                *("kubectl", "get", "deployments", "-n", "triton-operator", "-o", "json"),
                *("-l", "app.kubernetes.io/name=triton-operator"),
            ],
            env,
            capture=True,
        )
    )["items"]
    for deployment in deployments:
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for var in container.get("env") or []:
                if var["name"] == "TRITON_OPERATOR_STATUS_PERIOD" and var.get("value"):
                    return float(var["value"])
    return OPERATOR_STATUS_PERIOD_S


def curl_through_the_gateway(cfg: SandboxConfig, env: dict[str, str], onnx_path: Path) -> None:
    """`curl` as a client outside the pool would: Triton's HTTP API through the Gateway."""
    import onnxruntime as ort

    url = gw.gateway_url(cfg)
    print(f"  $ curl {url}/v2/models/mnist/ready -w '%{{http_code}}'")
    ready = run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{url}/v2/models/mnist/ready"],
        env,
        capture=True,
    )
    print(f"  {ready}")
    if ready != "200":
        raise SystemExit(f"demo: the Gateway answered {ready} for the model's readiness")
    batch = np.random.default_rng(11).random((1, 1, 28, 28), dtype=np.float32)
    body = {
        "inputs": [
            {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": batch.ravel().tolist()}
        ]
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(body, f)
    print(f"  $ curl {url}/v2/models/mnist/infer -d @image.json   # one 28x28 image")
    answer = json.loads(
        run(["curl", "-s", "-d", f"@{f.name}", f"{url}/v2/models/mnist/infer"], env, capture=True)
    )
    os.unlink(f.name)
    scores = np.array(answer["outputs"][0]["data"], dtype=np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"input": batch})[0][0]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    print(f"  class {int(scores.argmax())} (onnxruntime agrees), served by version {answer['model_version']}")


def warning_events(env: dict[str, str]) -> list[str]:
    events = json.loads(
        run(
            ["kubectl", "get", "events", "-A", "--field-selector=type=Warning", "-o", "json"],
            env,
            capture=True,
        )
    )["items"]
    return [
        f"{e['involvedObject']['kind']}/{e['involvedObject']['name']}: {e['reason']}: {e['message']}"
        for e in events
    ]


# The demo's monitoring (unless make demo MONITORING=0): the chart's, as README's "Monitoring with
# Prometheus" turns it on, labelled for the sandbox's kube-prometheus-stack-like Prometheus, scraped
# every 2 s.
MONITORING_VALUES = {
    "metrics.podMonitor.enabled": "true",
    "metrics.podMonitor.interval": f"{monitoring.SCRAPE_INTERVAL_S}s",
    "metrics.serviceMonitor.enabled": "true",
    "metrics.serviceMonitor.interval": f"{monitoring.SCRAPE_INTERVAL_S}s",
    "metrics.serviceMonitor.scrapeTimeout": f"{monitoring.SCRAPE_INTERVAL_S}s",
    "metrics.prometheusRule.enabled": "true",
    **{
        f"metrics.{kind}.labels.{k}": v
        for kind in ("podMonitor", "serviceMonitor", "prometheusRule")
        for k, v in monitoring.SELECTOR_LABELS.items()
    },
}
# Requests per second over the last minute, per model and version: the demo has sent requests for less
# than a minute when it reads this (a 5-minute rate would read a fifth of what it sends).
RECORDED = "namespace_tritonserver_model_version:triton_requests:rate1m"


def turn_on_monitoring(env: dict[str, str]) -> None:
    sets = [arg for key, value in MONITORING_VALUES.items() for arg in ("--set", f"{key}={value}")]
    cmd = ["helm", "upgrade", "triton-operator", "charts/triton-operator", "-n", "triton-operator"]
    cmd += ["--reuse-values", *sets, "--wait"]
    print("  $ " + " ".join(cmd))
    subprocess.run(cmd, env=env, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)


def prometheus_get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        answer: dict[str, Any] = json.load(resp)["data"]
    return answer


def show_scrape(prometheus: str, timeout_s: float = 60) -> None:
    """Prometheus's targets (each Triton pod and the operator up) and one recorded series with a value."""
    deadline = time.monotonic() + timeout_s
    while True:
        targets = prometheus_get(f"{prometheus}/api/v1/targets?state=active")["activeTargets"]
        ours = [t for t in targets if t["labels"].get("namespace") in ("default", "triton-operator")]
        query = urllib.parse.urlencode({"query": f'{RECORDED}{{namespace="default"}} > 0'})
        recorded = prometheus_get(f"{prometheus}/api/v1/query?{query}")["result"]
        pods = [t for t in ours if t["labels"].get("tritonserver")]
        done = pods and all(t["health"] == "up" for t in ours) and len(ours) > len(pods) and recorded
        if done or time.monotonic() > deadline:
            break
        time.sleep(1)
    print(f"  $ curl {prometheus}/api/v1/targets")
    for t in ours:
        print(f"  {t['scrapePool']:<45} {t['scrapeUrl']:<40} {t['health']}")
    for r in recorded:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(r["metric"].items()) if k != "__name__")
        print(f"  {RECORDED}{{{labels}}} {float(r['value'][1]):.3f}")
    if recorded:
        print("  (per second over the last minute, of which the demo's requests took only the last seconds)")
    if not done:
        raise SystemExit("demo: Prometheus did not show every target up and the recorded request rate")


def main() -> int:
    cfg = SandboxConfig.from_env(os.environ.get("SANDBOX_NAME", "default"))
    say(f"starting the sandbox '{cfg.name}' (first run builds Kubernetes from Go modules: 10-20 min)")
    helm = helm_binary()
    bins = cluster.up(cfg)
    with_monitoring = os.environ.get("MONITORING", "1") != "0"
    monitoring_bins = monitoring.ensure_binaries() if with_monitoring else None  # outside: the module proxy
    # Inside the sandbox's network namespace from here on (and so is every command we run): the
    # Service's ClusterIP and the pods answer there, as in a cluster.
    cluster.enter(cfg)
    env = {
        **os.environ,
        **S3_ENV,
        "KUBECONFIG": str(cfg.kubeconfig),
        "PATH": f"{bins.dir}:{Path(helm).parent}:{os.environ['PATH']}",
        "S3_ENDPOINT": cfg.s3_endpoint,
        "PYTHONPATH": f"{REPO_ROOT / 'operator'}:{REPO_ROOT}",
    }
    say("installing the operator as README says (helm install of charts/triton-operator)")
    install_operator(env)
    prometheus = ""
    if monitoring_bins is not None:
        say("the Prometheus Operator and Prometheus (sandbox/monitoring.py), and the chart's monitoring on")
        started = time.monotonic()
        prometheus = monitoring.up(cfg, cfg.kubeconfig, kubectl=bins.path("kubectl"), bins=monitoring_bins)
        turn_on_monitoring(env)
        print(
            f"  Prometheus at {prometheus} (inside), up with the chart's monitors in "
            f"{time.monotonic() - started:.1f}s"
        )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        say(f"building the MNIST MLP and publishing it to s3://{BUCKET}/{PREFIX} ({cfg.s3_endpoint})")
        onnx_path = publish_mnist(cfg.s3_endpoint, workdir, S3_ENV)
        say("kubectl apply -f examples/quickstart/")
        apply_quickstart(cfg.s3_endpoint, env)
        run(["kubectl", "wait", "--for=condition=Ready", "tritonserver/triton", "--timeout=300s"], env)
        run(["kubectl", "wait", "--for=condition=Ready", "tritonmodel/mnist", "--timeout=300s"], env)
        say(f"exposing it through the sandbox's Gateway {gw.GATEWAY_NAMESPACE}/{gw.GATEWAY_NAME}")
        parent = {"name": gw.GATEWAY_NAME, "namespace": gw.GATEWAY_NAMESPACE, "sectionName": gw.LISTENER_NAME}
        patch = json.dumps({"spec": {"gateway": {"parentRefs": [parent]}}})
        print(f"  $ kubectl patch tritonserver triton --type=merge -p '{patch}'")
        run(["kubectl", "patch", "tritonserver", "triton", "--type=merge", "-p", patch], env)
        run(["kubectl", "wait", "--for=condition=Routed", "tritonserver/triton", "--timeout=60s"], env)
        say(f"curl through the Gateway ({gw.gateway_address(cfg)})")
        curl_through_the_gateway(cfg, env, onnx_path)
        period = operator_status_period(env)
        say(
            f"real inference requests to the TritonServer's Service (ClusterIP, through kube-proxy), "
            f"{REQUEST_RATE:g}/s until the operator's status shows them (it refreshes every {period:g}s)"
        )
        infer_through_the_service(env, onnx_path, period)
    if prometheus:
        say("what Prometheus scrapes and records (every Triton pod and the operator up)")
        show_scrape(prometheus)
    say("kubectl get tritonservers,tritonmodels")
    run(["kubectl", "get", "tritonservers,tritonmodels"], env)
    say("kubectl get events -A --field-selector=type=Warning")
    warnings = warning_events(env)
    endpoint = [w for w in warnings if "FailedToUpdateEndpointSlices" in w or "loopback" in w]
    print("\n".join(f"  {w}" for w in warnings) or "  No resources found")
    own = [w for w in warnings if w.startswith(("TritonServer/", "TritonModel/"))]
    print(
        f"  Warning events: {len(warnings)}, the operator's: {len(own)} (a fresh deploy warns nothing); "
        f"endpoint warnings: {len(endpoint)} (real EndpointSlices here)"
    )
    if endpoint:
        raise SystemExit("demo: the endpoint controllers warned; see above")
    with urllib.request.urlopen(operator_metrics_url(env), timeout=3) as resp:
        reconciles = [
            line
            for line in resp.read().decode().splitlines()
            if line.startswith("triton_operator_reconcile_total")
        ]
    print("\noperator metrics: " + "; ".join(reconciles[:4]))
    print(
        f'\nEverything keeps running. Use it:\n  eval "$(make -s sandbox-up SANDBOX_NAME={cfg.name})"\n'
        f"  kubectl describe tritonmodel mnist\n"
        f"or in a shell inside its network namespace (pod IPs and ClusterIPs answer there):\n"
        f"  make sandbox-shell SANDBOX_NAME={cfg.name}\n"
        f"Stop it all with: make sandbox-down SANDBOX_NAME={cfg.name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
