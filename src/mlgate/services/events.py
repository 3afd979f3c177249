"""The in-process event hub: services publish domain events (`domain.events`), workers subscribe to them.

It replaces callbacks on the app context: a service says what happened, and the composition root
(`mlgate.server`) says who acts on it, in one place. Handlers run on the publisher's thread and must be
quick (waking a worker is the usual one); one that raises is logged and the others still run. The hub
holds no state across restarts: the workers' periodic ticks find whatever an event announced anyway,
so an event only makes them act sooner.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from mlgate.domain.events import Event

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)


class Publisher(Protocol):
    """What a service needs to announce a change."""

    def publish(self, event: Event) -> None: ...


class Hub:
    def __init__(self) -> None:
        self._handlers: dict[type[Any], list[Callable[[Any], None]]] = {}
        self._lock = threading.Lock()

    def subscribe(self, kind: type[E], handler: Callable[[E], None]) -> None:
        with self._lock:
            self._handlers.setdefault(kind, []).append(handler)

    def publish(self, event: Event) -> None:
        with self._lock:
            handlers = list(self._handlers.get(type(event), ()))
        for handler in handlers:
            try:
                handler(event)
            except Exception:
                log.exception("a handler of %s failed", type(event).__name__)


class NoEvents:
    """A publisher that drops every event: for a service called outside a server (the CLI's init, tests)."""

    def publish(self, event: Event) -> None:
        return None


NO_EVENTS = NoEvents()
