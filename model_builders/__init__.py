"""Build Triton model repository entries (config.pbtxt + version folders) and publish them."""

from model_builders.config import (
    BatchingOptions,
    InstanceGroupSpec,
    config_from_json,
    config_to_json,
    emit_config,
    parse_config,
    validate_config,
)
from model_builders.errors import BuildError, ConfigError, ModelFileError, PublishError
from model_builders.signature import Signature, TensorSpec

__all__ = [
    "BatchingOptions",
    "BuildError",
    "ConfigError",
    "InstanceGroupSpec",
    "ModelFileError",
    "PublishError",
    "Signature",
    "TensorSpec",
    "config_from_json",
    "config_to_json",
    "emit_config",
    "parse_config",
    "validate_config",
]
