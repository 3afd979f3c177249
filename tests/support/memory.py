"""A server's resident memory, read from /proc, sampled while a test attacks it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import TracebackType


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """`with PeakRss(pid) as peak: ...`, then `peak.growth`: the most the process grew (MiB) meanwhile."""

    def __init__(self, pid: int, *, every_s: float = 0.02) -> None:
        self.pid, self.every_s = pid, every_s
        self.samples = [rss_mib(pid)]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.samples.append(rss_mib(self.pid))
            time.sleep(self.every_s)

    @property
    def growth(self) -> float:
        return max(self.samples) - self.samples[0]

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._done.set()
        self._thread.join()
        self.samples.append(rss_mib(self.pid))
