"""`triton-operator run` start-up problems are one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import socket

import pytest
from triton_operator.cli import listen_problem, main


@pytest.mark.parametrize("busy_offset", [0, 1])  # the health port, or the metrics port after it
def test_a_busy_port_is_one_line_and_exit_2(busy_offset: int, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1] - busy_offset
        code = main(["run", "--health-address=127.0.0.1", f"--health-port={port}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot listen on 127.0.0.1:{port + busy_offset}" in err and "--health-port" in err


def test_free_ports_are_no_problem() -> None:
    with socket.socket() as finder:
        finder.bind(("127.0.0.1", 0))
        port = finder.getsockname()[1]
    assert listen_problem("127.0.0.1", (port,)) is None
