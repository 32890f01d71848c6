"""The sandbox's network layout (pure: addresses, ports, the commands that set a namespace up)."""

from __future__ import annotations

import ipaddress

import pytest

from sandbox import netns
from sandbox.config import SandboxConfig
from sandbox.pki import serving_sans


def test_nodes_pods_and_the_apiserver_have_addresses_of_the_local_node_network() -> None:
    cfg = SandboxConfig(name="x", slot=3, nodes=2)
    network = ipaddress.ip_network(netns.NODE_NETWORK)
    cidrs = [ipaddress.ip_network(cfg.node_pod_cidr(i)) for i in range(cfg.nodes + 1)]  # + the CPU node
    assert all(c.subnet_of(network) for c in cidrs)
    assert len(set(cidrs)) == len(cidrs) and not any(a.overlaps(b) for a in cidrs for b in cidrs if a != b)
    nodes = [ipaddress.ip_address(cfg.node_ip(i)) for i in range(cfg.nodes + 1)]
    assert all(ip in network and not ip.is_loopback and not any(ip in c for c in cidrs) for ip in nodes)
    api = ipaddress.ip_address(cfg.apiserver_address)
    assert api in network and api not in nodes and not any(api in c for c in cidrs)
    assert ipaddress.ip_address(cfg.apiserver_cluster_ip) in ipaddress.ip_network(netns.SERVICE_NETWORK)


def test_each_sandbox_has_its_own_namespace_and_port_block() -> None:
    a, b = SandboxConfig(name="default", slot=0), SandboxConfig(name="test", slot=1)
    assert (a.netns, b.netns) == ("tritonsbx-default", "tritonsbx-test")
    for cfg in (a, b):
        ports = list(cfg.ports.values())
        assert len(set(ports)) == len(ports)
        # The demo's operator uses base + 10 and + 11; the block is 20 wide.
        assert all(cfg.base_port <= p < cfg.base_port + 10 for p in ports)
        assert cfg.relayed_ports == [cfg.ports["kube-apiserver"]]
        assert cfg.apiserver_url == f"https://127.0.0.1:{cfg.ports['kube-apiserver']}"
    assert not set(a.ports.values()) & set(b.ports.values())


def test_namespace_setup_routes_both_networks_locally_on_lo() -> None:
    cmds = netns.setup_commands("tritonsbx-x", "10.244.0.1")
    assert cmds[0] == ["ip", "-n", "tritonsbx-x", "link", "set", "lo", "up"]
    routes = [c for c in cmds if "route" in c]
    assert all(c[:5] == ["ip", "-n", "tritonsbx-x", "route", "replace"] for c in routes)  # idempotent
    assert {c[6] for c in routes} == {netns.NODE_NETWORK, netns.SERVICE_NETWORK}
    service = next(c for c in routes if c[6] == netns.SERVICE_NETWORK)
    assert service[service.index("src") + 1] == "10.244.0.1"
    assert netns.nsenter_argv("tritonsbx-x") == ["nsenter", "--net=/run/netns/tritonsbx-x", "--"]


def test_serving_cert_names_the_addresses_pods_dial() -> None:
    sans = serving_sans(["10.244.0.254", "10.96.0.1"]).split(",")
    assert "IP:127.0.0.1" in sans and "IP:10.244.0.254" in sans and "DNS:kubernetes.default.svc" in sans
    assert sans.count("IP:10.96.0.1") == 1


def test_missing_tools_are_named_with_how_to_install_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda tool: None if tool == "nft" else f"/usr/bin/{tool}")
    assert netns.missing_tools() == [
        "nft (Debian: apt-get install nftables (kube-proxy's nftables mode runs it))"
    ]
