"""Hostile clients against the real server. A 400 MiB body sent to every body-taking route of `/api/v1`
and to every form of the web UI, without a token or session: refused before it is read when its length
is declared, at its route's cap when it is sent chunked, and the server's memory stays flat throughout
(read from /proc). A client trickling its headers: cut off at the policy's header deadline."""

from __future__ import annotations

import json
import re
import select
import socket
import time
from urllib.parse import urlsplit

import httpx

from mlgate.interfaces.api.body_limits import JSON_LIMIT
from tests.support.memory import PeakRss
from tests.support.project import HEADER_TIMEOUT_S, LiveServer

MIB = 1024 * 1024
ATTACK_BYTES = 400 * MIB
UPLOADS = re.compile(r".*/(snapshots|data/[^/]+|invocations)$")  # streamed after the caller is authorized


def _routes(server: LiveServer) -> list[tuple[str, str, bool]]:
    """(method, path, whether it declares a body) of every route taking a body, path parameters filled in."""
    document = httpx.get(f"{server.url}/api/v1/openapi.json", timeout=30).json()
    found = []
    for template, operations in document["paths"].items():
        path = re.sub(r"\{env\}", "dev", template)
        path = re.sub(r"\{[a-z_]*id\}|\{version\}", "1", path)
        path = re.sub(r"\{[^}]+\}", "x", path)
        found += [
            (method.upper(), path, "requestBody" in operation)
            for method, operation in operations.items()
            if method in ("post", "put", "patch")
        ]
    return found


# The web UI's forms (not in the API's document), posted without a session.
FORMS = (
    "/signin",
    "/signout",
    "/requests/1/decide",
    "/endpoints/production/diabetes/traffic",
    "/endpoints/production/diabetes/rollback",
    "/monitoring/production/quality/run",
)


def _attack(url: str, method: str, path: str, *, chunked: bool) -> tuple[int, str, int]:
    """Send a 400 MiB body until the server answers: (status, body, bytes sent)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=60) as sock:
        length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {ATTACK_BYTES}"
        kind = "application/x-www-form-urlencoded" if path in FORMS else "application/json"
        head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\n{length}\r\n\r\n"
        sock.sendall(head.encode())
        chunk, sent = b" " * MIB, 0
        framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk
        try:
            while sent < ATTACK_BYTES and not select.select([sock], [], [], 0)[0]:
                sock.sendall(framed)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 4 + _length(answer):
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2].decode(errors="replace"), sent


def _length(answer: bytes) -> int:
    found = re.search(rb"(?im)^content-length:\s*(\d+)", answer)
    return int(found.group(1)) if found else 0


def test_every_body_is_refused_before_it_is_read_and_memory_stays_flat(live_server: LiveServer) -> None:
    routes = _routes(live_server)
    assert len(routes) > 20, routes
    with PeakRss(live_server.process.pid) as peak:
        for method, path, _ in routes:
            status, body, sent = _attack(live_server.url, method, path, chunked=False)
            if UPLOADS.match(path):  # their caps are larger: without a token, refused before the body
                assert status in (401, 413), (method, path, status, body)
            else:
                assert status == 413, (method, path, status, body)
                assert json.loads(body)["error"] == {
                    "code": "payload_too_large",
                    "message": "the request body is over the 1 MiB limit",
                    "details": {"limit_bytes": JSON_LIMIT},
                }
            assert sent < 64 * MIB, (method, path, sent)
        for method, path, declares_body in routes:
            if UPLOADS.match(path):
                continue
            status, body, sent = _attack(live_server.url, method, path, chunked=True)
            if declares_body:  # read before the caller is known, so counted and refused at the cap
                assert status == 413 and "over the 1 MiB limit" in body, (method, path, status, body)
            else:  # never read: the caller is refused first
                assert status == 401, (method, path, status, body)
            assert sent < 64 * MIB, (method, path, sent)
        for path in FORMS:  # refused at the form's 64 KiB bound, or for want of a session
            for chunked in (False, True):
                status, body, sent = _attack(live_server.url, "POST", path, chunked=chunked)
                assert status in (303, 401, 403, 413), (path, chunked, status, body)
                assert sent < 64 * MIB, (path, chunked, sent)
    assert peak.growth < 50, f"the server grew {peak.growth:.0f} MiB"


def test_a_client_trickling_its_headers_is_cut_off_at_the_header_deadline(live_server: LiveServer) -> None:
    parts = urlsplit(live_server.url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=30) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        try:
            while time.monotonic() - started < HEADER_TIMEOUT_S + 15:
                sock.sendall(b"X-Slow: 1\r\n")  # never the blank line that ends the headers
                if select.select([sock], [], [], 0.5)[0]:
                    answer = sock.recv(65536)
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        held = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert held < HEADER_TIMEOUT_S + 15, f"held {held:.0f} s"
    assert httpx.get(f"{live_server.url}/api/v1/health", timeout=30).status_code == 200
