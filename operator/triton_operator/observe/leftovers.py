"""What a server's Tritons have loaded that no TritonModel wants there any more (pure; issue 18, point 7).

A model switched between direct and routed, moved to another server (spec.serverRef), or taken off a
server by its Gateway split leaves its old names loaded: `<name>~versions` behind a router it no longer
has, or its router and versions on the server it left. Decided from what Triton lists as loaded and the
TritonModels as they are now (never from memory), so a restarted operator finds the same leftovers.
Only names some TritonModel could load are ever unloaded (a model Triton serves for someone else stays).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from triton_operator.api.tritonmodel import ROUTED_SUFFIX, ModelConditionType, TritonModelSpec


@dataclass(frozen=True)
class Claim:
    """The Triton names one TritonModel loads, and where."""

    public: str
    # The server it loads them on itself; None through a Gateway (its copies, models of their own, do).
    server: str | None
    wanted: frozenset[str]
    # Ready at its current generation: it serves where it is now.
    serving: bool


@dataclass(frozen=True)
class Unload:
    """A name to unload from one pod; `once_not_routing`: only once that name on the pod is no longer
    the router (a model back to direct: its versions go once its own model replaced the router)."""

    name: str
    once_not_routing: str | None = None


def wanted_names(spec: TritonModelSpec, name: str) -> frozenset[str]:
    """What the spec loads on its server: its model, or a router and the versions behind it."""
    if spec.through_gateway:
        return frozenset()
    public = spec.resolved_model_name(name)
    return frozenset({public, spec.repository_name(name)})


def claim_of(body: Mapping[str, Any]) -> Claim | None:
    """A TritonModel's claim; None for one being deleted (its finalizer unloads it) or an invalid spec."""
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return None
    try:
        spec = TritonModelSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return None
    status = body.get("status") or {}
    ready = any(
        c.get("type") == ModelConditionType.READY and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    current = status.get("observedGeneration") == meta.get("generation")
    server = None if spec.through_gateway else spec.server_ref.name
    wanted = wanted_names(spec, meta["name"])
    return Claim(spec.resolved_model_name(meta["name"]), server, wanted, ready and current)


def leftovers(loaded: Iterable[str], server: str, claims: Sequence[Claim]) -> list[Unload]:
    """What to unload from one pod of `server` that has `loaded` (the names its index lists READY).

    A router is loaded from files Triton does not index: where `<name>~versions` is loaded, `<name>`
    (its router) is taken as loaded too, and goes first.
    """
    names = set(loaded)
    names |= {n.removesuffix(ROUTED_SUFFIX) for n in names if n.endswith(ROUTED_SUFFIX)}
    wanted = frozenset().union(*(c.wanted for c in claims if c.server == server))
    out = []
    for name in sorted(names - wanted, key=lambda n: (n.removesuffix(ROUTED_SUFFIX), n)):
        owners = [c for c in claims if name in (c.public, c.public + ROUTED_SUFFIX)]
        here = [c for c in owners if c.server == server]
        if here:  # its model stays on this server, no longer routed
            out.append(Unload(name, once_not_routing=here[0].public))
        elif owners and all(c.serving for c in owners):  # moved: it serves where it is now
            out.append(Unload(name))
    return out


def taken_over(models: Iterable[Mapping[str, Any]], name: str, server: str, public: str) -> bool:
    """Whether a TritonModel other than `name` wants `public` on `server` now (a model being deleted
    then leaves it loaded: it is that one's, and the server's pass unloads what it does not want)."""
    claims = (claim_of(m) for m in models if m["metadata"]["name"] != name)
    return any(c is not None and c.server == server and public in c.wanted for c in claims)
