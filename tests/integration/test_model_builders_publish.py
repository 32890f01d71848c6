"""Build -> publish to a real S3 server -> fetch -> serve on a real tritonserver, and S3 failure modes.

Real processes on loopback only: moto's S3 server (127.20.0.x) and the bundled tritonserver (127.20.1.x).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as http
import yaml
from boto3.s3.transfer import TransferConfig
from triton_operator.api.tritonmodel import TritonModelSpec

from model_builders.config import config_from_json, parse_config
from model_builders.manifest import MANIFEST_FILE, build_manifest
from model_builders.publish import MiB, fetch, publish, remove_s3_objects
from model_builders.repository import ModelEntry, write_entry
from model_builders.targets import S3Target
from sandbox.tritonserver import run_tritonserver
from tests.support.s3server import FAKE_AWS_ENV, free_port, run_s3_server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "models"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m model_builders ARGS` as a user runs it (fake AWS credentials in the environment)."""
    env = {**os.environ, **FAKE_AWS_ENV, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "model_builders", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with run_s3_server("127.20.0.1") as endpoint:
        yield endpoint


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Client]:
    """A client on the real server with a fresh, empty bucket."""
    for key, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    yield client
    remove_s3_objects(client, S3Target(BUCKET, ""), _keys(client))
    client.delete_bucket(Bucket=BUCKET)


def _keys(client: S3Client) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


