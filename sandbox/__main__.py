"""`python -m sandbox up|down|status|env|shell`: the local Kubernetes sandbox (see README)."""

from __future__ import annotations

import argparse
import os
import sys

from sandbox import cluster, netns, procs
from sandbox.config import SandboxConfig, ensure_binaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox")
    parser.add_argument("command", choices=["up", "down", "status", "env", "build", "shell"])
    parser.add_argument("--name", default=None, help="sandbox name (env SANDBOX_NAME, default 'default')")
    args = parser.parse_args(argv)
    cfg = SandboxConfig.from_env(args.name)
    if args.command == "build":
        print(ensure_binaries().dir)
    elif args.command == "up":
        bins = cluster.up(cfg)
        print(cluster.env_lines(cfg, bins))
    elif args.command == "env":
        print(cluster.env_lines(cfg, ensure_binaries()))
    elif args.command == "down":
        leftovers = cluster.down(cfg)
        if leftovers:
            print(f"sandbox: '{cfg.name}' stopped, but these remain: {', '.join(leftovers)}", file=sys.stderr)
            return 1
        print(f"sandbox: '{cfg.name}' is down; nothing of it is left running", file=sys.stderr)
    elif args.command == "shell":
        # A shell inside the sandbox's network namespace: pod IPs and ClusterIPs answer there.
        bins = cluster.up(cfg)
        shell = os.environ.get("SHELL") or "/bin/bash"
        env = {
            **os.environ,
            "KUBECONFIG": str(cfg.kubeconfig),
            "PATH": f"{bins.dir}:{os.environ.get('PATH', '')}",
            "SANDBOX_NAME": cfg.name,
        }
        print(f"sandbox: a shell in network namespace {cfg.netns}; `exit` leaves it", file=sys.stderr)
        sys.stdout.flush()
        os.execvpe("nsenter", [*netns.nsenter_argv(cfg.netns), shell], env)
    elif args.command == "status":
        print(f"{'network namespace':26} {cfg.netns if netns.exists(cfg.netns) else 'none'}")
        for component in cluster.COMPONENTS:
            pid = procs.pid_of(cfg, component)
            print(f"{component:26} {'running, pid ' + str(pid) if pid else 'not running'}")
        return 0 if cluster.is_running(cfg) else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
