"""The sandbox gateway's fixed choices: its ports stay in the slot's block and clear of the cluster's, and
Contour and Envoy get only loopback addresses."""

from __future__ import annotations

import pytest

from sandbox import gateway
from sandbox.config import SandboxConfig

BLOCK = 20  # ports per slot (config.SandboxConfig.base_port)


@pytest.mark.parametrize("slot", [0, 1, 41])
def test_ports_in_the_slots_block_and_clear_of_the_clusters(slot: int) -> None:
    cfg = SandboxConfig(name="x", slot=slot)
    ours = gateway.ports(cfg)
    assert len(set(ours.values())) == len(ours)
    assert all(cfg.base_port <= p < cfg.base_port + BLOCK for p in ours.values())
    assert not set(ours.values()) & set(cfg.ports.values())
    # 10 and 11: the demo operator's health and metrics ports.
    assert not {cfg.base_port + 10, cfg.base_port + 11} & set(ours.values())
    neighbour = SandboxConfig(name="y", slot=slot + 1)
    assert not set(ours.values()) & set(gateway.ports(neighbour).values())


def test_contour_and_envoy_bind_loopback_only() -> None:
    cfg = SandboxConfig(name="x", slot=3)
    argv = gateway.contour_argv(cfg, gateway.GatewayBinaries(cfg.root), cfg.root / "contour.yaml")
    addresses = [a.split("=", 1)[1] for a in argv if a.split("=", 1)[0].endswith("-address")]
    assert addresses and all(a.startswith("127.") for a in addresses), addresses
    assert gateway.gateway_address(cfg) == "127.103.0.254:8080"
    config = gateway.contour_config(cfg, cfg.kubeconfig)
    assert config["network"]["admin-port"] == gateway.ports(cfg)["envoy-admin"]  # not Contour's 9001
    envoy = gateway.envoy_argv(cfg, gateway.GatewayBinaries(cfg.root), cfg.root / "envoy.json")
    assert "--disable-hot-restart" in envoy
    assert envoy[envoy.index("--base-id") + 1] == "1003"


def test_one_listener_takes_http_and_grpc_routes_from_every_namespace() -> None:
    gw = next(m for m in gateway.manifests() if m["kind"] == "Gateway")
    (listener,) = gw["spec"]["listeners"]
    assert (listener["name"], listener["protocol"], listener["port"]) == ("http", "HTTP", 80)
    assert listener["allowedRoutes"]["namespaces"] == {"from": "All"}
    assert {k["kind"] for k in listener["allowedRoutes"]["kinds"]} == {"HTTPRoute", "GRPCRoute"}
    assert gateway.parent_ref()["sectionName"] == listener["name"]
