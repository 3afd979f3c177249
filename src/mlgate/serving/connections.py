"""The serving host's HTTP connections, guarded: how long a request may take to arrive, how many connections.

uvicorn with httptools bounds neither how long a request's headers or body may take to arrive nor how many
bytes of headers it buffers, and sets no deadline on a connection before its first request: a caller that
trickles its headers holds its connection for as long as it likes. `guarded_protocol` gives uvicorn a
protocol that adds, per connection:

- a header deadline: a request's headers must be complete within `header_timeout_s` of the connection's
  start (or of the request's first byte after a keep-alive pause), and hold at most `MAX_HEADER_BYTES`;
- a body deadline: once its headers are in, its body must be complete within `body_timeout_s`;
- a connection limit: beyond `max_connections` open TCP connections (per process), a new one is answered
  503 and closed before anything of it is read. The admin socket's connections are never refused: the
  control plane must reach a host under load.

A connection past a deadline is answered 408 (when a request had begun and nothing was answered yet) and
closed; the app then sees its request's body end in a disconnect. A timer runs only while a request is
incomplete after a read, so a request that arrives in one read (nearly all) arms and cancels nothing.
uvicorn's own `limit_concurrency` is not used: it counts the admin socket's connections too and answers
in plain text; the concurrency limit is the app's (`mlgate.serving.app`), in each protocol's shape.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar, Literal

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from mlgate.serving.listeners import ConnectionPolicy, on_admin_socket

log = logging.getLogger("mlgate.serving")

MAX_HEADER_BYTES = 64 * 1024  # a request line and headers; h11's default is 16 KiB, llhttp sets none

# What the connection is waiting for: a request (idle), the rest of its headers, the rest of its body, or
# the app's answer (nothing more is owed by the caller then).
Phase = Literal["idle", "headers", "body", "answering"]


def _answer(status: bytes, *extra: bytes) -> bytes:
    return b"\r\n".join([b"HTTP/1.1 " + status, b"content-length: 0", b"connection: close", *extra, b"", b""])


TIMED_OUT = _answer(b"408 Request Timeout")
TOO_MANY = _answer(b"503 Service Unavailable", b"retry-after: 1")
TOO_LARGE = _answer(b"431 Request Header Fields Too Large")


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the deadlines and the connection limit of `policy`."""

    policy: ClassVar[ConnectionPolicy] = ConnectionPolicy()
    open_tcp: ClassVar[set[GuardedProtocol]] = set()  # replaced per policy by `guarded_protocol`

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._phase: Phase = "idle"
        self._timer: asyncio.TimerHandle | None = None
        self._timed: Phase | None = None  # the phase the timer bounds
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not on_admin_socket({"server": self.server}):
            if len(self.open_tcp) >= self.policy.max_connections:
                self._refuse(TOO_MANY, f"{self.policy.max_connections} connections are open already")
                return
            self.open_tcp.add(self)
        self._rearm()  # a connection that sends nothing is closed at the header deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self.open_tcp.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase in ("idle", "headers"):
            self._header_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._phase in ("idle", "headers") and self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(TOO_LARGE, f"its headers took more than {MAX_HEADER_BYTES} bytes")
            return
        self._rearm()

    # The parser's callbacks: where a request stands.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = "headers"

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._phase = "body"
        self._header_bytes = 0

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._phase = "answering"

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._phase == "answering" and (self.cycle is None or self.cycle.response_complete):
            self._phase = "idle"  # uvicorn's keep-alive timeout bounds the wait for the next request

    def _rearm(self) -> None:
        """The timer that bounds the phase the connection is in now (none while the app answers)."""
        wanted: Phase | None = "headers" if self._phase == "idle" else self._phase
        if wanted == "answering":
            wanted = None
        if wanted == self._timed:
            return
        self._cancel()
        if wanted is not None:
            seconds = self.policy.header_timeout_s if wanted == "headers" else self.policy.body_timeout_s
            self._timer = self.loop.call_later(seconds, self._expired)
            self._timed = wanted

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timed = None, None

    def _expired(self) -> None:
        timed, self._timer, self._timed = self._timed, None, None
        if self.transport.is_closing():
            return
        seconds = self.policy.header_timeout_s if timed == "headers" else self.policy.body_timeout_s
        if self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # an answer under way (to a pipelined request) ends first
        elif self._phase == "idle":
            self._close(f"it sent no request within {seconds:g} s")
        else:
            self._refuse(TIMED_OUT, f"its request's {timed} took longer than {seconds:g} s")

    def _refuse(self, answer: bytes, why: str) -> None:
        self.transport.write(answer)
        self._close(why)

    def _close(self, why: str) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "the admin socket"
        log.info("closing the connection from %s: %s", client, why)
        self.transport.close()


def guarded_protocol(policy: ConnectionPolicy) -> type[asyncio.Protocol]:
    """The protocol class to give uvicorn (`Config(http=...)`), with `policy` and its own connection count."""

    class Guarded(GuardedProtocol):
        pass

    Guarded.policy = policy
    Guarded.open_tcp = set()
    return Guarded