@pytest.fixture(scope="module")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(mnist_mlp.onnx made by the example script, REPO/mnist_mlp built by `onnx-python`)."""
    work = tmp_path_factory.mktemp("mnist")
    subprocess.run(
        [sys.executable, str(ROOT / "examples/models/mnist_mlp.py"), "--out", str(work)], check=True
    )
    onnx_path = work / "mnist_mlp.onnx"
    built = cli(
        "onnx-python", str(onnx_path), "--name", "mnist_mlp", "--output", str(work / "repo"),
        "--dynamic-batching", "--max-batch-size", "8", "--max-queue-delay-us", "20000",
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    return onnx_path, work / "repo" / "mnist_mlp"


def test_published_mnist_serves_like_onnxruntime(
    s3: S3Client, s3_endpoint: str, mnist: tuple[Path, Path], tmp_path: Path
) -> None:
    onnx_path, model_dir = mnist
    published = cli(
        "publish", str(model_dir), "--to", f"s3://{BUCKET}/mnist/v1", "--endpoint-url", s3_endpoint,
        "--server", "triton-cpu", "--credentials-secret", "s3-credentials",
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    assert FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"] not in published.stdout + published.stderr

    # The printed TritonModel points at what was uploaded, pinned by the manifest's overall digest.
    resource = yaml.safe_load(published.stdout)
    manifest = build_manifest(model_dir)
    assert resource["spec"]["source"] == {
        "s3": {
            "bucket": BUCKET,
            "prefix": "mnist/v1",
            "endpoint": s3_endpoint,
            "credentialsSecret": {"name": "s3-credentials"},
        },
        "digest": manifest.digest,
    }
    assert (resource["spec"]["modelName"], resource["spec"]["version"]) == ("mnist_mlp", 1)

    # Each object carries its sha256; the manifest lists every file and was written too.
    keys = _keys(s3)
    assert sorted(keys) == sorted(
        [f"mnist/v1/{f.path}" for f in manifest.files] + [f"mnist/v1/{MANIFEST_FILE}"]
    )
    for entry in manifest.files:
        head = s3.head_object(Bucket=BUCKET, Key=f"mnist/v1/{entry.path}")
        assert head["Metadata"]["sha256"] == hashlib.sha256((model_dir / entry.path).read_bytes()).hexdigest()

    repository = tmp_path / "fresh-repo"
    fetched = cli(
        "fetch", f"s3://{BUCKET}/mnist/v1", "--output", str(repository / "mnist_mlp"),
        "--endpoint-url", s3_endpoint, "--digest", resource["spec"]["source"]["digest"],
    )  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    with run_tritonserver(repository, address="127.20.1.1") as server:
        client = http.InferenceServerClient(server.http_url, concurrency=8)
        client.load_model("mnist_mlp")
        assert client.is_model_ready("mnist_mlp"), server.log()[-3000:]
        served = config_from_json(client.get_model_config("mnist_mlp"))
        ours = parse_config((model_dir / "config.pbtxt").read_text())
        assert (served.max_batch_size, list(served.input), list(served.output)) == (
            ours.max_batch_size,
            list(ours.input),
            list(ours.output),
        )

        def request(batch: np.ndarray) -> list[http.InferInput]:  # type: ignore[type-arg]
            tensor = http.InferInput("input", list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch)
            return [tensor]

        def infer(batch: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
            result = client.infer("mnist_mlp", request(batch)).as_numpy("output")
            assert result is not None
            return np.asarray(result)

        single = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
        np.testing.assert_allclose(infer(single), session.run(None, {"input": single})[0], rtol=1e-5)
        batch = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
        out = infer(batch)
        assert out.shape == (8, 10)
        np.testing.assert_allclose(out, session.run(None, {"input": batch})[0], rtol=1e-5)

        # Eight concurrent single requests go through the dynamic batcher (one onnxruntime call per batch).
        pending = [client.async_infer("mnist_mlp", request(batch[i : i + 1])) for i in range(8)]
        outs = [p.get_result(timeout=30).as_numpy("output") for p in pending]
        np.testing.assert_allclose(np.concatenate(outs), session.run(None, {"input": batch})[0], rtol=1e-5)
        stats = client.get_inference_statistics("mnist_mlp")["model_stats"][0]
        assert stats["inference_count"] == 1 + 8 + 8
        assert stats["execution_count"] < 1 + 1 + 8, "concurrent requests were never batched together"


def test_second_version_published_next_to_the_first(
    s3: S3Client, s3_endpoint: str, mnist: tuple[Path, Path], tmp_path: Path
) -> None:
    """A rollout: the model built once (version 1) goes to .../mnist/1 and .../mnist/2; each prefix holds
    its own version folder and the printed TritonModel points at it."""
    onnx_path, model_dir = mnist
    common = (
        "--endpoint-url",
        s3_endpoint,
        "--server",
        "triton-cpu",
        "--credentials-secret",
        "s3-credentials",
    )
    printed: dict[int, dict[str, Any]] = {}
    # v2 as the canary of v1; publishing it again (the explicit --version agrees) is a no-op.
    for version, extra in (
        (1, ()),
        (2, ("--rollout", "canary")),
        (2, ("--version", "2", "--rollout", "canary")),
    ):
        result = cli("publish", str(model_dir), "--to", f"s3://{BUCKET}/mnist/{version}", *common, *extra)
        assert result.returncode == 0, result.stderr
        assert f"as version {version}" in result.stderr
        printed[version] = yaml.safe_load(result.stdout)

    files = ["config.pbtxt", "{v}/model.onnx", "{v}/model.py", MANIFEST_FILE]
    assert sorted(_keys(s3)) == sorted(f"mnist/{v}/" + f.format(v=v) for v in (1, 2) for f in files)
    for version in (1, 2):
        spec = printed[version]["spec"]
        assert (spec["modelName"], spec["version"]) == ("mnist_mlp", version)
        assert spec["source"] == {
            "s3": {
                "bucket": BUCKET,
                "prefix": f"mnist/{version}",
                "endpoint": s3_endpoint,
                "credentialsSecret": {"name": "s3-credentials"},
            },
            "digest": build_manifest(model_dir, version=version).digest,
        }
        TritonModelSpec.model_validate(spec)  # what the operator's API accepts
        body = s3.get_object(Bucket=BUCKET, Key=f"mnist/{version}/{MANIFEST_FILE}")["Body"].read()
        assert json.loads(body)["versions"] == [version]
    assert "rollout" not in printed[1]["spec"] and printed[2]["spec"]["rollout"] == {"strategy": "Canary"}
    head = s3.head_object(Bucket=BUCKET, Key="mnist/2/2/model.onnx")
    assert head["Metadata"]["sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert printed[1]["spec"]["source"]["digest"] != printed[2]["spec"]["source"]["digest"]

    # A --version that contradicts the prefix is refused before anything is uploaded.
    before = sorted(_keys(s3))
    refused = cli("publish", str(model_dir), "--to", f"s3://{BUCKET}/mnist/3", *common, "--version", "4")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "--version 4 conflicts with --to s3://models/mnist/3" in refused.stderr
    assert sorted(_keys(s3)) == before

    fresh = tmp_path / "fresh" / "mnist_mlp"
    fetched = cli(
        "fetch", f"s3://{BUCKET}/mnist/2", "--output", str(fresh), "--endpoint-url", s3_endpoint,
        "--digest", printed[2]["spec"]["source"]["digest"],
    )  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    assert sorted(p.name for p in fresh.iterdir()) == ["2", "config.pbtxt", MANIFEST_FILE]
    assert (fresh / "2" / "model.onnx").read_bytes() == onnx_path.read_bytes()


def test_second_version_published_to_a_folder(mnist: tuple[Path, Path], tmp_path: Path) -> None:
    """The same to a folder per version inside a PVC: 2/ lands under .../mnist_mlp/2, spec.source.pvc points
    there and spec.version is 2."""
    onnx_path, model_dir = mnist
    target = tmp_path / "nfs" / "mnist_mlp" / "2"
    result = cli("publish", str(model_dir), "--to", str(target), "--server", "triton-cpu", "--claim", "nfs")
    assert result.returncode == 0, result.stderr
    assert "as version 2 (from its version folder 1)" in result.stderr
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "2",
        "2/model.onnx",
        "2/model.py",
        "config.pbtxt",
        MANIFEST_FILE,
    ]
    assert (target / "2" / "model.onnx").read_bytes() == onnx_path.read_bytes()
    spec = yaml.safe_load(result.stdout)["spec"]
    assert spec["version"] == 2
    assert spec["source"] == {
        "pvc": {"claimName": "nfs", "path": "mnist_mlp/2"},
        "digest": build_manifest(model_dir, version=2).digest,
    }
    TritonModelSpec.model_validate(spec)


def test_big_files_use_multipart_and_fetch_verifies(s3: S3Client, s3_endpoint: str, tmp_path: Path) -> None:
    cfg = parse_config('name: "big" backend: "python" input { name: "x" data_type: TYPE_FP32 dims: [1] }')
    weights = np.random.default_rng(0).bytes(11 * MiB)
    model_dir = write_entry(
        tmp_path / "repo", ModelEntry(cfg, 1, {"weights.bin": weights, "model.py": b"# stub\n"})
    )
    target = S3Target(BUCKET, "big/v1")
    small_parts = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    manifest = publish(model_dir, target, endpoint_url=s3_endpoint, transfer=small_parts)

    head = s3.head_object(Bucket=BUCKET, Key="big/v1/1/weights.bin")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 1 MiB
    assert head["Metadata"]["sha256"] == hashlib.sha256(weights).hexdigest()

    fetched = fetch(
        target, tmp_path / "fresh" / "big", endpoint_url=s3_endpoint, expected_digest=manifest.digest
    )
    assert fetched.digest == manifest.digest
    assert (tmp_path / "fresh" / "big" / "1" / "weights.bin").read_bytes() == weights


def test_unreachable_endpoint_fails_cleanly(s3: S3Client, mnist: tuple[Path, Path]) -> None:
    closed = f"http://127.20.0.2:{free_port('127.20.0.2')}"
    result = cli(
        "publish", str(mnist[1]), "--to", f"s3://{BUCKET}/mnist/v1", "--endpoint-url", closed, "--server", "s"
    )
    assert result.returncode == 1
    assert result.stdout == ""  # no TritonModel for something that was not published
    assert result.stderr.count("\n") == 1
    assert f"cannot reach S3 endpoint {closed}" in result.stderr and "--endpoint-url" in result.stderr
    assert _keys(s3) == []


def test_missing_bucket_and_incomplete_prefix(
    s3: S3Client, s3_endpoint: str, mnist: tuple[Path, Path]
) -> None:
    result = cli(
        "publish",
        str(mnist[1]),
        "--to",
        "s3://no-such-bucket/m",
        "--endpoint-url",
        s3_endpoint,
        "--server",
        "s",
    )
    assert result.returncode == 1 and "bucket 'no-such-bucket' does not exist" in result.stderr

    # Leftovers without a manifest (a publish that was killed) are neither fetched nor silently mixed in.
    s3.put_object(Bucket=BUCKET, Key="mnist/v1/config.pbtxt", Body=b"stale")
    fetched = cli(
        "fetch", f"s3://{BUCKET}/mnist/v1", "--output", "/nonexistent/x", "--endpoint-url", s3_endpoint
    )
    assert fetched.returncode == 1 and "has no manifest.json" in fetched.stderr
    result = cli(
        "publish",
        str(mnist[1]),
        "--to",
        f"s3://{BUCKET}/mnist/v1",
        "--endpoint-url",
        s3_endpoint,
        "--server",
        "s",
    )
    assert result.returncode == 1 and "no manifest" in result.stderr and "--force" in result.stderr
    assert _keys(s3) == ["mnist/v1/config.pbtxt"]


def test_force_replaces_a_different_model_and_drops_stale_files(
    s3: S3Client, s3_endpoint: str, mnist: tuple[Path, Path], tmp_path: Path
) -> None:
    target = S3Target(BUCKET, "mnist/v1")
    publish(mnist[1], target, endpoint_url=s3_endpoint)
    cfg = parse_config(
        'name: "mnist_mlp" backend: "python" input { name: "x" data_type: TYPE_FP32 dims: [1] }'
    )
    other = write_entry(tmp_path / "repo", ModelEntry(cfg, 2, {"model.py": b"# v2\n"}))
    argv = ["publish", str(other), "--to", str(target), "--endpoint-url", s3_endpoint, "--server", "s"]
    refused = cli(*argv)
    assert refused.returncode == 1 and "already holds a different model" in refused.stderr
    assert len(_keys(s3)) == 4  # untouched: 3 files + manifest
    forced = cli(*argv, "--force")
    assert forced.returncode == 0, forced.stderr
    assert sorted(_keys(s3)) == ["mnist/v1/2/model.py", "mnist/v1/config.pbtxt", "mnist/v1/manifest.json"]
    assert yaml.safe_load(forced.stdout)["spec"]["version"] == 2


def test_rollback_removes_objects_and_unfinished_multipart_uploads(s3: S3Client) -> None:
    """What a failed publish leaves behind (some objects, an open multipart upload) is removed."""
    s3.put_object(Bucket=BUCKET, Key="m/v1/config.pbtxt", Body=b"x")
    s3.put_object(Bucket=BUCKET, Key="keep/other", Body=b"y")
    s3.create_multipart_upload(Bucket=BUCKET, Key="m/v1/1/model.onnx")
    remove_s3_objects(s3, S3Target(BUCKET, "m/v1"), ["m/v1/config.pbtxt", "m/v1/1/model.onnx"])
    assert _keys(s3) == ["keep/other"]
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_ensemble_of_built_models_serves(mnist: tuple[Path, Path], tmp_path: Path) -> None:
    """onnx-python model + python post-processing + ensemble, each built by the CLI, load and agree."""
    onnx_path, _ = mnist
    repo = tmp_path / "repo"
    steps = [
        ("onnx-python", str(onnx_path), "--name", "mnist_mlp", "--output", str(repo), "--max-batch-size=8"),
        (
            "python", str(ROOT / "examples/models/argmax_postprocess.py"),
            "--name", "argmax", "--output", str(repo),
            "--max-batch-size", "8", "--input", "logits:FP32:10", "--output-tensor", "label:INT64:1",
        ),
        (
            "ensemble", "--name", "mnist_pipeline", "--output", str(repo), "--max-batch-size", "8",
            "--input", "IMAGE:FP32:1,28,28", "--output-tensor", "LABEL:INT64:1",
            "--step", "mnist_mlp input=IMAGE -> output=logits",
            "--step", "argmax logits=logits -> label=LABEL",
        ),
    ]  # fmt: skip
    for argv in steps:
        built = cli(*argv)
        assert built.returncode == 0, built.stderr

    images = np.random.default_rng(3).standard_normal((4, 1, 28, 28)).astype(np.float32)
    expected = np.argmax(ort.InferenceSession(str(onnx_path)).run(None, {"input": images})[0], axis=1)
    with run_tritonserver(repo, address="127.20.1.2") as server:
        client = http.InferenceServerClient(server.http_url)
        client.load_model("mnist_pipeline")  # explicit mode loads the composing models too
        assert client.is_model_ready("mnist_pipeline"), server.log()[-3000:]
        tensor = http.InferInput("IMAGE", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images)
        labels = client.infer("mnist_pipeline", [tensor]).as_numpy("LABEL")
        assert labels is not None
        np.testing.assert_array_equal(labels.reshape(-1), expected)
