"""tests/support/shared_use.py: the first process to join sets a shared thing up, the last to leave tears it
down, and a dead process never counts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.shared_use import SharedUse

pytestmark = pytest.mark.unit


def user(tmp_path: Path, pid: int, alive: set[int]) -> SharedUse:
    return SharedUse(tmp_path / "test.sandbox", alive=lambda p: p in alive, pid=pid)


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        # (pid, join|leave) in order -> what each returns (True: set up / tear down)
        ([(1, "join"), (1, "leave")], [True, True]),
        ([(1, "join"), (2, "join"), (1, "leave"), (2, "leave")], [True, False, False, True]),
        ([(1, "join"), (2, "join"), (2, "leave"), (1, "leave")], [True, False, False, True]),
        # a process that joins twice (two fixtures of one session) is one user
        ([(1, "join"), (1, "join"), (1, "leave")], [True, True, True]),
        # after the last one left, the next one sets it up again
        ([(1, "join"), (1, "leave"), (2, "join"), (2, "leave")], [True, True, True, True]),
        # leaving without having joined: the others still hold it
        ([(1, "join"), (2, "leave")], [True, False]),
    ],
)
def test_the_first_in_sets_up_and_the_last_out_tears_down(
    tmp_path: Path, steps: list[tuple[int, str]], expected: list[bool]
) -> None:
    alive = {pid for pid, _ in steps}
    got = []
    for pid, what in steps:
        shared = user(tmp_path, pid, alive)
        with shared.locked():
            got.append(shared.join() if what == "join" else shared.leave())
    assert got == expected


def test_a_dead_user_is_dropped_so_a_killed_run_holds_nothing(tmp_path: Path) -> None:
    alive = {1, 2}
    with user(tmp_path, 1, alive).locked():
        assert user(tmp_path, 1, alive).join()
    alive.discard(1)  # killed without leaving
    assert user(tmp_path, 2, alive).join(), "a dead user must not make the next one skip the setup"
    assert user(tmp_path, 2, alive).users() == {2}
    assert user(tmp_path, 2, alive).leave(), "and must not keep the thing up after the last live one"


def test_the_real_liveness_check_knows_this_process_and_a_finished_one(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    finished = int(done.stdout)
    path = tmp_path / "x"
    (tmp_path / "x.users").write_text(f"{finished}\n{os.getpid()}\n")
    assert SharedUse(path).users() == {os.getpid()}


def test_the_lock_is_exclusive_between_processes(tmp_path: Path) -> None:
    path = tmp_path / "test.sandbox"
    holder = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from tests.support.shared_use import SharedUse\n"
        "with SharedUse(Path(sys.argv[1])).locked():\n"
        "    print('held', flush=True)\n"
        "    time.sleep(1.5)\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        started = time.monotonic()
        with SharedUse(path).locked():
            waited = time.monotonic() - started
    finally:
        proc.wait(timeout=30)
    assert waited >= 0.5, f"got the lock after {waited:.2f}s while another process held it"
