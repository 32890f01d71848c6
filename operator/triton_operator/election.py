"""Leader election on a coordination.k8s.io/v1 Lease, the way client-go and controller-runtime do it.

Several operator replicas may run; only the holder of the Lease acts. A standby polls the Lease every
retry period and takes it over once it is vacant (released) or has not changed for its lease duration;
the leader renews it every retry period and stops acting (the process exits) once it could not renew
for the renew deadline. The renew deadline is shorter than the lease duration, so the old leader is
gone before any standby may take over: no action is ever done by two replicas at once.

Expiry is judged on the standby's own monotonic clock, from when it last saw the Lease change (as
client-go does), never from the renewTime written in it: clocks of two pods may differ, and a standby
whose clock runs ahead must not believe a live lease expired. The price: a freshly started standby waits
one full lease duration even for a lease that died long ago.

What no lease can do (client-go neither): fence a process that was frozen (SIGSTOP, a paused VM) past
its deadline. Its renewer exits the process as it wakes, before any request, but its other threads wake
at the same moment and may finish a write already under way.

`decide` is the whole rule, pure; `LeaseElector` does the reads and writes (optimistic concurrency on the
Lease's resourceVersion: of two replicas writing the same round, the apiserver answers one with 409).
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import NoReturn

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

# Where the kubelet mounts the pod's own namespace (with its service account token).
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class Timings:
    """client-go's defaults: a standby takes over within lease duration + retry period of a crash."""

    lease_duration_s: int = 15  # a whole number: the Lease's leaseDurationSeconds is an integer
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0

    def problem(self) -> str | None:
        """Why these timings are unsafe, or None (the same rule as client-go's NewLeaderElector)."""
        if self.retry_period_s <= 0:
            return f"the retry period ({self.retry_period_s:g} s) must be positive"
        if self.renew_deadline_s <= self.retry_period_s:
            return (
                f"the renew deadline ({self.renew_deadline_s:g} s) must be longer than the retry period "
                f"({self.retry_period_s:g} s)"
            )
        if self.lease_duration_s <= self.renew_deadline_s:
            return (
                f"the lease duration ({self.lease_duration_s} s) must be longer than the renew deadline "
                f"({self.renew_deadline_s:g} s): a leader that cannot renew must stop before a standby may "
                "take over"
            )
        return None


@dataclass(frozen=True)
class LeaseRecord:
    """The election's fields of a Lease's spec, as read or as to be written."""

    holder: str | None
    lease_duration_s: int | None = None
    acquire_time: datetime.datetime | None = None
    renew_time: datetime.datetime | None = None
    transitions: int = 0


@dataclass(frozen=True)
class Observation:
    """The Lease as last read and when (monotonic) it was first read as it is: its age is its expiry.

    The resourceVersion counts too: every write bumps it, so a renewal shows even where the holder's
    clock wrote the same renewTime twice (a coarse or stepped-back clock).
    """

    record: LeaseRecord | None
    since: float
    version: str | None = None


class Action(Enum):
    CREATE = "create"  # no Lease yet: create it, holding it
    ACQUIRE = "acquire"  # vacant or expired: take it over
    RENEW = "renew"  # mine: write a fresh renewTime
    WAIT = "wait"  # someone else's and alive
    LOST = "lost"  # I was leading and am no more: stop acting at once


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    write: LeaseRecord | None = None  # what CREATE, ACQUIRE and RENEW write


def observe(
    previous: Observation | None, record: LeaseRecord | None, version: str | None, now: float
) -> Observation:
    """The observation after reading `record` at `now`: its age restarts whenever it changed."""
    if previous is not None and (previous.record, previous.version) == (record, version):
        return previous
    return Observation(record, now, version)


def decide(
    record: LeaseRecord | None,
    observation: Observation,
    *,
    me: str,
    now: float,
    wall_now: datetime.datetime,
    last_renewed: float | None,
    timings: Timings,
) -> Decision:
    """What to do with the Lease as just read.

    `now` and `last_renewed` are monotonic: `last_renewed` is when my last successful write was sent
    (None while I am not the leader); `wall_now` only goes into what is written (for people reading it).
    """
    if last_renewed is not None:
        overdue = deadline_passed(last_renewed, now, timings)
        if overdue:
            return Decision(Action.LOST, overdue)
        if record is None or record.holder != me:
            holder = record.holder if record is not None else None
            return Decision(Action.LOST, f"the lease is held by {holder or 'nobody'} now")
    if record is None:
        return Decision(
            Action.CREATE, "no lease yet", LeaseRecord(me, timings.lease_duration_s, wall_now, wall_now, 0)
        )
    if record.holder == me:
        # Also when not leading yet: a write of mine whose answer never came (a timeout) did land.
        return Decision(
            Action.RENEW,
            "held by me",
            replace(
                record,
                lease_duration_s=timings.lease_duration_s,
                acquire_time=record.acquire_time or wall_now,
                renew_time=wall_now,
            ),
        )
    taken_over = LeaseRecord(me, timings.lease_duration_s, wall_now, wall_now, record.transitions + 1)
    if not record.holder:
        return Decision(Action.ACQUIRE, "the lease was released", taken_over)
    # The holder's own promise; a record without one gets mine.
    duration = record.lease_duration_s if record.lease_duration_s else timings.lease_duration_s
    unchanged = now - observation.since
    if unchanged >= duration:
        return Decision(
            Action.ACQUIRE,
            f"{record.holder} did not renew for {unchanged:.1f} s >= lease duration {duration} s",
            taken_over,
        )
    return Decision(
        Action.WAIT, f"held by {record.holder}, expires in {duration - unchanged:.1f} s unless renewed"
    )


