"""The Argo CD health patch used as its comment says: a kustomize patch beside `namespace: argocd`,
built by the real kustomize inside the sandbox's kubectl (no cluster needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from sandbox.config import ensure_binaries
from tests.support.argocd import ARGOCD, PATCH, SCRIPTS, UPSTREAM_ARGOCD_CM

pytestmark = pytest.mark.integration


def test_patch_applies_beside_namespace_argocd(tmp_path: Path) -> None:
    """The patch's comment: list it under `patches:` in the kustomization that installs Argo CD."""
    (tmp_path / "install.yaml").write_text(yaml.safe_dump(UPSTREAM_ARGOCD_CM))
    (tmp_path / "argocd-cm-patch.yaml").write_text(PATCH.read_text())
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "argocd",
        "resources": ["install.yaml"],
        "patches": [{"path": "argocd-cm-patch.yaml"}],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    kubectl = ensure_binaries().dir / "kubectl"
    done = subprocess.run(
        [str(kubectl), "kustomize", str(tmp_path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    (built,) = list(yaml.safe_load_all(done.stdout))
    assert built["metadata"]["namespace"] == "argocd"
    assert built["data"]["resource.exclusions"] == UPSTREAM_ARGOCD_CM["data"]["resource.exclusions"]
    for kind, script in SCRIPTS.items():
        key = f"resource.customizations.health.tritonoperator.dev_{kind}"
        assert built["data"][key] == (ARGOCD / script).read_text()
