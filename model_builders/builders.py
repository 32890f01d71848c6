"""Turn a model file (or a declaration) into a validated ModelEntry ready for `write_entry`."""

from __future__ import annotations

import ast
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from model_builders.config import (
    DEFAULT_BATCHING,
    BatchingOptions,
    InstanceGroupSpec,
    add_tensors,
    apply_batching,
    apply_instance_groups,
    config_from_signature,
    new_config,
    set_parameter,
    validate_config,
)
from model_builders.errors import ConfigError, ModelFileError
from model_builders.onnx_graph import read_onnx
from model_builders.repository import ModelEntry
from model_builders.runtime import ONNX_PYTHON_MODEL
from model_builders.signature import TensorSpec


def build_onnx(
    model: Path,
    *,
    name: str,
    version: int = 1,
    batching: BatchingOptions = DEFAULT_BATCHING,
    instances: Sequence[InstanceGroupSpec] = (),
) -> ModelEntry:
    """An onnxruntime_onnx entry: tensors read from the graph, `model.onnx` plus external data files."""
    onnx_model = read_onnx(model)
    cfg = config_from_signature(name, onnx_model.signature, platform="onnxruntime_onnx", batching=batching)
    apply_instance_groups(cfg, instances)
    validate_config(cfg, graph=onnx_model.signature)
    return ModelEntry(cfg, version, {"model.onnx": model, **_external_files(model, onnx_model.external_data)})


def build_onnx_python(
    model: Path,
    *,
    name: str,
    version: int = 1,
    batching: BatchingOptions = DEFAULT_BATCHING,
    instances: Sequence[InstanceGroupSpec] = (),
    threads: int = 1,
) -> ModelEntry:
    """A python-backend entry that serves the ONNX file with onnxruntime (same config as `build_onnx`)."""
    if threads < 1:
        raise ConfigError(f"--threads {threads}: onnxruntime needs at least 1 intra-op thread")
    onnx_model = read_onnx(model)
    cfg = config_from_signature(name, onnx_model.signature, backend="python", batching=batching)
    apply_instance_groups(cfg, instances)
    set_parameter(cfg, "onnx_model_filename", "model.onnx")
    set_parameter(cfg, "intra_op_num_threads", str(threads))
    validate_config(cfg, graph=onnx_model.signature)
    files: dict[str, Path | bytes] = {
        "model.onnx": model,
        "model.py": ONNX_PYTHON_MODEL,
        **_external_files(model, onnx_model.external_data),
    }
    return ModelEntry(cfg, version, files)


def build_torchscript(
    model: Path,
    *,
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    version: int = 1,
    batching: BatchingOptions = DEFAULT_BATCHING,
    instances: Sequence[InstanceGroupSpec] = (),
) -> ModelEntry:
    """A pytorch_libtorch entry for a TorchScript archive with declared tensors (dims without batch)."""
    # torch.jit.save writes a zip archive; checking that much needs no torch.
    if not model.is_file() or not zipfile.is_zipfile(model):
        raise ModelFileError(
            f"{model} is not a TorchScript archive: "
            "save the model with torch.jit.save(torch.jit.script(m), path)"
        )
    cfg = _declared_config(name, "pytorch_libtorch", "", inputs, outputs, batching, instances)
    return ModelEntry(cfg, version, {"model.pt": model})


def build_python(
    module: Path,
    *,
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    version: int = 1,
    batching: BatchingOptions = DEFAULT_BATCHING,
    instances: Sequence[InstanceGroupSpec] = (),
) -> ModelEntry:
    """A python-backend entry from a module defining `TritonPythonModel` (copied as `model.py`)."""
    _check_python_model(module)
    cfg = _declared_config(name, "", "python", inputs, outputs, batching, instances)
    return ModelEntry(cfg, version, {"model.py": module})


@dataclass(frozen=True)
class EnsembleStep:
    """One ensemble step: model (and version, -1 = latest) with its input and output tensor maps."""

    model_name: str
    model_version: int
    input_map: tuple[tuple[str, str], ...]
    output_map: tuple[tuple[str, str], ...]


def parse_step(text: str) -> EnsembleStep:
    """`MODEL[:VERSION] IN=TENSOR,... -> OUT=TENSOR,...`; keys are the model's tensor names."""
    usage = (
        "expected 'MODEL[:VERSION] MODEL_IN=TENSOR,... -> MODEL_OUT=TENSOR,...', "
        "e.g. 'mnist input=pixels -> output=logits'"
    )
    left, arrow, right = text.partition("->")
    head = left.split(None, 1)
    if not arrow or not head:
        raise ConfigError(f"--step {text!r}: {usage}")
    model, _, version = head[0].partition(":")
    try:
        model_version = int(version) if version else -1
    except ValueError:
        raise ConfigError(f"--step {text!r}: version {version!r} is not an integer: {usage}") from None
    return EnsembleStep(
        model_name=model,
        model_version=model_version,
        input_map=_parse_mapping(head[1] if len(head) > 1 else "", text, usage),
        output_map=_parse_mapping(right, text, usage),
    )


def _parse_mapping(text: str, whole: str, usage: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for item in text.replace(" ", ",").split(","):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ConfigError(f"--step {whole!r}: {item.strip()!r} is not NAME=TENSOR: {usage}")
        pairs.append((key.strip(), value.strip()))
    if not pairs:
        raise ConfigError(f"--step {whole!r}: a step needs input and output mappings: {usage}")
    return tuple(pairs)


def build_ensemble(
    *,
    name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    steps: Sequence[EnsembleStep],
    version: int = 1,
    max_batch_size: int = 0,
) -> ModelEntry:
    """An ensemble entry (empty version folder, as Triton requires) chaining `steps`."""
    cfg = new_config(name, platform="ensemble", max_batch_size=max_batch_size)
    add_tensors(cfg, inputs, outputs)
    for step in steps:
        added = cfg.ensemble_scheduling.step.add(model_name=step.model_name, model_version=step.model_version)
        added.input_map.update(dict(step.input_map))
        added.output_map.update(dict(step.output_map))
    validate_config(cfg)
    return ModelEntry(cfg, version, {})


def _declared_config(
    name: str,
    platform: str,
    backend: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    batching: BatchingOptions,
    instances: Sequence[InstanceGroupSpec],
) -> mc.ModelConfig:
    if not inputs or not outputs:
        raise ConfigError("declare the model's tensors: at least one --input NAME:TYPE:DIMS and one --output")
    cfg = new_config(name, platform=platform, backend=backend)
    add_tensors(cfg, inputs, outputs)
    apply_batching(cfg, batching)
    apply_instance_groups(cfg, instances)
    validate_config(cfg)
    return cfg


def _check_python_model(module: Path) -> None:
    if not module.is_file():
        raise ModelFileError(f"{module}: no such file: give the path of a module defining TritonPythonModel")
    try:
        tree = ast.parse(module.read_text(), filename=str(module))
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise ModelFileError(
            f"{module} is not valid Python ({exc}): fix the module, then build again"
        ) from None
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    if "TritonPythonModel" not in classes:
        raise ModelFileError(
            f"{module} defines no top-level class TritonPythonModel: the python backend loads that class"
        )


def _external_files(model: Path, locations: Sequence[str]) -> dict[str, Path | bytes]:
    files: dict[str, Path | bytes] = {}
    for location in locations:
        source = model.parent / location
        if not source.is_file():
            raise ModelFileError(
                f"{model} keeps weights in {location!r}, which is missing: put that file beside the model"
            )
        files[location] = source
    return files
