"""validate_config / parse_config refuse offline what Triton would reject, naming the field and the fix."""

from __future__ import annotations

import pytest

from model_builders.config import (
    config_from_json,
    config_to_json,
    parse_config,
    parse_instance_group,
    validate_config,
)
from model_builders.errors import ConfigError
from model_builders.signature import Signature, TensorSpec, parse_datatype, parse_dims, parse_tensor_spec

pytestmark = pytest.mark.unit

FP32 = parse_datatype("FP32")
MNIST_GRAPH = Signature(
    inputs=(TensorSpec("input", FP32, (-1, 1, 28, 28)),),
    outputs=(TensorSpec("output", FP32, (-1, 10)),),
)
FIXED_GRAPH = Signature(
    inputs=(TensorSpec("input", FP32, (1, 1, 28, 28)),),
    outputs=(TensorSpec("output", FP32, (1, 10)),),
)

MNIST = """
name: "mnist_mlp"
max_batch_size: 8
input { name: "input" data_type: TYPE_FP32 dims: [1, 28, 28] }
output { name: "output" data_type: TYPE_FP32 dims: [10] }
"""


def _error(text: str, graph: Signature | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(parse_config(text), graph=graph)
    message = str(info.value)
    assert "\n" not in message and ": " in message  # one line: the problem, then the fix
    return message


def test_valid_config_passes_with_and_without_graph() -> None:
    validate_config(parse_config(MNIST))
    validate_config(parse_config(MNIST), graph=MNIST_GRAPH)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MNIST.replace('name: "mnist_mlp"', 'name: ""'), ["name is empty", "--name"]),
        (MNIST.replace('name: "mnist_mlp"', 'name: "a/b"'), ["name 'a/b'", "use letters"]),
        (MNIST.replace('name: "output"', 'name: ""'), ["output with empty name", "give every output a name"]),
        (
            MNIST + 'input { name: "input" data_type: TYPE_FP32 dims: [3] }',
            ["duplicate input name 'input'", "distinct name"],
        ),
        (MNIST.replace("dims: [10]", "dims: [0]"), ["output 'output' dims [0]", ">= 1, or -1"]),
        (MNIST.replace("dims: [10]", ""), ["output 'output' has no dims", "give its shape"]),
        (
            MNIST.replace("max_batch_size: 8", "max_batch_size: 0") + "dynamic_batching { }",
            ["dynamic_batching needs max_batch_size > 0", "--max-batch-size"],
        ),
        (
            MNIST + "dynamic_batching { preferred_batch_size: [4, 16] }",
            ["preferred_batch_size 16", "max_batch_size 8", "--preferred-batch-size"],
        ),
        (MNIST.replace("max_batch_size: 8", "max_batch_size: -2"), ["max_batch_size -2 is negative"]),
        (MNIST + "instance_group { kind: KIND_CPU gpus: [0] }", ["lists gpus", "KIND_GPU"]),
        (MNIST + "instance_group { kind: KIND_GPU count: -1 }", ["count -1", ">= 1"]),
    ],
)
def test_bad_config_is_refused(text: str, expected: list[str]) -> None:
    message = _error(text)
    for part in expected:
        assert part in message


def test_unknown_datatype_is_refused_at_parse_with_the_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MNIST.replace("TYPE_FP32", "TYPE_FP33", 1))
    message = str(info.value)
    assert "line 4" in message and "TYPE_FP33" in message and "TYPE_FP32" in message


def test_unknown_field_is_refused_at_parse() -> None:
    with pytest.raises(ConfigError, match=r"line 2: .*max_batch"):
        parse_config('name: "m"\nmax_batch: 8\n')


