"""Two operator replicas with --leader-election (issue 11): one acts, the other waits; kill the leader
and the standby takes over within lease duration + retry period; stop it gracefully and the handover
takes about a retry period. Each replica watches only the test's namespace and keeps its Lease there,
so an operator the session runs elsewhere (the `operator` fixture) changes nothing here.
"""

from __future__ import annotations

import datetime
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sandbox import cluster
from tests.e2e import kube
from tests.e2e.conftest import OperatorProcess, Sandbox

# alone: takeover within lease + retry + a second or two of slack, which a loaded machine would eat.
pytestmark = [pytest.mark.e2e, pytest.mark.alone]

GROUP, VERSION, PLURAL = "tritonoperator.dev", "v1alpha1", "tritonservers"
LEASE = "triton-operator-e2e"
# client-go's defaults, which the operator keeps: the figures the chart's README states.
LEASE_DURATION_S, RENEW_DEADLINE_S, RETRY_PERIOD_S = 15, 10, 2
# What a loaded 2-core sandbox adds to the bounds: a read and a write of the Lease, a process stopping.
SLACK_S = 3.0


class ElectedOperator(OperatorProcess):
    """`triton-operator run --leader-election` on one namespace, as the chart runs it (POD_NAME set)."""

    def __init__(self, sandbox: Sandbox, log_path: Path, namespace: str, pod_name: str, *extra_args: str):
        super().__init__(sandbox, log_path, env={"POD_NAME": pod_name})
        self.namespace = namespace
        self.pod_name = pod_name
        self.extra_args = extra_args

    def start(self) -> None:
        env = {
            **self.sandbox.env(),
            "TRITON_OPERATOR_STATUS_PERIOD": str(self.status_period_s),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "triton_operator",
                    "run",
                    "--health-address=127.0.0.1",
                    f"--health-port={self.health_port}",
                    f"--namespace={self.namespace}",
                    "--leader-election",
                    f"--leader-election-namespace={self.namespace}",
                    f"--leader-election-lease-name={LEASE}",
                    *self.extra_args,
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # A standby answers /healthz too (the chart's probes must not restart it).
        kube.wait_for(
            lambda: cluster.http_ok(f"http://127.0.0.1:{self.health_port}/healthz"),
            60,
            f"{self.pod_name}'s /healthz (log: {self.log_path})",
        )

    def applied(self) -> float:
        """TritonServer applies this process made, from its own /metrics (0 for a standby)."""
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=3) as resp:
                text = resp.read().decode()
        except OSError:
            return 0.0
        pattern = r'^triton_operator_reconcile_total\{kind="TritonServer",result="ok",step="apply"\} (\S+)$'
        return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.MULTILINE))

    def kopf_lines(self) -> list[str]:
        """Lines of kopf's loggers: a standby has started no kopf, so it writes none."""
        return [line for line in self.log().splitlines() if re.match(r"^\[[^]]+\] kopf\.", line)]


def lease_spec(sb: Sandbox, ns: str) -> Any:
    try:
        return client.CoordinationV1Api(sb.api).read_namespaced_lease(LEASE, ns).spec
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def holder(sb: Sandbox, ns: str) -> str | None:
    spec = lease_spec(sb, ns)
    return spec.holder_identity if spec is not None else None


