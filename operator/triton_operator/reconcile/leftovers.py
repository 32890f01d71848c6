"""Unloading what a server's Tritons have loaded that no TritonModel wants there any more (issue 18,
point 7): part of the server's pass, once it has read each pod's index; observe/leftovers.py decides."""

from __future__ import annotations

import logging
import time
from functools import partial

from triton_operator.kube.rest import Kube
from triton_operator.observe.leftovers import Claim, claim_of, leftovers
from triton_operator.observe.server import triton_is_up
from triton_operator.reconcile.state import Key, OperatorState, pod_index_key
from triton_operator.render.labels import label_selector
from triton_operator.render.router import is_router
from triton_operator.triton import client as triton

log = logging.getLogger(__name__)
# The TritonModels are listed at least this often even when every loaded name is one the models in
# memory want (memory may still hold a model deleted without its finalizer's pass).
LIST_EVERY_S = 60.0


def unload_leftovers(kube: Kube, state: OperatorState, server: Key) -> list[str]:
    """Unload from each running pod of `server` what no TritonModel wants there; `name on pod` of each.

    The namespace's TritonModels are listed when a pod has a name loaded that none of the models this
    process knows on `server` wants, or LIST_EVERY_S after the last look: memory only says when to look,
    the listing decides.
    """
    namespace, name = server
    pods = state.server_pods.get(server, partial(kube.list, "Pod", namespace, label_selector(name)))
    known = frozenset().union(*(m.wants for m in list(state.models.values()) if m.server == server))
    claims: list[Claim] | None = None
    if time.monotonic() - state.leftovers_listed.get(server, float("-inf")) >= LIST_EVERY_S:
        known = frozenset()  # look whatever memory says
    unloaded = []
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or pod["metadata"].get("deletionTimestamp") or not triton_is_up(pod):
            continue
        try:
            loaded = {row.name for row in state.pod_index(pod) if row.state == "READY"}
        except triton.TritonError:
            continue  # the server's pass says why
        if loaded <= known:
            continue
        if claims is None:
            claims = [c for m in kube.list("TritonModel", namespace) if (c := claim_of(m)) is not None]
            state.leftovers_listed[server] = time.monotonic()
        endpoint = triton.TritonEndpoint(ip)
        for unload in leftovers(loaded, name, claims):
            if unload.once_not_routing and _still_routing(endpoint, unload.once_not_routing):
                continue
            where = f"{unload.name} on pod {pod['metadata']['name']}"
            state.indexes.invalidate(pod_index_key(pod))
            try:
                triton.unload_model(endpoint, unload.name)
            except triton.TritonError as exc:
                log.info("not unloading %s: %s", where, exc.message)  # the next pass tries again
                continue
            log.info("unloaded %s: no TritonModel wants it on %s/%s", where, namespace, name)
            unloaded.append(where)
    return unloaded


def _still_routing(endpoint: triton.TritonEndpoint, public: str) -> bool:
    """Whether `public` on the pod is still a router, as Triton's config API says (or cannot say yet:
    its model not loaded there, the pod not answering); the versions behind it stay meanwhile."""
    try:
        return is_router(triton.model_config(endpoint, public))
    except triton.TritonError:
        return True
