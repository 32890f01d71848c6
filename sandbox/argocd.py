"""A real Argo CD for the sandbox, started on demand (the Argo CD e2e tests' fixture), not with every sandbox.

`up(cfg, kubeconfig)` installs Argo CD's CRDs and its base ConfigMaps and Secret in the namespace `argocd`,
an AppProject `default` (argocd-server would create it; none runs here), the project's health checks
the way manifests/argocd/argocd-cm-patch.yaml says (`kubectl -n argocd patch configmap argocd-cm
--patch-file ...`), the tracking method (argocd-cm `application.resourceTrackingMethod`) and a
`server.secretkey` in argocd-secret (argocd-server would generate it; without one every component
ignores later changes of argocd-cm, a tracking method switch included), then starts
three processes of the sandbox: Debian's redis-server (Argo CD's cache), argocd-repo-server and
argocd-application-controller, and waits until each answers. The controller reaches the in-cluster
destination (`https://kubernetes.default.svc`) through the sandbox's kubeconfig
(ARGOCD_FAKE_IN_CLUSTER=true). No API server, UI, Dex, ApplicationSet or notifications controller:
Applications are created, refreshed (`argocd.argoproj.io/refresh` annotation) and synced (their
`operation` field) with kubectl, as `argocd app sync` does through the API server.

The one binary comes from sandbox/build-argocd.sh (cached), each component by ARGOCD_BINARY_NAME.
Ports are 127.0.0.1 ports of the slot's second block (config.SandboxConfig.extra_base_port, offsets in
`PORT_OFFSETS`), except that the controller's metrics port binds every address (it has no address flag):
no pod port can clash with it. Processes start through `spawn` (default `procs.spawn`: inside the
sandbox's network namespace); `stop` (or the sandbox's `down`) ends them. Call `up` from where the
sandbox's clients run (its readiness checks dial 127.0.0.1 there).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sandbox import procs
from sandbox.config import REPO_ROOT, SandboxConfig
from sandbox.readme import readme_commands

VERSION = "v3.2.11"
NAMESPACE = "argocd"
PROJECT = "default"
GROUP = "argoproj.io"
IN_CLUSTER = "https://kubernetes.default.svc"
RESOURCES_FINALIZER = "resources-finalizer.argocd.argoproj.io"
REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"
TRACKING_KEY = "application.resourceTrackingMethod"
TrackingMethod = Literal["annotation", "label", "annotation+label"]
BUILD_SCRIPT = REPO_ROOT / "sandbox" / "build-argocd.sh"

# 127.0.0.1 ports, as offsets from cfg.extra_base_port (the slot's second block, 10 wide).
PORT_OFFSETS = {
    "redis": 0,
    "repo-server": 1,  # gRPC, plaintext (--disable-tls)
    "repo-server-metrics": 2,  # /metrics and /healthz
    "controller-metrics": 3,  # /metrics and /healthz; binds every address (no flag for it)
}
REDIS = "argocd-redis"
REPO_SERVER = "argocd-repo-server"
CONTROLLER = "argocd-application-controller"
COMPONENTS = (REDIS, REPO_SERVER, CONTROLLER)  # start order; stopped in reverse
START_TIMEOUT_S = 90.0


def log(msg: str) -> None:
    print(f"argocd: {msg}", file=sys.stderr, flush=True)


class ArgoCDError(RuntimeError):
    """Argo CD did not come up; the message says what was seen and where the logs are."""


@dataclass(frozen=True)
class ArgoCDBinaries:
    dir: Path

    @property
    def argocd(self) -> str:
        return str(self.dir / "argocd")

    @property
    def crds(self) -> list[Path]:
        return sorted((self.dir / "manifests" / "crds").glob("*.yaml"))

    @property
    def base_config(self) -> list[Path]:
        return sorted((self.dir / "manifests" / "base" / "config").glob("*.yaml"))

    @property
    def hack_dir(self) -> Path:
        """Holds git-verify-wrapper.sh, which the repo-server looks up on PATH."""
        return self.dir / "hack"


def ensure_argocd_binaries() -> ArgoCDBinaries:
    """Build (first time: about 6 min on 2 cores) or find the argocd binary and its manifests in the cache."""
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ArgoCDError(f"{BUILD_SCRIPT.name} failed (its last line above says why)")
    return ArgoCDBinaries(Path(proc.stdout.strip().splitlines()[-1]))


def redis_server() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise ArgoCDError(
            "redis-server is not installed (Argo CD's cache): apt-get install redis-server (.ci/run does)"
        )
    return found


# -- where things are -----------------------------------------------------------------------------
def ports(cfg: SandboxConfig) -> dict[str, int]:
    return {name: cfg.extra_base_port + offset for name, offset in PORT_OFFSETS.items()}


def state_dir(cfg: SandboxConfig) -> Path:
    return cfg.root / "argocd"


def log_path(cfg: SandboxConfig, component: str) -> Path:
    return cfg.log_dir / f"{component}.log"


def app_project() -> dict[str, Any]:
    """The project every Application names: any repository, any destination, any kind."""
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": PROJECT, "namespace": NAMESPACE},
        "spec": {
            "sourceRepos": ["*"],
            "destinations": [{"server": "*", "namespace": "*"}],
            "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
        },
    }


def application(
    name: str,
    repo_url: str,
    path: str,
    namespace: str,
    *,
    revision: str = "HEAD",
    automated: bool = True,
    prune: bool = True,
    self_heal: bool = True,
    cascade: bool = True,
) -> dict[str, Any]:
    """An Application syncing the plain manifests under `path` of `repo_url` into `namespace` of the
    in-cluster destination. `cascade`: the resources finalizer (deleting the Application deletes what it
    deployed, foreground)."""
    app: dict[str, Any] = {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "project": PROJECT,
            "source": {"repoURL": repo_url, "path": path, "targetRevision": revision},
            "destination": {"server": IN_CLUSTER, "namespace": namespace},
        },
    }
    if cascade:
        app["metadata"]["finalizers"] = [RESOURCES_FINALIZER]
    if automated:
        app["spec"]["syncPolicy"] = {"automated": {"prune": prune, "selfHeal": self_heal}}
    return app


def sync_operation(prune: bool = True) -> dict[str, Any]:
    """The `operation` a sync request writes on an Application (what `argocd app sync` sends)."""
    return {
        "initiatedBy": {"username": "e2e"},
        "sync": {"prune": prune, "syncStrategy": {"hook": {}}},
    }


# -- process arguments ----------------------------------------------------------------------------
def redis_argv(cfg: SandboxConfig) -> list[str]:
    return [
        redis_server(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(ports(cfg)["redis"]),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(state_dir(cfg)),
        "--loglevel",
        "warning",
    ]


def repo_server_argv(cfg: SandboxConfig, bins: ArgoCDBinaries) -> list[str]:
    p = ports(cfg)
    return [
        bins.argocd,
        "--address",
        "127.0.0.1",
        "--port",
        str(p["repo-server"]),
        "--metrics-address",
        "127.0.0.1",
        "--metrics-port",
        str(p["repo-server-metrics"]),
        "--redis",
        f"127.0.0.1:{p['redis']}",
        "--disable-tls",
        "--logformat",
        "text",
    ]


def controller_argv(cfg: SandboxConfig, bins: ArgoCDBinaries, kubeconfig: Path) -> list[str]:
    p = ports(cfg)
    return [
        bins.argocd,
        f"--kubeconfig={kubeconfig}",
        "--namespace",
        NAMESPACE,
        "--redis",
        f"127.0.0.1:{p['redis']}",
        "--repo-server",
        f"127.0.0.1:{p['repo-server']}",
        "--repo-server-plaintext",
        "--metrics-port",
        str(p["controller-metrics"]),
        # Resource health in the Application's status.resources (where a user, and the tests, read it).
        "--persist-resource-health",
        "--logformat",
        "text",
    ]


def component_env(
    cfg: SandboxConfig, bins: ArgoCDBinaries, kubeconfig: Path, binary_name: str
) -> dict[str, str]:
    tmp = state_dir(cfg) / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "ARGOCD_BINARY_NAME": binary_name,
        "PATH": f"{bins.hack_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "KUBECONFIG": str(kubeconfig),
        # The in-cluster destination through KUBECONFIG (there is no service account token here).
        "ARGOCD_FAKE_IN_CLUSTER": "true",
        "ARGOCD_GPG_ENABLED": "false",
        # The repo-server's clones and the controller's scratch files: under the sandbox, removed by stop.
        "TMPDIR": str(tmp),
    }


# -- lifecycle ------------------------------------------------------------------------------------
def up(
    cfg: SandboxConfig,
    kubeconfig: Path,
    spawn: procs.Spawn = procs.spawn,
    *,
    kubectl: str | None = None,
    bins: ArgoCDBinaries | None = None,
    tracking_method: TrackingMethod = "annotation",
    timeout_s: float = START_TIMEOUT_S,
) -> None:
    """Install Argo CD's CRDs, ConfigMaps, project and the project's health checks, then start redis, the
    repo-server and the application controller; returns once each answers. Idempotent: a running Argo CD
    is reused (its tracking method set to `tracking_method`)."""
    kubectl = kubectl or default_kubectl()
    if is_running(cfg):
        set_tracking_method(kubectl, kubeconfig, tracking_method, cfg)
        return
    stop(cfg)
    started = time.monotonic()
    bins = bins or ensure_argocd_binaries()
    redis_server()  # fail before anything is installed
    if not bins.crds or not bins.base_config:
        raise ArgoCDError(f"no manifests in {bins.dir}; delete it and re-run {BUILD_SCRIPT.name}")
    # The Application CRD is too big for client-side apply's last-applied annotation.
    applied = _kubectl(
        kubectl,
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-o",
        "name",
        *procs.file_args(bins.crds),
    )
    crd_names = [line for line in applied.split() if line.startswith("customresourcedefinition")]
    # Right after the create, a CRD's status.conditions is null and `kubectl wait` fails instead of
    # waiting ("<nil> is of the type <nil>"): retry it.
    deadline = time.monotonic() + 60
    while True:
        try:
            _kubectl(kubectl, kubeconfig, "wait", "--for=condition=Established", "--timeout=30s", *crd_names)
            break
        except ArgoCDError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    _kubectl(kubectl, kubeconfig, "apply", "--server-side", "-f", "-", stdin=json.dumps(namespace))
    _kubectl(
        kubectl,
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-n",
        NAMESPACE,
        *procs.file_args(bins.base_config),
    )
    _kubectl(kubectl, kubeconfig, "apply", "--server-side", "-f", "-", stdin=json.dumps(app_project()))
    ensure_secret_key(kubectl, kubeconfig)
    install_health_checks(kubectl, kubeconfig)
    set_tracking_method(kubectl, kubeconfig, tracking_method)
    applied_at = time.monotonic()

    state = state_dir(cfg)
    state.mkdir(parents=True, exist_ok=True)
    p = ports(cfg)
    try:
        spawn(cfg, REDIS, redis_argv(cfg))
        deadline = time.monotonic() + timeout_s
        _wait("redis PING", lambda: redis_ping(p["redis"]), cfg, deadline)
        spawn(
            cfg, REPO_SERVER, repo_server_argv(cfg, bins), component_env(cfg, bins, kubeconfig, REPO_SERVER)
        )
        _wait(
            "the repo-server's /healthz", lambda: http_ok(p["repo-server-metrics"], "/healthz"), cfg, deadline
        )
        spawn(
            cfg,
            CONTROLLER,
            controller_argv(cfg, bins, kubeconfig),
            component_env(cfg, bins, kubeconfig, CONTROLLER),
        )
        _wait(
            "the controller's /healthz", lambda: http_ok(p["controller-metrics"], "/healthz"), cfg, deadline
        )
    except BaseException:
        stop(cfg)
        raise
    done = time.monotonic()
    log(
        f"Argo CD {VERSION} up in {done - started:.1f}s (manifests {applied_at - started:.1f}s, "
        f"redis + repo-server + application-controller {done - applied_at:.1f}s); "
        f"tracking method {tracking_method}; logs in {cfg.log_dir}"
    )


def stop(cfg: SandboxConfig) -> None:
    """Stop the controller, the repo-server and redis (nothing else of the sandbox); remove their files.
    What they installed in the cluster (CRDs, the argocd namespace, Applications) stays."""
    for name in reversed(COMPONENTS):
        pid = procs.pid_of(cfg, name)
        if pid:
            procs.stop([pid], grace_s=10)
        with contextlib.suppress(FileNotFoundError):
            (cfg.run_dir / f"{name}.pid").unlink()
    shutil.rmtree(state_dir(cfg), ignore_errors=True)


def is_running(cfg: SandboxConfig) -> bool:
    return all(procs.pid_of(cfg, c) for c in COMPONENTS)


# -- settings -------------------------------------------------------------------------------------
def install_health_checks(kubectl: str, kubeconfig: Path) -> None:
    """The project's Lua health checks, installed by README's own command (its `argocd` block)."""
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PATH": f"{Path(kubectl).parent}:{os.environ['PATH']}",
    }
    for line in readme_commands("argocd"):
        done = subprocess.run(
            ["bash", "-c", line], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise ArgoCDError(f"README's `{line}` failed: {done.stderr.strip()}")


def ensure_secret_key(kubectl: str, kubeconfig: Path) -> None:
    """argocd-secret's `server.secretkey`, which argocd-server generates on its first start. None runs
    here, and without it every component ignores later changes of argocd-cm ("Unable to parse updated
    settings: server.secretkey is missing"): the controller would keep the tracking method and health
    checks it started with."""
    out = _kubectl(
        kubectl, kubeconfig, "-n", NAMESPACE, "get", "secret", "argocd-secret", "-o", "jsonpath={.data}"
    )
    if "server.secretkey" in json.loads(out or "{}"):
        return
    patch = json.dumps({"stringData": {"server.secretkey": secrets.token_urlsafe(32)}})
    _kubectl(
        kubectl, kubeconfig, "-n", NAMESPACE, "patch", "secret", "argocd-secret", "--type=merge", "-p", patch
    )


def set_tracking_method(
    kubectl: str,
    kubeconfig: Path,
    method: TrackingMethod,
    cfg: SandboxConfig | None = None,
    timeout_s: float = 30,
) -> None:
    """argocd-cm `application.resourceTrackingMethod`. A running application controller takes a change
    without a restart: it watches argocd-cm and, when the tracking method differs, invalidates its cluster
    cache (rebuilt on its next use, objects attributed to Applications the new way). With `cfg` and the
    controller running, this returns once the controller has logged that invalidation."""
    if tracking_method(kubectl, kubeconfig) == method:
        return
    controller_log = log_path(cfg, CONTROLLER) if cfg is not None and procs.pid_of(cfg, CONTROLLER) else None
    offset = controller_log.stat().st_size if controller_log is not None else 0
    patch = json.dumps({"data": {TRACKING_KEY: method}})
    _kubectl(
        kubectl, kubeconfig, "-n", NAMESPACE, "patch", "configmap", "argocd-cm", "--type=merge", "-p", patch
    )
    if cfg is None or controller_log is None:
        return
    log_file = controller_log

    def invalidated() -> bool:
        with open(log_file, "rb") as f:
            f.seek(offset)
            return b"live state cache invalidated" in f.read()

    _wait(f"the controller to take tracking method {method}", invalidated, cfg, time.monotonic() + timeout_s)


def tracking_method(kubectl: str, kubeconfig: Path) -> str:
    out = _kubectl(
        kubectl, kubeconfig, "-n", NAMESPACE, "get", "configmap", "argocd-cm", "-o", "jsonpath={.data}"
    )
    data: dict[str, str] = json.loads(out or "{}")
    return data.get(TRACKING_KEY, "annotation")


# -- probes ---------------------------------------------------------------------------------------
def http_ok(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


# -- helpers --------------------------------------------------------------------------------------
def default_kubectl() -> str:
    found = shutil.which("kubectl")
    if found:
        return found
    from sandbox.config import ensure_binaries

    return ensure_binaries().path("kubectl")


def _kubectl(kubectl: str, kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    return procs.kubectl(kubectl, kubeconfig, *args, stdin=stdin, error=ArgoCDError, shown=3)


def _wait(what: str, check: Callable[[], bool], cfg: SandboxConfig, deadline: float) -> None:
    while True:
        with contextlib.suppress(Exception):
            if check():
                return
        for name in COMPONENTS:
            pidfile = cfg.run_dir / f"{name}.pid"
            if pidfile.exists() and not procs.pid_of(cfg, name):
                raise ArgoCDError(f"{name} exited while waiting for {what}; see {log_path(cfg, name)}")
        if time.monotonic() > deadline:
            raise ArgoCDError(
                f"timed out waiting for {what}; logs in {cfg.log_dir} ({', '.join(COMPONENTS)})"
            )
        time.sleep(0.2)
