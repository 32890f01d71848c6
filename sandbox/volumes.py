"""Back a pod's volumes with local folders, as a kubelet's volume manager would.

persistentVolumeClaim -> the folder of the bound PV (made by the provisioner), once attach.py lets
the pod's node have it; emptyDir -> a folder of
the pod; configMap/secret/downwardAPI/projected (incl. service-account tokens) -> files written at the
start; a configMap or secret volume is then kept up to date (refresh_volumes), as a kubelet does: the
Prometheus Operator's StatefulSet reads the configuration it renders from such volumes.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sandbox.launch import Mount


class VolumeNotReady(Exception):
    """A volume cannot be set up yet (claim unbound, object missing); the message says which."""

    reason = "FailedMount"  # the reason of the Warning Event a kubelet sends

    def event_message(self) -> str:
        return f"MountVolume.SetUp failed: {self}"


@dataclass(frozen=True)
class BoundClaim:
    """A pod's PersistentVolumeClaim and the PersistentVolume bound to it."""

    claim: str
    volume: str  # the PV's name (pvc-<claim uid> when provisioned): Kubernetes' Events name it
    access_modes: tuple[str, ...]  # the PV's, which decide how it attaches (attach.py)
    folder: Path


def _write_files(folder: Path, files: dict[str, bytes], mode: int = 0o644) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(mode)


def _select(data: dict[str, bytes], items: list[dict[str, Any]] | None) -> dict[str, bytes]:
    if not items:
        return data
    return {it["path"]: data[it["key"]] for it in items if it["key"] in data}


def _configmap_data(core: client.CoreV1Api, ns: str, name: str, optional: bool) -> dict[str, bytes]:
    try:
        cm = core.read_namespaced_config_map(name, ns)
    except ApiException as exc:
        if exc.status == 404 and optional:
            return {}
        raise VolumeNotReady(f'configmap "{name}" not found') from exc
    data = {k: v.encode() for k, v in (cm.data or {}).items()}
    data |= {k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()}
    return data


def _secret_data(core: client.CoreV1Api, ns: str, name: str, optional: bool) -> dict[str, bytes]:
    try:
        secret = core.read_namespaced_secret(name, ns)
    except ApiException as exc:
        if exc.status == 404 and optional:
            return {}
        raise VolumeNotReady(f'secret "{name}" not found') from exc
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def _downward(pod: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, bytes]:
    fields = {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": pod["metadata"]["namespace"],
        "metadata.uid": pod["metadata"]["uid"],
        "metadata.labels": "\n".join(
            f'{k}="{v}"' for k, v in sorted((pod["metadata"].get("labels") or {}).items())
        ),
        "metadata.annotations": "\n".join(
            f'{k}="{v}"' for k, v in sorted((pod["metadata"].get("annotations") or {}).items())
        ),
    }
    out = {}
    for it in items:
        ref = (it.get("fieldRef") or {}).get("fieldPath")
        if ref in fields:
            out[it["path"]] = fields[ref].encode()
    return out


def _bound_claim(core: client.CoreV1Api, ns: str, claim: str) -> BoundClaim:
    try:
        pvc = core.read_namespaced_persistent_volume_claim(claim, ns)
    except ApiException as exc:
        raise VolumeNotReady(f'persistentvolumeclaim "{claim}" not found') from exc
    if pvc.status.phase != "Bound" or not pvc.spec.volume_name:
        raise VolumeNotReady(f'persistentvolumeclaim "{claim}" is not bound yet')
    pv = core.read_persistent_volume(pvc.spec.volume_name)
    source = pv.spec.host_path or pv.spec.local
    if source is None:
        raise VolumeNotReady(f'persistentvolume "{pv.metadata.name}" has no local path the sandbox can use')
    return BoundClaim(claim, pv.metadata.name, tuple(pv.spec.access_modes or ()), Path(source.path))


def bound_claims(core: client.CoreV1Api, pod: dict[str, Any]) -> dict[str, BoundClaim]:
    """The pod's persistentVolumeClaim volumes (volume name -> claim); VolumeNotReady while one is missing
    or unbound."""
    ns = pod["metadata"]["namespace"]
    return {
        vol["name"]: _bound_claim(core, ns, vol["persistentVolumeClaim"]["claimName"])
        for vol in pod["spec"].get("volumes") or []
        if "persistentVolumeClaim" in vol
    }


def prepare_volumes(
    core: client.CoreV1Api, pod: dict[str, Any], pod_dir: Path, claims: Mapping[str, BoundClaim]
) -> dict[str, Path]:
    """Materialise every volume of `pod` (its claims as bound_claims found them, attached to its node);
    returns volume name -> local folder."""
    ns = pod["metadata"]["namespace"]
    folders: dict[str, Path] = {}
    for vol in pod["spec"].get("volumes") or []:
        name = vol["name"]
        here = pod_dir / "volumes" / name
        if "persistentVolumeClaim" in vol:
            folders[name] = claims[name].folder
        elif "emptyDir" in vol:
            here.mkdir(parents=True, exist_ok=True)
            folders[name] = here
        elif "hostPath" in vol:
            folders[name] = Path(vol["hostPath"]["path"])
        elif "configMap" in vol:
            src = vol["configMap"]
            data = _configmap_data(core, ns, src["name"], bool(src.get("optional")))
            _write_files(here, _select(data, src.get("items")))
            folders[name] = here
        elif "secret" in vol:
            src = vol["secret"]
            data = _secret_data(core, ns, src["secretName"], bool(src.get("optional")))
            _write_files(here, _select(data, src.get("items")), mode=0o600)
            folders[name] = here
        elif "downwardAPI" in vol:
            _write_files(here, _downward(pod, vol["downwardAPI"].get("items") or []))
            folders[name] = here
        elif "projected" in vol:
            _write_files(here, _projected(core, pod, vol["projected"]), mode=0o600)
            folders[name] = here
        else:
            kinds = sorted(k for k in vol if k != "name")
            raise VolumeNotReady(f"volume {name!r} of type {kinds} is not supported by the sandbox")
    return folders


