"""A model split across TritonServers (pools) through a Gateway: which pools hold a copy and what weight
each gets (pure).

The same canary machine as inside one server decides, with server names where it has versions: the
stable is the pool that served before, the canary the pool spec.serverRef names now. Only the weights
reach a different place (the model's routes instead of an in-server router), and one rule is added: a
pool with no ready replica gets weight 0 at once, since a gateway sends its share to a Service with no
endpoints and every such request fails (503).
"""

from __future__ import annotations

from collections.abc import Mapping

from triton_operator.rollout.machine import Phase, RolloutState
from triton_operator.rollout.plan import RolloutPlan


def canary_weights(plan: RolloutPlan, state: RolloutState) -> dict[str, int]:
    """The desired weights of a canary rollout's state: key -> percent (the keys are the state's)."""
    if state.stable_version == state.canary_version:
        return {state.canary_version: 100}
    if state.phase is Phase.PROMOTED:
        return {state.canary_version: 100, state.stable_version: 0}
    if state.phase is Phase.PROGRESSING:
        canary = plan.steps[min(state.step_index, len(plan.steps) - 1)].weight
        return {state.stable_version: 100 - canary, state.canary_version: canary}
    return {state.stable_version: 100, state.canary_version: 0}


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


def rename_versions_to_servers(message: str, servers: tuple[str, ...]) -> str:
    """The machine speaks of versions; across servers its keys are servers, and messages say so."""
    for server in servers:
        message = message.replace(f"version {server}", f"server {server}")
    return message
