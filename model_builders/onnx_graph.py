"""Read an ONNX file's inputs and outputs as a Signature (names, Triton datatypes, dims)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonclient.grpc import model_config_pb2 as mc

from model_builders.errors import ModelFileError
from model_builders.signature import Signature, TensorSpec

# ONNX TensorProto element type name -> Triton datatype. Anything else (complex, float8, int4, ...)
# has no Triton datatype, so such a model cannot be served as is.
_ONNX_TO_TRITON = {
    "FLOAT": mc.TYPE_FP32,
    "FLOAT16": mc.TYPE_FP16,
    "DOUBLE": mc.TYPE_FP64,
    "BFLOAT16": mc.TYPE_BF16,
    "BOOL": mc.TYPE_BOOL,
    "UINT8": mc.TYPE_UINT8,
    "UINT16": mc.TYPE_UINT16,
    "UINT32": mc.TYPE_UINT32,
    "UINT64": mc.TYPE_UINT64,
    "INT8": mc.TYPE_INT8,
    "INT16": mc.TYPE_INT16,
    "INT32": mc.TYPE_INT32,
    "INT64": mc.TYPE_INT64,
    "STRING": mc.TYPE_STRING,
}


@dataclass(frozen=True)
class OnnxModel:
    """What a builder needs from an ONNX file: its signature and the external data files it uses."""

    path: Path
    signature: Signature
    external_data: tuple[str, ...]


def read_onnx(path: Path) -> OnnxModel:
    """Load and check `path`; ModelFileError when it is not a valid ONNX model we can serve."""
    import onnx  # heavy import, only for the commands that read ONNX

    if not path.is_file():
        raise ModelFileError(f"{path}: no such file: give the path of an exported .onnx model")
    try:
        # External weights stay on disk: we only need the graph, and copy those files as they are.
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError and others
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(
            f"{path} is not a valid ONNX model ({reason}): re-export it (torch.onnx.export or onnx.save) "
            "and check it with onnx.checker.check_model"
        ) from None
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    # Old exporters list initializers among the graph inputs; they are weights, not request tensors.
    inputs = tuple(_tensor_spec(onnx, vi, "input", path) for vi in graph.input if vi.name not in initializers)
    outputs = tuple(_tensor_spec(onnx, vi, "output", path) for vi in graph.output)
    external = sorted(
        {
            entry.value
            for init in graph.initializer
            if init.data_location == onnx.TensorProto.EXTERNAL
            for entry in init.external_data
            if entry.key == "location"
        }
    )
    return OnnxModel(path=path, signature=Signature(inputs, outputs), external_data=tuple(external))


def _tensor_spec(onnx: Any, value_info: Any, kind: str, path: Path) -> TensorSpec:
    tensor_type = value_info.type.tensor_type
    if not value_info.type.HasField("tensor_type"):
        raise ModelFileError(
            f"{path}: graph {kind} {value_info.name!r} is not a tensor (sequence or map): "
            "Triton serves tensors only; wrap the model so it takes and returns tensors"
        )
    elem = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
    data_type = _ONNX_TO_TRITON.get(elem)
    if data_type is None:
        raise ModelFileError(
            f"{path}: graph {kind} {value_info.name!r} has ONNX type {elem}, which Triton cannot serve: "
            f"cast it to one of {', '.join(sorted(_ONNX_TO_TRITON))} before exporting"
        )
    if not tensor_type.HasField("shape"):
        raise ModelFileError(
            f"{path}: graph {kind} {value_info.name!r} has no shape: export the model with shapes "
            "(e.g. onnx.shape_inference.infer_shapes) so its dims are known"
        )
    dims = tuple(
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor_type.shape.dim
    )
    return TensorSpec(name=value_info.name, data_type=int(data_type), dims=dims)
