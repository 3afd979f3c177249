"""The door's HTTP/1.1 client to the tracking servers: kept-alive connections over their Unix sockets.

Every MLflow call through the door crosses it, so it is lean: the request is written as one buffer and
the reply is parsed by httptools (the C parser uvicorn uses), with none of a general client's layers
(auth flows, redirects, cookies, per-request timeouts objects); a general client doubled the door's cost
per call (bench/door.py). A connection goes back to the pool only once its reply was read to the end
and both sides keep it alive; an idle one is dropped before the tracking server's keep-alive timeout
(uvicorn's 5 s) can close it under a request. A request whose body can be sent again is retried once
on a new connection when a kept connection turns out closed before any reply.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

from mlgate.adapters.mlflow import unix_transport

READ_SIZE = 1024 * 1024
IDLE_S = 4.0  # under uvicorn's default keep-alive timeout of 5 s
MAX_IDLE = 8  # idle connections kept per tracking server
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 300.0  # a large artifact, or a registration step behind a slow disk


class UpstreamError(ConnectionError):
    """The tracking server could not be reached, or broke off its reply."""


@dataclass
class _Parsed:
    """What httptools reports while it reads one reply."""

    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    head_done: bool = False
    complete: bool = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(bytes(body))

    def on_message_complete(self) -> None:
        self.complete = True


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0

    def close(self) -> None:
        self.writer.close()


class Reply:
    """A reply whose head is read; its body is read by iterating `body()`, once."""

    def __init__(
        self,
        pool: UpstreamPool,
        key: str,
        connection: _Connection,
        parser: httptools.HttpResponseParser,
        parsed: _Parsed,
        *,
        head: bool,
    ) -> None:
        self._pool, self._key, self._connection = pool, key, connection
        self._parser, self._parsed, self._head = parser, parsed, head
        self.status: int = parser.get_status_code()
        self.headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in parsed.headers]
        self._done = False

    async def body(self) -> AsyncIterator[bytes]:
        parsed = self._parsed
        try:
            while not self._head:
                while parsed.chunks:
                    yield parsed.chunks.pop(0)
                if parsed.complete:
                    break
                data = await asyncio.wait_for(self._connection.reader.read(READ_SIZE), READ_TIMEOUT_S)
                if not data:
                    raise UpstreamError("the tracking server closed the connection in the middle of its reply")
                self._parser.feed_data(data)
            self._done = True
        finally:
            self.release()

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.body()])

    def release(self) -> None:
        """Back to the pool if the reply was read whole and both sides keep the connection, else closed."""
        connection, self._connection = self._connection, None  # type: ignore[assignment]
        if connection is None:
            return
        if self._done and not self._head and self._parser.should_keep_alive():
            self._pool.give_back(self._key, connection)
        else:
            connection.close()


class UpstreamPool:
    """Connections to each tracking server, by its pseudo URL (a Unix socket) or, for fakes, host and port."""

    def __init__(self) -> None:
        self._idle: dict[str, list[_Connection]] = {}

    def give_back(self, key: str, connection: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) >= MAX_IDLE:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def _kept(self, key: str) -> _Connection | None:
        idle = self._idle.get(key, [])
        while idle:
            connection = idle.pop()
            if time.monotonic() - connection.idle_since < IDLE_S and not connection.reader.at_eof():
                return connection
            connection.close()
        return None

    async def _connect(self, upstream: str) -> _Connection:
        parts = urlsplit(upstream)
        socket = unix_transport.socket_for(parts.hostname or "")
        try:
            if socket is not None:
                opened = asyncio.open_unix_connection(socket, limit=READ_SIZE)
            else:
                opened = asyncio.open_connection(parts.hostname, parts.port or 80, limit=READ_SIZE)
            reader, writer = await asyncio.wait_for(opened, CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"cannot connect: {exc}") from exc
        return _Connection(reader, writer)

    async def request(
        self,
        upstream: str,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterator[bytes],
    ) -> Reply:
        """Send `method target` (path and query, as sent by the client) and read the reply's head."""
        host = urlsplit(upstream).netloc
        lines = [f"{method} {target} HTTP/1.1", f"host: {host}", *(f"{k}: {v}" for k, v in headers)]
        if isinstance(body, bytes):
            lines.append(f"content-length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        connection = self._kept(upstream)
        if connection is not None and isinstance(body, bytes):
            try:
                return await self._exchange(upstream, connection, method, head, body)
            except _Stale:
                pass  # closed while idle: once more, on a new connection
        elif connection is not None:
            connection.close()  # a streamed body cannot be sent twice: always a fresh connection
        try:
            return await self._exchange(upstream, await self._connect(upstream), method, head, body)
        except _Stale as exc:
            raise UpstreamError("the tracking server closed the connection before replying") from exc

    async def _exchange(
        self, key: str, connection: _Connection, method: str, head: bytes, body: bytes | AsyncIterator[bytes]
    ) -> Reply:
        parsed = _Parsed()
        parser = httptools.HttpResponseParser(parsed)
        try:
            if isinstance(body, bytes):
                connection.writer.write(head + body)
            else:
                connection.writer.write(head)
                async for chunk in body:
                    connection.writer.write(chunk)
                    await connection.writer.drain()
            await connection.writer.drain()
            received = False
            while not parsed.head_done:
                data = await asyncio.wait_for(connection.reader.read(READ_SIZE), READ_TIMEOUT_S)
                if not data:
                    raise _Stale if not received else UpstreamError("the tracking server broke off its reply")
                received = True
                parser.feed_data(data)
        except (ConnectionResetError, BrokenPipeError) as exc:
            connection.close()
            raise _Stale from exc
        except (OSError, TimeoutError, httptools.HttpParserError) as exc:
            connection.close()
            raise UpstreamError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            connection.close()
            raise
        return Reply(self, key, connection, parser, parsed, head=method == "HEAD")

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


class _Stale(Exception):
    """A kept connection the server had closed: nothing of the request was answered."""
