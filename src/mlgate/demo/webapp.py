"""The clinic's web application the demo runs against the production endpoint, and the demo's waits."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import httpx

from mlgate.errors import MlgateError

WAIT_S = 300.0


class WebApp:
    """The clinic's web application: one patient's risk at a time, as fast as the endpoint answers, cycling
    through the patients it was given (`patients` switches to others: a population that changed)."""

    def __init__(self, url: str, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        self.url = url
        self._headers = {"Authorization": f"Bearer {key}"}
        self._columns = columns
        self._rows = rows
        self.request_ids: list[str] = []
        self.answers: Counter[str] = Counter()  # by status, and by slot for the good ones
        self.slots: Counter[str] = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="web-app", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def patients(self, rows: list[list[Any]]) -> None:
        self._rows = rows

    def _run(self) -> None:
        position = 0
        with httpx.Client(headers=self._headers, timeout=10) as http:
            while not self._stop.is_set():
                rows = self._rows
                row = rows[position % len(rows)]
                position += 1
                try:
                    answer = http.post(self.url, json={"dataframe_split": {"columns": self._columns, "data": [row]}})
                except httpx.HTTPError as exc:
                    self.answers["connection error"] += 1
                    self.errors.append(str(exc))
                    continue
                self.answers[str(answer.status_code)] += 1
                if answer.status_code == 200:
                    self.slots[answer.headers.get("mlgate-deployment", "?")] += 1
                    self.request_ids.append(answer.headers.get("x-request-id", ""))
                else:
                    self.errors.append(answer.text[:200])
                time.sleep(0.01)

    @property
    def ok(self) -> int:
        return self.answers["200"]

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.answers.items() if status != "200")


def until(what: str, probe: Any, *, timeout_s: float = WAIT_S, every_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise MlgateError(f"timed out waiting for {what}")
        time.sleep(every_s)
