"""A small periodic task runner for the server's housekeeping (expiring open requests)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Calls `task` every `interval_s` seconds on its own thread until stopped; a failing call is logged."""

    def __init__(self, name: str, task: Callable[[], object], *, interval_s: float) -> None:
        self.name = name
        self._task = task
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._task()
            except Exception:
                log.exception("%s failed", self.name)
