"""What the CRD generator needs to know about a kind, and the registry kinds add themselves to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from triton_operator.api.common import API_VERSION, CATEGORY, GROUP, VERSION


@dataclass(frozen=True)
class PrinterColumn:
    """One additionalPrinterColumns entry of `kubectl get`."""

    name: str
    type: str
    json_path: str
    description: str
    priority: int = 0
    format: str | None = None


@dataclass(frozen=True)
class ScaleSubresource:
    """Paths of the scale subresource (kubectl scale, HPA, KEDA)."""

    spec_replicas_path: str = ".spec.replicas"
    status_replicas_path: str = ".status.replicas"
    label_selector_path: str = ".status.selector"


@dataclass(frozen=True)
class KindInfo:
    """A namespaced kind of our API group, backed by pydantic spec and status models."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    description: str
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    printer_columns: tuple[PrinterColumn, ...] = ()
    scale: ScaleSubresource | None = None
    # CEL rules on the whole object (they may read self.metadata.name).
    root_validations: tuple[dict[str, Any], ...] = ()
    categories: tuple[str, ...] = (CATEGORY,)

    @property
    def group(self) -> str:
        """API group of the kind."""
        return GROUP

    @property
    def version(self) -> str:
        """Served and stored version."""
        return VERSION

    @property
    def api_version(self) -> str:
        """apiVersion written in manifests."""
        return API_VERSION

    @property
    def crd_name(self) -> str:
        """metadata.name of the CustomResourceDefinition."""
        return f"{self.plural}.{GROUP}"


_REGISTRY: dict[str, KindInfo] = {}


def register_kind(info: KindInfo) -> KindInfo:
    """Add a kind to the CRD generator; each kind module calls this once at import."""
    existing = _REGISTRY.get(info.kind)
    if existing is not None and existing is not info:
        raise ValueError(f"kind {info.kind} is registered twice")
    _REGISTRY[info.kind] = info
    return info


def registered_kinds() -> list[KindInfo]:
    """Registered kinds, ordered by plural for stable output."""
    return sorted(_REGISTRY.values(), key=lambda k: k.plural)
