"""Where a sandbox lives: its name, ports, addresses, folders and binaries.

Several sandboxes may run side by side (the demo's `default` and the tests' `test`): each runs in a
network namespace of its own (netns.py), where its nodes and pods have addresses of 10.244.0.0/16 and
its Services ClusterIPs of 10.96.0.0/16 (the same in every sandbox: the namespaces keep them apart).
Each also gets a slot, which fixes its port block on 127.0.0.1: the control plane listens there inside
its namespace, and the relay (relay.py) serves the apiserver's port on the host's 127.0.0.1, so a
kubeconfig works from both sides and two sandboxes' relays never collide.
"""

from __future__ import annotations

import os
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

from sandbox import netns

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_ROOT = Path(
    os.environ.get("TRITON_SANDBOX_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "triton-operator-sandbox"
)
WELL_KNOWN_SLOTS = {"default": 0, "test": 1}
GPUS_PER_NODE_DEFAULT = 4
NODE_COUNT_DEFAULT = 2
GPU_PRODUCT_DEFAULT = "NVIDIA-A100-SXM4-80GB"
STORAGE_CLASS = "sandbox-local"
PROVISIONER = "sandbox.tritonoperator.dev/local-dir"
# Every process a sandbox starts carries this variable; `down` sweeps by it so nothing survives.
MARKER_ENV = "TRITON_SANDBOX_DIR"


@dataclass(frozen=True)
class SandboxConfig:
    name: str
    slot: int
    nodes: int = NODE_COUNT_DEFAULT
    gpus_per_node: int = GPUS_PER_NODE_DEFAULT
    gpu_product: str = GPU_PRODUCT_DEFAULT

    @classmethod
    def from_env(cls, name: str | None = None) -> SandboxConfig:
        name = name or os.environ.get("SANDBOX_NAME", "default")
        slot_env = os.environ.get("SANDBOX_SLOT")
        if slot_env is not None:
            slot = int(slot_env)
        else:
            slot = WELL_KNOWN_SLOTS.get(name, 2 + zlib.crc32(name.encode()) % 40)
        return cls(
            name=name,
            slot=slot,
            nodes=int(os.environ.get("SANDBOX_NODES", NODE_COUNT_DEFAULT)),
            gpus_per_node=int(os.environ.get("SANDBOX_GPUS_PER_NODE", GPUS_PER_NODE_DEFAULT)),
        )

    # -- folders --------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return CACHE_ROOT / "sandboxes" / self.name

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def volumes_dir(self) -> Path:
        return self.root / "volumes"

    @property
    def pods_dir(self) -> Path:
        return self.root / "pods"

    @property
    def audit_log(self) -> Path:
        return self.log_dir / "audit.log"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    # -- network --------------------------------------------------------------------------------
    @property
    def base_port(self) -> int:
        return 17000 + 20 * self.slot

    @property
    def ports(self) -> dict[str, int]:
        b = self.base_port
        return {
            "etcd-client": b,
            "etcd-peer": b + 1,
            "kube-apiserver": b + 2,
            "kube-controller-manager": b + 3,
            "kube-scheduler": b + 4,
            "kwok": b + 5,
            "s3": b + 6,
            "podrunner": b + 7,
            "kube-proxy-healthz": b + 8,
            "kube-proxy-metrics": b + 9,
            # b + 10 and b + 11: the demo's operator (health, metrics); b + 12 to b + 17: the Gateway
            # (gateway.PORT_OFFSETS)
        }

    @property
    def extra_base_port(self) -> int:
        """A second block of 10 ports per slot, clear of every slot's first block (17000-17839 for slots
        0-41), for components that start on demand: Argo CD (argocd.PORT_OFFSETS) uses 0-3."""
        return 18000 + 10 * self.slot

    @property
    def relayed_ports(self) -> list[int]:
        """Ports of the namespace's 127.0.0.1 served on the host's 127.0.0.1 too (by the relay)."""
        return [self.ports["kube-apiserver"]]

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['kube-apiserver']}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def netns(self) -> str:
        """The sandbox's network namespace (/run/netns/<this>)."""
        return netns.PREFIX + self.name

    @property
    def apiserver_address(self) -> str:
        """Where pods reach the apiserver (its advertised address; the `kubernetes` Service's endpoint)."""
        return "10.244.0.254"

    @property
    def apiserver_cluster_ip(self) -> str:
        return "10.96.0.1"

    def node_name(self, index: int) -> str:
        return f"gpu-node-{index}"

    def node_ip(self, index: int) -> str:
        return f"10.244.0.{index + 1}"

    def node_pod_cidr(self, index: int) -> str:
        # 10.244.0.0/16 is routed `local` on lo inside the sandbox's namespace: the real process of a
        # pod binds its pod IP with no veth, and the apiserver accepts it in EndpointSlices.
        return f"10.244.{index + 1}.0/24"


@dataclass(frozen=True)
class Binaries:
    dir: Path

    def path(self, name: str) -> str:
        return str(self.dir / name)

    @property
    def kwok_stages(self) -> Path:
        return self.dir / "kwok-stages"


def ensure_binaries() -> Binaries:
    """Build (first time) or find the cached control-plane binaries."""
    script = REPO_ROOT / "sandbox" / "build-binaries.sh"
    proc = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.returncode)
    return Binaries(Path(proc.stdout.strip().splitlines()[-1]))
