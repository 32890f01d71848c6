"""Checked-in install artifacts are current: chart CRDs, manifests/install.yaml, the Argo CD patch, the image.

Regenerate them with `UPDATE_MANIFESTS=1 pytest tests/unit/test_manifests.py` and review the diff.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.chart import CHART, MODEL_OF_KIND, NAMESPACE, RELEASE, ROOT, helm
from tests.support.render_checks import check_against_model

pytestmark = pytest.mark.unit

UPDATE = os.environ.get("UPDATE_MANIFESTS") == "1"
CRDS = ROOT / "crds"
CHART_CRDS = CHART / "crds"
MANIFESTS = ROOT / "manifests"
INSTALL = MANIFESTS / "install.yaml"
ARGOCD = MANIFESTS / "argocd"
ARGOCD_PATCH = ARGOCD / "argocd-cm-patch.yaml"
# Argo CD's key for a kind's health script is resource.customizations.health.<group>_<Kind>.
# One script serves every kind (it reads obj.kind); the patch names it once per kind, which every Argo CD
# version understands (a wildcard key needs the older single-key format).
HEALTH_SCRIPTS = {"TritonServer": "health.lua", "TritonModel": "health.lua"}
GROUP = "tritonoperator.dev"
REGENERATE = "run `UPDATE_MANIFESTS=1 pytest tests/unit/test_manifests.py` and review the diff"

INSTALL_HEADER = f"""\
# triton-operator: CRDs, RBAC and the operator Deployment; the Helm chart with its default values.
# Install: kubectl apply --server-side -f manifests/install.yaml   (or: kubectl apply -k manifests/)
# Generated from charts/triton-operator; do not edit: {REGENERATE}.
---
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    app.kubernetes.io/name: triton-operator
    app.kubernetes.io/part-of: triton-operator
    # The operator pod meets the restricted Pod Security Standard; enforce it in its namespace.
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/enforce-version: latest
"""

PATCH_HEADER = f"""\
# Argo CD health checks for the triton-operator kinds, merged into Argo CD's argocd-cm:
#   kubectl -n argocd patch configmap argocd-cm --patch-file manifests/argocd/argocd-cm-patch.yaml
# or list it under `patches:` in the kustomization that installs Argo CD (beside `namespace: argocd`).
# It names no namespace: Argo CD's install.yaml names none, and kustomize matches patches before it sets one.
# The scripts are the .lua files beside this one; do not edit here: {REGENERATE}.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
"""


def render_install() -> str:
    """manifests/install.yaml as it should read: a Namespace, then the chart's CRDs and templates."""
    done = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds")
    assert done.returncode == 0, done.stderr
    return INSTALL_HEADER + done.stdout


def render_argocd_patch() -> str:
    """manifests/argocd/argocd-cm-patch.yaml as it should read: each .lua script as a literal block."""
    parts = [PATCH_HEADER]
    for kind, script in HEALTH_SCRIPTS.items():
        body = (ARGOCD / script).read_text()
        indented = "".join(f"    {line}" if line.strip() else "\n" for line in body.splitlines(keepends=True))
        parts.append(f"  resource.customizations.health.{GROUP}_{kind}: |\n{indented}")
    return "".join(parts)


def _check_current(path: Path, expected: str) -> None:
    if UPDATE:
        path.write_text(expected)
    assert path.read_text() == expected, f"{path.relative_to(ROOT)} is stale; {REGENERATE}"


def _docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_chart_crds_are_copies_of_the_generated_crds() -> None:
    generated = {path.name: path.read_text() for path in sorted(CRDS.glob("*.yaml"))}
    assert generated, "crds/ is empty; run `python -m triton_operator.api.crdgen --out crds/`"
    if UPDATE:
        for path in CHART_CRDS.glob("*.yaml"):
            path.unlink()
        for name, text in generated.items():
            (CHART_CRDS / name).write_text(text)
    shipped = {path.name: path.read_text() for path in sorted(CHART_CRDS.glob("*.yaml"))}
    assert sorted(shipped) == sorted(generated), (
        f"charts/triton-operator/crds differs from crds/; {REGENERATE}"
    )
    for name, text in generated.items():
        assert shipped[name] == text, (
            f"charts/triton-operator/crds/{name} differs from crds/{name}; {REGENERATE}"
        )


def test_install_yaml_is_current() -> None:
    _check_current(INSTALL, render_install())


def test_install_yaml_objects_are_valid_and_ordered() -> None:
    objects = _docs(INSTALL.read_text())
    kinds = [obj["kind"] for obj in objects]
    # kubectl applies in file order: the Namespace and CRDs before anything that lives in or refers to them.
    assert kinds[0] == "Namespace"
    crd_count = len(list(CHART_CRDS.glob("*.yaml")))
    assert kinds[1 : 1 + crd_count] == ["CustomResourceDefinition"] * crd_count
    assert kinds.index("Deployment") > kinds.index("ServiceAccount")
    for obj in objects:
        check_against_model(obj, MODEL_OF_KIND[obj["kind"]], f"{obj['kind']}/{obj['metadata']['name']}")
        if obj["kind"] not in {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}:
            assert obj["metadata"]["namespace"] == NAMESPACE


def test_kustomization_lists_install_yaml() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["install.yaml"]
    assert kustomization["kind"] == "Kustomization"


def test_argocd_patch_embeds_the_lua_scripts() -> None:
    _check_current(ARGOCD_PATCH, render_argocd_patch())
    patch = yaml.safe_load(ARGOCD_PATCH.read_text())
    assert patch["kind"] == "ConfigMap" and patch["metadata"]["name"] == "argocd-cm"
    for kind, script in HEALTH_SCRIPTS.items():
        assert (
            patch["data"][f"resource.customizations.health.{GROUP}_{kind}"] == (ARGOCD / script).read_text()
        )


def test_every_shipped_kind_has_a_health_check() -> None:
    kinds = {yaml.safe_load(path.read_text())["spec"]["names"]["kind"] for path in CRDS.glob("*.yaml")}
    assert kinds <= set(HEALTH_SCRIPTS), (
        f"add {kinds - set(HEALTH_SCRIPTS)} to HEALTH_SCRIPTS (and check health.lua fits them)"
    )


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    joined = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_image_runs_as_the_user_and_command_the_chart_expects() -> None:
    instructions = _dockerfile_instructions()
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    assert final[0] == ("FROM", "python:3.11-slim")
    last = {op: args for op, args in final}
    assert last["USER"].split(":")[0] == "1000"  # numeric, equal to the chart's runAsUser
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    entrypoint = json.loads(last["ENTRYPOINT"])
    assert entrypoint == ["triton-operator"] and entrypoint[0] in project["scripts"]
    assert json.loads(last["CMD"]) == ["run"]
    labels = last["LABEL"]
    for key in ("title", "version", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    # The final stage installs wheels built in the first; no sources, no compilers.
    assert not any(op == "COPY" for op, _ in final)
    assert "--no-index" in last["RUN"]


def test_dockerignore_sends_what_pip_needs_and_nothing_else() -> None:
    rules = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [rule for rule in rules if rule and not rule.startswith("#")]
    assert rules[0] == "*"
    included = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert "pyproject.toml" in included
    for pattern in find["include"]:
        package = pattern.rstrip("*")
        homes = [Path(where) / package for where in find["where"] if (ROOT / where / package).is_dir()]
        assert homes, f"package {package} not found under {find['where']}"
        assert homes[0].parts[0] in included, f"{homes[0]} is not sent to the Docker build"
    assert not included & {"tests", ".git", "charts", "bench"}
