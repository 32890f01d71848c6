"""What the operator keeps in memory between reconciles (rebuilt from the cluster after a restart)."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field

from triton_operator.observe.metrics import Scrape

Key = tuple[str, str]  # (namespace, name)


@dataclass
class OperatorState:
    # The previous /metrics scrape of each pod, for rates over a window.
    scrapes: dict[Key, dict[str, Scrape]] = field(default_factory=lambda: defaultdict(dict))
    # Set to wake a server's status loop at once (a pod or the Deployment changed).
    pokes: dict[Key, threading.Event] = field(default_factory=lambda: defaultdict(threading.Event))

    def poke(self, key: Key) -> None:
        self.pokes[key].set()

    def forget(self, key: Key) -> None:
        self.scrapes.pop(key, None)
        self.pokes.pop(key, None)
