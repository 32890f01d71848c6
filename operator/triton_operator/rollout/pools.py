"""A model split across TritonServers (pools) through a Gateway: which pools hold a copy and what weight
each gets (pure).

The one rollout engine decides, with servers as its variants: the stable is the pool that served
before, the canary the pool spec.serverRef names now. Only the weights reach a different place (the
model's routes instead of an in-server router), and one rule is added here: a pool with no ready replica
gets weight 0 at once, since a gateway sends its share to a Service with no endpoints and every such
request fails (503).
"""

from __future__ import annotations

from collections.abc import Mapping

from triton_operator.rollout.state import RolloutState


def serving_weights(desired: Mapping[str, int], serving: Mapping[str, bool]) -> dict[str, int]:
    """The weights to route by: a pool that serves nothing gets 0 at once.

    When no pool with a share serves, the desired weights stay (every request fails either way, and the
    first pool back gets its share without waiting for another decision).
    """
    kept = {pool: (weight if serving.get(pool, False) else 0) for pool, weight in desired.items()}
    if sum(kept.values()) == 0:
        return dict(desired)
    return kept


def placed_pools(
    experiment: Mapping[str, int] | None, state: RolloutState | None, requested: str
) -> list[str]:
    """The pools that hold a copy: an experiment's servers; else the requested pool, and while a canary
    is not promoted-and-retired, the stable it is compared with."""
    if experiment is not None:
        return list(experiment)
    pools = [requested]
    if state is not None:
        for pool in (state.stable_version, state.canary_version):
            if pool not in pools:
                pools.append(pool)
    return pools
