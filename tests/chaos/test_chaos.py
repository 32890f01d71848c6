"""Chaos, seeded and repeatable (issue 12, part 1).

    make chaos SEED=<n> KILLS=<k>       # CHAOS_SEED / CHAOS_KILLS

`make test` runs it with a small count and a drawn seed (printed: any seed must pass); `make chaos`
runs the full count. The defects the runs found are fixed, each with a regression test named after its
fault (tests/unit/test_chaos_regressions.py, tests/e2e/test_tritonmodel.py's restarted-Triton test).

The seed (printed; drawn at random when unset) gives the plan (tests/chaos/plan.py): an ordered list of
(scenario, kill point, fault). For each kill, the scenario is brought to its starting state without
faults, its action is applied (a new model, a canary, a server spec change, a deletion), the kill point
is awaited (a predicate on the observed state, tests/chaos/points.py; a point that passed too fast to
see is reported, and the fault strikes anyway), the fault strikes (tests/chaos/faults.py), and then:

Convergence bound: CONVERGE_BOUND_S = 180 s after the fault ended, every invariant of
tests/chaos/converge.py must hold (twice, 1 s apart): the model and server in the condition a fault-free
run ends in, observedGeneration current, no incomplete or orphaned Job or pod (API and pod runner), no
temp folder or half-written version in the PVC, no deleted object kept by a finalizer, the versions
loaded on every replica the ones the spec wants, no rollout step skipped or repeated (from a 0.2 s poll
of status.rollout: the operator emits no Event per step, so Events cannot tell).

Under a client's load (the rollout, rollback and server-spec scenarios, where the model serves
throughout), every failed request must be attributed: a killed Triton's in-flight requests and those
the Service still sent it until its endpoint was dropped (+2 s) are counted and printed; a broken
canary's own "version 2 is broken" answers are the rollback scenario's input; a server spec change's
roll may fail a request in flight on a connection to a pod it removes (ROLL_CUT, bounded). Anything else
fails.

The run stops at the first kill that does not converge (the state is then unknown); rerun with the
printed seed to replay the same plan.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.chaos import faults, plan
from tests.chaos.converge import Expect, StepHistory, wait_converged
from tests.chaos.points import observe, wait_point
from tests.chaos.timeline import Timeline
from tests.e2e import kube
from tests.e2e.conftest import Operator, Sandbox
from tests.golden.triton.triton_models import ADDER_PY
from tests.support.load import Load, service_clients
from tests.support.models import FAILING_PY
from tests.support.objects import apply, credentials_secret, get_cr, server_pods, tritonserver
from tests.support.scorer import MODEL, canary_model, publish

# alone: its faults restart the apiserver, kill the operator and Tritons of the sandbox every test shares.
pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.alone]

CONVERGE_BOUND_S = 180.0
DEFAULT_KILLS = 3
STEPS = [{"weight": 50, "pauseSeconds": 6}, {"weight": 100, "pauseSeconds": 4}]
ROLLOUT = {
    "strategy": "Canary",
    "steps": STEPS,
    "analysis": {"intervalSeconds": 5, "minRequests": 20, "maxFailureRatio": 0.05, "maxLatencyRatio": 50},
}
LOADED = {"rollout", "rollback", "server-spec"}


def kills_from_env() -> int:
    return int(os.environ.get("CHAOS_KILLS", "").strip() or DEFAULT_KILLS)


def seed_and_kills() -> tuple[int, int]:
    """CHAOS_SEED (drawn at random when unset or empty) and CHAOS_KILLS (DEFAULT_KILLS)."""
    raw = os.environ.get("CHAOS_SEED", "").strip()
    seed = int(raw) if raw else random.SystemRandom().randrange(2**31)
    return seed, kills_from_env()


@dataclass
class Ctx:
    sb: Sandbox
    ns: str
    operator: Operator
    generation: int = 0


@dataclass
class Outcome:
    kill: plan.Kill
    point_hit: bool = False
    fault: faults.FaultRecord | None = None
    converged_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    blamed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        f = self.fault
        what = f"{f.target} for {f.ended - f.started:.1f}s" if f else "not applied"
        point = "hit" if self.point_hit else "MISSED (passed too fast or never reached; fault struck after)"
        verdict = f"converged in {self.converged_s:.0f}s" if not self.problems else "NOT CONVERGED"
        extra = f"; {len(self.blamed)} failed request(s) caused by the fault" if self.blamed else ""
        return f"{self.kill}: point {point}; fault {what}; {verdict}{extra}"


def model_manifest(sb: Sandbox, version: int, prefix: str) -> dict[str, Any]:
    m = canary_model(sb, version, prefix, ROLLOUT)
    m["spec"]["keepFilesOnDelete"] = False
    return m


def ensure_server(ctx: Ctx) -> None:
    sb, ns = ctx.sb, ctx.ns
    obj = get_cr(sb, ns, "tritonservers", "triton")
    if obj is not None and obj["metadata"].get("deletionTimestamp"):
        kube.wait_for(lambda: get_cr(sb, ns, "tritonservers", "triton") is None, 120, "the old server gone")
        obj = None
    if obj is None:
        apply(sb, ns, tritonserver(2))
    sb.kubectl("wait", "-n", ns, "--for=condition=Ready", "tritonserver/triton", "--timeout=240s")
    kube.wait_for(lambda: len(server_pods(sb, ns)) == 2, 120, "2 ready server pods")


def remove_model(ctx: Ctx) -> None:
    ctx.sb.kubectl("delete", "-n", ctx.ns, f"tritonmodel/{MODEL}", "--ignore-not-found", "--timeout=180s")


def model_ready(ctx: Ctx) -> dict[str, Any] | None:
    obj = get_cr(ctx.sb, ctx.ns, "tritonmodels", MODEL)
    st = (obj or {}).get("status") or {}
    ready: dict[str, Any] = next((c for c in st.get("conditions") or [] if c["type"] == "Ready"), {})
    gen_ok = obj is not None and st.get("observedGeneration") == obj["metadata"].get("generation")
    return obj if gen_ok and ready.get("status") == "True" and st.get("loaded") == "2/2" else None


def fresh_v1(ctx: Ctx) -> None:
    remove_model(ctx)
    apply(ctx.sb, ctx.ns, model_manifest(ctx.sb, 1, f"{MODEL}/1"))
    kube.wait_for(lambda: model_ready(ctx), 240, "model v1 Ready on 2/2")


def prepare(ctx: Ctx, scenario: str) -> Expect:
    """The scenario's starting state, fault-free; returns the end state a fault-free run reaches."""
    ensure_server(ctx)
    if scenario in ("staging", "loading"):
        remove_model(ctx)
        return Expect(MODEL, versions=frozenset({"1"}))
    if scenario == "rollout":
        fresh_v1(ctx)
        return Expect(MODEL, versions=frozenset({"2"}), phase="Promoted")
    if scenario == "rollback":
        fresh_v1(ctx)
        return Expect(
            MODEL,
            ready="False",
            ready_reason="RolledBack",
            versions=frozenset({"1"}),
            may_stay=frozenset({"2"}),
            phase="RolledBack",
        )
    obj = model_ready(ctx)
    if obj is None:
        fresh_v1(ctx)
        obj = model_ready(ctx)
    version = str((obj or {})["spec"]["version"])
    if scenario == "server-spec":
        return Expect(MODEL, versions=frozenset({version}))
    if scenario == "delete-model":
        return Expect(MODEL, model_present=False)
    if scenario == "delete-server":
        return Expect(MODEL, ready="False", server_present=False)
    raise AssertionError(f"unknown scenario {scenario}")


