"""A real Argo CD (v3.2.11: repo-server and application controller, sandbox/argocd.py) syncing the
project's quickstart from a git repository (issue 11), with the project's health checks installed as
manifests/argocd/ documents.

The repository is a `file://` git repository the tests write and commit to, as a user would push; after
each commit they ask for a refresh (the `argocd.argoproj.io/refresh` annotation, what a git webhook or
`argocd app get --refresh` does). Applications sync automatically (prune and self-heal on) into the
in-cluster destination. What is asserted is what a user reads: the Application's sync and health
status (never the health message: Argo CD ignores status-only updates, so messages go stale), the
objects in the namespace, and nothing stuck on a finalizer.

The quickstart tests (the first five) share one Application and run in file order, each starting where
the previous one left it, as a user working through the quickstart with Argo CD would.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, cast

import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from sandbox import argocd, netns
from sandbox.config import REPO_ROOT
from sandbox.mnist import publish_mnist
from tests.e2e import kube
from tests.e2e.conftest import Operator, Sandbox
from tests.golden.triton.triton_models import ADDER_PY
from tests.support.load import Load
from tests.support.models import FAILING_PY
from tests.support.objects import CREDENTIALS, get_cr
from tests.support.scorer import publish, rollout_of

pytestmark = pytest.mark.e2e

QUICKSTART = REPO_ROOT / "examples" / "quickstart"
QUICKSTART_S3 = "http://127.0.0.1:17006"  # the `default` sandbox's S3, which the quickstart names
APP_GROUP = (argocd.GROUP, "v1alpha1", argocd.NAMESPACE, "applications")
SERVER = "triton"  # the quickstart's TritonServer
GPUS_PER_NODE = 4  # the sandbox's kwok GPU nodes (config.GPUS_PER_NODE_DEFAULT)
SYNC_TIMEOUT_S = 300


# -- git --------------------------------------------------------------------------------------------
class GitRepo:
    """A git repository on disk that Argo CD clones through a file:// URL."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def git(self, *args: str) -> str:
        proc = subprocess.run(
            ["git", "-c", "user.name=e2e", "-c", "user.email=e2e@example.invalid",
             "-c", "commit.gpgsign=false", *args],
            cwd=self.path, capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        if proc.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout.strip()

    def write(self, rel: str, text: str) -> None:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def read(self, rel: str) -> str:
        return (self.path / rel).read_text()

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.head()

    def revert_head(self) -> str:
        self.git("revert", "--no-edit", "HEAD")
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")


def quickstart_files(s3_endpoint: str) -> dict[str, str]:
    """examples/quickstart/ as a user commits it for this sandbox: its S3 endpoint is this sandbox's."""
    files = {}
    for src in sorted(QUICKSTART.glob("*.yaml")):
        text = src.read_text()
        files[src.name] = text.replace(QUICKSTART_S3, s3_endpoint)
    assert QUICKSTART_S3 in (QUICKSTART / "tritonmodel.yaml").read_text(), (
        "the quickstart's S3 endpoint moved"
    )
    return files


def git_objects(files: dict[str, str]) -> set[tuple[str, str]]:
    """(kind, name) of every object in the files."""
    return {
        (doc["kind"], doc["metadata"]["name"])
        for text in files.values()
        for doc in yaml.safe_load_all(text)
        if doc
    }


# -- Applications -----------------------------------------------------------------------------------
def get_app(sb: Sandbox, name: str) -> dict[str, Any] | None:
    try:
        return cast(
            dict[str, Any], client.CustomObjectsApi(sb.api).get_namespaced_custom_object(*APP_GROUP, name)
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def status_of(app: dict[str, Any] | None) -> dict[str, Any]:
    return dict((app or {}).get("status") or {})


def health_of(app: dict[str, Any] | None) -> str | None:
    return (status_of(app).get("health") or {}).get("status")


def sync_of(app: dict[str, Any] | None) -> str | None:
    return (status_of(app).get("sync") or {}).get("status")


def summary(app: dict[str, Any] | None) -> dict[str, Any]:
    """What `argocd app get` shows first, for failure messages."""
    status = status_of(app)
    op = status.get("operationState") or {}
    return {
        "sync": sync_of(app),
        "revision": (status.get("sync") or {}).get("revision"),
        "health": health_of(app),
        "operation": (op.get("phase"), op.get("message")),
        "conditions": [(c.get("type"), c.get("message")) for c in status.get("conditions") or []],
        "resources": [
            (r.get("kind"), r.get("name"), r.get("status"), (r.get("health") or {}).get("status"),
             r.get("requiresPruning", False))
            for r in status.get("resources") or []
        ],
    }  # fmt: skip


def create_app(sb: Sandbox, app: dict[str, Any]) -> None:
    client.CustomObjectsApi(sb.api).create_namespaced_custom_object(*APP_GROUP[:3], "applications", app)


def patch_app(sb: Sandbox, name: str, patch: dict[str, Any]) -> None:
    client.CustomObjectsApi(sb.api).patch_namespaced_custom_object(*APP_GROUP, name, patch)


def refresh(sb: Sandbox, name: str, kind: str = "normal") -> None:
    """Ask for a refresh, and wait until the controller has done it: it removes the annotation with the
    status of that reconcile. reconciledAt has whole seconds: a reconcile just before the request can
    carry the same stamp as the refresh, so the stamp is compared with the request's second, not with
    the stamp before it (that comparison waited out a refresh done within the same second)."""
    requested = datetime.now(UTC).replace(microsecond=0)
    patch_app(sb, name, {"metadata": {"annotations": {argocd.REFRESH_ANNOTATION: kind}}})

    def refreshed() -> bool:
        app = get_app(sb, name) or {}
        annotations = app.get("metadata", {}).get("annotations") or {}
        stamp = status_of(app).get("reconciledAt")
        reconciled = datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None
        return argocd.REFRESH_ANNOTATION not in annotations and bool(reconciled and reconciled >= requested)

    kube.wait_for(refreshed, 60, f"the {kind} refresh of Application {name}", interval_s=0.2)


def sync(sb: Sandbox, name: str, prune: bool = True) -> dict[str, Any]:
    """A sync with prune, as `argocd app sync --prune` requests it; returns the finished operation state."""
    before = (status_of(get_app(sb, name)).get("operationState") or {}).get("startedAt")
    patch_app(sb, name, {"operation": argocd.sync_operation(prune=prune)})

    def finished() -> dict[str, Any] | None:
        op = status_of(get_app(sb, name)).get("operationState") or {}
        done = op.get("startedAt") != before and op.get("phase") in ("Succeeded", "Failed", "Error")
        return op if done else None

    op = kube.wait_for(finished, 120, f"the sync of Application {name}", interval_s=0.2)
    assert op is not None and op["phase"] == "Succeeded", op
    return op


def wait_app(
    sb: Sandbox,
    name: str,
    health: str,
    timeout_s: float = SYNC_TIMEOUT_S,
    revision: str | None = None,
    fail_fast: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Wait until the Application is Synced (to `revision`, when given), no operation runs, and its health
    is `health`. `fail_fast` runs at every poll: it raises to end the wait at once."""

    def check() -> dict[str, Any] | None:
        if fail_fast is not None:
            fail_fast()
        app = get_app(sb, name)
        status = status_of(app)
        op = status.get("operationState") or {}
        ok = (
            sync_of(app) == "Synced"
            and health_of(app) == health
            and op.get("phase") != "Running"
            and (revision is None or (status.get("sync") or {}).get("revision") == revision)
        )
        return app if ok else None

    try:
        found = kube.wait_for(check, timeout_s, f"Application {name} Synced and {health}", interval_s=0.3)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nApplication {name}: {summary(get_app(sb, name))}") from None
    assert found is not None
    return found


def wait_health(sb: Sandbox, name: str, health: str, timeout_s: float) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        app = get_app(sb, name)
        return app if health_of(app) == health else None

    try:
        found = kube.wait_for(
            check,
            timeout_s,
            f"Application {name} health {health}",
            interval_s=0.2,
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nApplication {name}: {summary(get_app(sb, name))}") from None
    assert found is not None
    return found


@dataclass
class Seen:
    at: float
    health: str | None
    sync: str | None
    resources: dict[str, str | None]
    # Health messages, for the printed sequence only: Argo CD ignores status-only updates, so a message
    # may be stale once the health stays the same.
    messages: dict[str, str] = field(default_factory=dict)


@dataclass
class Watcher:
    """A watch (no update is missed, however short) in a thread of its own, re-opened until stopped."""

    kubeconfig: str
    errors: list[str] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Self:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        time.sleep(0.5)  # the watch is open before the caller goes on
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread:
            self.thread.join(timeout=15)

    def list_call(self, api: client.ApiClient) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        raise NotImplementedError

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        api = config.new_client_from_config(config_file=self.kubeconfig)
        fn, args, kwargs = self.list_call(api)
        resource_version: str | None = None
        while not self.stop_event.is_set():
            w = watch.Watch()
            try:
                extra: dict[str, Any] = {"timeout_seconds": 5}
                if resource_version:
                    extra["resource_version"] = resource_version
                for event in w.stream(fn, *args, **kwargs, **extra):
                    obj = event["object"]
                    if not isinstance(obj, dict):
                        obj = api.sanitize_for_serialization(obj)
                    resource_version = obj["metadata"]["resourceVersion"]
                    self.on_event(event["type"], obj)
                    if self.stop_event.is_set():
                        break
            except ApiException as exc:
                if exc.status == 410:  # expired: list again from now
                    resource_version = None
                else:
                    self.errors.append(f"watch: {exc.status} {exc.reason}")
                    time.sleep(0.2)
            except Exception as exc:
                self.errors.append(f"watch: {exc!r}")
                time.sleep(0.2)
            finally:
                w.stop()


@dataclass
class HealthRecorder(Watcher):
    """Every version of one Application, from before it is created: its health, sync status and each
    resource's health, and every object a sync of it pruned."""

    name: str = ""
    seen: list[Seen] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)

    def list_call(self, api: client.ApiClient) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        fn = client.CustomObjectsApi(api).list_namespaced_custom_object
        return fn, APP_GROUP, {"field_selector": f"metadata.name={self.name}"}

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        if kind not in ("ADDED", "MODIFIED"):
            return
        status = status_of(obj)
        op = status.get("operationState") or {}
        for r in (op.get("syncResult") or {}).get("resources") or []:
            if r.get("status") == "Pruned":
                key = f"{op.get('startedAt')} {r.get('kind')}/{r.get('namespace')}/{r.get('name')}"
                if key not in self.pruned:
                    self.pruned.append(key)
        resources = {
            f"{r.get('kind')}/{r.get('name')}": (r.get("health") or {}).get("status")
            for r in status.get("resources") or []
        }
        messages = {
            f"{r.get('kind')}/{r.get('name')}": (r.get("health") or {}).get("message") or ""
            for r in status.get("resources") or []
        }
        entry = Seen(time.monotonic(), health_of(obj), sync_of(obj), resources, messages)
        if not self.seen or (entry.health, entry.sync, entry.resources) != (
            self.seen[-1].health, self.seen[-1].sync, self.seen[-1].resources
        ):  # fmt: skip
            self.seen.append(entry)

    def healths(self) -> list[str | None]:
        """The Application's health values in order, consecutive repeats folded."""
        return [h for h, _ in itertools.groupby(s.health for s in self.seen)]

    def resource_healths(self, key: str) -> list[str | None]:
        return [
            h for h, _ in itertools.groupby(s.resources.get(key) for s in self.seen if key in s.resources)
        ]

    def mark(self) -> int:
        return len(self.seen)

    def since(self, mark: int) -> list[Seen]:
        return self.seen[mark:]


@dataclass
class PvcWatch(Watcher):
    """Every deletion of a PVC of one namespace (deleted, or marked for deletion), from its start."""

    namespace: str = ""
    deleted: list[str] = field(default_factory=list)

    def list_call(self, api: client.ApiClient) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        return client.CoreV1Api(api).list_namespaced_persistent_volume_claim, (self.namespace,), {}

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if kind == "DELETED" or meta.get("deletionTimestamp"):
            entry = f"{meta['name']} ({meta['uid'][:8]})"
            if entry not in self.deleted:
                self.deleted.append(entry)


def print_sequence(title: str, rec: HealthRecorder, start: int = 0) -> None:
    t0 = rec.seen[start].at if len(rec.seen) > start else 0.0
    lines = [
        f"  +{s.at - t0:6.2f}s app {s.health}/{s.sync}  "
        + ", ".join(f"{k}={v}" for k, v in sorted(s.resources.items()))
        + "".join(
            f"\n             {k}: {s.messages.get(k, '')[:160]}"
            for k, v in sorted(s.resources.items())
            if v in ("Degraded", "Missing") and s.messages.get(k)
        )
        for s in rec.since(start)
    ]
    print(f"\n{title}:\n" + "\n".join(lines), flush=True)


# -- objects in a namespace -------------------------------------------------------------------------
def pvcs(sb: Sandbox, ns: str) -> dict[str, Any]:
    """PVCs by name: (uid, deletionTimestamp)."""
    core = client.CoreV1Api(sb.api)
    return {
        p.metadata.name: (p.metadata.uid, p.metadata.deletion_timestamp)
        for p in core.list_namespaced_persistent_volume_claim(ns).items
    }


def namespaced_kinds(sb: Sandbox) -> list[str]:
    out = sb.kubectl("api-resources", "--verbs=list", "--namespaced", "-o", "name").stdout.split()
    # Events are records, not objects anyone owns.
    return [k for k in out if k not in ("events", "events.events.k8s.io")]


def objects_in(sb: Sandbox, ns: str, kinds: list[str]) -> list[tuple[str, str, list[str], bool]]:
    """(kind, name, finalizers, being deleted) of every object in the namespace."""
    out = sb.kubectl("get", ",".join(kinds), "-n", ns, "-o", "json", "--ignore-not-found").stdout
    items = json.loads(out or '{"items": []}')["items"] if out.strip() else []
    return [
        (
            i["kind"],
            i["metadata"]["name"],
            list(i["metadata"].get("finalizers") or []),
            bool(i["metadata"].get("deletionTimestamp")),
        )
        for i in items
    ]


def make_namespace(sb: Sandbox, prefix: str) -> str:
    core = client.CoreV1Api(sb.api)
    ns = f"{prefix}-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"e2e": "true"}}})
    kube.wait_for(lambda: kube.service_account_exists(core, ns, "default"), 30, "default service account")
    return ns


def delete_namespace(sb: Sandbox, ns: str) -> None:
    try:
        client.CoreV1Api(sb.api).delete_namespace(ns)
    except ApiException as exc:
        if exc.status != 404:
            raise


def clean_up(sb: Sandbox, name: str, ns: str, strict: bool) -> None:
    """Delete the Application (cascade) and its namespace. Not `strict` (a test already failed): bounded
    and quiet, an Application still there afterwards loses its finalizer, so nothing outlives the test."""
    try:
        delete_app(sb, name, timeout_s=120 if strict else 60)
    except (AssertionError, ApiException):
        if strict:
            raise
        with contextlib.suppress(ApiException):
            patch_app(sb, name, {"metadata": {"finalizers": None}})
    finally:
        delete_namespace(sb, ns)


def delete_app(sb: Sandbox, name: str, timeout_s: float = 120) -> None:
    """Delete an Application (its finalizer, if any, deletes what it deployed); wait until it is gone."""
    try:
        client.CustomObjectsApi(sb.api).delete_namespaced_custom_object(*APP_GROUP, name)
    except ApiException as exc:
        if exc.status != 404:
            raise
    kube.wait_for(lambda: get_app(sb, name) is None, timeout_s, f"Application {name} deleted")


# -- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def argo(sandbox: Sandbox) -> Iterator[None]:
    """Argo CD (repo-server, application controller, redis) up for this module, stopped at its end."""
    kubectl = str(sandbox.bin_dir / "kubectl")
    # `make test` built it already (make binaries); run directly with a cold cache, the build needs the
    # module proxy, which only the host's network namespace reaches.
    bins = netns.call_in_host(argocd.ensure_argocd_binaries, timeout_s=1800)
    started = time.monotonic()
    argocd.up(sandbox.cfg, sandbox.cfg.kubeconfig, kubectl=kubectl, bins=bins)
    print(f"\nArgo CD up in {time.monotonic() - started:.1f}s", flush=True)
    yield
    # Leave no Application behind for the next module: strip the finalizers of those a failed test left.
    api = client.CustomObjectsApi(sandbox.api)
    for app in api.list_namespaced_custom_object(*APP_GROUP)["items"]:
        name = app["metadata"]["name"]
        if app["metadata"].get("finalizers"):
            patch_app(sandbox, name, {"metadata": {"finalizers": None}})
        delete_app(sandbox, name, timeout_s=30)
    argocd.set_tracking_method(kubectl, sandbox.cfg.kubeconfig, "annotation")
    argocd.stop(sandbox.cfg)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitRepo]:
    path = tmp_path_factory.mktemp("argocd") / "gitops.git"
    yield GitRepo(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def mnist(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The quickstart's model, built and published to the sandbox's S3 (as `make demo` does)."""
    publish_mnist(sandbox.cfg.s3_endpoint, tmp_path_factory.mktemp("mnist"), CREDENTIALS)


@dataclass
class Quickstart:
    app: str
    ns: str
    path: str
    files: dict[str, str]
    recorder: HealthRecorder
    pvc_watch: PvcWatch
    created_at: float


@pytest.fixture(scope="module")
def quickstart(
    sandbox: Sandbox, operator: Operator, argo: None, repo: GitRepo, mnist: None
) -> Iterator[Quickstart]:
    """The quickstart committed to git and an Application syncing it into a namespace of its own (created
    here; the first test waits for it). The health recorder watches it from before its creation."""
    ns = make_namespace(sandbox, "argo-quickstart")
    name = ns  # one Application per namespace
    path = f"apps/{name}"
    files = quickstart_files(sandbox.cfg.s3_endpoint)
    for fname, text in files.items():
        repo.write(f"{path}/{fname}", text)
    repo.commit(f"{name}: the quickstart")
    recorder = HealthRecorder(sandbox.kubeconfig, name=name).start()
    pvc_watch = PvcWatch(sandbox.kubeconfig, namespace=ns).start()
    created_at = time.monotonic()
    create_app(sandbox, argocd.application(name, repo.url, path, ns))
    yield Quickstart(name, ns, path, files, recorder, pvc_watch, created_at)
    recorder.stop()
    pvc_watch.stop()
    clean_up(sandbox, name, ns, strict=False)


@pytest.fixture(scope="module")
def scorer_versions(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> None:
    workdir = tmp_path_factory.mktemp("argocd-scorer")
    publish(sandbox, workdir, "scorer/1", ADDER_PY, 1)
    publish(sandbox, workdir, "scorer/2", ADDER_PY, 2)
    publish(sandbox, workdir, "scorer-broken/3", FAILING_PY, 3)


# -- the quickstart, in order -------------------------------------------------------------------------
def test_the_quickstart_from_git_ends_synced_and_healthy_never_degraded(
    sandbox: Sandbox, quickstart: Quickstart, repo: GitRepo
) -> None:
    qs = quickstart
    app = wait_app(sandbox, qs.app, "Healthy", revision=repo.head())
    took = time.monotonic() - qs.created_at
    # What a user checks besides Argo CD: both objects Ready.
    sandbox.kubectl("wait", "-n", qs.ns, "--for=condition=Ready", f"tritonserver/{SERVER}", "--timeout=30s")
    sandbox.kubectl("wait", "-n", qs.ns, "--for=condition=Ready", "tritonmodel/mnist", "--timeout=30s")
    time.sleep(3)  # a late Degraded would still be caught
    print_sequence(
        f"quickstart: Synced and Healthy {took:.1f}s after the Application was created", qs.recorder
    )
    assert not qs.recorder.errors, qs.recorder.errors
    nothing_pruned(qs.recorder, qs.pvc_watch)
    managed = {(r["kind"], r["name"]) for r in status_of(app)["resources"]}
    assert managed == git_objects(qs.files), summary(app)
    healths = qs.recorder.healths()
    assert "Degraded" not in healths, f"the Application was Degraded on the way: {healths}"
    for key in ("TritonServer/triton", "TritonModel/mnist"):
        seen = qs.recorder.resource_healths(key)
        assert "Degraded" not in seen, f"{key} was Degraded on the way: {seen}"
    assert healths[-1] == "Healthy"


def test_two_resyncs_at_rest_stay_synced(sandbox: Sandbox, quickstart: Quickstart, repo: GitRepo) -> None:
    """The operator's writes (status, finalizers, defaults, its own annotations) are no drift: a hard
    refresh finds nothing out of sync and a sync changes nothing, twice."""
    qs = quickstart
    wait_app(sandbox, qs.app, "Healthy", revision=repo.head())
    server_before = get_cr(sandbox, qs.ns, "tritonservers", SERVER) or {}
    mark = qs.recorder.mark()
    for round_ in (1, 2):
        time.sleep(4)  # the operator refreshes status every 3 s here: let it write in between
        refresh(sandbox, qs.app, "hard")
        app = get_app(sandbox, qs.app)
        assert sync_of(app) == "Synced", f"round {round_}, after a hard refresh: {summary(app)}"
        op = sync(sandbox, qs.app)
        results = (op.get("syncResult") or {}).get("resources") or []
        print(
            f"\nresync {round_}: "
            + "; ".join(f"{r['kind']}/{r['name']}: {r.get('message')}" for r in results)
        )
        assert results and all(r.get("status") == "Synced" for r in results), results
        # Nothing of the operator's is drift: the sync applies the two kinds unchanged. (The Secret says
        # "configured" every time: its stringData is write-only, kubectl always sends it.)
        ours = [r for r in results if r["kind"] in ("TritonServer", "TritonModel")]
        assert len(ours) == 2 and all(str(r.get("message")).endswith(" unchanged") for r in ours), ours
        app = wait_app(sandbox, qs.app, "Healthy", timeout_s=60)
        assert all(r.get("status") == "Synced" for r in status_of(app)["resources"]), summary(app)
    time.sleep(2)
    print_sequence("quickstart: two resyncs at rest", qs.recorder, mark)
    states = {(s.health, s.sync) for s in qs.recorder.since(mark)}
    assert states <= {("Healthy", "Synced")}, f"left Synced/Healthy at rest: {states}"
    server_after = get_cr(sandbox, qs.ns, "tritonservers", SERVER) or {}
    assert server_after["metadata"]["generation"] == server_before["metadata"]["generation"]
    assert server_after["spec"] == server_before["spec"]


def test_an_unschedulable_gpu_request_is_degraded_and_its_revert_healthy(
    sandbox: Sandbox, quickstart: Quickstart, repo: GitRepo
) -> None:
    qs = quickstart
    wait_app(sandbox, qs.app, "Healthy", revision=repo.head())
    server_file = f"{qs.path}/tritonserver.yaml"
    original = repo.read(server_file)
    assert "gpus: 1" in original
    too_many = GPUS_PER_NODE + 1
    repo.write(server_file, original.replace("gpus: 1", f"gpus: {too_many}"))
    mark = qs.recorder.mark()
    pushed = repo.commit(f"{qs.app}: {too_many} GPUs per replica")
    started = time.monotonic()
    refresh(sandbox, qs.app)
    wait_health(sandbox, qs.app, "Degraded", 120)
    degraded_after = time.monotonic() - started
    app = get_app(sandbox, qs.app)
    assert (status_of(app).get("sync") or {}).get("revision") == pushed, summary(app)
    resource = {(r["kind"], r["name"]): r for r in status_of(app)["resources"]}
    assert (resource[("TritonServer", SERVER)].get("health") or {}).get("status") == "Degraded", summary(app)

    reverted = repo.revert_head()
    started = time.monotonic()
    refresh(sandbox, qs.app)
    wait_app(sandbox, qs.app, "Healthy", timeout_s=180, revision=reverted)
    healthy_after = time.monotonic() - started
    print_sequence(
        f"quickstart: {too_many} GPUs Degraded {degraded_after:.1f}s after the refresh, the revert Healthy "
        f"{healthy_after:.1f}s after its refresh",
        qs.recorder,
        mark,
    )
    server = get_cr(sandbox, qs.ns, "tritonservers", SERVER) or {}
    assert server["spec"]["resources"]["gpus"] == 1


def test_annotation_tracking_lists_and_prunes_no_operator_object(
    sandbox: Sandbox, quickstart: Quickstart, repo: GitRepo
) -> None:
    qs = quickstart
    kubectl = str(sandbox.bin_dir / "kubectl")
    assert argocd.tracking_method(kubectl, sandbox.cfg.kubeconfig) == "annotation"
    wait_app(sandbox, qs.app, "Healthy", revision=repo.head())
    assert_nothing_extraneous_nor_pruned(
        sandbox, qs.app, qs.ns, git_objects(qs.files), qs.recorder, qs.pvc_watch
    )


def nothing_pruned(recorder: HealthRecorder, pvc_watch: PvcWatch) -> None:
    """Raises once a sync of the Application pruned anything, or a PVC of the namespace went away."""
    if recorder.pruned or pvc_watch.deleted:
        raise AssertionError(
            f"Argo CD pruned {recorder.pruned or 'nothing'}; PVCs deleted: {pvc_watch.deleted or 'none'}"
        )


def assert_nothing_extraneous_nor_pruned(
    sb: Sandbox,
    app_name: str,
    ns: str,
    in_git: set[tuple[str, str]],
    recorder: HealthRecorder,
    pvc_watch: PvcWatch,
) -> None:
    """The Application lists only what is in git, nothing requires pruning, and a sync with prune leaves
    every operator-made object (PVCs above all) where it was; no sync ever pruned anything."""
    nothing_pruned(recorder, pvc_watch)
    claims = pvcs(sb, ns)
    assert claims, f"the operator made no PVC in {ns}"
    children = operator_children(sb, ns)
    app = get_app(sb, app_name)
    resources = status_of(app)["resources"]
    assert not [r for r in resources if r.get("requiresPruning")], summary(app)
    assert {(r["kind"], r["name"]) for r in resources} == in_git, summary(app)
    op = sync(sb, app_name, prune=True)
    pruned = [r for r in (op.get("syncResult") or {}).get("resources") or [] if r.get("status") == "Pruned"]
    assert not pruned, pruned
    time.sleep(5)  # an automated prune would have happened by now
    app = get_app(sb, app_name)
    assert sync_of(app) == "Synced" and not [
        r for r in status_of(app)["resources"] if r.get("requiresPruning")
    ], summary(app)
    assert pvcs(sb, ns) == claims, f"PVCs before the sync with prune {claims}, after {pvcs(sb, ns)}"
    assert operator_children(sb, ns) == children
    nothing_pruned(recorder, pvc_watch)


def operator_children(sb: Sandbox, ns: str) -> dict[str, str | None]:
    """uid by kind/name of what the operator made (Deployments, Services, PDBs, PVCs, Jobs) in `ns`."""
    apps = client.AppsV1Api(sb.api)
    core = client.CoreV1Api(sb.api)
    policy = client.PolicyV1Api(sb.api)
    found: dict[str, str | None] = {}
    for kind, items in (
        ("Deployment", apps.list_namespaced_deployment(ns).items),
        ("Service", core.list_namespaced_service(ns).items),
        ("PodDisruptionBudget", policy.list_namespaced_pod_disruption_budget(ns).items),
        ("PersistentVolumeClaim", core.list_namespaced_persistent_volume_claim(ns).items),
    ):
        for obj in items:
            if obj.metadata.deletion_timestamp:
                found[f"{kind}/{obj.metadata.name}"] = "being deleted"
            else:
                found[f"{kind}/{obj.metadata.name}"] = obj.metadata.uid
    return found


def test_cascade_delete_leaves_only_the_retained_pvc_and_nothing_stuck(
    sandbox: Sandbox, quickstart: Quickstart
) -> None:
    qs = quickstart
    kinds = namespaced_kinds(sandbox)
    claims = pvcs(sandbox, qs.ns)
    server = get_cr(sandbox, qs.ns, "tritonservers", SERVER) or {}
    assert server["spec"]["modelRepository"].get("retainOnDelete", True), "the quickstart keeps its PVC"
    app = get_app(sandbox, qs.app) or {}
    assert argocd.RESOURCES_FINALIZER in app["metadata"].get("finalizers", [])
    started = time.monotonic()
    delete_app(sandbox, qs.app, timeout_s=120)
    app_gone_after = time.monotonic() - started
    # Kept: the model PVC (retainOnDelete, the default) and what every namespace has.
    expected = {("PersistentVolumeClaim", name) for name in claims} | {
        ("ServiceAccount", "default"),
        ("ConfigMap", "kube-root-ca.crt"),
    }

    def only_expected_left() -> bool:
        left = objects_in(sandbox, qs.ns, kinds)
        return {(k, n) for k, n, _, _ in left} == expected and not any(deleting for *_, deleting in left)

    try:
        kube.wait_for(only_expected_left, 120, "everything but the retained PVC gone", interval_s=0.5)
    except AssertionError:
        left = objects_in(sandbox, qs.ns, kinds)
        stuck = [(k, n, f) for k, n, f, deleting in left if deleting]
        raise AssertionError(f"left in {qs.ns}: {left}; stuck on a finalizer: {stuck}") from None
    all_gone_after = time.monotonic() - started
    print(
        f"\ncascade delete: Application gone in {app_gone_after:.1f}s, everything but {sorted(claims)} gone "
        f"in {all_gone_after:.1f}s",
        flush=True,
    )
    assert {name: uid for name, (uid, _) in pvcs(sandbox, qs.ns).items()} == {
        name: uid for name, (uid, _) in claims.items()
    }
    nothing_pruned(qs.recorder, qs.pvc_watch)  # the PVC was never even marked for deletion
    # The user's own clean-up of what was kept (else a later Application named like the server would see it).
    core = client.CoreV1Api(sandbox.api)
    for name in claims:
        core.delete_namespaced_persistent_volume_claim(name, qs.ns)
    kube.wait_for(lambda: not pvcs(sandbox, qs.ns), 60, "the retained PVC deleted by its user")


def test_label_tracking_with_the_application_named_like_the_server_prunes_nothing(
    sandbox: Sandbox, operator: Operator, argo: None, repo: GitRepo, mnist: None
) -> None:
    kubectl = str(sandbox.bin_dir / "kubectl")
    kc = sandbox.cfg.kubeconfig
    ns = make_namespace(sandbox, "argo-label")
    # Label tracking: app.kubernetes.io/instance=<Application>, the label the operator's children carry.
    name = SERVER
    path = f"apps/{ns}"
    files = quickstart_files(sandbox.cfg.s3_endpoint)
    for fname, text in files.items():
        repo.write(f"{path}/{fname}", text)
    repo.commit(f"{ns}: the quickstart, under label tracking")
    argocd.set_tracking_method(kubectl, kc, "label", sandbox.cfg)  # no controller restart needed
    recorder = HealthRecorder(sandbox.kubeconfig, name=name).start()
    pvc_watch = PvcWatch(sandbox.kubeconfig, namespace=ns).start()
    try:
        create_app(sandbox, argocd.application(name, repo.url, path, ns))
        wait_app(
            sandbox,
            name,
            "Healthy",
            revision=repo.head(),
            fail_fast=lambda: nothing_pruned(recorder, pvc_watch),
        )
        # Argo CD applied with label tracking: the objects from git carry the instance label, no tracking id.
        server = get_cr(sandbox, ns, "tritonservers", SERVER) or {}
        assert server["metadata"]["labels"].get("app.kubernetes.io/instance") == name, server["metadata"]
        assert "argocd.argoproj.io/tracking-id" not in (server["metadata"].get("annotations") or {})
        sandbox.kubectl("wait", "-n", ns, "--for=condition=Ready", "tritonmodel/mnist", "--timeout=60s")
        time.sleep(3)  # the controller has seen every child the operator made
        print_sequence("label tracking", recorder)
        assert_nothing_extraneous_nor_pruned(sandbox, name, ns, git_objects(files), recorder, pvc_watch)
    except BaseException:
        print_sequence("label tracking (failed)", recorder)
        clean_up(sandbox, name, ns, strict=False)
        raise
    else:
        clean_up(sandbox, name, ns, strict=True)
    finally:
        recorder.stop()
        pvc_watch.stop()
        argocd.set_tracking_method(kubectl, kc, "annotation", sandbox.cfg)


# -- a canary rollout from git --------------------------------------------------------------------------
def scorer_files(endpoint: str, version: int, prefix: str) -> dict[str, str]:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3-credentials"},
        "type": "Opaque",
        "stringData": CREDENTIALS,
    }
    server = {
        "apiVersion": "tritonoperator.dev/v1alpha1",
        "kind": "TritonServer",
        "metadata": {"name": SERVER},
        "spec": {"replicas": 1, "resources": {"gpus": 1}, "modelRepository": {"size": "1Gi"}},
    }
    model = {
        "apiVersion": "tritonoperator.dev/v1alpha1",
        "kind": "TritonModel",
        "metadata": {"name": "scorer"},
        "spec": {
            "serverRef": {"name": SERVER},
            "version": version,
            "source": {
                "s3": {
                    "bucket": "models",
                    "prefix": prefix,
                    "endpoint": endpoint,
                    "region": "us-east-1",
                    "credentialsSecret": {"name": "s3-credentials"},
                }
            },
            "rollout": {
                "strategy": "Canary",
                "steps": [{"weight": 50, "pauseSeconds": 10}, {"weight": 100, "pauseSeconds": 0}],
                "analysis": {
                    "intervalSeconds": 5,
                    "minRequests": 30,
                    "maxFailureRatio": 0.05,
                    "maxLatencyRatio": 20,
                },
            },
        },
    }
    return {
        "secret.yaml": yaml.safe_dump(secret),
        "tritonserver.yaml": yaml.safe_dump(server),
        "tritonmodel.yaml": yaml.safe_dump(model),
    }


def test_a_canary_from_git_progresses_promotes_and_a_failing_one_rolls_back_degraded(
    sandbox: Sandbox, operator: Operator, argo: None, repo: GitRepo, scorer_versions: None
) -> None:
    ns = make_namespace(sandbox, "argo-canary")
    name = ns
    path = f"apps/{ns}"
    endpoint = sandbox.cfg.s3_endpoint

    def push(version: int, prefix: str, message: str) -> str:
        for fname, text in scorer_files(endpoint, version, prefix).items():
            repo.write(f"{path}/{fname}", text)
        return repo.commit(f"{ns}: {message}")

    recorder = HealthRecorder(sandbox.kubeconfig, name=name).start()
    load: Load | None = None
    try:
        head = push(1, "scorer/1", "scorer version 1")
        create_app(sandbox, argocd.application(name, repo.url, path, ns))
        wait_app(sandbox, name, "Healthy", revision=head)
        ip = kube.cluster_ip(client.CoreV1Api(sandbox.api), ns, SERVER)
        load = Load([ip], max_s=300).start()

        mark = recorder.mark()
        head = push(2, "scorer/2", "scorer version 2, canaried")
        refresh(sandbox, name)
        wait_health(sandbox, name, "Progressing", 120)
        kube.wait_for(
            lambda: (
                (r := rollout_of(sandbox, ns)).get("phase") == "Progressing" and r.get("canaryVersion") == "2"
            ),
            120,
            "the operator's canary of version 2",
            interval_s=0.2,
        )
        wait_app(sandbox, name, "Healthy", timeout_s=180, revision=head)
        print_sequence("canary of version 2", recorder, mark)
        # Ready (so Healthy) comes with the promotion; stableVersion follows within a pass.
        kube.wait_for(
            lambda: (
                (r := rollout_of(sandbox, ns)).get("phase") == "Promoted" and r.get("stableVersion") == "2"
            ),
            30,
            f"version 2 promoted (rollout: {rollout_of(sandbox, ns)})",
        )
        assert health_of(get_app(sandbox, name)) == "Healthy"
        healths = [h for h, _ in itertools.groupby(s.health for s in recorder.since(mark))]
        assert "Progressing" in healths and "Degraded" not in healths, healths

        mark = recorder.mark()
        head = push(3, "scorer-broken/3", "scorer version 3, which fails 1 request in 5")
        refresh(sandbox, name)
        wait_health(sandbox, name, "Progressing", 120)
        kube.wait_for(
            lambda: (
                (r := rollout_of(sandbox, ns)).get("phase") == "Progressing" and r.get("canaryVersion") == "3"
            ),
            120,
            "the operator's canary of version 3",
            interval_s=0.2,
        )
        wait_health(sandbox, name, "Degraded", 180)
        rolled_back = rollout_of(sandbox, ns)
        print_sequence("canary of the failing version 3", recorder, mark)
        assert rolled_back.get("phase") == "RolledBack" and rolled_back.get("stableVersion") == "2", (
            rolled_back
        )
        app = get_app(sandbox, name)
        assert sync_of(app) == "Synced" and (status_of(app).get("sync") or {}).get("revision") == head, (
            summary(app)
        )
        load.finish()
        assert load.ok["http"] > 0 and load.ok["grpc"] > 0
        assert all("version 2 is broken" in f.message for f in load.failed), load.failed[:5]
    except BaseException:
        print_sequence("canary (failed)", recorder)
        clean_up(sandbox, name, ns, strict=False)
        raise
    else:
        clean_up(sandbox, name, ns, strict=True)
    finally:
        if load is not None:
            load.finish()
        recorder.stop()
