"""Python-backend test models written to a repository folder, and bounded concurrent traffic.

Shared by `capture.py` (which records the golden metrics texts) and the Triton integration tests.
"""

from __future__ import annotations

import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

# Adds one to its input. Dynamic batching with a 20 ms queue delay lets concurrent requests merge.
ADDER_PY = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x + 1)]))
        return responses
"""

# Loads fine, fails every request: Triton counts these under nv_inference_request_failure.
FAILING_PY = """
class TritonPythonModel:
    def execute(self, requests):
        raise RuntimeError("this model always fails")
"""


def write_model(
    repo: Path,
    name: str,
    model_py: str = ADDER_PY,
    *,
    backend: str = "python",
    max_batch_size: int = 16,
    max_queue_delay_us: int = 20000,
) -> Path:
    """Write `repo/NAME/config.pbtxt` and `repo/NAME/1/model.py`; return the model folder."""
    folder = repo / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(
        textwrap.dedent(
            f"""\
            name: "{name}"
            backend: "{backend}"
            max_batch_size: {max_batch_size}
            input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] }} ]
            output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] }} ]
            dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}
            instance_group [ {{ count: 1 kind: KIND_CPU }} ]
            """
        )
    )
    (folder / "1" / "model.py").write_text(model_py)
    return folder


def infer_once(http_url: str, model: str) -> str | None:
    """One request of one FP32 value; None on success, else Triton's error message."""
    inp = triton_http.InferInput("INPUT0", [1, 1], "FP32")
    inp.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
    with triton_http.InferenceServerClient(http_url, connection_timeout=5.0, network_timeout=30.0) as client:
        try:
            result = client.infer(model, [inp])
        except InferenceServerException as exc:
            return str(exc.message())
    out = result.as_numpy("OUTPUT0")
    return None if out is not None and float(out[0][0]) == 2.0 else f"unexpected output {out!r}"


def send_concurrent(http_url: str, model: str, requests: int, concurrency: int = 8) -> list[str | None]:
    """Send `requests` inferences from `concurrency` threads; one result per request (None = ok)."""
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(lambda _: infer_once(http_url, model), range(requests)))