def trigger(ctx: Ctx, scenario: str) -> None:
    sb, ns = ctx.sb, ctx.ns
    if scenario in ("staging", "loading"):
        apply(sb, ns, model_manifest(sb, 1, f"{MODEL}/1"))
    elif scenario == "rollout":
        apply(sb, ns, model_manifest(sb, 2, f"{MODEL}/2"))
    elif scenario == "rollback":
        apply(sb, ns, model_manifest(sb, 2, f"{MODEL}-broken/2"))
    elif scenario == "server-spec":
        ctx.generation += 1
        patch = json.dumps({"spec": {"env": [{"name": "CHAOS_ROLL", "value": str(ctx.generation)}]}})
        sb.kubectl("patch", "-n", ns, "tritonserver/triton", "--type=merge", "-p", patch)
    elif scenario == "delete-model":
        sb.kubectl("delete", "-n", ns, f"tritonmodel/{MODEL}", "--wait=false")
    elif scenario == "delete-server":
        sb.kubectl("delete", "-n", ns, "tritonserver/triton", "--wait=false")


def strike(ctx: Ctx, scenario: str, fault: str) -> tuple[faults.FaultRecord | None, str]:
    sb, ns = ctx.sb, ctx.ns
    if fault == "operator-kill":
        return faults.operator_kill(ctx.operator), ""
    if fault in ("apiserver-restart", "etcd-pause"):
        rec = faults.apiserver_restart(sb) if fault == "apiserver-restart" else faults.etcd_pause(sb)
        if scenario == "server-spec":
            faults.blame_stale_endpoints(rec, sb, ns, "triton")
        return rec, ""
    if fault == "s3-outage":
        return faults.s3_outage(sb), ""
    if fault == "triton-kill":
        names = {p.metadata.name for p in server_pods(sb, ns)}
        if not names:
            return None, "no ready server pod to kill"
        return faults.triton_kill(sb, ns, names, MODEL, "triton"), ""
    if fault == "staging-pod-kill":
        active = [j for j in observe(sb, ns, MODEL).jobs if not (j.status.succeeded or j.status.failed)]
        if not active:
            return None, "no staging Job running any more: nothing to kill"
        try:
            return faults.staging_pod_kill(sb, ns, active[0].metadata.name), ""
        except AssertionError as exc:
            return None, str(exc)
    raise AssertionError(f"unknown fault {fault}")