def refresh_volumes(core: client.CoreV1Api, pod: dict[str, Any], folders: Mapping[str, Path]) -> list[str]:
    """Bring each configMap and secret volume of `pod` (not subPath mounts, as a kubelet) to the object's
    current data: a changed file is replaced atomically, a key gone is removed. Returns the names of the
    volumes that changed. An object gone or unreadable leaves its files as they are."""
    ns = pod["metadata"]["namespace"]
    changed = []
    for vol in pod["spec"].get("volumes") or []:
        here = folders.get(vol["name"])
        if here is None:
            continue
        try:
            if "configMap" in vol:
                src = vol["configMap"]
                data = _configmap_data(core, ns, src["name"], bool(src.get("optional")))
                files = _select(data, src.get("items"))
                mode = 0o644
            elif "secret" in vol:
                src = vol["secret"]
                data = _secret_data(core, ns, src["secretName"], bool(src.get("optional")))
                files = _select(data, src.get("items"))
                mode = 0o600
            else:
                continue
        except (ApiException, VolumeNotReady, OSError):
            continue
        if _sync_files(here, files, mode):
            changed.append(vol["name"])
    return changed


def _sync_files(folder: Path, files: dict[str, bytes], mode: int) -> bool:
    if not folder.is_dir():
        return False
    changed = False
    for rel, data in files.items():
        target = folder / rel
        if target.is_file() and target.read_bytes() == data:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        # Rewritten in place, not renamed over: a program that watches the file itself (the Prometheus
        # config reloader adds the file's inode to inotify) keeps seeing its changes. A kubelet swaps a
        # symlinked folder instead, and such a watcher then relies on its periodic check (3 min).
        target.write_bytes(data)
        target.chmod(mode)
        changed = True
    for old in folder.rglob("*"):
        if old.is_file() and old.relative_to(folder).as_posix() not in files:
            old.unlink()
            changed = True
    return changed


def _projected(core: client.CoreV1Api, pod: dict[str, Any], spec: dict[str, Any]) -> dict[str, bytes]:
    ns = pod["metadata"]["namespace"]
    files: dict[str, bytes] = {}
    for src in spec.get("sources") or []:
        if "serviceAccountToken" in src:
            files[src["serviceAccountToken"]["path"]] = _token(core, pod, src["serviceAccountToken"]).encode()
        elif "configMap" in src:
            c = src["configMap"]
            files |= _select(_configmap_data(core, ns, c["name"], bool(c.get("optional"))), c.get("items"))
        elif "secret" in src:
            s = src["secret"]
            files |= _select(_secret_data(core, ns, s["name"], bool(s.get("optional"))), s.get("items"))
        elif "downwardAPI" in src:
            files |= _downward(pod, src["downwardAPI"].get("items") or [])
    return files


def _token(core: client.CoreV1Api, pod: dict[str, Any], src: dict[str, Any]) -> str:
    """A real bound service-account token, so in-cluster clients in the pod authenticate as its SA."""
    spec: dict[str, Any] = {"expirationSeconds": int(src.get("expirationSeconds") or 3607)}
    if src.get("audience"):
        spec["audiences"] = [src["audience"]]
    spec["boundObjectRef"] = {
        "kind": "Pod",
        "apiVersion": "v1",
        "name": pod["metadata"]["name"],
        "uid": pod["metadata"]["uid"],
    }
    sa = pod["spec"].get("serviceAccountName") or "default"
    try:
        resp = core.create_namespaced_service_account_token(sa, pod["metadata"]["namespace"], {"spec": spec})
    except ApiException as exc:
        raise VolumeNotReady(f'token for serviceaccount "{sa}" could not be issued: {exc.reason}') from exc
    return str(resp.status.token)


def container_mounts(container: dict[str, Any], folders: dict[str, Path]) -> list[Mount]:
    mounts = []
    for vm in container.get("volumeMounts") or []:
        local = folders[vm["name"]]
        if vm.get("subPath"):
            local = local / vm["subPath"]
            if not local.is_file():  # a subPath may name one file of the volume (a secret's key)
                local.mkdir(parents=True, exist_ok=True)
        mounts.append(Mount(container_path=vm["mountPath"], local_path=str(local)))
    return mounts


def remove_pod_dir(pod_dir: Path) -> None:
    shutil.rmtree(pod_dir, ignore_errors=True)


def ensure_pv_folder(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o777)
