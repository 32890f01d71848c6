"""The example model of the demo, the e2e tests and the bench: the MNIST MLP, built with model_builders
(`onnx-python`: it runs on a Triton that has only the python backend) and published to an S3 server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3

from sandbox.config import REPO_ROOT

BUCKET, PREFIX, MODEL = "models", "mnist/1", "mnist"


def ensure_bucket(s3_endpoint: str, credentials: dict[str, str]) -> None:
    """The sandbox S3 server's `models` bucket, created once."""
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
    )
    if BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=BUCKET)


def publish_folder(
    s3_endpoint: str, folder: Path, prefix: str, credentials: dict[str, str], version: int | None = None
) -> None:
    """`model-builders publish FOLDER --to s3://models/PREFIX` (as version `version`), as a user would."""
    ensure_bucket(s3_endpoint, credentials)
    args = ["--version", str(version)] if version is not None else []
    subprocess.run(
        [sys.executable, "-m", "model_builders", "publish", str(folder), "--to", f"s3://{BUCKET}/{prefix}",
         *args, "--endpoint-url", s3_endpoint, "--region", "us-east-1", "--server", "triton",
         "--credentials-secret", "s3-credentials", "--force"],
        env={**os.environ, **credentials, "PYTHONPATH": f"{REPO_ROOT / 'operator'}:{REPO_ROOT}"},
        check=True, timeout=120, capture_output=True,
    )  # fmt: skip


def publish_mnist(
    s3_endpoint: str, workdir: Path, credentials: dict[str, str], credentials_secret: str = "s3-credentials"
) -> Path:
    """Build the model into `workdir` and publish it to s3://models/mnist/1; returns the .onnx file.

    The TritonModel that `publish` prints is kept in `workdir / "tritonmodel.yaml"`.
    """
    env = {**os.environ, **credentials, "PYTHONPATH": f"{REPO_ROOT / 'operator'}:{REPO_ROOT}"}

    def run(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, *args], env=env, check=True, timeout=180, capture_output=True, text=True
        )
        return proc.stdout

    ensure_bucket(s3_endpoint, credentials)
    run(str(REPO_ROOT / "examples" / "models" / "mnist_mlp.py"), "--out", str(workdir))
    repo = workdir / "repo"
    run(
        "-m",
        "model_builders",
        "onnx-python",
        str(workdir / "mnist_mlp.onnx"),
        "--name",
        MODEL,
        "-o",
        str(repo),
        "--max-batch-size",
        "8",
        "--dynamic-batching",
        "--preferred-batch-size",
        "4",
        "--max-queue-delay-us",
        "2000",
    )
    printed = run(
        "-m", "model_builders", "publish", str(repo / MODEL), "--to", f"s3://{BUCKET}/{PREFIX}",
        "--endpoint-url", s3_endpoint, "--region", "us-east-1", "--server", "triton",
        "--credentials-secret", credentials_secret, "--force",
    )  # fmt: skip
    (workdir / "tritonmodel.yaml").write_text(printed)
    return workdir / "mnist_mlp.onnx"
