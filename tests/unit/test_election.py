"""Lease leader election: the decision rule as a table, identity and namespace, and the elector's
reads and writes against an in-memory Lease with the apiserver's optimistic concurrency."""

from __future__ import annotations

import argparse
import copy
import datetime
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from triton_operator import cli, election, main
from triton_operator.election import (
    Action,
    LeaseElector,
    LeaseRecord,
    Observation,
    Timings,
    decide,
    next_poll_in,
    observe,
    released,
)

from tests.support.s3server import free_port

pytestmark = pytest.mark.unit

ME, OTHER = "op-0_aaaa", "op-1_bbbb"
T = Timings()  # 15 s lease, 10 s renew deadline, 2 s retry period
WALL = datetime.datetime(2025, 1, 1, 12, 0, 0, 500, tzinfo=datetime.UTC)
EARLIER = WALL - datetime.timedelta(minutes=5)


def held_by(holder: str | None, duration: int | None = 15, transitions: int = 3) -> LeaseRecord:
    return LeaseRecord(holder, duration, EARLIER, EARLIER, transitions)


@dataclass(frozen=True)
class Case:
    record: LeaseRecord | None
    seen_since: float  # monotonic time the record was first read as it is
    now: float
    last_renewed: float | None  # None: not leading
    action: Action
    reason_has: str = ""


