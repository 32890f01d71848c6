"""The `repository` subcommands: `serve` (the repository server) and `sync` (the Triton pod's sidecar)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`repository serve ...` and `repository sync ...` under `parser`."""
    from triton_operator.repository import server, sync

    sub = parser.add_subparsers(dest="repository_command", required=True)
    server.add_arguments(
        sub.add_parser("serve", help="serve the model repository's content to the sync agents (one pod)")
    )
    sync.add_arguments(sub.add_parser("sync", help="mirror the repository server into this pod's /models"))


def run(args: argparse.Namespace) -> int:
    """Run the chosen subcommand; returns the exit code."""
    from triton_operator.repository import server, sync

    if args.repository_command == "serve":
        return server.run(args)
    return sync.run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m triton_operator.repository serve|sync ...`."""
    parser = argparse.ArgumentParser(prog="triton-operator repository", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
