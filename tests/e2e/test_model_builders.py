"""model_builders end to end (issue 5): the TritonModel that `model-builders publish` prints, applied as
it is, serves the model on real Triton with outputs equal to onnxruntime's, single and batched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.http as http
import yaml
from kubernetes import client

from sandbox.mnist import MODEL, publish_mnist
from tests.e2e.conftest import Operator, Sandbox
from tests.support.objects import POD_SELECTOR

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "builder", "AWS_SECRET_ACCESS_KEY": "builder-secret"}
SERVER = {
    "apiVersion": "tritonoperator.dev/v1alpha1",
    "kind": "TritonServer",
    "metadata": {"name": "triton"},
    "spec": {"replicas": 2, "resources": {"gpus": 1}, "modelRepository": {"size": "1Gi"}},
}


def infer(ip: str, batch: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
    tensor = http.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    out: np.ndarray = http.InferenceServerClient(f"{ip}:8000").infer(MODEL, [tensor]).as_numpy("output")  # type: ignore[type-arg]
    assert out is not None
    return out


def test_printed_triton_model_applies_as_is_and_matches_onnxruntime(
    sandbox: Sandbox, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    onnx_file = publish_mnist(sandbox.cfg.s3_endpoint, tmp_path, CREDENTIALS, credentials_secret="s3-creds")
    printed = (tmp_path / "tritonmodel.yaml").read_text()
    resource = yaml.safe_load(printed)
    assert resource["spec"]["source"]["s3"]["credentialsSecret"] == {"name": "s3-creds"}
    assert resource["spec"]["source"]["digest"].startswith("sha256:")
    assert "builder-secret" not in printed  # credentials are referenced, never printed

    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3-creds"},
        "stringData": CREDENTIALS,
    }
    sandbox.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [secret, SERVER]}),
    )
    sandbox.kubectl("apply", "-n", namespace, "-f", "-", input=printed)  # exactly what publish printed
    sandbox.kubectl(
        "wait",
        "-n",
        namespace,
        f"tritonmodel/{resource['metadata']['name']}",
        "--for=condition=Ready",
        "--timeout=240s",
    )

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    pods = client.CoreV1Api(sandbox.api).list_namespaced_pod(namespace, label_selector=POD_SELECTOR).items
    assert len(pods) == 2
    for pod in pods:
        for size in (1, 8):  # a single request and a batch
            batch = rng.random((size, 1, 28, 28), dtype=np.float32)
            expected = session.run(None, {"input": batch})[0]
            np.testing.assert_allclose(infer(pod.status.pod_ip, batch), expected, rtol=1e-5, atol=1e-6)
