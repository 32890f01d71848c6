"""Build a small image classifier as ONNX: `image` [N,3,32,32] FP32 -> `probabilities` [N,10].

    python examples/models/tiny_classifier.py --out DIR   # writes DIR/tiny_classifier.onnx

Conv(3->8) -> Relu -> MaxPool -> Conv(8->16) -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Softmax,
a ResNet-shaped miniature with seeded random weights, built in code (no downloads).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
FILENAME = "tiny_classifier.onnx"


def build_tiny_classifier(seed: int = 0, classes: int = 10) -> onnx.ModelProto:
    """The classifier with a dynamic batch axis (`batch`)."""
    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> np.ndarray:  # type: ignore[type-arg]
        fan_in = int(np.prod(shape[1:])) or 1
        scaled: np.ndarray = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)  # type: ignore[type-arg]
        return scaled

    init = {
        "conv1_w": weights(8, 3, 3, 3),
        "conv1_b": np.zeros(8, np.float32),
        "conv2_w": weights(16, 8, 3, 3),
        "conv2_b": np.zeros(16, np.float32),
        "fc_w": weights(16, classes),
        "fc_b": np.zeros(classes, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["image", "conv1_w", "conv1_b"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2_w", "conv2_b"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["features"], axis=1),
        helper.make_node("Gemm", ["features", "fc_w", "fc_b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_classifier",
        inputs=[helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        outputs=[helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])],
        initializer=[numpy_helper.from_array(v, k) for k, v in init.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="model-builders"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    """Write the model into --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write tiny_classifier.onnx into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / FILENAME
    onnx.save(build_tiny_classifier(args.seed), str(path))
    print(path)


if __name__ == "__main__":
    main()
