"""config.pbtxt of a staged model: the declared one or the artifact's, always with name and versions set."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from tritonclient.grpc import model_config_pb2 as mc

from model_builders.config import (
    BatchingOptions,
    InstanceGroupSpec,
    add_tensors,
    apply_batching,
    apply_instance_groups,
    emit_config,
    new_config,
    parse_config,
    set_parameter,
    validate_config,
)
from model_builders.errors import ConfigError
from model_builders.signature import TensorSpec
from triton_operator.api.tritonmodel import DeclaredConfig, Tensor
from triton_operator.staging.errors import ExitCode, StagingError


def _tensor(tensor: Tensor) -> TensorSpec:
    """A declared tensor in model_builders' form."""
    return TensorSpec(
        tensor.name, int(mc.DataType.Value("TYPE_" + tensor.data_type.value)), tuple(tensor.dims)
    )


def declared_config(model_name: str, declared: DeclaredConfig) -> mc.ModelConfig:
    """spec.config as a ModelConfig (not yet validated)."""
    cfg = new_config(
        model_name,
        platform=declared.platform or "",
        backend=declared.backend or "",
        max_batch_size=declared.max_batch_size,
    )
    add_tensors(cfg, (_tensor(t) for t in declared.inputs), (_tensor(t) for t in declared.outputs))
    batching = declared.dynamic_batching
    if batching is not None:
        apply_batching(
            cfg,
            BatchingOptions(
                dynamic_batching=True,
                preferred_batch_sizes=tuple(batching.preferred_batch_sizes),
                max_queue_delay_us=batching.max_queue_delay_microseconds,
            ),
        )
    apply_instance_groups(
        cfg, [InstanceGroupSpec(kind=f"KIND_{g.kind.value}", count=g.count) for g in declared.instance_groups]
    )
    for key, value in sorted(declared.parameters.items()):
        set_parameter(cfg, key, value)
    return cfg


def base_config_text(model_name: str, declared: DeclaredConfig | None, artifact_config: str | None) -> str:
    """The config the spec asks for, before versions are set: declared wins over the artifact's."""
    if declared is not None:
        cfg = declared_config(model_name, declared)
        where = "spec.config"
    elif artifact_config is not None:
        try:
            cfg = parse_config(artifact_config)
        except ConfigError as exc:
            raise StagingError(
                ExitCode.CONFIG_REJECTED,
                f"the artifact's config.pbtxt is invalid ({_quoted(exc)}); fix it and publish again, "
                "or declare spec.config",
            ) from None
        where = "the artifact's config.pbtxt"
    else:
        raise StagingError(
            ExitCode.CONFIG_REJECTED,
            "the artifact has no config.pbtxt: declare spec.config "
            "or publish the model with its config.pbtxt",
        )
    cfg.name = model_name  # the folder name decides; an artifact built under another name still serves
    cfg.ClearField("version_policy")
    try:
        validate_config(cfg)
    except ConfigError as exc:
        raise StagingError(ExitCode.CONFIG_REJECTED, f"{where} is rejected: {_quoted(exc)}") from None
    return emit_config(cfg)


def _quoted(error: ConfigError, limit: int = 500) -> str:
    """The error's text, cut: protobuf quotes the offending line, which may be megabytes long (the
    message ends up in a condition and a 4 KiB termination log)."""
    text = str(error)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def final_config_text(base_text: str, versions: Iterable[int]) -> str:
    """The config.pbtxt written to disk: the base config (or one on disk) serving exactly `versions`."""
    cfg = parse_config(base_text)
    cfg.ClearField("version_policy")  # a config read back from disk lists the versions it served
    cfg.version_policy.specific.versions.extend(sorted(set(versions)))
    return emit_config(cfg)


def text_sha256(text: str) -> str:
    """Hex sha256 of a text."""
    return hashlib.sha256(text.encode()).hexdigest()
