"""TritonModel on the sandbox (issue 4): staged from real S3 by a Job, loaded on every real Triton replica.

The tests of the first part share one TritonServer and one model and run in file order, each starting
from where the previous one left it (as a user working through the quickstart would).
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton_http
from kubernetes import client
from triton_operator.render.labels import MODELS_LOADED_GATE

from sandbox.mnist import publish_mnist
from tests.e2e import kube
from tests.e2e.conftest import Operator, Sandbox
from tests.support.kstatus_check import verdict as kstatus_verdict
from tests.support.objects import (
    CREDENTIALS,
    POD_SELECTOR,
    SERVER,
    apply,
    condition,
    credentials_secret,
    events,
    get_cr,
    runner_pids,
    server_pods,
    triton_restarts,
    tritonmodel,
    tritonserver,
)

pytestmark = pytest.mark.e2e

MODEL = "mnist"
WRONG_DIGEST = "sha256:" + "0" * 64


# --- helpers -------------------------------------------------------------------------------------


def model_status(sb: Sandbox, ns: str, name: str = MODEL) -> dict[str, Any]:
    obj = get_cr(sb, ns, "tritonmodels", name)
    return (obj or {}).get("status") or {}


def triton_pid(sb: Sandbox, ns: str, pod: str) -> int:
    """The tritonserver process of one pod (the sandbox's pod runner lists them)."""
    return runner_pids(sb, ns)[pod]


def repository_index(ip: str) -> list[dict[str, Any]]:
    req = urllib.request.Request(f"http://{ip}:8000/v2/repository/index", data=b"{}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        return list(json.load(resp))


def ready_in_index(ip: str, model: str = MODEL) -> bool:
    return any(m["name"] == model and m.get("state") == "READY" for m in repository_index(ip))


def loaded_config(ip: str, model: str = MODEL) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{ip}:8000/v2/models/{model}/config", timeout=5) as resp:
        return dict(json.load(resp))


def infer(ip: str, batch: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    c = triton_http.InferenceServerClient(f"{ip}:8000", network_timeout=30)
    try:
        inp = triton_http.InferInput("input", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        result = c.infer(MODEL, [inp], outputs=[triton_http.InferRequestedOutput("output")])
        out: np.ndarray[Any, Any] = result.as_numpy("output")
        return out
    finally:
        c.close()


def pv_folder(sb: Sandbox, ns: str, claim: str) -> Path:
    return kube.pv_folder(client.CoreV1Api(sb.api), ns, claim)


def wait_condition(
    sb: Sandbox, ns: str, name: str, ctype: str, status: str, reason: str | None, timeout_s: float
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        cond = condition(model_status(sb, ns, name), ctype)
        ok = cond.get("status") == status and (reason is None or cond.get("reason") == reason)
        return cond if ok else None

    return kube.wait_for(check, timeout_s, f"{name}: {ctype}={status} ({reason})")


def mnist_config(preferred: int, delay_us: int, instance_kind: str = "CPU") -> dict[str, Any]:
    return {
        "backend": "python",
        "maxBatchSize": 8,
        "inputs": [{"name": "input", "dataType": "FP32", "dims": [1, 28, 28]}],
        "outputs": [{"name": "output", "dataType": "FP32", "dims": [10]}],
        "dynamicBatching": {"preferredBatchSizes": [preferred], "maxQueueDelayMicroseconds": delay_us},
        "instanceGroups": [{"kind": instance_kind, "count": 1}],
        "parameters": {"onnx_model_filename": "model.onnx"},
    }


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def published(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MNIST MLP built with model-builders onnx-python and published to the sandbox's S3."""
    return publish_mnist(sandbox.cfg.s3_endpoint, tmp_path_factory.mktemp("mnist"), CREDENTIALS)


@pytest.fixture(scope="module")
def pool(sandbox: Sandbox, operator: Operator, published: Path) -> Iterator[str]:
    """A namespace with a 2-replica TritonServer (Ready) and the S3 credentials Secret."""
    core = client.CoreV1Api(sandbox.api)
    ns = f"tm-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"e2e": "true"}}})
    kube.wait_for(lambda: kube.service_account_exists(core, ns, "default"), 30, "default service account")
    apply(sandbox, ns, credentials_secret(), tritonserver(2))
    sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", f"tritonserver/{SERVER}", "--timeout=120s")
    yield ns
    core.delete_namespace(ns)


# --- the shared flow -----------------------------------------------------------------------------


def test_model_from_s3_is_ready_and_serves_on_every_replica(
    sandbox: Sandbox, pool: str, published: Path
) -> None:
    apply(sandbox, pool, tritonmodel(MODEL, sandbox.cfg.s3_endpoint, config=mnist_config(4, 100)))
    sandbox.kubectl("wait", "-n", pool, "--for=condition=Ready", f"tritonmodel/{MODEL}", "--timeout=120s")

    status = model_status(sandbox, pool)
    pods = server_pods(sandbox, pool)
    assert len(pods) == 2
    assert status["loaded"] == "2/2"
    assert status["servedVersion"] == 1
    assert status["stagedDigest"].startswith("sha256:")
    assert sorted(r["pod"] for r in status["replicas"]) == sorted(p.metadata.name for p in pods)
    assert {r["state"] for r in status["replicas"]} == {"READY"}
    assert status["endpoints"]["model"] == f"/v2/models/{MODEL}/infer"
    assert condition(status, "Staged")["status"] == "True"
    assert condition(status, "Loaded")["status"] == "True"
    assert condition(status, "Degraded")["status"] == "False"

    batch = np.random.default_rng(7).standard_normal((3, 1, 28, 28)).astype(np.float32)
    expected = ort.InferenceSession(str(published), providers=["CPUExecutionProvider"]).run(
        ["output"], {"input": batch}
    )[0]
    for pod in pods:
        ip = pod.status.pod_ip
        assert ready_in_index(ip), repository_index(ip)
        np.testing.assert_allclose(infer(ip, batch), expected, rtol=1e-5, atol=1e-5)

    # The finished staging Job is cleaned up; status remembers it.
    batch_api = client.BatchV1Api(sandbox.api)
    kube.wait_for(
        lambda: not batch_api.list_namespaced_job(pool).items, 30, "the finished staging Job to be deleted"
    )
    assert status["stagingJob"].startswith(f"{MODEL}-stage-")


def test_new_and_replaced_replicas_load_the_model_by_themselves(sandbox: Sandbox, pool: str) -> None:
    # Each new pod turns Ready (joins the Service) only with the model loaded: not with Triton up alone.
    transitions = kube.ReadyTransitions(sandbox.api, pool, POD_SELECTOR, ready_in_index)
    sandbox.kubectl("scale", "-n", pool, f"tritonserver/{SERVER}", "--replicas=3")
    kube.wait_for(lambda: model_status(sandbox, pool).get("loaded") == "3/3", 90, "loaded 3/3 after scaling")
    # Loaded first, then the gate opens: the pod is Ready a moment after the model says 3/3.
    kube.wait_for(lambda: len(server_pods(sandbox, pool)) == 3, 30, "3 Ready pods after scaling")
    pods = server_pods(sandbox, pool)
    assert all(ready_in_index(p.status.pod_ip) for p in pods)

    victim = pods[0].metadata.name
    core = client.CoreV1Api(sandbox.api)
    core.delete_namespaced_pod(victim, pool)

    def replaced() -> bool:
        status = model_status(sandbox, pool)
        names = {r["pod"] for r in status.get("replicas") or [] if r["state"] == "READY"}
        return status.get("loaded") == "3/3" and victim not in names and len(names) == 3

    kube.wait_for(replaced, 90, "the replacement pod to load the model (3/3)")
    kube.wait_for(lambda: len(kube.ready_pods(core, pool, POD_SELECTOR)) == 3, 30, "3 Ready pods")
    pods = server_pods(sandbox, pool)
    assert all(ready_in_index(p.status.pod_ip) for p in pods)
    seen = transitions.stop()
    joined = {name for name, _, _ in seen}
    assert len(joined) >= 2, seen  # the added pod and the replacement (the victim may be the added one)
    assert all(loaded for _, _, loaded in seen), f"a pod turned Ready without the model: {seen}"
    for pod in (p for p in pods if p.metadata.name in joined):
        gate = kube.pod_condition(pod, MODELS_LOADED_GATE)
        assert gate is not None and gate.status == "True" and gate.message == "1 model loaded.", gate


def test_a_restarted_triton_rejoins_its_service_only_with_its_model_loaded(
    sandbox: Sandbox, pool: str
) -> None:
    core = client.CoreV1Api(sandbox.api)
    victim = server_pods(sandbox, pool)[0]
    transitions = kube.ReadyTransitions(sandbox.api, pool, POD_SELECTOR, ready_in_index)
    os.kill(triton_pid(sandbox, pool, victim.metadata.name), signal.SIGKILL)

    def rejoined() -> bool:
        pod = core.read_namespaced_pod(victim.metadata.name, pool)
        restarts = triton_restarts(pod)
        ready = kube.pod_condition(pod, "Ready")
        return bool(restarts >= 1 and ready is not None and ready.status == "True")

    kube.wait_for(rejoined, 120, "the restarted pod to be Ready again")
    seen = transitions.stop()
    assert [(n, loaded) for n, r, loaded in seen if r >= 1] == [(victim.metadata.name, True)], seen
    assert victim.status.pod_ip in kube.endpoint_slice_ips(sandbox.api, pool, SERVER)
    kube.wait_for(lambda: model_status(sandbox, pool).get("loaded") == "3/3", 60, "loaded 3/3 again")


def test_config_change_reloads_in_place_on_every_replica(sandbox: Sandbox, pool: str) -> None:
    uids = {p.metadata.name: p.metadata.uid for p in server_pods(sandbox, pool)}
    for pod in server_pods(sandbox, pool):
        batching = loaded_config(pod.status.pod_ip)["dynamic_batching"]
        assert batching["preferred_batch_size"] == [4]
    apply(sandbox, pool, tritonmodel(MODEL, sandbox.cfg.s3_endpoint, config=mnist_config(8, 500)))
    generation = (get_cr(sandbox, pool, "tritonmodels", MODEL) or {})["metadata"]["generation"]
    assert generation >= 2
    sandbox.kubectl("wait", "-n", pool, "--for=condition=Ready", f"tritonmodel/{MODEL}", "--timeout=120s")

    status = model_status(sandbox, pool)
    assert status["observedGeneration"] == generation
    assert all(c["observedGeneration"] == generation for c in status["conditions"])
    assert status["loaded"] == "3/3"
    pods = server_pods(sandbox, pool)
    assert {p.metadata.name: p.metadata.uid for p in pods} == uids, "pods must not be restarted"
    for pod in pods:
        batching = loaded_config(pod.status.pod_ip)["dynamic_batching"]
        assert batching["preferred_batch_size"] == [8]
        assert int(batching["max_queue_delay_microseconds"]) == 500


def test_traffic_shows_in_status_metrics(sandbox: Sandbox, pool: str) -> None:
    # Clients call the server's Service, as they would in a cluster: kube-proxy spreads their
    # connections over the replicas, and status sums every replica's figures.
    service = kube.cluster_ip(client.CoreV1Api(sandbox.api), pool, SERVER)
    before = model_status(sandbox, pool).get("metrics", {}).get("successCount", 0)
    per_thread, threads = 60, 6
    batch = np.zeros((1, 1, 28, 28), dtype=np.float32)
    errors: list[BaseException] = []

    def send(ip: str) -> None:
        try:
            for _ in range(per_thread):
                infer(ip, batch)
                time.sleep(0.02)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=send, args=(service,)) for _ in range(threads)]
    for w in workers:
        w.start()
    # While traffic flows, one refresh period (3 s) plus a scrape shows it.
    live = kube.wait_for(
        lambda: (m := model_status(sandbox, pool).get("metrics") or {}).get("requestRate", 0) > 0 and m,
        15,
        "requestRate > 0 in status.metrics",
    )
    for w in workers:
        w.join(timeout=120)
    assert not errors, errors
    assert "inferencesPerExecution" in live and live["inferencesPerExecution"] >= 1
    assert "refreshedAt" in live
    sent = per_thread * threads
    final = kube.wait_for(
        lambda: (
            (m := model_status(sandbox, pool).get("metrics") or {}).get("successCount") == before + sent and m
        ),
        15,
        f"successCount == {before + sent}",
    )
    assert final["failureCount"] == 0


def test_config_triton_rejects_is_reported_and_harms_nothing_else(sandbox: Sandbox, pool: str) -> None:
    name = "mnist-gpu"
    # Staging accepts it (a valid config); Triton refuses it: the pods have no GPU for a GPU instance.
    apply(sandbox, pool, tritonmodel(name, sandbox.cfg.s3_endpoint, config=mnist_config(4, 100, "GPU")))
    loaded = wait_condition(sandbox, pool, name, "Loaded", "False", "LoadFailed", 120)
    assert "gpu" in loaded["message"].lower(), loaded
    ready = condition(model_status(sandbox, pool, name), "Ready")
    assert ready["status"] == "False" and ready["reason"] == "LoadFailed"
    assert any(e.type == "Warning" and e.reason == "LoadFailed" for e in events(sandbox, pool, name))

    server = get_cr(sandbox, pool, "tritonservers", SERVER) or {}
    assert condition(server.get("status") or {}, "Ready")["status"] == "True"
    assert condition(model_status(sandbox, pool), "Ready")["status"] == "True"
    assert all(ready_in_index(p.status.pod_ip) for p in server_pods(sandbox, pool))
    sandbox.kubectl("delete", "-n", pool, f"tritonmodel/{name}", "--timeout=60s")


def test_missing_s3_object_fails_staging_with_source_not_found(sandbox: Sandbox, pool: str) -> None:
    name = "mnist-missing"
    apply(sandbox, pool, tritonmodel(name, sandbox.cfg.s3_endpoint, prefix="nothing/here"))
    staged = wait_condition(sandbox, pool, name, "Staged", "False", "SourceNotFound", 90)
    assert "nothing/here" in staged["message"]
    status = model_status(sandbox, pool, name)
    assert condition(status, "Ready")["reason"] == "SourceNotFound"
    assert condition(status, "Degraded")["status"] == "True"
    kube.wait_for(
        lambda: any(
            e.type == "Warning" and e.reason == "SourceNotFound" for e in events(sandbox, pool, name)
        ),
        15,
        "a Warning Event SourceNotFound",
    )
    # kstatus (Flux's health checks) reads it Failed with the reason, not InProgress for ever; Stalled
    # restates Degraded and has no Events of its own.
    stalled = condition(model_status(sandbox, pool, name), "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "SourceNotFound", stalled
    said = kstatus_verdict(get_cr(sandbox, pool, "tritonmodels", name) or {})
    assert said[0] == "Failed" and "nothing/here" in said[1], said
    own = [
        e.message
        for e in events(sandbox, pool, name)
        if (e.message or "").startswith(("Stalled", "Reconciling"))
    ]
    assert not own, own
    sandbox.kubectl("delete", "-n", pool, f"tritonmodel/{name}", "--timeout=60s")


def test_missing_secret_is_reported_then_staging_proceeds(sandbox: Sandbox, pool: str) -> None:
    name = "mnist-secretless"
    model = tritonmodel(name, sandbox.cfg.s3_endpoint, config=mnist_config(4, 100))
    model["spec"]["source"]["s3"]["credentialsSecret"]["name"] = "late-credentials"
    apply(sandbox, pool, model)
    staged = wait_condition(sandbox, pool, name, "Staged", "False", "MissingReference", 60)
    assert "late-credentials" in staged["message"]
    assert condition(model_status(sandbox, pool, name), "Ready")["reason"] == "MissingReference"
    secret = credentials_secret()
    secret["metadata"]["name"] = "late-credentials"
    apply(sandbox, pool, secret)
    sandbox.kubectl("wait", "-n", pool, "--for=condition=Ready", f"tritonmodel/{name}", "--timeout=90s")
    sandbox.kubectl("delete", "-n", pool, f"tritonmodel/{name}", "--timeout=60s")


def test_digest_mismatch_keeps_the_previous_version_serving(sandbox: Sandbox, pool: str) -> None:
    sandbox.kubectl(
        "patch",
        "-n",
        pool,
        f"tritonmodel/{MODEL}",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"source": {"digest": WRONG_DIGEST}}}),
    )
    staged = wait_condition(sandbox, pool, MODEL, "Staged", "False", "DigestMismatch", 90)
    assert WRONG_DIGEST in staged["message"]
    status = model_status(sandbox, pool)
    assert condition(status, "Ready")["reason"] == "DigestMismatch"
    assert condition(status, "Degraded")["status"] == "True"
    assert condition(status, "Loaded")["status"] == "True"  # the previous files still serve
    assert status["loaded"] == "3/3"
    kube.wait_for(
        lambda: any(
            e.type == "Warning" and e.reason == "DigestMismatch" for e in events(sandbox, pool, MODEL)
        ),
        15,
        "a Warning Event DigestMismatch",
    )
    batch = np.zeros((1, 1, 28, 28), dtype=np.float32)
    for pod in server_pods(sandbox, pool):
        assert ready_in_index(pod.status.pod_ip)
        assert infer(pod.status.pod_ip, batch).shape == (1, 10)

    sandbox.kubectl(
        "patch", "-n", pool, f"tritonmodel/{MODEL}", "--type=json", "-p",
        json.dumps([{"op": "remove", "path": "/spec/source/digest"}]),
    )  # fmt: skip
    sandbox.kubectl("wait", "-n", pool, "--for=condition=Ready", f"tritonmodel/{MODEL}", "--timeout=90s")


def test_delete_unloads_from_every_replica(sandbox: Sandbox, pool: str) -> None:
    ips = [p.status.pod_ip for p in server_pods(sandbox, pool)]
    assert all(ready_in_index(ip) for ip in ips)
    sandbox.kubectl("delete", "-n", pool, f"tritonmodel/{MODEL}", "--timeout=60s")
    assert get_cr(sandbox, pool, "tritonmodels", MODEL) is None
    for ip in ips:
        kube.wait_for(lambda ip=ip: not ready_in_index(ip), 15, f"{MODEL} unloaded on {ip}")


def test_delete_removes_the_files_only_when_keep_files_on_delete_is_false(
    sandbox: Sandbox, pool: str
) -> None:
    drop, keep = "mnist-drop", "mnist-keep"
    dropped = tritonmodel(drop, sandbox.cfg.s3_endpoint, config=mnist_config(4, 100))
    dropped["spec"]["keepFilesOnDelete"] = False
    apply(sandbox, pool, dropped, tritonmodel(keep, sandbox.cfg.s3_endpoint, config=mnist_config(4, 100)))
    for name in (drop, keep):
        sandbox.kubectl("wait", "-n", pool, "--for=condition=Ready", f"tritonmodel/{name}", "--timeout=120s")
    folder = pv_folder(sandbox, pool, f"{SERVER}-models")
    for name in (drop, keep):
        assert (folder / name / "config.pbtxt").is_file() and (folder / name / "1").is_dir()
    ips = [p.status.pod_ip for p in server_pods(sandbox, pool)]
    assert ips and all(ready_in_index(ip, drop) and ready_in_index(ip, keep) for ip in ips)

    started = time.monotonic()
    sandbox.kubectl("delete", "-n", pool, f"tritonmodel/{drop}", f"tritonmodel/{keep}", "--timeout=90s")
    took = time.monotonic() - started
    assert get_cr(sandbox, pool, "tritonmodels", drop) is None  # no finalizer left behind
    assert get_cr(sandbox, pool, "tritonmodels", keep) is None
    for ip in ips:
        index = repository_index(ip)
        assert not any(m["name"] in (drop, keep) and m.get("state") == "READY" for m in index), index
        # Triton's index lists what is in the repository: the removed model is not there at all.
        assert all(m["name"] != drop for m in index), index
    assert not (folder / drop).exists(), sorted(p.name for p in folder.iterdir())
    assert (folder / keep / "config.pbtxt").is_file() and (folder / keep / "1").is_dir()
    assert not [p.name for p in folder.iterdir() if p.name.startswith((".trash-", ".staging-"))]
    batch_api = client.BatchV1Api(sandbox.api)
    kube.wait_for(
        lambda: (
            not batch_api.list_namespaced_job(pool, label_selector=f"tritonoperator.dev/model={drop}").items
        ),
        30,
        "the finished removal Job to be deleted",
    )
    assert took < 90


def test_failed_removal_keeps_the_finalizer_and_warns_until_the_files_are_kept(
    sandbox: Sandbox, pool: str
) -> None:
    name = "mnist-stuck"
    model = tritonmodel(name, sandbox.cfg.s3_endpoint, config=mnist_config(4, 100))
    model["spec"]["keepFilesOnDelete"] = False
    apply(sandbox, pool, model)
    sandbox.kubectl("wait", "-n", pool, "--for=condition=Ready", f"tritonmodel/{name}", "--timeout=120s")
    folder = pv_folder(sandbox, pool, f"{SERVER}-models") / name
    # Another version stays, so the removal must rewrite the config: it refuses one it cannot read.
    (folder / "2").mkdir()
    config = folder / "config.pbtxt"
    config.write_text("this is { not a config")

    sandbox.kubectl("delete", "-n", pool, f"tritonmodel/{name}", "--wait=false")
    warning = kube.wait_for(
        lambda: next(
            (e for e in events(sandbox, pool, name) if e.type == "Warning" and e.reason == "ConfigRejected"),
            None,
        ),
        60,
        "a Warning Event ConfigRejected from the removal",
    )
    assert "config.pbtxt" in warning.message and "keepFilesOnDelete" in warning.message
    stuck = get_cr(sandbox, pool, "tritonmodels", name) or {}
    assert stuck["metadata"].get("deletionTimestamp") and stuck["metadata"].get("finalizers")

    # The way out the Event names: keep the files; the next retry lets the object go.
    sandbox.kubectl(
        "patch", "-n", pool, f"tritonmodel/{name}", "--type=merge", "-p",
        json.dumps({"spec": {"keepFilesOnDelete": True}}),
    )  # fmt: skip
    kube.wait_for(lambda: get_cr(sandbox, pool, "tritonmodels", name) is None, 90, f"{name} to be deleted")
    assert config.read_text() == "this is { not a config" and (folder / "1").is_dir()
    assert (
        not client.BatchV1Api(sandbox.api)
        .list_namespaced_job(pool, label_selector=f"tritonoperator.dev/model={name}")
        .items
    )


# --- on its own ----------------------------------------------------------------------------------


def test_model_waits_for_its_server_then_loads(
    sandbox: Sandbox, operator: Operator, published: Path, namespace: str
) -> None:
    apply(
        sandbox,
        namespace,
        credentials_secret(),
        tritonmodel(MODEL, sandbox.cfg.s3_endpoint, config=mnist_config(4, 100)),
    )
    # A new model first waits SERVER_GRACE_S (15 s) for its server (a GitOps sync may apply the model
    # first; that is no problem yet), then says it is missing.
    waiting = wait_condition(sandbox, namespace, MODEL, "Ready", "False", "WaitingForServer", 15)
    assert f"Waiting for TritonServer '{SERVER}'" in waiting["message"]
    assert condition(model_status(sandbox, namespace, MODEL), "Degraded")["status"] == "False"
    ready = wait_condition(sandbox, namespace, MODEL, "Ready", "False", "ServerNotFound", 60)
    assert f"TritonServer '{SERVER}' not found" in ready["message"]
    # After the grace a missing server is Stalled (kstatus: Failed) until it exists.
    stalled = condition(model_status(sandbox, namespace, MODEL), "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "ServerNotFound", stalled
    kube.wait_for(
        lambda: any(
            e.type == "Warning" and e.reason == "ServerNotFound" for e in events(sandbox, namespace, MODEL)
        ),
        15,
        "a Warning Event ServerNotFound",
    )
    assert not client.BatchV1Api(sandbox.api).list_namespaced_job(namespace).items

    apply(sandbox, namespace, tritonserver(1))
    sandbox.kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", f"tritonmodel/{MODEL}", "--timeout=150s"
    )
    assert model_status(sandbox, namespace)["loaded"] == "1/1"
    served = model_status(sandbox, namespace)
    assert (condition(served, "Stalled")["status"], condition(served, "Reconciling")["status"]) == (
        "False",
        "False",
    )
    (pod,) = server_pods(sandbox, namespace)
    assert ready_in_index(pod.status.pod_ip)
    # No crash loop, no retry storm: the operator logged no tracebacks for this namespace.
    assert "Traceback" not in operator.log()


def test_model_larger_than_the_repository_is_refused_and_writes_nothing(
    sandbox: Sandbox, operator: Operator, published: Path, namespace: str
) -> None:
    tiny = tritonserver(1)
    tiny["metadata"]["name"] = "tiny"
    tiny["spec"]["modelRepository"]["size"] = "1Ki"
    apply(sandbox, namespace, credentials_secret(), tiny)
    sandbox.kubectl("wait", "-n", namespace, "--for=condition=Ready", "tritonserver/tiny", "--timeout=120s")
    model = tritonmodel(MODEL, sandbox.cfg.s3_endpoint, config=mnist_config(4, 100))
    model["spec"]["serverRef"]["name"] = "tiny"
    apply(sandbox, namespace, model)

    staged = wait_condition(sandbox, namespace, MODEL, "Staged", "False", "TooLarge", 90)
    sizes = re.search(r"needs (\d+) bytes but only (\d+) bytes are free", staged["message"])
    assert sizes, staged["message"]
    assert int(sizes.group(1)) > 1024 >= int(sizes.group(2))
    assert "spec.modelRepository.size is 1024 bytes" in staged["message"]
    assert "grow spec.modelRepository.size of the TritonServer" in staged["message"]
    status = model_status(sandbox, namespace)
    assert condition(status, "Ready")["reason"] == "TooLarge"
    assert condition(status, "Degraded")["status"] == "True"
    kube.wait_for(
        lambda: any(
            e.type == "Warning" and e.reason == "TooLarge" for e in events(sandbox, namespace, MODEL)
        ),
        15,
        "a Warning Event TooLarge",
    )
    assert list(pv_folder(sandbox, namespace, "tiny-models").iterdir()) == []

    server = get_cr(sandbox, namespace, "tritonservers", "tiny") or {}
    assert condition(server.get("status") or {}, "Ready")["status"] == "True"
    core = client.CoreV1Api(sandbox.api)
    (pod,) = kube.ready_pods(
        core, namespace, "app.kubernetes.io/instance=tiny,app.kubernetes.io/component=server"
    )
    assert not any(m["name"] == MODEL for m in repository_index(pod.status.pod_ip))
    sandbox.kubectl("delete", "-n", namespace, f"tritonmodel/{MODEL}", "--timeout=60s")