@pytest.mark.parametrize(
    ("text", "graph", "expected"),
    [
        (MNIST.replace("dims: [1, 28, 28]", "dims: [1, 28, 29]"), MNIST_GRAPH, "use dims [1, 28, 28]"),
        (
            MNIST.replace("dims: [1, 28, 28]", "dims: [784]"),
            MNIST_GRAPH,
            "contradict the graph's [1, 28, 28]",
        ),
        (MNIST.replace("TYPE_FP32", "TYPE_FP16", 1), MNIST_GRAPH, "contradicts the graph's TYPE_FP32"),
        (MNIST.replace('"input"', '"pixels"'), MNIST_GRAPH, "input 'pixels' is not in the model graph"),
        (MNIST, FIXED_GRAPH, "has no batch dimension"),
    ],
)
def test_config_contradicting_the_graph_is_refused(text: str, graph: Signature, expected: str) -> None:
    assert expected in _error(text, graph)


def test_missing_graph_input_is_refused() -> None:
    graph = Signature(
        inputs=(*MNIST_GRAPH.inputs, TensorSpec("mask", FP32, (-1, 10))), outputs=MNIST_GRAPH.outputs
    )
    assert "graph input 'mask' is missing from the config" in _error(MNIST, graph)


def test_no_batching_config_keeps_the_graph_batch_axis() -> None:
    text = MNIST.replace("max_batch_size: 8", "max_batch_size: 0").replace("[1, 28, 28]", "[-1, 1, 28, 28]")
    validate_config(parse_config(text.replace("dims: [10]", "dims: [-1, 10]")), graph=MNIST_GRAPH)


ENSEMBLE = """
name: "pipe"
platform: "ensemble"
input { name: "IMAGE" data_type: TYPE_FP32 dims: [4] }
output { name: "LABEL" data_type: TYPE_INT64 dims: [1] }
ensemble_scheduling {
  step { model_name: "a" input_map { key: "x" value: "IMAGE" } output_map { key: "y" value: "mid" } }
  step { model_name: "b" input_map { key: "x" value: "mid" } output_map { key: "y" value: "LABEL" } }
}
"""


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('value: "mid" } }\n  step', 'value: "other" } }\n  step', "reads tensor 'mid'"),
        ('value: "LABEL"', 'value: "LABEL2"', "ensemble output 'LABEL' is not written"),
        ('value: "LABEL"', 'value: "mid"', "already written by 'a'"),
        ('value: "IMAGE" }', 'value: "mid2" }', "reads tensor 'mid2'"),
    ],
)
def test_bad_ensemble_is_refused(old: str, new: str, expected: str) -> None:
    validate_config(parse_config(ENSEMBLE))
    assert expected in _error(ENSEMBLE.replace(old, new, 1))


def test_json_form_uses_numbers_and_round_trips() -> None:
    cfg = parse_config(MNIST + "dynamic_batching { max_queue_delay_microseconds: 100 }")
    data = config_to_json(cfg)
    assert data["input"][0]["dims"] == [1, 28, 28]
    assert data["dynamic_batching"]["max_queue_delay_microseconds"] == 100
    assert data["input"][0]["data_type"] == "TYPE_FP32"
    assert config_from_json(data) == cfg
    with pytest.raises(ConfigError, match="TYPE_FP33"):
        config_from_json({**data, "input": [{**data["input"][0], "data_type": "TYPE_FP33"}]})


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: parse_tensor_spec("input:FP32"), "expected NAME:TYPE:DIMS"),
        (lambda: parse_tensor_spec("input:FLOAT:1"), "unknown datatype 'FLOAT'"),
        (lambda: parse_dims("1,x"), "'x' is not a dimension"),
        (lambda: parse_dims("1,0"), "dimension 0 is invalid"),
        (lambda: parse_instance_group("tpu:1"), "KIND one of gpu, cpu"),
    ],
)
def test_bad_flag_values_are_refused(call: object, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        call()


def test_flag_values_parse() -> None:
    spec = parse_tensor_spec("input:fp32:[1, 28, 28]")
    assert (spec.name, spec.datatype_name, spec.dims) == ("input", "TYPE_FP32", (1, 28, 28))
    group = parse_instance_group("gpu:2:0,1")
    assert (group.kind, group.count, group.gpus) == ("KIND_GPU", 2, (0, 1))
