"""Failed attempts counted per key in a sliding window: once a key has `limit` failures within `window_s`,
it is refused until its oldest failure leaves the window. Sign-in keys its failures twice, by client
address and by the token's prefix, so neither guessing from one place nor one token from many is
unbounded. Pure: the caller passes the time."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Throttle:
    limit: int
    window_s: float
    max_keys: int = 10_000  # a flood of distinct keys forgets the oldest, not the memory
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until `key` may try again; 0 when it may now."""
        with self._lock:
            recent = self._recent(key, now)
            if len(recent) < self.limit:
                return 0.0
            return max(0.0, recent[0] + self.window_s - now)

    def failed(self, key: str, now: float) -> None:
        with self._lock:
            self._recent(key, now).append(now)
            while len(self._failures) > self.max_keys:
                self._failures.pop(next(iter(self._failures)))

    def _recent(self, key: str, now: float) -> deque[float]:
        recent = self._failures.setdefault(key, deque())
        while recent and recent[0] <= now - self.window_s:
            recent.popleft()
        return recent
