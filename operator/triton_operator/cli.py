"""`triton-operator`: the operator image's entry point.

triton-operator run       run the operator against the cluster of $KUBECONFIG / in-cluster config
triton-operator version   print the version
triton-operator stage     stage one TritonModel version into the model repository (inside its Job)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from triton_operator import __version__


def main(argv: Sequence[str] | None = None) -> int:
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
    from triton_operator.staging.main import add_arguments as add_stage_arguments

    add_stage_arguments(sub.add_parser("stage", help="stage a model into the repository (run by the Job)"))
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"triton-operator {__version__}")
        return 0
    if args.command == "run":
        from triton_operator.main import run_operator

        return run_operator(
            namespaces=args.namespace, health_address=args.health_address, health_port=args.health_port
        )
    if args.command == "stage":
        from triton_operator.staging.main import run as run_stage

        return run_stage(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