CASES = {
    # A standby.
    "no lease: create it": Case(None, 100, 100, None, Action.CREATE, "no lease"),
    "vacant (released): take it at once": Case(held_by(None), 100, 100, None, Action.ACQUIRE, "released"),
    "vacant with an empty holder string": Case(held_by(""), 100, 100, None, Action.ACQUIRE, "released"),
    "held by another, just renewed": Case(held_by(OTHER), 100, 100, None, Action.WAIT, "expires in 15.0 s"),
    "held by another, one second before expiry": Case(held_by(OTHER), 100, 114, None, Action.WAIT, "1.0 s"),
    "held by another, unchanged exactly a lease duration: expired": Case(
        held_by(OTHER), 100, 115, None, Action.ACQUIRE, "did not renew for 15.0 s >= lease duration 15 s"
    ),
    "held by another, long expired": Case(held_by(OTHER), 100, 1000, None, Action.ACQUIRE),
    "the holder's own duration counts, not mine": Case(
        held_by(OTHER, duration=60), 100, 130, None, Action.WAIT, "expires in 30.0 s"
    ),
    "a record without a duration gets mine": Case(
        held_by(OTHER, duration=None), 100, 115, None, Action.ACQUIRE, "lease duration 15 s"
    ),
    "a zero duration gets mine too": Case(held_by(OTHER, duration=0), 100, 114, None, Action.WAIT),
    "held by me though not leading (my write's answer was lost): renew": Case(
        held_by(ME), 100, 100, None, Action.RENEW
    ),
    # The leader.
    "leader, due to renew": Case(held_by(ME), 100, 102, 100, Action.RENEW, "held by me"),
    "leader, renewal late but within the deadline": Case(held_by(ME), 100, 109.9, 100, Action.RENEW),
    "leader, renew deadline passed: lost": Case(
        held_by(ME), 100, 110, 100, Action.LOST, "not renewed for 10.0 s >= renew deadline 10 s"
    ),
    "leader, the lease taken by another: lost": Case(
        held_by(OTHER), 100, 102, 100, Action.LOST, "held by op-1_bbbb"
    ),
    "leader, the lease released by someone else: lost": Case(
        held_by(None), 100, 102, 100, Action.LOST, "held by nobody"
    ),
    "leader, the lease deleted: lost (deleting it forces a handover)": Case(
        None, 100, 102, 100, Action.LOST, "nobody"
    ),
    "leader, deadline checked before the holder": Case(
        held_by(OTHER), 100, 111, 100, Action.LOST, "renew deadline"
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_decide(name: str) -> None:
    case = CASES[name]
    decision = decide(
        case.record,
        Observation(case.record, case.seen_since),
        me=ME,
        now=case.now,
        wall_now=WALL,
        last_renewed=case.last_renewed,
        timings=T,
    )
    assert decision.action is case.action, decision.reason
    assert case.reason_has in decision.reason
    assert (decision.write is not None) == (case.action in {Action.CREATE, Action.ACQUIRE, Action.RENEW})


def test_what_each_action_writes() -> None:
    def write(record: LeaseRecord | None, now: float = 200) -> LeaseRecord:
        decision = decide(
            record, Observation(record, 100), me=ME, now=now, wall_now=WALL, last_renewed=None, timings=T
        )
        assert decision.write is not None
        return decision.write

    assert write(None) == LeaseRecord(ME, 15, WALL, WALL, 0)
    # A takeover counts a transition and starts a new acquireTime.
    assert write(held_by(OTHER, transitions=3)) == LeaseRecord(ME, 15, WALL, WALL, 4)
    assert write(held_by(None, duration=1, transitions=3)) == LeaseRecord(ME, 15, WALL, WALL, 4)
    # A renewal keeps acquireTime and the transitions; only renewTime moves.
    assert write(held_by(ME, transitions=3), now=102) == LeaseRecord(ME, 15, EARLIER, WALL, 3)
    assert write(LeaseRecord(ME, 15, None, EARLIER, 0), now=102).acquire_time == WALL


def test_the_wall_clock_never_decides_expiry() -> None:
    """A renewTime far in the past or the future (clock skew between pods) changes nothing: only how long
    this process has seen the record unchanged does."""
    for renew in (WALL - datetime.timedelta(days=1), WALL + datetime.timedelta(days=1)):
        record = LeaseRecord(OTHER, 15, renew, renew, 0)
        fresh = decide(
            record, Observation(record, 100), me=ME, now=100, wall_now=WALL, last_renewed=None, timings=T
        )
        assert fresh.action is Action.WAIT
        stale = decide(
            record, Observation(record, 100), me=ME, now=115, wall_now=WALL, last_renewed=None, timings=T
        )
        assert stale.action is Action.ACQUIRE


def test_observe_restarts_the_age_only_when_the_lease_changed() -> None:
    first = observe(None, held_by(OTHER), "7", 100)
    assert first == Observation(held_by(OTHER), 100, "7")
    assert observe(first, held_by(OTHER), "7", 110) is first  # re-read unchanged: it keeps aging
    renewed = LeaseRecord(OTHER, 15, EARLIER, WALL, 3)
    assert observe(first, renewed, "8", 110) == Observation(renewed, 110, "8")
    # Any change is a sign of life: a renewTime that went backwards (the holder's clock moved), or the
    # same renewTime written again (a coarse clock) -- the resourceVersion moved.
    backwards = LeaseRecord(OTHER, 15, EARLIER, EARLIER - datetime.timedelta(seconds=1), 3)
    assert observe(first, backwards, "8", 112).since == 112
    assert observe(first, held_by(OTHER), "8", 112).since == 112
    assert observe(first, None, None, 113) == Observation(None, 113)


def test_a_standby_polls_every_retry_period_and_exactly_at_expiry() -> None:
    record = held_by(OTHER)
    seen = Observation(record, 100)

    def poll_in(now: float) -> float:
        decision = decide(record, seen, me=ME, now=now, wall_now=WALL, last_renewed=None, timings=T)
        return next_poll_in(decision, seen, now, T)

    assert poll_in(100) == 2
    assert poll_in(113.5) == pytest.approx(1.5)  # wakes at expiry, not up to a retry period later
    renew = decide(held_by(ME), seen, me=ME, now=102, wall_now=WALL, last_renewed=100, timings=T)
    assert next_poll_in(renew, seen, 102, T) == 2


def test_release_vacates_the_lease_and_keeps_the_count() -> None:
    assert released(held_by(ME, transitions=7), WALL) == LeaseRecord(None, 1, WALL, WALL, 7)


@pytest.mark.parametrize(
    ("timings", "problem"),
    [
        (Timings(), None),
        (Timings(4, 3, 1), None),
        (Timings(15, 15, 2), "lease duration (15 s) must be longer than the renew deadline (15 s)"),
        (Timings(15, 2, 2), "renew deadline (2 s) must be longer than the retry period (2 s)"),
        (Timings(15, 10, 0), "retry period (0 s) must be positive"),
    ],
)
def test_timings_must_let_a_leader_stop_before_a_standby_starts(
    timings: Timings, problem: str | None
) -> None:
    found = timings.problem()
    assert found == problem if problem is None else problem in (found or "")


def test_identity_is_the_pod_plus_a_suffix_new_in_every_process() -> None:
    assert election.identity("op-7d9f", "host", "abc") == "op-7d9f_abc"
    assert election.identity(None, "host", "abc") == "host_abc"
    assert election.identity("", "host", "abc") == "host_abc"
    one = election.new_identity({"POD_NAME": "op-7d9f"})
    two = election.new_identity({"POD_NAME": "op-7d9f"})
    assert one.startswith("op-7d9f_") and two.startswith("op-7d9f_") and one != two


@pytest.mark.parametrize(
    ("flag", "env", "mounted", "expected"),
    [
        ("ops", {"POD_NAMESPACE": "pod-ns"}, "sa-ns", "ops"),
        (None, {"POD_NAMESPACE": "pod-ns"}, "sa-ns", "pod-ns"),
        (None, {}, "sa-ns\n", "sa-ns"),
        (None, {"POD_NAMESPACE": ""}, None, None),
        (None, {}, None, None),
    ],
)
def test_lease_namespace(
    flag: str | None, env: dict[str, str], mounted: str | None, expected: str | None
) -> None:
    assert election.lease_namespace(flag, env, lambda: mounted) == expected


def test_read_mounted_namespace(tmp_path: Path) -> None:
    assert election.read_mounted_namespace(tmp_path / "missing") is None
    (tmp_path / "namespace").write_text("triton-system")
    assert election.read_mounted_namespace(tmp_path / "namespace") == "triton-system"


def _run_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_leader_election_arguments(parser)
    return parser.parse_args(argv)


def test_cli_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "triton-system")
    settings, problem = cli.leader_election_of(_run_args("--leader-election"))
    assert problem is None and settings is not None
    assert (settings.namespace, settings.lease_name, settings.timings) == (
        "triton-system",
        "triton-operator",
        Timings(),
    )
    settings, _ = cli.leader_election_of(
        _run_args(
            "--leader-election-namespace=ops",
            "--leader-election-lease-name=op",
            "--leader-election-lease-duration=6",
            "--leader-election-renew-deadline=4",
            "--leader-election-retry-period=1",
        )
    )
    assert settings is not None and (settings.namespace, settings.lease_name) == ("ops", "op")
    assert settings.timings == Timings(6, 4, 1)
    monkeypatch.setenv("TRITON_OPERATOR_LEADER_ELECTION_RETRY_PERIOD", "0.5")
    assert _run_args().leader_election_retry_period == 0.5
    _, problem = cli.leader_election_of(_run_args("--leader-election-renew-deadline=20"))
    assert problem and "\n" not in problem and "must be longer than the renew deadline" in problem


def test_cli_fails_in_one_line_without_a_namespace(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.setattr(election, "SERVICE_ACCOUNT_NAMESPACE", Path("/nonexistent/namespace"))
    monkeypatch.setattr(election, "read_mounted_namespace", lambda: None)
    assert cli.main(["run", "--leader-election"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--leader-election-namespace" in err and "POD_NAMESPACE" in err


# -- the elector against an in-memory Lease ----------------------------------------------------------


@dataclass
class FakeLeases:
    """One namespace's Leases with the apiserver's rules: create of an existing name and a replace with a
    stale resourceVersion answer 409; every write bumps the resourceVersion."""

    stored: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = 0
    fail_next: list[Exception] = field(default_factory=list)
    writes: int = 0
    serializer: client.ApiClient = field(default_factory=client.ApiClient)

    def _maybe_fail(self) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)

    def _as_lease(self, name: str) -> client.V1Lease:
        data = copy.deepcopy(self.stored[name])
        meta = client.V1ObjectMeta(name=name, namespace="ns", resource_version=data["rv"])
        spec = data["spec"]
        return client.V1Lease(
            metadata=meta,
            spec=client.V1LeaseSpec(
                holder_identity=spec.get("holderIdentity"),
                lease_duration_seconds=spec.get("leaseDurationSeconds"),
                acquire_time=spec.get("acquireTime") and datetime.datetime.fromisoformat(spec["acquireTime"]),
                renew_time=spec.get("renewTime") and datetime.datetime.fromisoformat(spec["renewTime"]),
                lease_transitions=spec.get("leaseTransitions"),
            ),
        )

    def _store(self, name: str, body: client.V1Lease) -> client.V1Lease:
        self.version += 1
        self.writes += 1
        spec = self.serializer.sanitize_for_serialization(body.spec)
        for key in ("acquireTime", "renewTime"):  # the apiserver parses MicroTime with its 6 digits only
            assert key not in spec or "." in spec[key], spec[key]
        self.stored[name] = {"rv": str(self.version), "spec": spec}
        return self._as_lease(name)

    def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> client.V1Lease:
        self._maybe_fail()
        if name not in self.stored:
            raise ApiException(status=404, reason="Not Found")
        return self._as_lease(name)

    def create_namespaced_lease(self, namespace: str, body: client.V1Lease, **_: Any) -> client.V1Lease:
        self._maybe_fail()
        if body.metadata.name in self.stored:
            raise ApiException(status=409, reason="Conflict")
        return self._store(body.metadata.name, body)

    def replace_namespaced_lease(
        self, name: str, namespace: str, body: client.V1Lease, **_: Any
    ) -> client.V1Lease:
        self._maybe_fail()
        if self.stored[name]["rv"] != body.metadata.resource_version:
            raise ApiException(status=409, reason="Conflict")
        return self._store(name, body)

    def holder(self, name: str = "lease") -> str | None:
        holder: str | None = self.stored[name]["spec"].get("holderIdentity")
        return holder


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SleepOnTheClock(threading.Event):
    """The renewer's stop event whose waits pass on the fake clock at once."""

    def __init__(self, clock: Clock):
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        self.clock.now += timeout or 0
        return False


def elector(leases: FakeLeases, me: str, clock: Clock, lost: list[str] | None = None) -> LeaseElector:
    wall = WALL.replace(microsecond=0)  # the .000000 edge: writes must still carry six digits
    return LeaseElector(
        leases,  # the fake speaks the three calls the elector makes
        "ns",
        "lease",
        me,
        T,
        on_lost=(lost if lost is not None else []).append,
        clock=clock,
        wall_clock=lambda: wall,
    )


def test_two_electors_one_leader_then_takeover_after_a_lease_duration() -> None:
    leases, clock = FakeLeases(), Clock()
    first, second = elector(leases, ME, clock), elector(leases, OTHER, clock)
    assert first.try_once(1).action is Action.CREATE
    assert leases.holder() == ME
    assert second.try_once(1).action is Action.WAIT
    clock.now += 2
    assert first.try_once(1).action is Action.RENEW
    assert second.try_once(1).action is Action.WAIT  # it sees the renewal: the lease's age restarts
    clock.now += 14  # 14 s since the second saw it change: still alive
    assert second.try_once(1).action is Action.WAIT
    clock.now += 1
    decision = second.try_once(1)
    assert decision.action is Action.ACQUIRE and leases.holder() == OTHER
    assert leases.stored["lease"]["spec"]["leaseTransitions"] == 1
    # The first, back from a pause, learns it lost on its next round (it was long past its deadline).
    assert first.try_once(1).action is Action.LOST


def test_of_two_takeovers_in_one_round_the_apiserver_lets_one_win() -> None:
    leases, clock = FakeLeases(), Clock()
    old = elector(leases, "old_1", clock)
    old.try_once(1)
    old.release()
    seen_by_both = leases._as_lease("lease")  # vacant, at one resourceVersion
    first, second = elector(leases, ME, clock), elector(leases, OTHER, clock)
    first._read = lambda timeout_s: copy.deepcopy(seen_by_both)  # type: ignore[method-assign]
    second._read = lambda timeout_s: copy.deepcopy(seen_by_both)  # type: ignore[method-assign]
    assert first.try_once(1).action is Action.ACQUIRE
    with pytest.raises(ApiException) as raised:
        second.try_once(1)
    assert raised.value.status == 409 and second.last_renewed is None and leases.holder() == ME


def test_a_create_race_answers_409_and_the_loser_waits() -> None:
    leases, clock = FakeLeases(), Clock()
    winner, loser = elector(leases, ME, clock), elector(leases, OTHER, clock)
    loser._read = lambda timeout_s: None  # type: ignore[method-assign]  # it read before the winner wrote
    winner.try_once(1)
    with pytest.raises(ApiException) as raised:
        loser.try_once(1)
    assert raised.value.status == 409 and loser.last_renewed is None and leases.holder() == ME


def test_acquire_blocks_until_the_lease_is_released() -> None:
    leases, clock = FakeLeases(), Clock()
    leader = elector(leases, OTHER, clock)
    leader.try_once(1)
    standby = elector(leases, ME, clock)
    stop = threading.Event()
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(standby.acquire(stop)))
    standby.timings = Timings(15, 0.2, 0.05)  # poll fast on the real clock of the wait
    thread.start()
    try:
        threading.Event().wait(0.2)
        assert not result and leases.holder() == OTHER
        leader.release()
        thread.join(timeout=5)
        assert result == [True] and leases.holder() == ME
    finally:
        stop.set()
        thread.join(timeout=5)


def test_acquire_returns_false_when_stopped() -> None:
    leases, clock = FakeLeases(), Clock()
    elector(leases, OTHER, clock).try_once(1)
    stop = threading.Event()
    stop.set()
    assert elector(leases, ME, clock).acquire(stop) is False


def test_acquire_keeps_trying_through_apiserver_errors() -> None:
    leases, clock = FakeLeases(), Clock()
    leases.fail_next = [ApiException(status=503, reason="Unavailable"), ConnectionError("refused")]
    standby = elector(leases, ME, clock)
    standby.timings = Timings(15, 0.2, 0.01)
    assert standby.acquire(threading.Event()) is True and leases.holder() == ME


def test_the_renewer_gives_up_at_the_deadline() -> None:
    leases, clock = FakeLeases(), Clock()
    lost: list[str] = []
    leader = elector(leases, ME, clock, lost)
    leader.try_once(1)
    leases.fail_next = [ApiException(status=503, reason="Unavailable")] * 100
    leader._stop_renewing = SleepOnTheClock(clock)
    leader._renew_loop()
    assert len(lost) == 1 and lost[0].startswith("lost leadership of lease ns/lease: not renewed for 10.0 s")
    assert clock.now == pytest.approx(1010.0)  # it retried up to the deadline, not a retry period past it
    assert leader.last_renewed is None


def test_the_renewer_stops_when_the_lease_is_taken() -> None:
    leases, clock = FakeLeases(), Clock()
    lost: list[str] = []
    leader = elector(leases, ME, clock, lost)
    leader.try_once(1)
    leases.stored["lease"]["spec"]["holderIdentity"] = OTHER  # an admin handed it over
    leader._renew_loop()
    assert lost == [f"lost leadership of lease ns/lease: the lease is held by {OTHER} now; exiting"]


def test_release_only_what_is_mine() -> None:
    leases, clock = FakeLeases(), Clock()
    leader = elector(leases, ME, clock)
    leader.release()  # never led: nothing to do
    assert leases.writes == 0
    leader.try_once(1)
    leader.release()
    assert leases.holder() is None and leases.stored["lease"]["spec"]["leaseDurationSeconds"] == 1
    writes = leases.writes
    leader.release()  # released already
    assert leases.writes == writes


def test_a_leader_frozen_past_its_deadline_exits_before_any_request() -> None:
    leases, clock = FakeLeases(), Clock()
    lost: list[str] = []
    leader = elector(leases, ME, clock, lost)
    leader.try_once(1)
    clock.now += 30  # SIGSTOP, a paused VM: nothing ran for 30 s
    leases.fail_next = [AssertionError("no request may be made")]
    leader._renew_loop()
    assert lost == [
        "lost leadership of lease ns/lease: not renewed for 30.0 s >= renew deadline 10 s; exiting"
    ]
    assert leases.fail_next  # untouched


def test_the_renewer_renews_every_retry_period_until_stopped() -> None:
    leases, clock = FakeLeases(), Clock()
    lost: list[str] = []
    leader = elector(leases, ME, clock, lost)
    leader.try_once(1)

    class StopAfter(SleepOnTheClock):
        def wait(self, timeout: float | None = None) -> bool:
            super().wait(timeout)
            if clock.now >= 1010:
                self.set()
            return self.is_set()

    leader._stop_renewing = StopAfter(clock)
    leader._renew_loop()
    assert lost == [] and leases.writes == 1 + 5  # the create, then a renewal every 2 s for 10 s
    assert leader.last_renewed == 1008


def test_a_standby_answers_healthz_and_frees_the_port_for_kopf() -> None:
    port = free_port("127.0.0.1")
    with main._standby_health("127.0.0.1", port):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.status == 200 and b"standby" in resp.read()
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert raised.value.code == 404
    # kopf's liveness endpoint binds it next (aiohttp, as asyncio does on POSIX, with SO_REUSEADDR: the
    # probes' connections may linger in TIME_WAIT).
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
