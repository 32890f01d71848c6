"""Layout PerReplica: asking a Triton pod's sync sidecar what its copy holds, and the repository server
what it should hold (rescanned for the asking: a staging Job that just completed is in the answer).
Nothing of it is remembered: a restarted operator asks again. The judgment is observe/copies.py's."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from triton_operator.kube.rest import Kube
from triton_operator.observe.copies import CopyFacts, copy_facts
from triton_operator.reconcile.cache import SharedReads
from triton_operator.render.repository import SERVER_PORT, SYNC_PORT, repository_server_name

log = logging.getLogger(__name__)

ASK_TIMEOUT_S = 3.0


def _get_json(url: str) -> dict[str, Any] | None:
    """One GET answered with JSON, or None (unreachable, refused, not JSON): asked again next pass."""
    try:
        with urllib.request.urlopen(url, timeout=ASK_TIMEOUT_S) as response:
            answer = json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError) as exc:
        log.debug("GET %s: %s", url, exc)
        return None
    return answer if isinstance(answer, dict) else None


class Copies:
    """Asks sidecars and repository servers, one answer per pod or server and `ttl_s` (the operator's
    shared-read period: every model of a server reads the same answers within a pass)."""

    def __init__(self, kube: Kube, ttl_s: float):
        self.kube = kube
        self.held_by_pod: SharedReads[dict[str, Any] | None] = SharedReads(ttl_s)
        self.contents: SharedReads[dict[str, Any] | None] = SharedReads(ttl_s)

    def held(self, pod: Mapping[str, Any], *, fresh: bool = False) -> dict[str, Any] | None:
        """What the pod's sidecar says its copy holds."""
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            return None
        key = (pod["metadata"]["uid"], ip)
        return self.held_by_pod.get(key, lambda: _get_json(f"http://{ip}:{SYNC_PORT}/v1/held"), fresh=fresh)

    def content(self, namespace: str, server: str, *, fresh: bool = False) -> dict[str, Any] | None:
        """What the server's repository holds, scanned for this question."""

        def ask() -> dict[str, Any] | None:
            service = self.kube.get("Service", namespace, repository_server_name(server))
            ip = ((service or {}).get("spec") or {}).get("clusterIP")
            if not ip or ip == "None":
                return None
            return _get_json(f"http://{ip}:{SERVER_PORT}/v1/content?fresh=1")

        return self.contents.get((namespace, server), ask, fresh=fresh)

    def facts(
        self,
        pod: Mapping[str, Any],
        namespace: str,
        server: str,
        model: str,
        version: int,
        digest: str | None,
        *,
        fresh: bool = False,
    ) -> CopyFacts:
        """The pod's copy of `model` judged against the repository server's (`fresh`: asked again)."""
        held = self.held(pod, fresh=fresh)
        return copy_facts(held, self.content(namespace, server, fresh=fresh), model, version, digest)