def create_server(sb: Sandbox, ns: str, name: str) -> None:
    """A TritonServer of no pods: reconciling it writes children and status, and runs no Triton."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TritonServer",
        "metadata": {"name": name},
        "spec": {"replicas": 0, "modelRepository": {"size": "1Gi"}},
    }
    client.CustomObjectsApi(sb.api).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)


def report(what: str, seconds: float, bound: float) -> None:
    print(f"\nleader election: {what} took {seconds:.1f} s (bound {bound:.1f} s)")


def test_one_leader_acts_and_a_standby_takes_over(
    sandbox: Sandbox, crds: None, namespace: str, tmp_path: Path
) -> None:
    a = ElectedOperator(sandbox, tmp_path / "a.log", namespace, "op-a")
    b = ElectedOperator(sandbox, tmp_path / "b.log", namespace, "op-b")
    restarted_a = ElectedOperator(sandbox, tmp_path / "a2.log", namespace, "op-a")
    try:
        # -- one leader, one idle standby ---------------------------------------------------------
        a.start()
        kube.wait_for(
            lambda: (holder(sandbox, namespace) or "").startswith("op-a_"), 30, "op-a holds the lease"
        )
        b.start()
        waiting = f"waiting to become the leader of lease {namespace}/{LEASE} (held by op-a_"
        kube.wait_for(lambda: waiting in b.log(), 30, f"op-b waits (log: {b.log_path})")
        create_server(sandbox, namespace, "first")
        kube.wait_for(lambda: a.applied() >= 1, 60, f"op-a applies TritonServer first (log: {a.log_path})")
        time.sleep(2 * RETRY_PERIOD_S)  # time for a standby to misbehave, if it would
        assert b.applied() == 0 and b.kopf_lines() == [] and "first" not in b.log()
        assert b.log().count("waiting to become the leader") == 1  # one line, not one per poll

        # -- SIGKILL the leader: the standby takes over within lease duration + retry period ------
        last_renewal_of_a = lease_spec(sandbox, namespace).renew_time
        killed = time.monotonic()
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(timeout=10)
        create_server(sandbox, namespace, "second")  # made while no one acts
        kube.wait_for(
            lambda: (holder(sandbox, namespace) or "").startswith("op-b_"),
            LEASE_DURATION_S + RETRY_PERIOD_S + 30,
            "op-b takes the lease over",
            interval_s=0.2,
        )
        takeover_s = time.monotonic() - killed
        report("takeover after SIGKILL of the leader", takeover_s, LEASE_DURATION_S + RETRY_PERIOD_S)
        assert takeover_s <= LEASE_DURATION_S + RETRY_PERIOD_S + SLACK_S
        # Never two acting: op-b took over a full lease duration after op-a's last renewal, while op-a
        # (had it been alive but cut off) would have stopped a renew deadline after it.
        taken = lease_spec(sandbox, namespace)
        gap = (taken.acquire_time - last_renewal_of_a).total_seconds()
        assert gap >= LEASE_DURATION_S - 1 > RENEW_DEADLINE_S, gap
        assert taken.lease_transitions == 1
        kube.wait_for(lambda: b.applied() >= 2, 60, f"op-b applies first and second (log: {b.log_path})")
        assert f"became the leader of lease {namespace}/{LEASE}" in b.log()

        # -- the killed pod comes back (the kubelet restarts it): a standby, not a second leader ----
        restarted_a.start()
        waiting_for_b = f"waiting to become the leader of lease {namespace}/{LEASE} (held by op-b_"
        kube.wait_for(lambda: waiting_for_b in restarted_a.log(), 30, "the restarted op-a waits")
        assert restarted_a.applied() == 0 and restarted_a.kopf_lines() == []

        # -- SIGTERM the leader: it stops, releases, and the standby takes over at once ------------
        assert b.proc is not None
        stopping = time.monotonic()
        b.proc.send_signal(signal.SIGTERM)
        kube.wait_for(
            lambda: (holder(sandbox, namespace) or "").startswith("op-a_"),
            60,
            "the restarted op-a takes the lease over",
            interval_s=0.1,
        )
        handover_s = time.monotonic() - stopping
        assert b.proc.wait(timeout=30) == 0
        released = b.log().index(f"released lease {namespace}/{LEASE}")
        assert released > b.log().index("Operator is stopping")  # only once kopf (and its loops) stopped
        # From the release (the log line's time) to the takeover (the Lease's acquireTime): one poll.
        acquired = lease_spec(sandbox, namespace).acquire_time
        release_to_acquire_s = (acquired - logged_at(b, "released lease")).total_seconds()
        report("SIGTERM to takeover (the leader's shutdown included)", handover_s, RETRY_PERIOD_S)
        report("release to takeover", release_to_acquire_s, RETRY_PERIOD_S)
        assert 0 <= release_to_acquire_s <= RETRY_PERIOD_S + SLACK_S
        kube.wait_for(lambda: restarted_a.applied() >= 2, 60, "the new leader applies both servers")
        create_server(sandbox, namespace, "third")
        kube.wait_for(lambda: restarted_a.applied() >= 3, 60, "the new leader applies a new server")
        assert holder(sandbox, namespace) != a_identity_of(a)  # a new process, a new identity
    finally:
        for proc in (a, b, restarted_a):
            proc.stop()


def test_a_leader_frozen_past_its_renew_deadline_exits_as_it_wakes(
    sandbox: Sandbox, crds: None, namespace: str, tmp_path: Path
) -> None:
    """A paused process (SIGSTOP here; a frozen VM or a stuck runtime alike) cannot renew: the standby
    takes over after the lease duration, and the old leader, once it runs again, exits at once (status 1)
    instead of acting on. Short timings, through the flags, to keep the test short."""
    timings = [
        "--leader-election-lease-duration=6",
        "--leader-election-renew-deadline=4",
        "--leader-election-retry-period=1",
    ]
    a = ElectedOperator(sandbox, tmp_path / "a.log", namespace, "op-a", *timings)
    b = ElectedOperator(sandbox, tmp_path / "b.log", namespace, "op-b", *timings)
    try:
        a.start()
        kube.wait_for(lambda: (holder(sandbox, namespace) or "").startswith("op-a_"), 30, "op-a leads")
        b.start()
        kube.wait_for(lambda: "waiting to become the leader" in b.log(), 30, "op-b waits")
        assert a.proc is not None
        frozen = time.monotonic()
        a.proc.send_signal(signal.SIGSTOP)
        kube.wait_for(
            lambda: (holder(sandbox, namespace) or "").startswith("op-b_"), 30, "op-b takes over", 0.2
        )
        report("takeover from a frozen leader (6 s lease, 1 s retry)", time.monotonic() - frozen, 7)
        assert time.monotonic() - frozen <= 6 + 1 + SLACK_S
        a.proc.send_signal(signal.SIGCONT)
        assert a.proc.wait(timeout=10) == 1
        last = a.log().rstrip().splitlines()[-1]
        assert "[ERROR" in last and f"lost leadership of lease {namespace}/{LEASE}: not renewed for" in last
        assert holder(sandbox, namespace).startswith("op-b_")
    finally:
        if a.proc is not None and a.proc.poll() is None:
            a.proc.send_signal(signal.SIGCONT)
        for proc in (a, b):
            proc.stop()


def a_identity_of(operator: ElectedOperator) -> str:
    """The identity the process announced when it became leader (its log's own words)."""
    found = re.search(r"became the leader of lease \S+ as (\S+)", operator.log())
    assert found, f"no leadership line in {operator.log_path}"
    return found.group(1)


def logged_at(operator: ElectedOperator, text: str) -> datetime.datetime:
    """When the process logged the first line with `text` (kopf's format: local time, milliseconds)."""
    line = next(line for line in operator.log().splitlines() if text in line)
    stamp = re.match(r"^\[([^]]+)\]", line)
    assert stamp, line
    return datetime.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").astimezone(datetime.UTC)
