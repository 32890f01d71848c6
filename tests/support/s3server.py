"""Run moto's standalone S3-compatible server on a loopback address, as a real subprocess.

    with run_s3_server("127.20.0.1") as endpoint:   # "http://127.20.0.1:PORT"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="models")

The server keeps its data in memory; it is gone when the context exits.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

#: Credentials moto accepts; set them in the environment of anything talking to the server.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port(address: str) -> int:
    """A TCP port that is free on `address` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def free_port_pair(address: str, tries: int = 50) -> int:
    """A port P such that P and P + 1 are both free on `address` right now (the operator's health and
    metrics ports)."""
    for _ in range(tries):
        port = free_port(address)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((address, port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no two consecutive free ports on {address} after {tries} tries")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status < 500)
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def run_s3_server(
    address: str = "127.20.0.1",
    port: int | None = None,
    *,
    timeout_s: float = 30.0,
    log_path: Path | None = None,
) -> Iterator[str]:
    """Start `python -m moto.server -H ADDRESS -p PORT`, wait until it answers, yield its endpoint URL."""
    port = port or free_port(address)
    endpoint = f"http://{address}:{port}"
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
    env = {**os.environ, **FAKE_AWS_ENV}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", address, "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while not _answers(endpoint + "/moto-api/"):
            if proc.poll() is not None:
                raise RuntimeError(f"moto server on {endpoint} exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto server on {endpoint} did not answer within {timeout_s} s")
            time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if log_path:
            log.close()
