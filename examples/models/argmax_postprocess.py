"""Python-backend post-processing step: `logits` [N,10] FP32 -> `label` [N,1] INT64 (argmax).

Package it and chain it after the MNIST MLP (see model_builders/README.md):

    model-builders python examples/models/argmax_postprocess.py --name argmax --output REPO \
        --max-batch-size 8 --input logits:FP32:10 --output-tensor label:INT64:1
"""

from __future__ import annotations

from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]


class TritonPythonModel:
    """Argmax over the last axis."""

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request."""
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy()
            label = np.argmax(logits, axis=-1).astype(np.int64).reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("label", label)]))
        return responses
