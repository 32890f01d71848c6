"""Build the MNIST MLP as ONNX from weights made in code: `input` [N,1,28,28] FP32 -> `output` [N,10].

    python examples/models/mnist_mlp.py --out DIR      # writes DIR/mnist_mlp.onnx

Flatten -> Gemm(784x128) -> Relu -> Gemm(128x10). The weights are seeded random numbers, not trained:
the point is a real graph with the shapes the tutorial's model has, built without downloads.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
FILENAME = "mnist_mlp.onnx"


def build_mnist_mlp(seed: int = 0, hidden: int = 128) -> onnx.ModelProto:
    """The MLP with a dynamic batch axis (`batch`), so Triton can batch it."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((784, hidden)) / np.sqrt(784)).astype(np.float32)
    b1 = (rng.standard_normal(hidden) * 0.01).astype(np.float32)
    w2 = (rng.standard_normal((hidden, 10)) / np.sqrt(hidden)).astype(np.float32)
    b2 = (rng.standard_normal(10) * 0.01).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w1", "b1"], ["hidden"]),
        helper.make_node("Relu", ["hidden"], ["hidden_relu"]),
        helper.make_node("Gemm", ["hidden_relu", "w2", "b2"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mnist_mlp",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        outputs=[helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])],
        initializer=[
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(b2, "b2"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="model-builders"
    )
    model.ir_version = 8  # readable by every onnxruntime since 1.10
    onnx.checker.check_model(model)
    return model


def main() -> None:
    """Write the model into --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write mnist_mlp.onnx into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / FILENAME
    onnx.save(build_mnist_mlp(args.seed), str(path))
    print(path)


if __name__ == "__main__":
    main()