def deadline_passed(last_renewed: float, now: float, timings: Timings) -> str | None:
    """Why a leader must stop now (its last renewal is a renew deadline old), or None."""
    overdue = now - last_renewed
    if overdue >= timings.renew_deadline_s:
        return f"not renewed for {overdue:.1f} s >= renew deadline {timings.renew_deadline_s:g} s"
    return None


def released(record: LeaseRecord, wall_now: datetime.datetime) -> LeaseRecord:
    """The record a leader writes as it stops (as client-go's ReleaseOnCancel): vacant, so a standby
    takes over on its next poll instead of after a lease duration."""
    return LeaseRecord(None, 1, wall_now, wall_now, record.transitions)


def next_poll_in(decision: Decision, observation: Observation, now: float, timings: Timings) -> float:
    """Seconds to the next read: the retry period, or less when the lease expires before that."""
    record = observation.record
    if decision.action is Action.WAIT and record is not None:
        duration = record.lease_duration_s or timings.lease_duration_s
        return max(0.0, min(timings.retry_period_s, observation.since + duration - now))
    return timings.retry_period_s


def identity(pod_name: str | None, hostname: str, suffix: str) -> str:
    """Who I am in the Lease: the pod, plus a suffix new in every process, so that a restarted operator
    never takes the lease of its previous life for its own (it waits like any standby)."""
    return f"{pod_name or hostname}_{suffix}"


def new_identity(env: Mapping[str, str] = os.environ) -> str:
    return identity(env.get("POD_NAME"), socket.gethostname(), uuid.uuid4().hex[:10])


def lease_namespace(
    flag: str | None, env: Mapping[str, str], read_mounted: Callable[[], str | None]
) -> str | None:
    """The namespace of the Lease: the flag, else the pod's own (POD_NAMESPACE, else the service
    account's mounted namespace file); None when there is no telling."""
    for candidate in (flag, env.get("POD_NAMESPACE"), read_mounted()):
        if candidate and candidate.strip():
            return candidate.strip()
    return None


def read_mounted_namespace(path: Path = SERVICE_ACCOUNT_NAMESPACE) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _micro_time(moment: datetime.datetime) -> datetime.datetime:
    # The client writes datetimes with isoformat(), which drops the fraction when it is .000000; the
    # apiserver parses a Lease's MicroTime only with its six digits.
    return moment if moment.microsecond else moment.replace(microsecond=1)


def _record_of(lease: client.V1Lease | None) -> LeaseRecord | None:
    if lease is None:
        return None
    spec = lease.spec or client.V1LeaseSpec()
    return LeaseRecord(
        holder=spec.holder_identity or None,
        lease_duration_s=spec.lease_duration_seconds,
        acquire_time=spec.acquire_time,
        renew_time=spec.renew_time,
        transitions=spec.lease_transitions or 0,
    )


def _version_of(lease: client.V1Lease | None) -> str | None:
    return lease.metadata.resource_version if lease is not None and lease.metadata else None


def _spec_of(record: LeaseRecord) -> client.V1LeaseSpec:
    return client.V1LeaseSpec(
        holder_identity=record.holder or None,
        lease_duration_seconds=record.lease_duration_s,
        acquire_time=_micro_time(record.acquire_time) if record.acquire_time else None,
        renew_time=_micro_time(record.renew_time) if record.renew_time else None,
        lease_transitions=record.transitions,
    )


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def exit_now(message: str) -> NoReturn:
    """Stop acting at once (as controller-runtime does): the kubelet restarts the pod as a standby.

    os._exit, not sys.exit: no handler, finalizer or pool thread of this process may write anything
    more, and none of them gets a chance to delay the exit.
    """
    log.error(message)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


