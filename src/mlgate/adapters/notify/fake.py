"""A fake channel for unit tests: records what it was given, and fails while the test says so."""

from __future__ import annotations

import threading
import time

from mlgate.adapters.notify.base import Delivery
from mlgate.errors import BackendError


class FakeChannel:
    def __init__(self, name: str, *, delay_s: float = 0.0) -> None:
        self.name = name
        self.delay_s = delay_s  # how long a send takes: widens the window a second worker could race in
        self.down = False
        self.sent: list[Delivery] = []
        self.attempts = 0
        self._lock = threading.Lock()

    def send(self, delivery: Delivery) -> None:
        with self._lock:
            self.attempts += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.down:
            raise BackendError(f"fake {self.name} receiver is down")
        with self._lock:
            self.sent.append(delivery)

    def close(self) -> None:
        pass
