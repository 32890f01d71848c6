"""Build, parse, validate and emit Triton's `config.pbtxt`, only through Triton's own protobuf.

Every config goes through `tritonclient.grpc.model_config_pb2.ModelConfig` and
`google.protobuf.text_format` / `json_format`, so what we write is exactly what Triton reads.
`validate_config` refuses offline what Triton would reject at load time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from tritonclient.grpc import model_config_pb2 as mc

from model_builders.errors import ConfigError
from model_builders.signature import DATATYPES, Signature, TensorSpec

ModelConfig = mc.ModelConfig

#: max_batch_size used when a graph can batch and the user did not choose one.
DEFAULT_MAX_BATCH_SIZE = 8

_INSTANCE_KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU", "model": "KIND_MODEL"}


# --- text and JSON forms -------------------------------------------------------------------------


def parse_config(text: str) -> mc.ModelConfig:
    """Parse `config.pbtxt` text as Triton does; ConfigError names the line and the field."""
    cfg = mc.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as exc:
        hint = f": use one of TYPE_{', TYPE_'.join(DATATYPES)}" if "DataType" in str(exc) else ""
        where = f"line {exc.GetLine()}: " if exc.GetLine() is not None else ""
        raise ConfigError(
            f"config.pbtxt {where}{_strip_position(str(exc))}{hint or ': fix that field'}"
        ) from None
    return cfg


def emit_config(cfg: mc.ModelConfig) -> str:
    """The `config.pbtxt` text of `cfg` (dims and batch sizes written as short lists)."""
    return str(text_format.MessageToString(cfg, use_short_repeated_primitives=True))


def config_from_json(data: dict[str, Any]) -> mc.ModelConfig:
    """Triton's JSON form of a config (as the repository API takes and returns it) -> ModelConfig."""
    cfg = mc.ModelConfig()
    try:
        json_format.ParseDict(data, cfg)
    except json_format.ParseError as exc:
        raise ConfigError(
            f"config JSON: {exc}: fix that field (names and enums as in config.pbtxt)"
        ) from None
    return cfg


def config_to_json(cfg: mc.ModelConfig) -> dict[str, Any]:
    """ModelConfig -> Triton's JSON form: proto field names, enum names, 64-bit integers as numbers."""
    data: dict[str, Any] = json_format.MessageToDict(cfg, preserving_proto_field_name=True)
    # json_format writes 64-bit integers as strings; Triton's own JSON uses numbers.
    return _int64_as_numbers(cfg.DESCRIPTOR, data)


def _strip_position(message: str) -> str:
    # text_format prefixes "LINE:COL : "; we report the line ourselves.
    head, sep, rest = message.partition(" : ")
    return rest if sep and head.replace(":", "").isdigit() else message


