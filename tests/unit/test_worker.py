"""The one worker shape (`services.worker`) and the event hub (`services.events`), driven directly."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from mlgate.domain.events import RequestApproved, VersionPromoted
from mlgate.services.events import Hub
from mlgate.services.worker import Periodic, Worker


class Flaky(Worker):
    """Fails its first tick, then counts the ones after."""

    name = "flaky"
    interval_s = 3600.0  # never by the clock in these tests: only when woken

    def __init__(self) -> None:
        super().__init__()
        self.done = threading.Event()
        self.calls = 0

    def tick(self) -> None:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("a bad row")
        self.done.set()


def _until(what: str, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_failing_tick_is_counted_and_the_worker_goes_on() -> None:
    worker = Flaky()
    worker.tick_logged()
    assert (worker.stats.ticks, worker.stats.failures) == (1, 1)
    assert worker.stats.last_error == "RuntimeError: a bad row"
    worker.tick_logged()
    assert (worker.stats.ticks, worker.stats.failures, worker.calls) == (2, 1, 2)


def test_wake_ticks_at_once_and_stop_ends_the_thread() -> None:
    worker = Flaky()
    worker.start()
    try:
        assert worker.running and worker.stats.ticks == 0  # an hour's interval: nothing ran by itself
        worker.wake()
        _until("the first (failing) tick", lambda: worker.stats.failures == 1)
        worker.wake()
        assert worker.done.wait(10), "the worker stopped after its failing tick"
    finally:
        worker.stop()
    assert not worker.running


def test_a_worker_with_nothing_to_watch_never_starts() -> None:
    class Idle(Periodic):
        def enabled(self) -> bool:
            return False

    idle = Idle("idle", lambda: None, interval_s=0.01)
    idle.start()
    assert not idle.running
    idle.stop()
    assert idle.stats.ticks == 0


def test_the_hub_calls_each_subscriber_of_the_kind_and_survives_a_failing_one() -> None:
    hub, seen = Hub(), []

    def broken(_: RequestApproved) -> None:
        raise RuntimeError("a broken subscriber")

    hub.subscribe(RequestApproved, broken)
    hub.subscribe(RequestApproved, lambda event: seen.append(("approved", event.request_id)))
    hub.subscribe(VersionPromoted, lambda event: seen.append(("promoted", event.request_id)))
    hub.publish(RequestApproved(request_id=7, target="staging"))
    assert seen == [("approved", 7)]
    hub.publish(VersionPromoted(request_id=7, environment="staging"))
    assert seen == [("approved", 7), ("promoted", 7)]
