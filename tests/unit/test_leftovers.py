"""What a server's pods have loaded that no TritonModel wants there (observe/leftovers.py), as a table."""

from __future__ import annotations

from typing import Any

import pytest
from triton_operator.observe.leftovers import Claim, Unload, claim_of, leftovers, taken_over

pytestmark = pytest.mark.unit
V = "m~versions"


def direct(server: str, *, serving: bool = True, public: str = "m") -> Claim:
    return Claim(public, server, frozenset({public}), serving)


def routed(server: str, *, serving: bool = True) -> Claim:
    return Claim("m", server, frozenset({"m", V}), serving)


GATEWAY_PARENT = Claim("m", None, frozenset(), True)

CASES: list[tuple[str, set[str], list[Claim], list[Unload]]] = [
    ("direct, as wanted", {"m"}, [direct("a")], []),
    ("routed, as wanted (its router is not indexed)", {V}, [routed("a")], []),
    ("routed -> direct: the versions, once m is no router", {"m", V}, [direct("a")], [Unload(V, "m")]),
    ("moved away and served there", {"m"}, [direct("b")], [Unload("m")]),
    ("moved away, not served there yet", {"m"}, [direct("b", serving=False)], []),
    ("routed, moved away: router first", {V}, [routed("b")], [Unload("m"), Unload(V)]),
    ("another model wants the name here", {"m"}, [direct("b"), direct("a")], []),
    ("a copy here serves it, the parent through a Gateway", {V}, [GATEWAY_PARENT, routed("a")], []),
    ("taken out of a Gateway split", {V}, [GATEWAY_PARENT, routed("b")], [Unload("m"), Unload(V)]),
    ("one owner elsewhere not serving yet", {V}, [GATEWAY_PARENT, routed("b", serving=False)], []),
    ("no TritonModel's name", {"by-hand"}, [direct("a")], []),
    ("nothing loaded", set(), [direct("b")], []),
]


@pytest.mark.parametrize(("loaded", "claims", "unloads"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_leftovers_on_server_a(loaded: set[str], claims: list[Claim], unloads: list[Unload]) -> None:
    assert leftovers(loaded, "a", claims) == unloads


def model(spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    source = {"s3": {"bucket": "models", "prefix": "p"}}
    return {
        "metadata": {"name": "m", "generation": 2, **meta},
        "spec": {"serverRef": {"name": "a"}, "version": 1, "source": source, **spec},
        "status": {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_a_claim_says_what_the_spec_loads_and_whether_it_serves_now() -> None:
    assert claim_of(model({})) == Claim("m", "a", frozenset({"m"}), True)
    canary = claim_of(model({"rollout": {"strategy": "Canary"}, "modelName": "pub"}))
    assert canary == Claim("pub", "a", frozenset({"pub", "pub~versions"}), True)
    gateway = claim_of(model({"gateway": {"parentRefs": [{"name": "g"}]}}))
    assert gateway == Claim("m", None, frozenset(), True)
    assert claim_of(model({}, generation=3)) == Claim("m", "a", frozenset({"m"}), False)  # not observed yet
    assert claim_of(model({}, deletionTimestamp="2026-01-01T00:00:00Z")) is None  # its finalizer unloads it
    assert claim_of(model({"version": "x"})) is None


def test_a_name_is_taken_over_by_another_model_on_the_same_server_only() -> None:
    copy = model({"rollout": {"strategy": "Canary"}, "modelName": "m"}, name="m-on-a")
    parent_direct = model({})
    assert taken_over([copy, parent_direct], "m-on-a", "a", "m")
    assert not taken_over([copy, parent_direct], "m-on-a", "b", "m")  # another server
    assert not taken_over([copy], "m-on-a", "a", "m")  # only itself
    gone = model({}, deletionTimestamp="2026-01-01T00:00:00Z")
    assert not taken_over([copy, gone], "m-on-a", "a", "m")
