"""The sandbox's certificates, made with the openssl CLI: a CA, the apiserver's serving cert,
an admin client cert (group system:masters), the service-account signing key, and the front proxy's CA
and client cert (the aggregation layer's identity towards aggregated apiservers, as kubeadm makes them)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

SERVING_SANS = (
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
    "DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1"
)


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip()}")


def issue_ca(d: Path, name: str, subject: str) -> None:
    """A self-signed CA, `name`.key and `name`.crt in `d`."""
    _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=d)
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        f"{name}.key",
        "-subj",
        subject,
        "-days",
        "3650",
        "-out",
        f"{name}.crt",
        cwd=d,
    )


def issue_cert(d: Path, name: str, subject: str, extensions: str, ca: str = "ca") -> None:
    """`name`.key and `name`.crt in `d`, signed by the CA `ca`.crt/`ca`.key there."""
    _client_or_serving_cert(d, name, subject, extensions, ca)


def _client_or_serving_cert(d: Path, name: str, subject: str, extensions: str, ca: str = "ca") -> None:
    _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=d)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=d)
    (d / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.crt",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-sha256",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.crt",
        cwd=d,
    )


def serving_sans(extra_ips: Sequence[str] = ()) -> str:
    sans = [SERVING_SANS, *(f"IP:{ip}" for ip in extra_ips if f"IP:{ip}" not in SERVING_SANS.split(","))]
    return ",".join(sans)


def ensure_pki(d: Path, extra_ips: Sequence[str] = ()) -> None:
    """Create the certificates once; a complete set with the same serving SANs is reused across restarts.

    `extra_ips`: more addresses the apiserver is reached at (its advertised address, its ClusterIP).
    """
    sans = serving_sans(extra_ips)
    with contextlib.suppress(FileNotFoundError):
        if (d / "complete").read_text().strip() == sans:
            return
    if shutil.which("openssl") is None:
        raise SystemExit("sandbox: openssl is not installed; install it (Debian: apt-get install openssl).")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    issue_ca(d, "ca", "/CN=triton-sandbox-ca")
    _client_or_serving_cert(
        d,
        "apiserver",
        "/CN=kube-apiserver",
        f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n",
    )
    _client_or_serving_cert(
        d,
        "admin",
        "/O=system:masters/CN=sandbox-admin",
        "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n",
    )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    (d / "complete").write_text(sans + "\n")


FRONT_PROXY_CA = "front-proxy-ca"
# The front proxy client cert's name, the one aggregated apiservers allow (--requestheader-allowed-names).
FRONT_PROXY_CLIENT = "front-proxy-client"


def ensure_front_proxy_certs(d: Path) -> None:
    """The front proxy's CA and client cert in `d`, once: kube-apiserver presents the client cert when it
    proxies a request to an aggregated apiserver (an APIService backed by a Service, like KEDA's metrics
    apiserver), which trusts the X-Remote-User/-Group headers only from a cert of that CA, as named in
    kube-system/extension-apiserver-authentication. Without it such a server sees every proxied request
    as anonymous."""
    if all(
        (d / f"{n}.{ext}").exists() for n in (FRONT_PROXY_CA, FRONT_PROXY_CLIENT) for ext in ("crt", "key")
    ):
        return
    issue_ca(d, FRONT_PROXY_CA, "/CN=triton-sandbox-front-proxy-ca")
    _client_or_serving_cert(
        d,
        FRONT_PROXY_CLIENT,
        f"/CN={FRONT_PROXY_CLIENT}",
        "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n",
        ca=FRONT_PROXY_CA,
    )


def ensure_kubelet_cert(d: Path, ips: Sequence[str]) -> None:
    """kwok's kubelet serving cert (`kubelet.crt`, signed by the CA in `d`) for the nodes' InternalIPs:
    the apiserver verifies it (--kubelet-certificate-authority) when it calls a node for logs."""
    sans = ",".join(f"IP:{ip}" for ip in ips)
    with contextlib.suppress(FileNotFoundError):
        if (d / "kubelet.sans").read_text().strip() == sans and (d / "kubelet.key").exists():
            return
    (d / "kubelet.sans").unlink(missing_ok=True)
    _client_or_serving_cert(
        d,
        "kubelet",
        "/CN=sandbox-kubelet",
        f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n",
    )
    (d / "kubelet.sans").write_text(sans + "\n")


def write_kubeconfig(path: Path, server: str, pki: Path) -> None:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: triton-sandbox
  cluster:
    server: {server}
    certificate-authority: {pki / "ca.crt"}
users:
- name: sandbox-admin
  user:
    client-certificate: {pki / "admin.crt"}
    client-key: {pki / "admin.key"}
contexts:
- name: triton-sandbox
  context: {{cluster: triton-sandbox, user: sandbox-admin, namespace: default}}
current-context: triton-sandbox
"""
    )
