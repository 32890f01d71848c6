"""`make demo`: a local cluster with the operator and an example model serving real requests.

1. the sandbox (real control plane, kwok GPU nodes, real Triton per pod, S3 on loopback);
2. the CRDs, and the operator running against it (stopped by `make sandbox-down`);
3. the MNIST MLP built with model_builders and published to the sandbox's S3;
4. examples/quickstart/ applied (TritonServer + TritonModel), waited on until Ready;
5. real inference requests to every replica, checked against onnxruntime;
6. `kubectl get tritonservers,tritonmodels` with the live numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3
import numpy as np

from tests.sandbox import cluster, procs
from tests.sandbox.config import REPO_ROOT, SandboxConfig

QUICKSTART = REPO_ROOT / "examples" / "quickstart"
BUCKET, PREFIX = "models", "mnist/1"
# moto accepts any keys; the quickstart's Secret carries the same placeholders.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "demo",
    "AWS_SECRET_ACCESS_KEY": "demo-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def say(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def run(cmd: list[str], env: dict[str, str], capture: bool = False, quiet: bool = False) -> str:
    """Run a command as the user would, failing loudly; returns its stdout when captured."""
    stdout = subprocess.PIPE if capture else subprocess.DEVNULL if quiet else None
    return subprocess.run(cmd, env=env, check=True, text=True, stdout=stdout).stdout or ""


def start_operator(cfg: SandboxConfig, env: dict[str, str]) -> None:
    if procs.pid_of(cfg, "operator"):
        return
    procs.spawn(
        cfg,
        "operator",
        [
            sys.executable,
            "-m",
            "triton_operator",
            "run",
            "--health-address=127.0.0.1",
            f"--health-port={cfg.base_port + 10}",
        ],
        env=env,
    )


def publish_model(env: dict[str, str], workdir: Path) -> None:
    run([sys.executable, str(REPO_ROOT / "examples" / "models" / "mnist_mlp.py"), "--out", str(workdir)], env)
    run(
        [
            sys.executable,
            "-m",
            "model_builders",
            "onnx-python",
            str(workdir / "mnist_mlp.onnx"),
            "--name",
            "mnist",
            "--output",
            str(workdir / "repo"),
            "--max-batch-size",
            "8",
            "--dynamic-batching",
            "--preferred-batch-size",
            "4",
            "--max-queue-delay-us",
            "2000",
        ],
        env,
    )
    s3 = boto3.client(
        "s3",
        endpoint_url=env["S3_ENDPOINT"],
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_ENV["AWS_DEFAULT_REGION"],
    )
    if BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=BUCKET)
    run(
        [
            sys.executable,
            "-m",
            "model_builders",
            "publish",
            str(workdir / "repo" / "mnist"),
            "--to",
            f"s3://{BUCKET}/{PREFIX}",
            "--endpoint-url",
            env["S3_ENDPOINT"],
            "--server",
            "triton",
            "--credentials-secret",
            "s3-credentials",
            "--force",
        ],
        env,
        quiet=True,
    )


def infer_everywhere(env: dict[str, str], workdir: Path) -> None:
    import onnxruntime as ort
    import tritonclient.http as http

    pods = json.loads(
        run(
            ["kubectl", "get", "pods", "-l", "app.kubernetes.io/instance=triton", "-o", "json"],
            env,
            capture=True,
        )
    )["items"]
    session = ort.InferenceSession(str(workdir / "mnist_mlp.onnx"), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(7).random((4, 1, 28, 28), dtype=np.float32)
    expected = session.run(None, {"input": batch})[0]
    for pod in pods:
        ip = pod["status"]["podIP"]
        client = http.InferenceServerClient(f"{ip}:8000")
        for _ in range(50):  # some traffic for the metrics columns
            tensor = http.InferInput("input", list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch)
            got = client.infer("mnist", [tensor]).as_numpy("output")
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        print(
            f"  {pod['metadata']['name']} ({ip}): 50 requests of a batch of 4, classes "
            f"{got.argmax(axis=1).tolist()} - equal to onnxruntime's"
        )


def main() -> int:
    cfg = SandboxConfig.from_env(os.environ.get("SANDBOX_NAME", "default"))
    say(f"starting the sandbox '{cfg.name}' (first run builds Kubernetes from Go modules: 10-20 min)")
    bins = cluster.up(cfg)
    env = {
        **os.environ,
        **S3_ENV,
        "KUBECONFIG": str(cfg.kubeconfig),
        "PATH": f"{bins.dir}:{os.environ['PATH']}",
        "S3_ENDPOINT": cfg.s3_endpoint,
        "PYTHONPATH": f"{REPO_ROOT / 'operator'}:{REPO_ROOT}",
    }
    say("installing the CRDs and starting the operator")
    run(["kubectl", "apply", "-f", str(REPO_ROOT / "crds")], env, quiet=True)
    run(
        ["kubectl", "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"],
        env,
        quiet=True,
    )
    start_operator(cfg, env)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        say(f"building the MNIST MLP and publishing it to s3://{BUCKET}/{PREFIX} ({cfg.s3_endpoint})")
        publish_model(env, workdir)
        say("kubectl apply -f examples/quickstart/")
        run(["kubectl", "apply", "-f", str(QUICKSTART)], env)
        run(["kubectl", "wait", "--for=condition=Ready", "tritonserver/triton", "--timeout=300s"], env)
        run(["kubectl", "wait", "--for=condition=Ready", "tritonmodel/mnist", "--timeout=300s"], env)
        say("real inference requests to every replica, by pod IP")
        infer_everywhere(env, workdir)
    period = float(os.environ.get("TRITON_OPERATOR_STATUS_PERIOD", "10"))
    time.sleep(period + 2)
    say("kubectl get tritonservers,tritonmodels")
    run(["kubectl", "get", "tritonservers,tritonmodels"], env)
    health = f"http://127.0.0.1:{cfg.base_port + 11}/metrics"
    with urllib.request.urlopen(health, timeout=3) as resp:
        reconciles = [
            line
            for line in resp.read().decode().splitlines()
            if line.startswith("triton_operator_reconcile_total")
        ]
    print("\noperator metrics: " + "; ".join(reconciles[:4]))
    print(
        f'\nEverything keeps running. Use it:\n  eval "$(make -s sandbox-up SANDBOX_NAME={cfg.name})"\n'
        f"  kubectl describe tritonmodel mnist\nStop it all with: make sandbox-down SANDBOX_NAME={cfg.name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
