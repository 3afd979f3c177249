"""Several worker processes behind one port: the supervisor, and each worker's link to its siblings.

``python -m mlgate.serving --workers N`` (N > 1) runs a supervisor, not a server. It binds the port and
the admin Unix socket once and starts N ``python -m mlgate.serving`` workers that inherit both listening
sockets and accept from them (the kernel hands each new connection to one of them). It forwards SIGTERM
and SIGINT to the workers and exits 0 once they have ended, and starts a worker again when one dies. A
worker asks the kernel for SIGTERM when the supervisor dies (``PR_SET_PDEATHSIG`` on Linux) and also
notices a new parent pid, so no worker outlives it. The workers share the supervisor's process group: a
supervisor that started the host with ``start_new_session=True`` stops all of it with one ``killpg``.

Every worker serves the same spec. ``PUT /admin/spec`` reaches one worker, which verifies, applies and
saves ``spec.json`` exactly as a single-process host does (a refused spec is never saved, so the others
never see it). Every worker polls ``spec.json`` (its inode, mtime and size, every ``POLL_S``) and applies
a spec that differs from the one it serves without saving it again. Each worker keeps a record,
``workers/<index>.json`` in the state folder: the sha256 of the spec it serves (see
``ServingHost.spec_sha256``) and its last failure to apply the saved spec. The worker that took the PUT
answers once every record names the new spec; a sibling's failure is a 500 naming it, a sibling that never
catches up a 504 after ``SETTLE_TIMEOUT_S`` (or three times this worker's own apply time, if longer), and
a spec replaced meanwhile by another PUT a 409. A failure leaves the workers on different specs until the
next push succeeds.

Metrics are the host's, not a worker's: each worker writes its counters to ``workers/<index>.metrics.json``
every ``METRICS_EVERY_S`` and ``/metrics`` adds the siblings' last snapshots to its own live counters, with
no extra label. The siblings' part lags by up to that period. A restarted worker starts from its
predecessor's snapshot, so the counters do not go back (the last moments of a killed worker are lost);
they start from zero when the whole host starts, as a single-process host's do.

``/v2/health/ready`` answers for the worker that takes the request: ready once it serves a spec.
``/health`` names that worker (``{"status": "ok", "worker": <index>, "pid": <pid>}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import orjson

from mlgate.serving.errors import ServingError, SpecRejected
from mlgate.serving.listeners import listen_tcp, listen_unix, remove_socket_file
from mlgate.serving.metrics import (
    BATCH_BUCKETS,
    LATENCY_BUCKETS,
    LOAD_BUCKETS,
    SLOT_LATENCY_BUCKETS,
    Histogram,
    Metrics,
)

if TYPE_CHECKING:
    from mlgate.serving.app import ServingHost

log = logging.getLogger("mlgate.serving.workers")

RECORDS_DIR = "workers"
POLL_S = 0.15  # how often a worker looks at spec.json (and at its parent)
SETTLE_POLL_S = 0.05
SETTLE_TIMEOUT_S = 60.0
METRICS_EVERY_S = 1.0
MONITOR_S = 0.2  # how often the supervisor looks at its workers
STOP_GRACE_S = 30.0  # then the workers still running are killed
QUICK_EXIT_S = 10.0  # a worker that ends sooner after starting is restarted after a growing pause
MAX_RESTART_PAUSE_S = 10.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# --- the supervisor -------------------------------------------------------------------------------


@dataclass
class _Child:
    index: int
    process: subprocess.Popen[bytes]
    started: float
    quick_exits: int = 0  # consecutive exits soon after starting
    restart_at: float | None = None


def supervise(
    *, state_dir: Path, port: int, admin_socket: Path, workers: int, command: Callable[[int, int, int], list[str]]
) -> int:
    """Bind 127.0.0.1:port and the admin socket, run ``workers`` processes on them until SIGTERM or SIGINT;
    returns the exit code.

    ``command(index, fd, admin_fd)`` is the command line of worker ``index``, which inherits the listening
    sockets as file descriptors ``fd`` (TCP) and ``admin_fd`` (the admin API's Unix socket).
    """
    try:
        sock = listen_tcp(port)
    except OSError as exc:
        log.error("cannot listen on 127.0.0.1:%d: %s", port, exc)
        return 1
    try:
        admin = listen_unix(admin_socket)
    except OSError as exc:
        sock.close()
        log.error("cannot listen on %s: %s", admin_socket, exc)
        return 1
    _clear_records(state_dir / RECORDS_DIR)  # a new host: no sibling's record or counters carry over

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def start(index: int, quick_exits: int = 0) -> _Child:
        fds = (sock.fileno(), admin.fileno())
        process = subprocess.Popen(command(index, *fds), pass_fds=fds)
        log.info("worker %d started (pid %d)", index, process.pid)
        return _Child(index, process, time.monotonic(), quick_exits)

    children: list[_Child] = []
    try:
        for index in range(workers):  # one by one: a failed start still stops the ones started
            children.append(start(index))
        while not stopping.wait(MONITOR_S):
            for child in list(children):
                if _due_for_restart(child) and not stopping.is_set():
                    children[child.index] = start(child.index, child.quick_exits)
    finally:
        _stop(children)
        sock.close()
        admin.close()
        remove_socket_file(admin_socket)
    return 0


def _due_for_restart(child: _Child) -> bool:
    """Whether a worker has ended and its pause before starting again is over (a worker that keeps ending
    soon after it starts waits longer each time)."""
    code = child.process.poll()
    if code is None:
        return False
    now = time.monotonic()
    if child.restart_at is None:
        child.quick_exits = child.quick_exits + 1 if now - child.started < QUICK_EXIT_S else 0
        pause = min(0.5 * 2 ** (child.quick_exits - 1), MAX_RESTART_PAUSE_S) if child.quick_exits else 0.0
        child.restart_at = now + pause
        log.warning(
            "worker %d (pid %d) ended (%s); starting it again in %.1f s",
            child.index,
            child.process.pid,
            _exit_status(code),
            pause,
        )
    return now >= child.restart_at


def _stop(children: list[_Child]) -> None:
    # SIGTERM, never a second SIGINT: uvicorn takes a repeated SIGINT as "quit without draining".
    for child in children:
        if child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        try:
            child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker %d (pid %d) did not stop in time; killing it", child.index, child.process.pid)
            child.process.kill()
            child.process.wait()


def _exit_status(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


def _clear_records(records: Path) -> None:
    if records.is_dir():
        for path in records.iterdir():
            if path.suffix in (".json", ".tmp"):
                path.unlink(missing_ok=True)


# --- a worker -------------------------------------------------------------------------------------


def die_with_parent(parent_pid: int) -> bool:
    """Ask for SIGTERM when the supervisor dies; False when it is already gone (the worker should exit)."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
                log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
        except (OSError, AttributeError) as exc:
            log.warning("prctl is not available (%s); the parent is watched by polling only", exc)
    return os.getppid() == parent_pid  # checked after the request: the parent may have died before it


class WorkerSync:
    """One worker's link to its siblings through the state folder: the spec, the records, the metrics."""

    def __init__(self, *, state_dir: Path, spec_file: str, index: int, count: int, parent_pid: int) -> None:
        self._spec_path = state_dir / spec_file
        self._records = state_dir / RECORDS_DIR
        self._index = index
        self._count = count
        self._parent_pid = parent_pid
        self._host: ServingHost | None = None
        self._task: asyncio.Task[None] | None = None
        self._seen: tuple[tuple[int, int, int], str] | None = None  # spec.json's (inode, mtime, size), sha256
        self._failed: dict[str, Any] | None = None  # {"sha256", "mtime_ns", "error"}: the last failed apply
        self._record_written: bytes | None = None
        self._metrics_written: bytes | None = None
        self._orphaned = False

    def identity(self) -> dict[str, Any]:
        return {"worker": self._index, "pid": os.getpid()}

    # --- lifespan ---------------------------------------------------------------------------------

    async def start(self, host: ServingHost) -> None:
        """Restore the saved spec (and this worker's predecessor's counters), then follow spec.json."""
        self._host = host
        self._records.mkdir(parents=True, exist_ok=True)
        predecessor = _read_json(self._metrics_path(self._index))
        if predecessor is not None:
            _add_snapshot(host.metrics, predecessor)
        await self._follow()
        self._write_record()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._write_metrics()

    async def _run(self) -> None:
        next_metrics = time.monotonic() + METRICS_EVERY_S
        while True:
            await asyncio.sleep(POLL_S)
            if os.getppid() != self._parent_pid and not self._orphaned:
                self._orphaned = True
                log.warning("worker %d: the supervisor (pid %d) is gone; stopping", self._index, self._parent_pid)
                os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown
            try:
                await self._follow()
                if time.monotonic() >= next_metrics:
                    next_metrics = time.monotonic() + METRICS_EVERY_S
                    self._write_metrics()
            except Exception:  # keep following: the next change may well apply
                log.exception("worker %d: following %s failed", self._index, self._spec_path)

    # --- the spec ---------------------------------------------------------------------------------

    async def _follow(self) -> None:
        """Apply the saved spec unless it is the one in force (or the one that just failed to apply)."""
        host = self._require_host()
        try:
            stat = os.stat(self._spec_path)
        except FileNotFoundError:
            return
        if (
            self._seen is not None
            and self._seen[0] == _key(stat)
            and self._seen[1] in (host.spec_sha256, self._failed_sha())
        ):
            return
        with self._spec_path.open("rb") as handle:
            key, data = _key(os.fstat(handle.fileno())), handle.read()
        try:
            raw = orjson.loads(data)
            sha256 = hashlib.sha256(orjson.dumps(raw)).hexdigest()
        except orjson.JSONDecodeError as exc:
            self._seen = key, hashlib.sha256(data).hexdigest()
            self._fail(self._seen[1], key, f"{self._spec_path} is not valid JSON: {exc}")
            return
        self._seen = key, sha256
        if sha256 != host.spec_sha256:
            try:
                await host.apply(raw, persist=False)
                self._failed = None
                log.info("worker %d applied the spec another worker saved (%s)", self._index, sha256[:12])
            except ServingError as exc:
                self._fail(sha256, key, exc.message)
            except Exception as exc:
                log.exception("worker %d: applying the saved spec failed", self._index)
                self._fail(sha256, key, f"internal error: {exc}")
        self._write_record()

    def _fail(self, sha256: str, key: tuple[int, int, int], error: str) -> None:
        log.error("worker %d could not apply the saved spec %s: %s", self._index, sha256[:12], error)
        self._failed = {"sha256": sha256, "mtime_ns": key[1], "error": error}
        self._write_record()

    def _failed_sha(self) -> str | None:
        return None if self._failed is None else str(self._failed["sha256"])

    async def settle(self, sha256: str, *, apply_seconds: float) -> None:
        """Wait until every worker serves the spec this one has just applied and saved."""
        self._write_record()
        try:
            written_ns = os.stat(self._spec_path).st_mtime_ns
        except FileNotFoundError:
            written_ns = 0
        timeout = max(SETTLE_TIMEOUT_S, 3 * apply_seconds)
        deadline = time.monotonic() + timeout
        while True:
            if self._saved_sha() != sha256:
                raise SpecRejected(
                    "another spec pushed to this host meanwhile replaced this one; the later one is in force"
                )
            records = [_read_json(self._record_path(index)) or {} for index in range(self._count)]
            for index, record in enumerate(records):
                failed = record.get("failed") or {}
                if failed.get("sha256") == sha256 and failed.get("mtime_ns", 0) >= written_ns:
                    serving = sum(r.get("sha256") == sha256 for r in records)
                    raise ServingError(
                        f"worker {index} of this host could not apply the spec: {failed.get('error')} "
                        f"({serving} of {self._count} workers serve it, the others the previous one; "
                        "push again once the cause is fixed)"
                    )
            lagging = [str(index) for index, record in enumerate(records) if record.get("sha256") != sha256]
            if not lagging:
                return
            if time.monotonic() > deadline:
                raise ServingError(
                    f"worker(s) {', '.join(lagging)} of this host did not apply the spec within {timeout:.0f} s "
                    "(the others serve it)",
                    status=504,
                    code="TEMPORARILY_UNAVAILABLE",
                )
            await asyncio.sleep(SETTLE_POLL_S)

    def _saved_sha(self) -> str | None:
        try:
            return hashlib.sha256(orjson.dumps(orjson.loads(self._spec_path.read_bytes()))).hexdigest()
        except (OSError, orjson.JSONDecodeError):
            return None

    def _write_record(self) -> None:
        record = {
            "worker": self._index,
            "pid": os.getpid(),
            "sha256": self._require_host().spec_sha256,
            "failed": self._failed,
        }
        data = orjson.dumps(record)
        if data != self._record_written:
            _write_atomic(self._record_path(self._index), data)
            self._record_written = data

    def _record_path(self, index: int) -> Path:
        return self._records / f"{index}.json"

    # --- metrics ----------------------------------------------------------------------------------

    def render_metrics(self) -> bytes:
        """This worker's live counters plus its siblings' last snapshots: the host's metrics."""
        return self.host_metrics().render()

    def host_metrics(self) -> Metrics:
        """This worker's live counters plus its siblings' last snapshots (a few seconds old at most)."""
        total = Metrics()
        _add_snapshot(total, _snapshot(self._require_host().metrics))
        for index in range(self._count):
            if index != self._index:
                sibling = _read_json(self._metrics_path(index))
                if sibling is not None:
                    _add_snapshot(total, sibling)
        return total

    def _write_metrics(self) -> None:
        if self._host is None:
            return
        data = orjson.dumps(_snapshot(self._host.metrics))
        if data != self._metrics_written:
            _write_atomic(self._metrics_path(self._index), data)
            self._metrics_written = data

    def _metrics_path(self, index: int) -> Path:
        return self._records / f"{index}.metrics.json"

    def _require_host(self) -> ServingHost:
        if self._host is None:
            raise RuntimeError("WorkerSync.start() has not run")
        return self._host


def _key(stat: os.stat_result) -> tuple[int, int, int]:
    # os.replace gives every saved spec a new inode, so a rewrite is seen even within one mtime tick.
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _snapshot(metrics: Metrics) -> dict[str, Any]:
    return {
        "requests": [[*key, count] for key, count in metrics.requests.items()],
        "latency": [[endpoint, slot, _histogram(h)] for (endpoint, slot), h in metrics.latency.items()],
        "slot_latency": [[endpoint, slot, _histogram(h)] for (endpoint, slot), h in metrics.slot_latency.items()],
        "batch_sizes": _histogram(metrics.batch_sizes),
        "model_loads": _histogram(metrics.model_loads),
        "shadow": metrics.shadow.stats(),
    }


def _histogram(histogram: Histogram) -> dict[str, Any]:
    return {"counts": histogram.counts, "total": histogram.total, "n": histogram.n}


def _add_snapshot(into: Metrics, snapshot: dict[str, Any]) -> None:
    """Add a snapshot's counts to ``into``; a malformed snapshot (another version's) adds nothing."""
    try:
        requests = [(str(e), str(s), str(k), int(st), int(n)) for e, s, k, st, n in snapshot["requests"]]
        latency = {(str(e), str(s)): _histogram_from(h, LATENCY_BUCKETS) for e, s, h in snapshot["latency"]}
        slot_latency = {
            (str(e), str(s)): _histogram_from(h, SLOT_LATENCY_BUCKETS) for e, s, h in snapshot.get("slot_latency", [])
        }
        batch_sizes = _histogram_from(snapshot["batch_sizes"], BATCH_BUCKETS)
        model_loads = _histogram_from(snapshot["model_loads"], LOAD_BUCKETS)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("ignoring a malformed metrics snapshot: %s", exc)
        return
    for endpoint, slot, kind, status, count in requests:
        into.requests[(endpoint, slot, kind, status)] += count
    for key, h in latency.items():
        _add_histogram(into.latency.setdefault(key, Histogram(LATENCY_BUCKETS)), h)
    for key, h in slot_latency.items():
        _add_histogram(into.slot_latency.setdefault(key, Histogram(SLOT_LATENCY_BUCKETS)), h)
    _add_histogram(into.batch_sizes, batch_sizes)
    _add_histogram(into.model_loads, model_loads)
    into.shadow.add(snapshot.get("shadow") or {})


def _histogram_from(raw: Any, buckets: tuple[float, ...]) -> Histogram:
    histogram = Histogram(buckets)
    counts = [int(count) for count in raw["counts"]]
    if len(counts) != len(histogram.counts):
        raise ValueError("the histogram's buckets differ")
    histogram.counts, histogram.total, histogram.n = counts, float(raw["total"]), int(raw["n"])
    return histogram


def _add_histogram(into: Histogram, other: Histogram) -> None:
    into.counts = [a + b for a, b in zip(into.counts, other.counts, strict=True)]
    into.total += other.total
    into.n += other.n