class LeaseElector:
    """Reads and writes one Lease: `acquire` blocks until leader, a thread renews, `release` hands over."""

    def __init__(
        self,
        api: client.CoordinationV1Api,
        namespace: str,
        name: str,
        me: str,
        timings: Timings,
        on_lost: Callable[[str], object] = exit_now,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime.datetime] = _utc_now,
    ):
        self.api, self.namespace, self.name, self.me = api, namespace, name, me
        self.timings, self.on_lost = timings, on_lost
        self.clock, self.wall_clock = clock, wall_clock
        self.observation: Observation | None = None
        self.last_renewed: float | None = None  # set while leading
        self.lease: client.V1Lease | None = None  # as last read or written (its resourceVersion)
        self._stop_renewing = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def _read(self, timeout_s: float) -> client.V1Lease | None:
        try:
            lease: client.V1Lease = self.api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=timeout_s
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return lease

    def try_once(self, timeout_s: float) -> Decision:
        """One round: read, decide, write. A write that loses the race raises ApiException(409)."""
        self.lease = self._read(timeout_s)
        record = _record_of(self.lease)
        # After the read returned: the record was written before this, so its age is never overstated.
        now = self.clock()
        self.observation = observe(self.observation, record, _version_of(self.lease), now)
        decision = decide(
            record,
            self.observation,
            me=self.me,
            now=now,
            wall_now=self.wall_clock(),
            last_renewed=self.last_renewed,
            timings=self.timings,
        )
        if decision.write is None:
            return decision
        sent = self.clock()  # a leader counts from before the write: it stops early rather than late
        if decision.action is Action.CREATE:
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=_spec_of(decision.write),
            )
            self.lease = self.api.create_namespaced_lease(self.namespace, body, _request_timeout=timeout_s)
        else:
            assert self.lease is not None
            self.lease.spec = _spec_of(decision.write)  # its metadata carries the resourceVersion read
            self.lease = self.api.replace_namespaced_lease(
                self.name, self.namespace, self.lease, _request_timeout=timeout_s
            )
        self.last_renewed = sent
        self.observation = Observation(decision.write, self.clock(), _version_of(self.lease))
        return decision

    def acquire(self, stop: threading.Event) -> bool:
        """Block until this process holds the lease (True) or `stop` is set (False)."""
        told: str | None = None  # the holder the log last named
        while not stop.is_set():
            try:
                decision = self.try_once(timeout_s=self.timings.renew_deadline_s)
            except ApiException as exc:
                reason = (
                    "another replica won this round" if exc.status == 409 else f"{exc.status} {exc.reason}"
                )
                log.info(f"lease {self.ref}: not acquired ({reason}); retrying")
                stop.wait(self.timings.retry_period_s)
                continue
            except Exception as exc:  # the apiserver unreachable: a standby just keeps trying
                log.warning(f"lease {self.ref}: cannot read it ({exc}); retrying")
                stop.wait(self.timings.retry_period_s)
                continue
            if decision.action is not Action.WAIT:
                log.info(f"became the leader of lease {self.ref} as {self.me} ({decision.reason})")
                return True
            holder = self.observation.record.holder if self.observation and self.observation.record else None
            if holder != told:
                log.info(f"waiting to become the leader of lease {self.ref} (held by {holder})")
                told = holder
            assert self.observation is not None
            stop.wait(next_poll_in(decision, self.observation, self.clock(), self.timings))
        return False

    def start_renewing(self) -> None:
        self._renewer = threading.Thread(target=self._renew_loop, name="lease-renewer", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stop_renewing.is_set():
            assert self.last_renewed is not None
            # Checked before any request too: a process frozen past its deadline (SIGSTOP, a paused VM)
            # exits as it wakes, without a round trip first.
            overdue = deadline_passed(self.last_renewed, self.clock(), self.timings)
            if overdue:
                self._lose(overdue)
                return
            # No request may outlast the deadline: a hung call must not keep a lost leader acting.
            left = self.last_renewed + self.timings.renew_deadline_s - self.clock()
            try:
                decision = self.try_once(timeout_s=max(left, 0.1))
            except Exception as exc:  # ApiException (409: the lease changed under us), network, timeout
                failure = f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else str(exc)
                log.warning(f"lease {self.ref}: renewal failed ({failure}); retrying")
                left = self.last_renewed + self.timings.renew_deadline_s - self.clock()
                self._stop_renewing.wait(max(0.0, min(self.timings.retry_period_s, left)))
                continue
            if decision.action is Action.LOST and not self._stop_renewing.is_set():
                self._lose(decision.reason)
                return
            self._stop_renewing.wait(self.timings.retry_period_s)

    def _lose(self, reason: str) -> None:
        self.last_renewed = None
        self.on_lost(f"lost leadership of lease {self.ref}: {reason}; exiting")

    def stop_renewing(self) -> None:
        self._stop_renewing.set()
        if self._renewer is not None:
            self._renewer.join(timeout=self.timings.renew_deadline_s + 1)

    def release(self) -> None:
        """Hand the lease over now (call after everything that acts has stopped); best effort."""
        if self.last_renewed is None or self.lease is None or self.observation is None:
            return
        record = self.observation.record
        if record is None or record.holder != self.me:
            return
        self.lease.spec = _spec_of(released(record, self.wall_clock()))
        try:
            self.api.replace_namespaced_lease(
                self.name, self.namespace, self.lease, _request_timeout=self.timings.renew_deadline_s
            )
        except Exception as exc:  # the lease then expires after its duration, as after a crash
            log.warning(f"lease {self.ref}: could not release it ({exc}); it expires on its own")
            return
        self.last_renewed = None
        log.info(f"released lease {self.ref}")


def new_elector(api_client: client.ApiClient, namespace: str, name: str, timings: Timings) -> LeaseElector:
    return LeaseElector(client.CoordinationV1Api(api_client), namespace, name, new_identity(), timings)
