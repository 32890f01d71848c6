"""The sandbox's KEDA (sandbox/keda.py), its fixed choices: ports in the slot's second block, clear of Argo
CD's and the monitoring stack's; the programs listen on loopback except the metrics apiserver, which
listens where its Service's EndpointSlice points and serves a certificate for the Service's name; the
APIService trusts that certificate's CA; kube-apiserver's front-proxy certificate, which the metrics
apiserver needs to see who calls, is made once and chains to its own CA."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from sandbox import argocd, keda, monitoring, pki
from sandbox.config import SandboxConfig

BLOCK = 10  # ports per slot in the second block (config.SandboxConfig.extra_base_port)


@pytest.mark.parametrize("slot", [0, 1, 41])
def test_ports_in_the_second_block_and_clear_of_the_other_on_demand_parts(slot: int) -> None:
    cfg = SandboxConfig(name="x", slot=slot)
    ours = set(keda.ports(cfg).values())
    assert len(ours) == len(keda.PORT_OFFSETS)
    assert all(cfg.extra_base_port <= p < cfg.extra_base_port + BLOCK for p in ours)
    assert not ours & set(argocd.ports(cfg).values())
    assert not ours & set(monitoring.ports(cfg).values())
    assert not ours & set(cfg.ports.values())


def test_only_the_metrics_apiserver_leaves_loopback() -> None:
    cfg = SandboxConfig(name="x", slot=3)
    bins = keda.KedaBinaries(Path("/cache/keda"))
    certs = Path("/run/keda/certs")
    operator = keda.operator_argv(cfg, bins, certs)
    addresses = [a.split("=", 1)[1] for a in operator if a.split("=", 1)[0].endswith("address")]
    assert len(addresses) == 3 and all(a.startswith("127.0.0.1:") for a in addresses), addresses
    assert "--enable-cert-rotation=false" in operator  # no Secret, no APIService patching
    adapter = keda.adapter_argv(cfg, bins, certs, Path("/run/keda/kubeconfig"))
    # Not node 0's address: ClusterIPs are dialled from it, and a hairpin through kube-proxy never connects.
    assert keda.adapter_address(cfg) != cfg.node_ip(0)
    assert f"--bind-address={keda.adapter_address(cfg)}" in adapter
    assert f"--secure-port={keda.ports(cfg)['adapter']}" in adapter
    assert f"--metrics-service-address=127.0.0.1:{keda.ports(cfg)['operator-grpc']}" in adapter
    # Out of cluster, each client of the metrics apiserver goes through the ServiceAccount's kubeconfig.
    for flag in ("authentication", "authorization", "lister"):
        assert f"--{flag}-kubeconfig=/run/keda/kubeconfig" in adapter


def test_the_apiservice_reaches_the_metrics_apiserver_through_its_service() -> None:
    cfg = SandboxConfig(name="x", slot=3)
    service, endpoints, api_service = keda.service_objects(cfg, b"PEM")
    port = keda.ports(cfg)["adapter"]
    assert "selector" not in service["spec"]  # its endpoint is the program's address, named below
    assert service["spec"]["ports"][0]["targetPort"] == port
    assert endpoints["metadata"]["labels"]["kubernetes.io/service-name"] == service["metadata"]["name"]
    assert endpoints["endpoints"][0]["addresses"] == [keda.adapter_address(cfg)]
    assert endpoints["ports"] == [{"name": "https", "port": port, "protocol": "TCP"}]
    spec = api_service["spec"]
    assert api_service["metadata"]["name"] == "v1beta1.external.metrics.k8s.io"
    assert spec["service"] == {"name": service["metadata"]["name"], "namespace": keda.NAMESPACE, "port": 443}
    assert base64.b64decode(spec["caBundle"]) == b"PEM"
    assert "insecureSkipTLSVerify" not in spec


def test_the_certificate_names_the_service_and_the_addresses_dialled() -> None:
    cfg = SandboxConfig(name="x", slot=3)
    sans = keda.cert_extensions(cfg).splitlines()[0].removeprefix("subjectAltName=").split(",")
    # kube-apiserver checks <service>.<namespace>.svc; the metrics apiserver dials the operator's gRPC at
    # 127.0.0.1; the readiness check dials the metrics apiserver's address.
    assert "DNS:keda-metrics-apiserver.keda.svc" in sans
    assert "DNS:keda-operator.keda.svc" in sans
    assert {"IP:127.0.0.1", f"IP:{keda.adapter_address(cfg)}"} <= set(sans)
    assert "extendedKeyUsage=serverAuth,clientAuth" in keda.cert_extensions(cfg)  # gRPC is mutual TLS


def test_crd_names_from_kubebuilder_file_names() -> None:
    assert keda.crd_name(Path("keda.sh_scaledobjects.yaml")) == "scaledobjects.keda.sh"
    assert (
        keda.crd_name(Path("eventing.keda.sh_cloudeventsources.yaml")) == "cloudeventsources.eventing.keda.sh"
    )


def test_the_programs_act_as_kedas_service_account() -> None:
    text = keda.kubeconfig_text("https://127.0.0.1:17042", Path("/pki/ca.crt"), "TOKEN")
    config = json.loads(text)
    assert config["users"] == [{"name": "keda-operator", "user": {"token": "TOKEN"}}]
    assert config["clusters"][0]["cluster"] == {
        "server": "https://127.0.0.1:17042",
        "certificate-authority": "/pki/ca.crt",
    }
    env = keda.program_env(Path("/run/keda/kubeconfig"))
    assert env["WATCH_NAMESPACE"] == ""  # every namespace
    assert env["POD_NAMESPACE"] == env["KEDA_CLUSTER_OBJECT_NAMESPACE"] == keda.NAMESPACE


def test_front_proxy_certs_made_once_and_chained(tmp_path: Path) -> None:
    """kube-apiserver's front-proxy client cert (its identity towards KEDA's metrics apiserver): signed by
    its own CA, named as --requestheader-allowed-names says, and kept across restarts."""
    pki.ensure_front_proxy_certs(tmp_path)
    client = tmp_path / f"{pki.FRONT_PROXY_CLIENT}.crt"
    ca = tmp_path / f"{pki.FRONT_PROXY_CA}.crt"
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), str(client)], capture_output=True, text=True, check=False
    )
    assert verified.returncode == 0, verified.stderr
    subject = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-in", str(client)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"CN = {pki.FRONT_PROXY_CLIENT}" in subject or f"CN={pki.FRONT_PROXY_CLIENT}" in subject, subject
    before = client.read_bytes()
    pki.ensure_front_proxy_certs(tmp_path)
    assert client.read_bytes() == before
