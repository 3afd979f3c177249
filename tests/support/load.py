"""Load for tests: `run_wrk` drives `wrk --latency` with one request and returns its figures, parsed.

The request (method, body, headers) goes into a Lua script written to a temporary file. The script also
counts the responses by status and by one response header (by default `mlgate-deployment`, the slot that
answered): wrk runs `response()` in every thread's own Lua state, so each thread keeps its own tables and
`done()`, which runs in the main state after the threads stop, reads them with `thread:get()` (threads
collected by `setup()`) and prints one line that `run_wrk` parses. The callback makes wrk parse every
response, which costs its CPU: `count_header=None` leaves it out when only throughput matters.

A load that only has to keep traffic flowing while something happens (a swap, a rollout) is paced
(`pace_ms`: each connection waits that long between requests, wrk's `delay()`) and ends when that thing
is done (`until`: wrk stops at SIGINT and reports what it did), so it does not take the machine's CPU
from the rest of the suite for longer than it must.

Skips the calling test, saying why, when `wrk` is not installed (`make system-deps` installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SLOT_HEADER = "mlgate-deployment"
COUNTS_MARKER = "mlgate-load-counts"
NO_HEADER = "(none)"  # the count key of responses that did not carry the header
TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}

# In every thread: count statuses and header values. In the main state: sum the threads' tables, print them.
COUNTING_LUA = """
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

statuses = {}
values = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local value = NONE
  for name, v in pairs(headers) do
    if string.lower(name) == HEADER then
      value = v
      break
    end
  end
  values[value] = (values[value] or 0) + 1
end

local function add(total, part)
  for k, n in pairs(part or {}) do
    total[k] = (total[k] or 0) + n
  end
end

local function pairs_text(t)
  local parts = {}
  for k, n in pairs(t) do
    table.insert(parts, string.format("%q:%d", tostring(k), n))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  local s, v = {}, {}
  for _, thread in ipairs(threads) do
    add(s, thread:get("statuses"))
    add(v, thread:get("values"))
  end
  io.write(MARKER .. " {\\"statuses\\":" .. pairs_text(s) .. ",\\"values\\":" .. pairs_text(v) .. "}\\n")
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    non_2xx: int  # wrk's "Non-2xx or 3xx responses": it counts statuses above 399
    socket_errors: dict[str, int]  # connect, read, write, timeout
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    raw: str
    statuses: dict[int, int] = field(default_factory=dict)  # empty when counting was off
    by_header: dict[str, int] = field(default_factory=dict)  # header value (or NO_HEADER) -> responses

    @property
    def failed(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


def lua_string(value: str | bytes) -> str:
    """A Lua string literal holding exactly these bytes (printable ASCII as is, anything else escaped)."""
    data = value.encode() if isinstance(value, str) else value
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:03d}" for b in data) + '"'


def wrk_script(
    *, method: str, body: bytes, headers: dict[str, str], count_header: str | None = SLOT_HEADER, pace_ms: int = 0
) -> str:
    lines = [f"wrk.method = {lua_string(method)}", f"wrk.body = {lua_string(body)}"]
    lines += [f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items()]
    if pace_ms:
        lines.append(f"function delay() return {int(pace_ms)} end")
    if count_header is not None:
        lines += [
            f"HEADER = {lua_string(count_header.lower())}",
            f"NONE = {lua_string(NO_HEADER)}",
            f"MARKER = {lua_string(COUNTS_MARKER)}",
            COUNTING_LUA,
        ]
    return "\n".join(lines) + "\n"


def run_wrk(
    url: str,
    *,
    body: bytes | dict[str, Any],
    headers: dict[str, str],
    seconds: int,
    connections: int = 8,
    threads: int = 2,
    method: str = "POST",
    count_header: str | None = SLOT_HEADER,
    timeout_s: int = 2,
    pace_ms: int = 0,
    until: threading.Event | None = None,
) -> WrkResult:
    """Load `url` for `seconds` (wrk takes whole seconds; with `until`, at most that long: the load ends
    once `until` is set) with one request, repeated, each connection waiting `pace_ms` between two; a
    dict body is sent as JSON (Content-Type added unless given)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.skip("wrk is not installed: `make system-deps` (or `apt-get install wrk`) installs it")
    if isinstance(body, dict):
        headers = {"Content-Type": "application/json", **headers}
        body = json.dumps(body).encode()
    script = wrk_script(method=method, body=body, headers=headers, count_header=count_header, pace_ms=pace_ms)
    with tempfile.TemporaryDirectory(prefix="mlgate-wrk-") as folder:
        path = Path(folder) / "request.lua"
        path.write_text(script)
        command = [wrk, f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds}s"]
        command += [f"--timeout={timeout_s}s", "--latency", "-s", str(path), url]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if until is not None and until.wait(timeout=seconds) and process.poll() is None:
            process.send_signal(signal.SIGINT)  # wrk stops its threads and reports, as at its duration's end
        try:
            out, err = process.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {err.strip() or out.strip()}")
    return parse_wrk(out)


def _latency_ms(out: str, percent: int) -> float:
    match = re.search(rf"^\s+{percent}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
    if match is None:
        raise ValueError(f"no {percent}% latency in wrk's output:\n{out}")
    return float(match.group(1)) * TIME_UNITS_MS[match.group(2)]


def parse_wrk(out: str) -> WrkResult:
    """The figures of `wrk --latency` output (and the counting script's line, if there is one)."""
    total = re.search(r"^\s*(\d+) requests in ", out, re.M)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if total is None or rate is None:
        raise ValueError(f"not wrk output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_counts = map(int, sockets.groups()) if sockets else (0, 0, 0, 0)
    socket_errors = dict(zip(("connect", "read", "write", "timeout"), socket_counts, strict=True))
    counts = re.search(rf"^{COUNTS_MARKER} (.*)$", out, re.M)
    statuses: dict[int, int] = {}
    by_header: dict[str, int] = {}
    if counts is not None:
        parsed = json.loads(counts.group(1))
        statuses = {int(k): n for k, n in parsed["statuses"].items()}
        by_header = dict(parsed["values"])
    return WrkResult(
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors,
        requests_per_s=float(rate.group(1)),
        p50_ms=_latency_ms(out, 50),
        p99_ms=_latency_ms(out, 99),
        raw=out,
        statuses=statuses,
        by_header=by_header,
    )
