"""A dynamic provisioner for the sandbox's default StorageClass: each claim gets a PersistentVolume
backed by a local folder; the real PV controller in kube-controller-manager binds them. Released
volumes of reclaimPolicy Delete are removed with their folder, as a CSI driver would."""

from __future__ import annotations

import shutil
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sandbox.config import PROVISIONER
from sandbox.volumes import ensure_pv_folder

PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"


def _our_classes(storage: client.StorageV1Api) -> set[str]:
    return {sc.metadata.name for sc in storage.list_storage_class().items if sc.provisioner == PROVISIONER}


def sync_once(core: client.CoreV1Api, storage: client.StorageV1Api, volumes_dir: Path) -> None:
    """Provision for every pending claim of our classes; delete released volumes of ours."""
    classes = _our_classes(storage)
    existing = {pv.metadata.name: pv for pv in core.list_persistent_volume().items}
    for pvc in core.list_persistent_volume_claim_for_all_namespaces().items:
        if (
            pvc.spec.storage_class_name not in classes
            or pvc.spec.volume_name
            or pvc.metadata.deletion_timestamp
        ):
            continue
        pv_name = f"pvc-{pvc.metadata.uid}"
        if pv_name in existing:
            continue
        sc = storage.read_storage_class(pvc.spec.storage_class_name)
        folder = volumes_dir / pv_name
        ensure_pv_folder(folder)
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "annotations": {PROVISIONED_BY: PROVISIONER}},
            "spec": {
                "capacity": {"storage": pvc.spec.resources.requests["storage"]},
                "accessModes": pvc.spec.access_modes or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": sc.reclaim_policy or "Delete",
                "storageClassName": pvc.spec.storage_class_name,
                "volumeMode": pvc.spec.volume_mode or "Filesystem",
                "hostPath": {"path": str(folder), "type": "DirectoryOrCreate"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": pvc.metadata.namespace,
                    "name": pvc.metadata.name,
                    "uid": pvc.metadata.uid,
                },
            },
        }
        try:
            core.create_persistent_volume(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
    for pv in existing.values():
        ours = (pv.metadata.annotations or {}).get(PROVISIONED_BY) == PROVISIONER
        if ours and pv.status.phase == "Released" and pv.spec.persistent_volume_reclaim_policy == "Delete":
            shutil.rmtree(pv.spec.host_path.path, ignore_errors=True)
            try:
                core.delete_persistent_volume(pv.metadata.name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
