"""`Worker`: the one shape of every background thread of the server (start, stop, wake, tick, errors, stats).

A worker runs `tick` every `interval_s` seconds on its own thread, and at once when `wake` is called
(domain events wake the workers that care, through `services.events`). A tick that raises is logged and
counted, and the worker goes on: no one bad row may stop it. `starting` runs once on the thread before
the first tick (resuming work a crash interrupted); `stopped` runs after the thread ended.
Tests drive a worker without its thread by calling `tick` themselves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEFAULT_STOP_WAIT_S = 30.0


@dataclass
class WorkerStats:
    """What a worker has done since it started; for operators (the workers route) and tests."""

    ticks: int = 0
    failures: int = 0
    last_error: str | None = None
    last_tick_seconds: float | None = None


class Worker:
    """Subclasses set `name` and `interval_s` and implement `tick`."""

    name: str = "worker"
    interval_s: float = 1.0
    stop_wait_s: float = DEFAULT_STOP_WAIT_S

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = WorkerStats()

    # -- what subclasses provide ---------------------------------------------------------------------

    def tick(self) -> object:
        """One pass over the work due now."""
        raise NotImplementedError

    def enabled(self) -> bool:
        """Whether there is anything for this worker to watch (a worker with nothing to do never starts)."""
        return True

    def starting(self) -> None:
        """Once, on the worker's thread, before the first tick."""

    def stopped(self) -> None:
        """Once, after the thread ended (or at stop, when it never started)."""

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.enabled():
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Tick now rather than at the next interval."""
        self._wake.set()

    def stop(self) -> None:
        """Stop after the tick under way; it gets `stop_wait_s` to finish."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.stop_wait_s)
        self.stopped()

    def _run(self) -> None:
        try:
            self.starting()
        except Exception:
            log.exception("%s: starting failed", self.name)
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.tick_logged()

    def tick_logged(self) -> None:
        """One tick, its failure logged and counted rather than raised."""
        began = time.monotonic()
        try:
            self.tick()
        except Exception as exc:  # the worker must outlive any one bad row or a database hiccup
            self.stats.failures += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("%s: tick failed", self.name)
        finally:
            self.stats.ticks += 1
            self.stats.last_tick_seconds = time.monotonic() - began


class Periodic(Worker):
    """A worker whose tick is one function: the server's housekeeping (expiring requests, say)."""

    def __init__(self, name: str, task: Callable[[], object], *, interval_s: float) -> None:
        super().__init__()
        self.name = name
        self.interval_s = interval_s
        self._task = task

    def tick(self) -> object:
        return self._task()