# A server spec change rolls the pods (one at a time). The Service balances connections, not requests
# (kube-proxy, L4): a client's open connection stays on its pod. A deleted pod's Triton serves its open
# connections for up to exitTimeoutSeconds and then closes them, so a request in flight on one right then
# fails. That is caused by the roll, counted and bounded: at most one per client connection per pod the
# roll replaced (README, "Rolling a server under load").
ROLL_CUT = "in flight on a connection to a pod the roll removed"
ROLL_NEEDLES = faults.CONNECTION_NEEDLES
ROLLED_PODS = 2  # a server-spec change replaces each of the 2 replicas once


def attribute(
    load: Load, scenario: str, rec: faults.FaultRecord | None
) -> tuple[list[str], list[str], list[str]]:
    """(failures the fault itself caused, failures the roll caused, failures nothing explains).
    A broken canary's own answers are the rollback scenario's input and are left out."""
    blamed: list[str] = []
    rolled: list[str] = []
    unexplained: list[str] = []
    for at, message, sent in load.failed:
        if scenario == "rollback" and "version 2 is broken" in message:
            continue
        # The fault's: failed once it struck, sent before its window closed (a request in flight on
        # a killed Triton may fail only when its client's timeout runs out, 30 s later).
        in_window = (
            rec is not None and rec.blame_until and rec.started - 0.5 <= at and sent <= rec.blame_until
        )
        if in_window and (rec.blames is None or any(x in message for x in rec.blames)):
            blamed.append(message)
        elif scenario == "server-spec" and any(x in message for x in ROLL_NEEDLES):
            rolled.append(message)
        else:
            t0 = rec.started if rec else at
            unexplained.append(f"t+{at - t0:.1f}s (sent t+{sent - t0:.1f}s) {message}")
    return blamed, rolled, unexplained


def roll_bound(load: Load) -> int:
    """The most requests a roll may fail: one per client connection per replaced pod."""
    return len(load.threads) * ROLLED_PODS


def summary(messages: list[str], limit: int = 3) -> str:
    """`n` messages as counts of their distinct texts (the first `limit`)."""
    counts = Counter(messages)
    shown = "; ".join(f"{n} x {m[:160]}" for m, n in counts.most_common(limit))
    more = f"; {len(counts) - limit} more kinds" if len(counts) > limit else ""
    return f"{len(messages)}: {shown}{more}"


def run_kill(ctx: Ctx, kill: plan.Kill) -> Outcome:
    out = Outcome(kill)
    expect = prepare(ctx, kill.scenario)
    load = Load(service_clients(ctx.sb, ctx.ns), max_s=600).start() if kill.scenario in LOADED else None
    steps = StepHistory(ctx.sb, ctx.ns, MODEL).start() if kill.scenario in ("rollout", "rollback") else None
    pods_seen = Timeline(ctx.sb, ctx.ns).start() if load is not None else None
    triggered = time.monotonic()
    try:
        trigger(ctx, kill.scenario)
        out.point_hit, _ = wait_point(ctx.sb, ctx.ns, MODEL, kill.scenario, kill.point, timeout_s=120)
        out.fault, why = strike(ctx, kill.scenario, kill.fault)
        if why:
            out.notes.append(why)
        if out.fault is not None:
            out.notes.extend(out.fault.notes)
        out.converged_s, out.problems = wait_converged(ctx.sb, ctx.ns, expect, CONVERGE_BOUND_S)
        if kill.scenario == "delete-server" and not out.problems:
            # The models left on it are deleted too: their finalizer must let go without a server.
            ctx.sb.kubectl("delete", "-n", ctx.ns, f"tritonmodel/{MODEL}", "--wait=false")
            gone = Expect(MODEL, model_present=False, server_present=False)
            extra_s, out.problems = wait_converged(ctx.sb, ctx.ns, gone, CONVERGE_BOUND_S)
            out.converged_s += extra_s
    finally:
        if load is not None:
            load.finish()
        if pods_seen is not None:
            pods_seen.stop()
        seen = steps.stop() if steps is not None else []
    if steps is not None:
        out.problems += steps.problems("2", len(STEPS), promoted=kill.scenario == "rollout")
        out.notes.append(f"rollout states seen: {seen}")
    if load is not None:
        out.blamed, rolled, unexplained = attribute(load, kill.scenario, out.fault)
        out.notes.append(f"load: {dict(load.ok)} ok, {len(load.failed)} failed")
        if rolled:
            out.notes.append(f"caused by the roll ({ROLL_CUT}): {summary(rolled)}")
        if len(rolled) > roll_bound(load):
            out.problems.append(
                f"load: the roll failed {len(rolled)} requests, more than one per client connection per "
                f"replaced pod ({roll_bound(load)}): {summary(rolled)}"
            )
        if unexplained:
            out.problems.append(f"load: failed requests the fault did not cause: {summary(unexplained, 5)}")
        if not sum(load.ok.values()):
            out.problems.append("load: no request succeeded at all")
        if pods_seen is not None and any(p.startswith("load:") for p in out.problems):
            t0 = out.fault.started if out.fault else triggered
            out.problems.append(
                f"the server's pods and endpoints meanwhile (t: since the fault):\n{pods_seen.since(t0)}"
            )
    return out


