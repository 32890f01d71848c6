"""Pure planning of how a container of a pod runs as a local process (no API calls, no I/O).

An image stands for a program we have here:
- an image whose name contains `tritonserver` -> the real tritonserver from the nvidia-pytriton wheel;
- an image whose name contains `triton-operator` -> this repository's Python entry points;
- a `pause` image (the placeholder container of real clusters) -> a process that sleeps until stopped;
- an image named `prometheus` or `prometheus-config-reloader` (what the Prometheus Operator's StatefulSet
  runs) -> Prometheus 3.16 (.ci/build-prometheus.sh) and the Operator's config reloader
  (.ci/build-prometheus-operator.sh), from the build cache; missing there, the container cannot start.
  Their mounts under /etc/prometheus are bound at their container paths too (the configuration the
  Operator renders names its rule files there); the empty mount points are made on this machine.
Paths under a container's volumeMounts are rewritten to the local folders that back them, because
processes share this machine's file system. The one exception is a mount under /var/run/secrets (the
ServiceAccount token, CA and namespace a kubelet gives every pod): client libraries read it at that fixed
path, so the process gets a private mount namespace with that folder bound there (`unshare --mount`;
root, no new network).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRITON_IMAGE_MARK = "tritonserver"
OPERATOR_IMAGE_MARK = "triton-operator"
OPERATOR_ENTRYPOINT = "triton-operator"
# Programs the operator image provides (its console scripts and interpreter).
OPERATOR_PROGRAMS = {"triton-operator", "model-builders", "python", "python3"}
# The operator image's programs that listen (their subcommand words) and the flag of their address.
OPERATOR_LISTENERS = (
    (("run",), "--health-address"),
    (("repository", "serve"), "--address"),
    (("repository", "sync"), "--address"),
)
# Mounts programs find by a fixed path, not by an argument: bound there in a private mount namespace.
FIXED_PATH_MOUNTS = ("/var/run/secrets/", "/run/secrets/")
# Images of the Prometheus Operator's StatefulSet, by name -> the program that stands in for each.
PROMETHEUS_IMAGES = {"prometheus": "prometheus", "prometheus-config-reloader": "prometheus-config-reloader"}
PROMETHEUS_FIXED_PATH_MOUNTS = (*FIXED_PATH_MOUNTS, "/etc/prometheus/")
PROMETHEUS_PORT = 9090
# Flags whose paths refer to the image's own layout, which does not exist here.
TRITON_IMAGE_LAYOUT_FLAGS = ("--backend-directory", "--repoagent-directory", "--cache-directory")


class UnsupportedContainer(Exception):
    """The sandbox cannot run this container; the message says why and what it can run."""


@dataclass(frozen=True)
class Mount:
    container_path: str
    local_path: str


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]


def image_kind(image: str) -> str:
    name = image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]
    if TRITON_IMAGE_MARK in name:
        return "triton"
    if OPERATOR_IMAGE_MARK in name:
        return "operator"
    if name == "pause":
        return "pause"
    if name in PROMETHEUS_IMAGES:
        return name
    raise UnsupportedContainer(
        f"image {image!r} has no local stand-in: the sandbox runs images named *{TRITON_IMAGE_MARK}* "
        f"(real tritonserver), *{OPERATOR_IMAGE_MARK}* (this repository's entry points), pause, "
        f"{' and '.join(PROMETHEUS_IMAGES)}"
    )


def rewrite_paths(value: str, mounts: Sequence[Mount]) -> str:
    """Replace each mount's container path with its local folder wherever it starts a path in `value`.

    One pass over all mounts (longest path first wins): a local folder may itself start with another
    mount's container path (a cache under /tmp, and a /tmp mount), and must not be rewritten again.
    """
    local = {m.container_path.rstrip("/"): m.local_path for m in mounts if m.container_path.rstrip("/")}
    if not local:
        return value
    paths = "|".join(re.escape(p) for p in sorted(local, key=len, reverse=True))
    # A path starts the value or follows '=', ':' or ','; it ends there or goes on with '/', ':', ','.
    pattern = rf"(^|(?<=[=:,]))({paths})(?=$|[/:,])"
    return re.sub(pattern, lambda m: local[m.group(2)], value)


def expand_kube_vars(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command/args; `$$(VAR)` escapes, unknown vars stay as written."""

    def sub(match: re.Match[str]) -> str:
        if match.group(1) == "$$":
            return "$(" + match.group(2) + ")"
        return env.get(match.group(2), match.group(0))

    return re.sub(r"(\$\$|\$)\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, value)


def plan_container(
    container: Mapping[str, Any],
    *,
    pod_ip: str,
    mounts: Sequence[Mount],
    env: Mapping[str, str],
    triton_binary: str,
    triton_backend_dir: str,
    triton_library_path: str,
    operator_bin_dir: str,
    base_env: Mapping[str, str],
    programs: Mapping[str, str] | None = None,
) -> Launch:
    """Decide the argv and environment of one container's process. `programs`: image name -> local
    program, for the Prometheus images."""
    kind = image_kind(str(container.get("image", "")))
    command = [expand_kube_vars(str(c), env) for c in container.get("command") or []]
    args = [expand_kube_vars(str(a), env) for a in container.get("args") or []]
    full_env = {**base_env, **{k: rewrite_paths(v, mounts) for k, v in env.items()}}
    if kind == "triton":
        argv = _triton_argv(command, args, pod_ip, triton_binary, triton_backend_dir, mounts)
        full_env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (triton_library_path, full_env.get("LD_LIBRARY_PATH")) if p
        )
    elif kind == "pause":
        argv = ["sleep", "infinity"]
    elif kind in PROMETHEUS_IMAGES:
        argv = _prometheus_argv(kind, command, args, pod_ip, (programs or {}).get(kind, ""), mounts)
        return Launch(argv=with_fixed_path_mounts(argv, mounts, PROMETHEUS_FIXED_PATH_MOUNTS), env=full_env)
    else:
        argv = _operator_argv(command, args, operator_bin_dir, mounts, pod_ip)
    return Launch(argv=with_fixed_path_mounts(argv, mounts), env=full_env)


