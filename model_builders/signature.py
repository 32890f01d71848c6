"""Tensor signatures: what a model's inputs and outputs are, independent of any config.

Dims use -1 for a dimension of any size, as Triton does. A `Signature` read from a graph keeps
the full shape (batch dimension included); a config's dims leave the batch dimension out.
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2 as mc

from model_builders.errors import ConfigError

#: Triton tensor datatypes a config may name, without the TYPE_ prefix (TYPE_INVALID excluded).
DATATYPES: tuple[str, ...] = tuple(
    v.name.removeprefix("TYPE_") for v in mc.DataType.DESCRIPTOR.values if v.name != "TYPE_INVALID"
)


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: Triton datatype (a `DataType` enum value) and dims (-1 = any size)."""

    name: str
    data_type: int
    dims: tuple[int, ...]

    @property
    def datatype_name(self) -> str:
        """The datatype as a config writes it, e.g. `TYPE_FP32`."""
        return str(mc.DataType.Name(self.data_type))


@dataclass(frozen=True)
class Signature:
    """A model's inputs and outputs with their full shapes (batch dimension included)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def batchable(self) -> bool:
        """True when every tensor has a leading dimension of any size, which Triton can batch on."""
        tensors = (*self.inputs, *self.outputs)
        return bool(tensors) and all(t.dims and t.dims[0] == -1 for t in tensors)

    def first_unbatchable(self) -> TensorSpec | None:
        """The first tensor without a dynamic leading dimension, to name it in errors."""
        for t in (*self.inputs, *self.outputs):
            if not t.dims or t.dims[0] != -1:
                return t
        return None


def parse_datatype(text: str, *, what: str = "datatype") -> int:
    """`FP32`, `fp32` or `TYPE_FP32` -> the `DataType` enum value; ConfigError names the valid ones."""
    name = text.strip().upper().removeprefix("TYPE_")
    if name not in DATATYPES:
        raise ConfigError(f"{what}: unknown datatype {text!r}: use one of {', '.join(DATATYPES)}")
    return int(mc.DataType.Value("TYPE_" + name))


def parse_dims(text: str, *, what: str = "dims") -> tuple[int, ...]:
    """`1,28,28` or `[1, 28, 28]` -> (1, 28, 28); -1 means any size; `[]` is a scalar."""
    body = text.strip().removeprefix("[").removesuffix("]").strip()
    if not body:
        return ()
    dims: list[int] = []
    for part in body.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            raise ConfigError(
                f"{what}: {part.strip()!r} is not a dimension: "
                "write dims as integers >= 1 or -1, e.g. 1,28,28"
            ) from None
        if value == 0 or value < -1:
            raise ConfigError(
                f"{what}: dimension {value} is invalid: use an integer >= 1, or -1 for any size"
            )
        dims.append(value)
    return tuple(dims)


def parse_tensor_spec(text: str, *, flag: str = "--input") -> TensorSpec:
    """`NAME:TYPE:DIMS` (e.g. `input:FP32:1,28,28`) -> TensorSpec; dims exclude the batch dimension."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[0].strip():
        raise ConfigError(f"{flag} {text!r}: expected NAME:TYPE:DIMS, e.g. {flag} input:FP32:1,28,28")
    name = parts[0].strip()
    return TensorSpec(
        name=name,
        data_type=parse_datatype(parts[1], what=f"{flag} {name}"),
        dims=parse_dims(parts[2], what=f"{flag} {name}"),
    )
