"""The Argo CD health scripts and argocd-cm patch under manifests/argocd, and Argo CD's own argocd-cm as
its install.yaml ships it (the unit health tests and the kustomize integration test read them)."""

from __future__ import annotations

from pathlib import Path

ARGOCD = Path(__file__).resolve().parents[2] / "manifests" / "argocd"
SCRIPTS = {"TritonServer": "health.lua", "TritonModel": "health.lua"}
PATCH = ARGOCD / "argocd-cm-patch.yaml"
# Argo CD's own argocd-cm, as its install.yaml ships it: no namespace (kubectl -n or kustomize sets one).
UPSTREAM_ARGOCD_CM = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {
        "name": "argocd-cm",
        "labels": {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"},
    },
    "data": {"resource.exclusions": "- apiGroups: [coordination.k8s.io]\n  kinds: [Lease]\n"},
}