_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def _int64_as_numbers(descriptor: Descriptor, data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        field = descriptor.fields_by_name.get(key)
        out[key] = value if field is None else _convert_field(field, value)
    return out


def _convert_field(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        return {k: _convert_field(value_field, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_convert_scalar(field, v) for v in value]
    return _convert_scalar(field, value)


def _convert_scalar(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is not None and isinstance(value, dict):
        return _int64_as_numbers(field.message_type, value)
    if field.type in _INT64_TYPES and isinstance(value, str):
        return int(value)
    return value


# --- building ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchingOptions:
    """Batching as the user asked for it; None means "decide from the graph"."""

    max_batch_size: int | None = None
    dynamic_batching: bool = False
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int | None = None

    def wants_dynamic_batching(self) -> bool:
        """Preferred sizes or a queue delay only make sense with the dynamic batcher, so they imply it."""
        return (
            self.dynamic_batching or bool(self.preferred_batch_sizes) or self.max_queue_delay_us is not None
        )


#: No batching options given: decided from the graph (none for declared models).
DEFAULT_BATCHING = BatchingOptions()


@dataclass(frozen=True)
class InstanceGroupSpec:
    """`--instances KIND:COUNT[:GPU,GPU]`, e.g. `gpu:2` or `gpu:1:0,1` or `cpu:4`."""

    kind: str
    count: int
    gpus: tuple[int, ...] = ()


def parse_instance_group(text: str) -> InstanceGroupSpec:
    """`gpu:2` -> InstanceGroupSpec("KIND_GPU", 2); ConfigError shows the expected form."""
    parts = text.split(":")
    kind = _INSTANCE_KINDS.get(parts[0].strip().lower().removeprefix("kind_"))
    usage = "expected KIND:COUNT[:GPU,...] with KIND one of gpu, cpu, auto, model, e.g. --instances gpu:2"
    if kind is None or len(parts) not in (2, 3):
        raise ConfigError(f"--instances {text!r}: {usage}")
    try:
        count = int(parts[1])
        gpus = tuple(int(g) for g in parts[2].split(",")) if len(parts) == 3 else ()
    except ValueError:
        raise ConfigError(f"--instances {text!r}: {usage}") from None
    return InstanceGroupSpec(kind=kind, count=count, gpus=gpus)


def new_config(
    name: str, *, platform: str = "", backend: str = "", max_batch_size: int = 0
) -> mc.ModelConfig:
    """An empty config for `name` served by `platform` or `backend`."""
    cfg = mc.ModelConfig(name=name, max_batch_size=max_batch_size)
    if platform:
        cfg.platform = platform
    if backend:
        cfg.backend = backend
    return cfg


def add_tensors(cfg: mc.ModelConfig, inputs: Iterable[TensorSpec], outputs: Iterable[TensorSpec]) -> None:
    """Append inputs and outputs whose dims are already in config form (batch dimension left out)."""
    for spec in inputs:
        _fill_io(cfg.input.add(), spec)
    for spec in outputs:
        _fill_io(cfg.output.add(), spec)


def _fill_io(io: mc.ModelInput | mc.ModelOutput, spec: TensorSpec) -> None:
    io.name = spec.name
    io.data_type = spec.data_type
    if spec.dims:
        io.dims.extend(spec.dims)
    else:
        # Triton needs non-empty dims: a scalar (per batch item) is dims [1] reshaped to [].
        io.dims.append(1)
        io.reshape.SetInParent()


def config_from_signature(
    name: str,
    signature: Signature,
    *,
    platform: str = "",
    backend: str = "",
    batching: BatchingOptions = DEFAULT_BATCHING,
) -> mc.ModelConfig:
    """A config whose tensors are the graph's: a leading dynamic dimension becomes max_batch_size."""
    if batching.max_batch_size is not None:
        mbs = batching.max_batch_size
    else:
        mbs = DEFAULT_MAX_BATCH_SIZE if signature.batchable() else 0
    cfg = new_config(name, platform=platform, backend=backend, max_batch_size=mbs)
    strip = 1 if mbs > 0 else 0
    add_tensors(
        cfg,
        (TensorSpec(t.name, t.data_type, t.dims[strip:]) for t in signature.inputs),
        (TensorSpec(t.name, t.data_type, t.dims[strip:]) for t in signature.outputs),
    )
    apply_batching(cfg, batching)
    return cfg


def apply_batching(cfg: mc.ModelConfig, batching: BatchingOptions) -> None:
    """Set max_batch_size (when given) and the dynamic batcher's options (unchecked; validate after)."""
    if batching.max_batch_size is not None:
        cfg.max_batch_size = batching.max_batch_size
    if batching.wants_dynamic_batching():
        cfg.dynamic_batching.SetInParent()
        cfg.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_sizes)
        if batching.max_queue_delay_us is not None:
            cfg.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_us


def apply_instance_groups(cfg: mc.ModelConfig, groups: Sequence[InstanceGroupSpec]) -> None:
    """Append one instance_group per spec."""
    for spec in groups:
        group = cfg.instance_group.add(kind=mc.ModelInstanceGroup.Kind.Value(spec.kind), count=spec.count)
        group.gpus.extend(spec.gpus)


def set_parameter(cfg: mc.ModelConfig, key: str, value: str) -> None:
    """Set `parameters { key: KEY value { string_value: VALUE } }`."""
    cfg.parameters[key].string_value = value


# --- validation ----------------------------------------------------------------------------------


def validate_config(cfg: mc.ModelConfig, *, graph: Signature | None = None) -> None:
    """Raise ConfigError for what Triton would reject; with `graph`, also check tensors against it."""
    _check_name(cfg)
    _check_tensors("input", cfg.input, cfg.max_batch_size)
    _check_tensors("output", cfg.output, cfg.max_batch_size)
    _check_batching(cfg)
    _check_instance_groups(cfg)
    if cfg.platform == "ensemble":
        _check_ensemble(cfg)
    if graph is not None:
        _check_against_graph(cfg, graph)


def _check_name(cfg: mc.ModelConfig) -> None:
    if not cfg.name.strip():
        raise ConfigError("name is empty: set the model name (--name), e.g. mnist_mlp")
    if "/" in cfg.name or cfg.name in (".", "..") or cfg.name != cfg.name.strip():
        raise ConfigError(
            f"name {cfg.name!r} cannot be a repository folder: use letters, digits, '-', '_' or '.'"
        )


def _check_tensors(kind: str, tensors: Sequence[mc.ModelInput | mc.ModelOutput], mbs: int) -> None:
    for io in tensors:
        if not io.name:
            raise ConfigError(f"{kind} with empty name: give every {kind} a name")
        if io.data_type == mc.TYPE_INVALID:
            raise ConfigError(
                f"{kind} {io.name!r} has no valid data_type: use one of TYPE_{', TYPE_'.join(DATATYPES)}"
            )
        if not io.dims:
            raise ConfigError(f"{kind} {io.name!r} has no dims: give its shape (batch dimension excluded)")
        bad = [d for d in io.dims if d == 0 or d < -1]
        if bad:
            raise ConfigError(
                f"{kind} {io.name!r} dims {list(io.dims)}: each dimension must be >= 1, or -1 for any size"
            )
        fixed = -1 not in io.dims and -1 not in io.reshape.shape
        if io.HasField("reshape") and fixed and _count(io.dims) != _count(io.reshape.shape):
            raise ConfigError(
                f"{kind} {io.name!r} reshape {list(io.reshape.shape)} has a different element count "
                f"than dims {list(io.dims)}: make them hold the same number of elements"
            )
    dupes = sorted(n for n, c in Counter(io.name for io in tensors).items() if c > 1)
    if dupes:
        raise ConfigError(f"duplicate {kind} name {dupes[0]!r}: give each {kind} a distinct name")


def _count(dims: Iterable[int]) -> int:
    total = 1
    for d in dims:
        total *= d
    return total


def _check_batching(cfg: mc.ModelConfig) -> None:
    mbs = cfg.max_batch_size
    if mbs < 0:
        raise ConfigError(f"max_batch_size {mbs} is negative: use 0 (no batching) or a positive size")
    if not cfg.HasField("dynamic_batching"):
        return
    if mbs == 0:
        raise ConfigError(
            "dynamic_batching needs max_batch_size > 0: "
            "set --max-batch-size N, or drop the dynamic batching options"
        )
    for size in cfg.dynamic_batching.preferred_batch_size:
        if size < 1 or size > mbs:
            raise ConfigError(
                f"dynamic_batching.preferred_batch_size {size} is outside 1..max_batch_size {mbs}: "
                f"lower --preferred-batch-size or raise --max-batch-size"
            )


def _check_instance_groups(cfg: mc.ModelConfig) -> None:
    for group in cfg.instance_group:
        if group.count < 0:
            raise ConfigError(f"instance_group count {group.count} is negative: use a count >= 1")
        if any(g < 0 for g in group.gpus):
            raise ConfigError(f"instance_group gpus {list(group.gpus)}: GPU ids are >= 0")
        if group.gpus and group.kind != mc.ModelInstanceGroup.KIND_GPU:
            raise ConfigError(
                "instance_group lists gpus but its kind is not KIND_GPU: use --instances gpu:N:IDS"
            )


def _check_ensemble(cfg: mc.ModelConfig) -> None:
    steps = cfg.ensemble_scheduling.step
    if not steps:
        raise ConfigError("ensemble_scheduling has no step: add at least one --step")
    ensemble_inputs = {io.name for io in cfg.input}
    produced: dict[str, str] = {}
    consumed: set[str] = set()
    for step in steps:
        if not step.model_name:
            raise ConfigError("ensemble step with empty model_name: name the model each step runs")
        if step.model_version < -1:
            raise ConfigError(
                f"ensemble step {step.model_name!r} model_version {step.model_version}: "
                "use -1 (latest) or >= 1"
            )
        consumed.update(step.input_map.values())
        for tensor in step.output_map.values():
            if tensor in ensemble_inputs or tensor in produced:
                owner = (
                    "an ensemble input" if tensor in ensemble_inputs else f"written by {produced[tensor]!r}"
                )
                raise ConfigError(
                    f"ensemble tensor {tensor!r} is written by step {step.model_name!r} but is already "
                    f"{owner}: give each step output its own tensor name"
                )
            produced[tensor] = step.model_name
    for step in steps:
        for tensor in step.input_map.values():
            if tensor not in ensemble_inputs and tensor not in produced:
                raise ConfigError(
                    f"ensemble step {step.model_name!r} reads tensor {tensor!r} that no ensemble input or "
                    "step output provides: map it from an input or an earlier step's output"
                )
    for io in cfg.output:
        if io.name not in produced:
            raise ConfigError(
                f"ensemble output {io.name!r} is not written by any step: map a step output to it"
            )
    unused = sorted(ensemble_inputs - consumed)
    if unused:
        raise ConfigError(
            f"ensemble input {unused[0]!r} is not read by any step: map it into a step or remove it"
        )


def _check_against_graph(cfg: mc.ModelConfig, graph: Signature) -> None:
    mbs = cfg.max_batch_size
    if mbs > 0:
        fixed = graph.first_unbatchable()
        if fixed is not None:
            raise ConfigError(
                f"max_batch_size {mbs} but the graph's tensor {fixed.name!r} has no batch dimension "
                f"(shape {list(fixed.dims)}): use --max-batch-size 0, "
                "or export the model with a dynamic first axis"
            )
    for kind, configured, in_graph in (
        ("input", cfg.input, graph.inputs),
        ("output", cfg.output, graph.outputs),
    ):
        by_name = {t.name: t for t in in_graph}
        for io in configured:
            spec = by_name.get(io.name)
            if spec is None:
                raise ConfigError(
                    f"{kind} {io.name!r} is not in the model graph "
                    f"(its {kind}s: {', '.join(sorted(by_name))}): fix the name"
                )
            _check_io_against(kind, io, spec, mbs)
    missing = sorted({t.name for t in graph.inputs} - {io.name for io in cfg.input})
    if missing:
        raise ConfigError(f"graph input {missing[0]!r} is missing from the config: add it as an input")


def _check_io_against(kind: str, io: mc.ModelInput | mc.ModelOutput, spec: TensorSpec, mbs: int) -> None:
    if io.data_type != spec.data_type:
        raise ConfigError(
            f"{kind} {io.name!r} data_type {mc.DataType.Name(io.data_type)} contradicts the graph's "
            f"{spec.datatype_name}: use {spec.datatype_name}"
        )
    shape = list(io.reshape.shape) if io.HasField("reshape") else list(io.dims)
    expected = list(spec.dims[1:] if mbs > 0 else spec.dims)
    compatible = len(shape) == len(expected) and all(
        g == -1 or g == c for c, g in zip(shape, expected, strict=True)
    )
    if not compatible:
        scope = " (batch dimension excluded)" if mbs > 0 else ""
        raise ConfigError(
            f"{kind} {io.name!r} dims {shape} contradict the graph's {expected}{scope}: use dims {expected}"
        )