def with_fixed_path_mounts(
    argv: list[str], mounts: Sequence[Mount], prefixes: tuple[str, ...] = FIXED_PATH_MOUNTS
) -> list[str]:
    """Wrap argv so that mounts under `prefixes` appear at their container paths (see the module doc).
    The mount points are made on this machine if missing (empty folders; the bind is private)."""
    # A file mounted by subPath is reached through the rewritten paths only.
    binds = [m for m in mounts if m.container_path.startswith(prefixes) and not os.path.isfile(m.local_path)]
    if not binds:
        return argv
    steps = [
        f"mkdir -p {shlex.quote(m.container_path)} && mount --bind {shlex.quote(m.local_path)} "
        f"{shlex.quote(m.container_path)}"
        for m in binds
    ]
    # unshare execs in place (no --fork): the container's PID stays the one its runner watches and signals.
    script = " && ".join([*steps, 'exec "$@"'])
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", *argv]


def _triton_argv(
    command: list[str], args: list[str], pod_ip: str, binary: str, backend_dir: str, mounts: Sequence[Mount]
) -> list[str]:
    if command and os.path.basename(command[0]) != "tritonserver":
        raise UnsupportedContainer(
            f"command {command[0]!r} is not tritonserver; in the sandbox a Triton image runs only "
            "tritonserver (no shell wrappers)"
        )
    words = [rewrite_paths(a, mounts) for a in command[1:] + args]
    words = [w for w in words if not w.startswith(TRITON_IMAGE_LAYOUT_FLAGS)]
    # A pod's ports belong to its IP; bind there, as a container's network namespace would.
    for flag in ("--http-address", "--grpc-address", "--metrics-address"):
        if not any(w.startswith(flag) for w in words):
            words.append(f"{flag}={pod_ip}")
    return [binary, *words, f"--backend-directory={backend_dir}"]


def _prometheus_argv(
    image: str, command: list[str], args: list[str], pod_ip: str, program: str, mounts: Sequence[Mount]
) -> list[str]:
    if not program or not os.access(program, os.X_OK):
        build = ".ci/build-prometheus.sh" if image == "prometheus" else ".ci/build-prometheus-operator.sh"
        raise UnsupportedContainer(f"image {image!r} stands for a local build that is not there: run {build}")
    if command and os.path.basename(command[0]) != image:
        raise UnsupportedContainer(
            f"command {command[0]!r} is not {image}; the sandbox runs only {image} here"
        )
    words = [rewrite_paths(w, mounts) for w in command[1:] + args]
    # All pods share one network namespace: each listens on its pod's IP, and `localhost` (the pod's own
    # namespace in a cluster) is that IP.
    words = [
        re.sub(r"^(--listen-address=):", rf"\g<1>{pod_ip}:", w) if image != "prometheus" else w for w in words
    ]
    words = [re.sub(r"//(localhost|127\.0\.0\.1):", f"//{pod_ip}:", w) for w in words]
    if image == "prometheus" and not any(w.startswith("--web.listen-address") for w in words):
        words.append(f"--web.listen-address={pod_ip}:{PROMETHEUS_PORT}")
    return [program, *words]


def _operator_argv(
    command: list[str], args: list[str], bin_dir: str, mounts: Sequence[Mount], pod_ip: str
) -> list[str]:
    program, rest = (command[0], command[1:]) if command else (OPERATOR_ENTRYPOINT, [])
    name = os.path.basename(program)
    if name not in OPERATOR_PROGRAMS:
        raise UnsupportedContainer(
            f"command {program!r} is not in the operator image; it provides {sorted(OPERATOR_PROGRAMS)}"
        )
    words = [rewrite_paths(w, mounts) for w in rest + args]
    # The operator's listening programs bind all addresses by default; here all pods share one network
    # namespace, so each binds its pod's IP, as its own network namespace would make it.
    if name == OPERATOR_ENTRYPOINT:
        for subcommand, flag in OPERATOR_LISTENERS:
            if words[: len(subcommand)] == list(subcommand) and not any(w.startswith(flag) for w in words):
                words.append(f"{flag}={pod_ip}")
    return [str(Path(bin_dir) / name), *words]
