"""The operator as users run it: installed by README's own commands (`helm install` from charts/ into
its own namespace), its pod run by the sandbox's pod runner with what a kubelet gives a pod (the
in-cluster service address, the chart's ServiceAccount token and CA at their fixed path), so every
permission it lacks is a real 403.

Same interface as conftest.OperatorProcess (start/stop/restart/kill/log/metrics_url/running), so the
end-to-end suite runs against either; the session's `operator` fixture is this one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes import client

from sandbox import procs
from sandbox.config import REPO_ROOT
from sandbox.readme import readme_commands
from tests.e2e import kube

if TYPE_CHECKING:
    from tests.e2e.conftest import Sandbox

CHART = REPO_ROOT / "charts" / "triton-operator"
NAMESPACE = "triton-operator"
RELEASE = "triton-operator"
# The Pod Security Standard README tells platform teams to enforce on the operator's namespace.
PSS_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


class ChartOperator:
    """The chart-installed operator in the sandbox: README's release `triton-operator` in the namespace
    `triton-operator` (README's commands name both)."""

    def __init__(self, sandbox: Sandbox, helm: str, status_period_s: float = 3):
        self.sandbox = sandbox
        self.helm = helm
        self.namespace = NAMESPACE
        self.release = RELEASE
        self.status_period_s = status_period_s
        self.installed = False
        # The chart the release was last installed from, when not charts/triton-operator.
        self.installed_chart: Path | None = None
        self.selector = f"app.kubernetes.io/name=triton-operator,app.kubernetes.io/instance={RELEASE}"

    # -- README's commands ----------------------------------------------------------------------------
    def run_readme(self, section: str, chart: Path | None = None) -> None:
        """Run README's commands of `section` as written (in the repository, helm and kubectl on PATH);
        `chart` stands in for `charts/triton-operator` (an older release's package, say)."""
        env = {**self.sandbox.env()}
        env["PATH"] = f"{Path(self.helm).parent}:{env['PATH']}"
        for line in readme_commands(section):
            if chart is not None:
                line = line.replace("charts/triton-operator ", f"{chart} ")
            done = subprocess.run(
                ["bash", "-c", line], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, f"README {section}: `{line}` failed: {done.stderr}"
        self.installed = section != "uninstall"
        if section == "upgrade":
            self.installed_chart = None

    def tune_for_tests(self) -> None:
        """Tests refresh status faster than the operator's default (10 s) to keep waits short: the
        chart's `extraEnv`, by `helm upgrade --reuse-values` (a rolling upgrade, like any other)."""
        env = [{"name": "TRITON_OPERATOR_STATUS_PERIOD", "value": str(self.status_period_s)}]
        values = self.sandbox.cfg.root / f"{self.release}-test-values.json"
        values.write_text(json.dumps({"extraEnv": env}))
        upgrade = ["upgrade", self.release, str(CHART), "--reuse-values", "-f", str(values)]
        self.run_helm(*upgrade, "--wait", "--timeout=180s")
        self._wait_ready()

    # -- helm ---------------------------------------------------------------------------------------

    def run_helm(self, *args: str, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.helm, *args, "--namespace", self.namespace],
            env=self.sandbox.env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done

    def uninstall(self) -> None:
        self.run_readme("uninstall")
        kube.wait_for(lambda: not self.pods(), 60, "the operator's pods to be gone")

    def delete_namespace(self) -> None:
        """Leftovers of an earlier run (SANDBOX_KEEP=1) or of an uninstall: README's install creates it."""
        if self.sandbox.kubectl("get", "namespace", self.namespace, check=False).returncode == 0:
            self.sandbox.kubectl("delete", "namespace", self.namespace, "--timeout=120s")

    # -- the pods -----------------------------------------------------------------------------------
    def pods(self) -> list[Any]:
        core = client.CoreV1Api(self.sandbox.api)
        return [
            p
            for p in core.list_namespaced_pod(self.namespace, label_selector=self.selector).items
            if not p.metadata.deletion_timestamp
        ]

    def ready_pods(self) -> list[Any]:
        return kube.ready_pods(client.CoreV1Api(self.sandbox.api), self.namespace, self.selector)

    def _runner_view(self) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.sandbox.cfg.ports['podrunner']}/pods"
        with urllib.request.urlopen(url, timeout=3) as resp:
            return [p for p in json.load(resp) if p["namespace"] == self.namespace]

    def pids(self) -> dict[str, int]:
        """The operator process of each running operator pod, by pod name."""
        return {
            p["name"]: c["pid"]
            for p in self._runner_view()
            for c in p["containers"]
            if c["name"] == "operator" and c["pid"]
        }

    @property
    def metrics_url(self) -> str:
        pods = self.ready_pods()
        assert pods, "no ready operator pod"
        return f"http://{pods[0].status.pod_ip}:8081/metrics"

    def running(self) -> bool:
        return bool(self.pids())

    def _wait_ready(self, replicas: int = 1) -> None:
        kube.wait_for(
            lambda: len(self.ready_pods()) >= replicas and len(self.pids()) >= replicas,
            120,
            f"{replicas} ready operator pod(s) in {self.namespace} (logs: {self.log_paths()})",
        )

    def scale(self, replicas: int) -> None:
        self.sandbox.kubectl(
            "scale", "-n", self.namespace, f"deployment/{self.release}", f"--replicas={replicas}"
        )

    # -- the OperatorProcess interface --------------------------------------------------------------
    def install(self, chart: Path | None = None) -> None:
        """README's install (into a namespace that does not exist yet); this chart's release is then
        tuned for tests (an older chart may not know the value)."""
        if (
            subprocess.run(
                [self.helm, "status", self.release, "--namespace", self.namespace],
                env=self.sandbox.env(),
                capture_output=True,
                check=False,
            ).returncode
            == 0
        ):
            self.run_readme("uninstall")
        self.delete_namespace()
        self.run_readme("install", chart=chart)
        self.installed_chart = chart
        self._wait_ready()
        if chart is None:
            self.tune_for_tests()

    def start(self) -> None:
        if not self.installed:
            self.install()
        else:
            self.scale(1)
            self._wait_ready()

    def stop(self) -> None:
        """Scale to 0: the pod gets SIGTERM and its grace period, like a drain or `kubectl scale`."""
        self.scale(0)
        kube.wait_for(lambda: not self.pods() and not self.pids(), 90, "the operator pod to stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL of the operator process: no chance to finish anything (the runner restarts the
        container, as a kubelet would, after its back-off)."""
        for pid in self.pids().values():
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(procs.pid_alive(pid) for pid in self.pids().values()):
            time.sleep(0.1)

    def log_paths(self) -> list[Path]:
        pods_dir = self.sandbox.cfg.pods_dir
        return sorted(pods_dir.glob(f"{self.namespace}_*/operator.log"))

    def log(self) -> str:
        """The running operator pods' container logs (what `kubectl logs` would show)."""
        return "".join(p.read_text(errors="replace") for p in self.log_paths() if p.exists())