def operator_errors(operator: Operator, lines: int = 40) -> str:
    text = operator.log().splitlines()
    bad = [line for line in text if "ERROR" in line or "Traceback" in line or "Error" in line]
    return "\n".join(bad[-lines:])


# What the operator did to Triton pods, in its own log lines (a kill's report shows the last of them).
ACTION_NEEDLES = (
    "loaded ",
    "loading ",
    "reload",
    "router",
    "unload",
    "takes traffic",
    "waits:",
    "leader",
    "lease",
)


def operator_actions(operator: Operator, lines: int = 40) -> str:
    text = operator.log().splitlines()
    return "\n".join([line for line in text if any(n in line for n in ACTION_NEEDLES)][-lines:])


@pytest.fixture
def chaos_ns(sandbox: Sandbox, operator: Operator, tmp_path: Path) -> Iterator[str]:
    publish(sandbox, tmp_path, f"{MODEL}/1", ADDER_PY, 1)
    publish(sandbox, tmp_path, f"{MODEL}/2", ADDER_PY, 2)
    publish(sandbox, tmp_path, f"{MODEL}-broken/2", FAILING_PY, 2)
    core = client.CoreV1Api(sandbox.api)
    ns = f"chaos-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"e2e": "true"}}})
    kube.wait_for(lambda: kube.service_account_exists(core, ns, "default"), 30, "default service account")
    apply(sandbox, ns, credentials_secret())
    yield ns
    if os.environ.get("CHAOS_KEEP") != "1":
        core.delete_namespace(ns)


def chosen_kills(seed: int, count: int) -> list[plan.Kill]:
    """The seed's plan, or CHAOS_ONLY's kills ("scenario/point/fault,..."; to replay one of a plan)."""
    only = os.environ.get("CHAOS_ONLY", "").strip()
    if not only:
        return plan.plan(seed, count)
    possible = set(plan.combos())
    kills = []
    for i, item in enumerate(only.split(","), start=1):
        scenario, point, fault = item.strip().split("/")
        assert (scenario, point, fault) in possible, f"CHAOS_ONLY: {item} is not a possible kill"
        kills.append(plan.Kill(i, scenario, point, fault))
    return kills


@pytest.mark.timeout(600 + 400 * kills_from_env())
def test_chaos_converges_after_every_seeded_kill(sandbox: Sandbox, operator: Operator, chaos_ns: str) -> None:
    seed, count = seed_and_kills()
    kills = chosen_kills(seed, count)
    print(f"\nchaos: SEED={seed} KILLS={count} (replay: make chaos SEED={seed} KILLS={count})", flush=True)
    for k in kills:
        print(f"chaos: plan {k}", flush=True)
    ctx = Ctx(sandbox, chaos_ns, operator)
    done: list[Outcome] = []
    started = time.monotonic()
    for k in kills:
        print(f"chaos: {k} ...", flush=True)
        outcome = run_kill(ctx, k)
        done.append(outcome)
        print(f"chaos: {outcome.line()}", flush=True)
        for note in outcome.notes:
            print(f"chaos:     {note}", flush=True)
        if outcome.blamed:
            print(f"chaos:     caused by the fault: {summary(outcome.blamed)}", flush=True)
        if outcome.problems:
            report = "\n".join(f"  - {p}" for p in outcome.problems)
            pytest.fail(
                f"SEED={seed} {k}: not converged within {CONVERGE_BOUND_S:.0f}s:\n{report}\n"
                f"operator errors:\n{operator_errors(operator)}\n"
                f"what the operator did last:\n{operator_actions(operator)}",
                pytrace=False,
            )
    missed = [o.kill for o in done if not o.point_hit]
    blamed = sum(len(o.blamed) for o in done)
    print(
        f"chaos: SEED={seed}: {len(done)} kills converged in {time.monotonic() - started:.0f}s; "
        f"{len(missed)} point(s) missed {[str(m) for m in missed]}; "
        f"{blamed} request(s) failed by the faults themselves",
        flush=True,
    )
