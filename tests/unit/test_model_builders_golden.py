"""Golden configs of every builder, and parse -> emit -> parse round trips through Triton's protobuf."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest

from model_builders import builders
from model_builders.config import (
    BatchingOptions,
    config_from_json,
    config_to_json,
    emit_config,
    parse_config,
    parse_instance_group,
    validate_config,
)
from model_builders.repository import ModelEntry
from model_builders.signature import parse_tensor_spec
from tests.support.examples import EXAMPLES, load_example

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "model_builders"
# UPDATE_GOLDEN=1 rewrites the files; review the diff before committing it.
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    files = {
        "mnist_mlp": load_example("mnist_mlp").build_mnist_mlp(),
        "tiny_classifier": load_example("tiny_classifier").build_tiny_classifier(),
    }
    for name, model in files.items():
        onnx.save(model, str(folder / f"{name}.onnx"))
    return {name: folder / f"{name}.onnx" for name in files}


def _mnist_onnx(files: dict[str, Path]) -> ModelEntry:
    batching = BatchingOptions(max_batch_size=64, preferred_batch_sizes=(8, 32), max_queue_delay_us=500)
    return builders.build_onnx(files["mnist_mlp"], name="mnist_mlp", batching=batching)


def _mnist_onnx_python(files: dict[str, Path]) -> ModelEntry:
    batching = BatchingOptions(dynamic_batching=True)
    return builders.build_onnx_python(files["mnist_mlp"], name="mnist_mlp", batching=batching, threads=2)


def _tiny_classifier_onnx(files: dict[str, Path]) -> ModelEntry:
    return builders.build_onnx(
        files["tiny_classifier"],
        name="tiny_classifier",
        version=3,
        batching=BatchingOptions(max_batch_size=16, dynamic_batching=True),
        instances=[parse_instance_group("gpu:2:0,1"), parse_instance_group("cpu:1")],
    )


def _resnet_torchscript(files: dict[str, Path], tmp: Path) -> ModelEntry:
    archive = tmp / "model.pt"
    import zipfile

    with zipfile.ZipFile(archive, "w") as zf:  # TorchScript archives are zip files; content not inspected
        zf.writestr("model/data.pkl", b"")
    return builders.build_torchscript(
        archive,
        name="resnet18",
        inputs=[parse_tensor_spec("INPUT__0:FP32:3,224,224")],
        outputs=[parse_tensor_spec("OUTPUT__0:FP32:1000", flag="--output-tensor")],
        batching=BatchingOptions(max_batch_size=32, preferred_batch_sizes=(16,)),
        instances=[parse_instance_group("gpu:1")],
    )


def _argmax_python(files: dict[str, Path]) -> ModelEntry:
    return builders.build_python(
        EXAMPLES / "argmax_postprocess.py",
        name="argmax",
        inputs=[parse_tensor_spec("logits:FP32:10")],
        outputs=[parse_tensor_spec("label:INT64:1", flag="--output-tensor")],
        batching=BatchingOptions(max_batch_size=8),
    )


def _mnist_pipeline_ensemble(files: dict[str, Path]) -> ModelEntry:
    return builders.build_ensemble(
        name="mnist_pipeline",
        max_batch_size=8,
        inputs=[parse_tensor_spec("IMAGE:FP32:1,28,28")],
        outputs=[parse_tensor_spec("LABEL:INT64:1", flag="--output-tensor")],
        steps=[
            builders.parse_step("mnist_mlp input=IMAGE -> output=logits"),
            builders.parse_step("argmax:1 logits=logits -> label=LABEL"),
        ],
    )


CASES: dict[str, Callable[..., ModelEntry]] = {
    "mnist_mlp_onnx": _mnist_onnx,
    "mnist_mlp_onnx_python": _mnist_onnx_python,
    "tiny_classifier_onnx": _tiny_classifier_onnx,
    "argmax_python": _argmax_python,
    "mnist_pipeline_ensemble": _mnist_pipeline_ensemble,
}


def _build(case: str, files: dict[str, Path], tmp: Path) -> ModelEntry:
    if case == "resnet18_torchscript":
        return _resnet_torchscript(files, tmp)
    return CASES[case](files)


@pytest.mark.parametrize("case", [*CASES, "resnet18_torchscript"])
def test_generated_config_matches_golden(case: str, onnx_files: dict[str, Path], tmp_path: Path) -> None:
    text = emit_config(_build(case, onnx_files, tmp_path).config)
    golden = GOLDEN / f"{case}.pbtxt"
    if UPDATE:
        golden.write_text(text)
    assert text == golden.read_text(), f"regenerate with UPDATE_GOLDEN=1 and review: {golden}"


@pytest.mark.parametrize("golden", sorted(GOLDEN.glob("*.pbtxt")), ids=lambda p: p.stem)
def test_golden_round_trips_and_validates(golden: Path) -> None:
    text = golden.read_text()
    parsed = parse_config(text)
    validate_config(parsed)
    assert parse_config(emit_config(parsed)) == parsed
    assert emit_config(parsed) == text
    # Triton's JSON form (what the repository API's config= takes) carries the same config.
    as_json = config_to_json(parsed)
    assert config_from_json(as_json) == parsed
    assert all(isinstance(d, int) for io in as_json.get("input", []) for d in io["dims"])


def test_golden_set_is_complete() -> None:
    """Every builder case has a golden file and no golden file is orphaned."""
    assert {p.stem for p in GOLDEN.glob("*.pbtxt")} == {*CASES, "resnet18_torchscript"}


def test_onnx_entry_files_and_batching_from_graph(onnx_files: dict[str, Path]) -> None:
    entry = builders.build_onnx(onnx_files["mnist_mlp"], name="mnist_mlp")
    assert set(entry.files) == {"model.onnx"}
    # The graph's leading axis is dynamic, so batching is on and dims leave it out.
    assert entry.config.max_batch_size > 0
    assert list(entry.config.input[0].dims) == [1, 28, 28]
    no_batch = builders.build_onnx(
        onnx_files["mnist_mlp"], name="mnist_mlp", batching=BatchingOptions(max_batch_size=0)
    )
    assert list(no_batch.config.input[0].dims) == [-1, 1, 28, 28]


def test_onnx_python_entry_ships_runner(onnx_files: dict[str, Path]) -> None:
    entry = builders.build_onnx_python(onnx_files["mnist_mlp"], name="mnist_mlp")
    assert set(entry.files) == {"model.onnx", "model.py"}
    assert entry.config.backend == "python"
    assert entry.config.parameters["onnx_model_filename"].string_value == "model.onnx"
