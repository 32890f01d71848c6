"""`triton-operator`: the operator image's entry point.

triton-operator run       run the operator against the cluster of $KUBECONFIG / in-cluster config
                          (--leader-election: only the holder of a Lease acts, see election.py)
triton-operator version   print the version
triton-operator stage     stage one TritonModel version into the model repository (inside its Job)
triton-operator repository serve|sync
                          the PerReplica repository: serve the staged PVC's content (one pod), or
                          mirror it into a Triton pod's /models (its sidecar); see repository/
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from triton_operator import __version__

if TYPE_CHECKING:
    from triton_operator.main import LeaderElection


def _env(name: str, default: str) -> str:
    return os.environ.get(f"TRITON_OPERATOR_LEADER_ELECTION_{name}", default)


def add_leader_election_arguments(run: argparse.ArgumentParser) -> None:
    """Flags of `run --leader-election`; the timings default to client-go's, or to
    TRITON_OPERATOR_LEADER_ELECTION_{LEASE_DURATION,RENEW_DEADLINE,RETRY_PERIOD}."""
    run.add_argument(
        "--leader-election",
        action="store_true",
        help="act only while holding a coordination.k8s.io Lease (several replicas: one acts, the others "
        "wait as standbys)",
    )
    run.add_argument(
        "--leader-election-namespace",
        default=None,
        help="namespace of the Lease; default: the pod's own (env POD_NAMESPACE, else its service account's)",
    )
    run.add_argument(
        "--leader-election-lease-name",
        default="triton-operator",
        help="name of the Lease (default: %(default)s)",
    )
    run.add_argument(
        "--leader-election-lease-duration",
        type=int,
        default=_env("LEASE_DURATION", "15"),
        help="seconds a standby waits, after it last saw the leader renew, before it takes over "
        "(default: %(default)s)",
    )
    run.add_argument(
        "--leader-election-renew-deadline",
        type=float,
        default=_env("RENEW_DEADLINE", "10"),
        help="seconds the leader keeps acting without a successful renewal; then it exits "
        "(default: %(default)s; shorter than the lease duration)",
    )
    run.add_argument(
        "--leader-election-retry-period",
        type=float,
        default=_env("RETRY_PERIOD", "2"),
        help="seconds between renewals, and between a standby's reads (default: %(default)s)",
    )


def leader_election_of(args: argparse.Namespace) -> tuple[LeaderElection | None, str | None]:
    """The election settings of `run`'s flags, or why there are none (one line)."""
    from triton_operator import election
    from triton_operator.main import LeaderElection

    timings = election.Timings(
        lease_duration_s=args.leader_election_lease_duration,
        renew_deadline_s=args.leader_election_renew_deadline,
        retry_period_s=args.leader_election_retry_period,
    )
    problem = timings.problem()
    if problem:
        return None, f"--leader-election: {problem}"
    namespace = election.lease_namespace(
        args.leader_election_namespace, os.environ, election.read_mounted_namespace
    )
    if namespace is None:
        return None, (
            "--leader-election needs the Lease's namespace: pass --leader-election-namespace, or set "
            f"POD_NAMESPACE ({election.SERVICE_ACCOUNT_NAMESPACE} is not there either)"
        )
    return LeaderElection(namespace, args.leader_election_lease_name, timings), None


def listen_problem(address: str, ports: Sequence[int]) -> str | None:
    """Why the operator could not listen on address:port for each port (one line), or None.

    Checked before anything starts: a busy port would otherwise end `run` with a traceback from deep
    inside the metrics server or kopf's liveness endpoint (seen when a second operator ran beside one).
    """
    for port in ports:
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError as exc:
                return (
                    f"cannot listen on {address}:{port} (the health port and the metrics port after it): "
                    f"{exc.strerror or exc}; stop what uses it or pass another --health-port"
                )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["repository"]:
        # The repository server and sync sidecars start with their pods, the sidecar beside a starting
        # Triton: parse only their arguments, importing none of the operator's API and staging (two
        # seconds on an idle machine here, past the liveness probe's budget on a busy node).
        from triton_operator.repository.cli import main as repository_main

        return repository_main(words[1:])
    parser = argparse.ArgumentParser(prog="triton-operator", description="Kubernetes operator for Triton")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the version and exit")
    run = sub.add_parser("run", help="run the operator")
    run.add_argument(
        "--namespace",
        action="append",
        default=None,
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    run.add_argument("--health-port", type=int, default=8080, help="port of /healthz and /metrics")
    run.add_argument("--health-address", default="0.0.0.0", help="address of /healthz and /metrics")
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=os.environ.get("TRITON_OPERATOR_LOG_FORMAT", "text"),
        help="text (default) or json: one JSON object a line, for log collectors "
        "(env TRITON_OPERATOR_LOG_FORMAT)",
    )
    add_leader_election_arguments(run)
    from triton_operator.staging.main import add_arguments as add_stage_arguments

    add_stage_arguments(sub.add_parser("stage", help="stage a model into the repository (run by the Job)"))
    from triton_operator.repository.cli import add_arguments as add_repository_arguments

    add_repository_arguments(
        sub.add_parser("repository", help="serve the model repository, or mirror it into a Triton pod")
    )
    args = parser.parse_args(words)
    if args.command == "version":
        print(f"triton-operator {__version__}")
        return 0
    if args.command == "run":
        from triton_operator import preflight
        from triton_operator.main import run_operator

        # The arguments first (no I/O), then the ports, then the cluster.
        leader_election, problem = leader_election_of(args) if args.leader_election else (None, None)
        problem = problem or listen_problem(args.health_address, (args.health_port, args.health_port + 1))
        verdict = preflight.Verdict(problem) if problem else preflight.check(args.namespace)
        if verdict.problem:
            print(f"triton-operator: error: {verdict.problem}", file=sys.stderr)
            return 2
        if not verdict.models_gate:
            print(f"triton-operator: warning: {preflight.GATE_OFF}", file=sys.stderr)
        return run_operator(
            namespaces=args.namespace,
            health_address=args.health_address,
            health_port=args.health_port,
            leader_election=leader_election,
            models_gate=verdict.models_gate,
            log_format=args.log_format,
        )
    if args.command == "stage":
        from triton_operator.staging.main import run as run_stage

        return run_stage(args)
    if args.command == "repository":
        from triton_operator.repository.cli import run as run_repository

        return run_repository(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
