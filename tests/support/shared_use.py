"""One thing (a sandbox, the chart-installed operator) used by several pytest processes at once: make test's
e2e workers (pytest-xdist), or two sessions on the same E2E_SANDBOX.

Each user process joins under a lock and leaves under it; the first to join sets the thing up and the last
to leave tears it down. Users are kept as process ids in a small file next to the lock, and a process that
died without leaving (killed, a crashed worker) is dropped the next time anyone looks, so a killed run never
keeps a sandbox alive for good nor makes the next run skip a setup it needs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


class SharedUse:
    """The users of one thing, kept in `<path>.users` and guarded by `<path>.lock`."""

    def __init__(self, path: Path, alive: Callable[[int], bool] = pid_alive, pid: int | None = None):
        self.users_file = path.with_name(path.name + ".users")
        self.lock_file = path.with_name(path.name + ".lock")
        self.alive = alive
        self.pid = os.getpid() if pid is None else pid

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive among every process using the same path (the setup and teardown run in here)."""
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_file, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def users(self) -> set[int]:
        """The processes that joined and have not left, less those no longer alive. Call it locked."""
        try:
            text = self.users_file.read_text()
        except FileNotFoundError:
            return set()
        return {int(word) for word in text.split() if word.isdigit() and self.alive(int(word))}

    def _write(self, users: set[int]) -> None:
        self.users_file.parent.mkdir(parents=True, exist_ok=True)
        self.users_file.write_text("".join(f"{pid}\n" for pid in sorted(users)))

    def join(self) -> bool:
        """Adds this process; True when no other live process uses the thing (set it up). Call it locked."""
        others = self.users() - {self.pid}
        self._write(others | {self.pid})
        return not others

    def leave(self) -> bool:
        """Removes this process; True when no other live process uses the thing (tear it down). Call it
        locked."""
        others = self.users() - {self.pid}
        self._write(others)
        return not others
