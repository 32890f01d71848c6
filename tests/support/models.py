"""Python-backend model sources and model folders shared by tests and benchmarks: a version that fails
every 5th request, an adder whose load takes a while, and a versioned adder in one folder."""

from __future__ import annotations

from pathlib import Path

from tests.golden.triton.triton_models import ADDER_PY

# Version 2 that fails every 5th request it serves (20%), deterministically.
FAILING_PY = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.served = 0

    def execute(self, requests):
        responses = []
        for request in requests:
            self.served += 1
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if self.served % 5 == 0:
                error = pb_utils.TritonError("version 2 is broken")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x + 1)]))
        return responses
"""

# The same, failing 3 requests in 10 (30 %): the failure ratio of the monitoring tests' broken canary.
FAILING_30_PY = FAILING_PY.replace("if self.served % 5 == 0:", "if self.served % 10 in (3, 6, 9):")
assert FAILING_30_PY != FAILING_PY


INIT_SLEEP_S = 1.5
# The adder, with an `initialize` that takes INIT_SLEEP_S: a load that takes a while on purpose.
SLOW_INIT_PY = (
    ADDER_PY
    + f"""
    def initialize(self, args):
        import time

        time.sleep({INIT_SLEEP_S})
"""
)


# Adds its offset (the version, or TWIN_OFFSET for the twin) to the input; a negative input raises.
VERSIONED_PY = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.offset = float(OFFSET if OFFSET else args["model_version"])

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if (x < 0).any():
                raise ValueError("negative input rejected by offset %d" % self.offset)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x + self.offset)]))
        return responses
"""


def write_versioned(repo: Path, name: str, versions: list[int], offset: int = 0) -> None:
    folder = repo / name
    for version in versions:
        (folder / str(version)).mkdir(parents=True, exist_ok=True)
        (folder / str(version) / "model.py").write_text(VERSIONED_PY.replace("OFFSET", str(offset)))
    listed = ", ".join(str(v) for v in versions)
    (folder / "config.pbtxt").write_text(
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 16\n'
        f"version_policy: {{ specific: {{ versions: [{listed}] }} }}\n"
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        "dynamic_batching { max_queue_delay_microseconds: 500 }\n"
        "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
    )
