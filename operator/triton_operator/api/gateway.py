"""Exposure through a Gateway API Gateway: the parentRefs and hostnames of the routes the operator owns."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from triton_operator.api.common import ApiModel, ObjectName

MAX_PARENT_REFS = 8
MAX_HOSTNAMES = 16
# Gateway API's Hostname: a DNS name, optionally with one leading wildcard label.
HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECTION_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

Hostname = Annotated[str, Field(min_length=1, max_length=253, pattern=HOSTNAME_PATTERN)]


class GatewayParentRef(ApiModel):
    """A Gateway (or one of its listeners) the routes attach to, as in Gateway API's ParentReference."""

    name: ObjectName = Field(description="Name of the Gateway.")
    namespace: ObjectName | None = Field(
        default=None,
        description="Namespace of the Gateway; unset: this object's namespace. The Gateway's listener must "
        "allow routes from this namespace (allowedRoutes).",
    )
    section_name: Annotated[str, Field(min_length=1, max_length=253, pattern=SECTION_NAME_PATTERN)] | None = (
        Field(default=None, description="Name of the Gateway's listener; unset: every listener that fits.")
    )
    port: int | None = Field(default=None, ge=1, le=65535, description="Port of the Gateway's listener.")


class GatewayExposure(ApiModel):
    """Clients reach this object through a Gateway: the operator owns an HTTPRoute and a GRPCRoute."""

    parent_refs: list[GatewayParentRef] = Field(
        min_length=1, max_length=MAX_PARENT_REFS, description="The Gateways (listeners) the routes attach to."
    )
    hostnames: list[Hostname] = Field(
        default=[],
        max_length=MAX_HOSTNAMES,
        description="Host names the routes answer for (HTTP Host, gRPC :authority); empty: every host name "
        "the listener accepts.",
    )
