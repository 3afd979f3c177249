"""Benchmark: what the MLflow door adds to each MLflow call, against the tracking server called directly, in one run.

    .venv/bin/python bench/door.py [--calls 300] [--warmup 20]

Makes a project in a temporary folder as a new user does (`mlgate init`, `mlgate server` on a free port,
a data scientist made with `mlgate user create`, whose token writes in dev), then calls dev's MLflow two
ways with the same client (httpx, one keep-alive client per side, sequential calls):

- through the door, `<server>/mlflow/dev/...` with the data scientist's token, as any MLflow client does;
- directly, on the Unix socket the tracking server listens on (where the control plane puts it:
  `mlgate.sockets.tracking_socket`), with the Host header the server accepts (the door's pseudo host,
  `unix_transport.pseudo_host`). Only the control plane's user reaches that socket; this bench runs as it.

The first call through the door starts dev's tracking server (timed and printed). The run and the ~1 MiB
artifact the write and download rows use are made at setup through the door (`runs/create`, then a PUT
to `mlflow-artifacts`). Per call type, `--warmup` calls each side, then `--calls` calls each side,
alternating direct and door (the order swapped every round) so the machine's load falls on both alike.
The table gives the median, p95 and p99 in ms for each side and what the door adds at the median.
Target: under 2 ms added at the median. Only the door's URLs and tokens are used, none of its
internals, so the bench measures any version of it. It prints where `mlgate` was imported from: put a
copy of other sources first on PYTHONPATH to measure them. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving as serving_bench  # bench/serving.py: starting, waiting for and stopping processes

ENV = "dev"
API = "/api/2.0/mlflow"
ARTIFACT_BYTES = 1024 * 1024
MLGATE = str(serving_bench.VENV_BIN / "mlgate")
TARGET_MS = 2.0

# One call: (client, call index) -> the response.
Call = Callable[[httpx.Client, int], httpx.Response]


def checked(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise SystemExit(f"{what} answered {response.status_code}: {response.text[:1000]}")
    return dict(response.json()) if response.content else {}


def project(root: Path, env: dict[str, str]) -> tuple[Path, str]:
    """`mlgate init` in a new folder; returns (the folder, the first admin's token)."""
    folder = root / "project"
    folder.mkdir()
    report = json.loads(serving_bench.run([MLGATE, "init", "--json"], env=env, cwd=folder))
    return folder, str(report["admin_token"])


def server_url(folder: Path, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> str:
    """Where the server answers, from the server.json it writes once it listens."""
    record = folder / ".mlgate" / "server.json"
    deadline = time.monotonic() + timeout
    while not record.exists():
        if process.poll() is not None:
            raise SystemExit(f"mlgate server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"mlgate server wrote no {record} within {timeout:.0f} s")
        time.sleep(0.2)
    url = str(json.loads(record.read_text())["url"])
    serving_bench.wait_http(f"{url}/api/v1/health")
    return url


def calls(run_id: str, artifact: str) -> dict[str, Call]:
    """The call types, each a request made the same way on either client."""

    def log_metric(client: httpx.Client, i: int) -> httpx.Response:
        metric = {"run_id": run_id, "key": "bench", "value": float(i), "timestamp": int(time.time() * 1000)}
        return client.post(f"{API}/runs/log-metric", json={**metric, "step": i})

    return {
        "GET experiments/get-by-name": lambda c, i: c.get(
            f"{API}/experiments/get-by-name", params={"experiment_name": "Default"}
        ),
        "POST experiments/search": lambda c, i: c.post(f"{API}/experiments/search", json={"max_results": 10}),
        "POST runs/log-metric": log_metric,
        "GET artifact (1 MiB)": lambda c, i: c.get(f"/api/2.0/mlflow-artifacts/artifacts/{artifact}"),
    }


def timed(call: Call, client: httpx.Client, i: int, what: str) -> float:
    started = time.perf_counter()
    response = call(client, i)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"{what} answered {response.status_code}: {response.text[:1000]}")
    return elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def measure(clients: dict[str, httpx.Client], kinds: dict[str, Call], n: int, warmup: int) -> dict[Any, list[float]]:
    timings: dict[tuple[str, str], list[float]] = {}
    step = 0  # every logged metric a new step: no two writes alike
    for label, call in kinds.items():
        print(f"calling {label}: {warmup} + {n} calls per side ...", flush=True)
        for round_ in range(warmup + n):
            for side in ("direct", "door") if round_ % 2 == 0 else ("door", "direct"):
                step += 1
                elapsed = timed(call, clients[side], step, f"{label} ({side})")
                if round_ >= warmup:
                    timings.setdefault((label, side), []).append(elapsed)
    return timings


def report(timings: dict[Any, list[float]], kinds: dict[str, Call], n: int) -> None:
    print(f"\nMLflow calls on {ENV}, direct (Unix socket) against through the door, {n} calls per cell (ms)\n")
    print("| call | direct median | p95 | p99 | door median | p95 | p99 | added (median) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    added = {}
    for label in kinds:
        cells = []
        for side in ("direct", "door"):
            values = timings[(label, side)]
            cells += [statistics.median(values), percentile(values, 0.95), percentile(values, 0.99)]
        added[label] = cells[3] - cells[0]
        figures = " | ".join(f"{v * 1000:.2f}" for v in cells)
        print(f"| {label} | {figures} | {added[label] * 1000:+.2f} |")
    download = [label for label in kinds if "artifact" in label]
    for label in download:
        rates = {side: ARTIFACT_BYTES / statistics.median(timings[(label, side)]) / 1e6 for side in ("direct", "door")}
        print(f"\n{label}: {rates['direct']:.0f} MB/s direct, {rates['door']:.0f} MB/s through the door (median call)")
    worst = max(added, key=lambda label: added[label])
    met = "met" if added[worst] * 1000 < TARGET_MS else "not met"
    most = f"most added: {worst}, {added[worst] * 1000:+.2f} ms"
    print(f"Target: under {TARGET_MS:.0f} ms added at the median: {met} ({most})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="measured calls per call type and side")
    parser.add_argument("--warmup", type=int, default=20, help="calls per call type and side before measuring")
    args = parser.parse_args()

    import mlgate
    from mlgate.adapters.mlflow.unix_transport import pseudo_host
    from mlgate.config import load_settings
    from mlgate.sockets import tracking_socket

    print(f"mlgate from {Path(mlgate.__file__).parent}; load average {os.getloadavg()[0]:.2f}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="mlgate-bench-door-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLGATE_", "MLFLOW_TRACKING"))}
    env |= {"PATH": f"{serving_bench.VENV_BIN}{os.pathsep}{env.get('PATH', '')}", "MLFLOW_DISABLE_TELEMETRY": "true"}
    process = None
    folder = root / "project"
    clients: dict[str, httpx.Client] = {}
    try:
        folder, admin = project(root, env)
        port = serving_bench.free_port()
        log = root / "server.log"
        command = [MLGATE, "server", "--config", str(folder / "mlgate.yaml"), "--port", str(port)]
        process = serving_bench.start(command, env, log)
        url = server_url(folder, process, log)
        made = serving_bench.run(
            [MLGATE, "user", "create", "bench-ds", "--role", "data-scientist", "--env", ENV, "--json"],
            env={**env, "MLGATE_TOKEN": admin},
            cwd=folder,
        )
        token = json.loads(made)["token"]["token"]

        door = httpx.Client(base_url=f"{url}/mlflow/{ENV}", headers={"Authorization": f"Bearer {token}"}, timeout=120)
        clients["door"] = door
        started = time.perf_counter()
        checked(door.get(f"{API}/experiments/get-by-name", params={"experiment_name": "Default"}), "the first call")
        print(f"first call through the door (starts {ENV}'s tracking server): {time.perf_counter() - started:.1f} s")

        # Setup, through the door: a run to log metrics on, a 1 MiB artifact of it to download.
        run = checked(
            door.post(f"{API}/runs/create", json={"experiment_id": "0", "run_name": "bench-door"}), "runs/create"
        )["run"]["info"]
        artifact = f"{run['artifact_uri'].split(':', 1)[1].lstrip('/')}/bench.bin"
        content = os.urandom(ARTIFACT_BYTES)
        checked(door.put(f"/api/2.0/mlflow-artifacts/artifacts/{artifact}", content=content), "the artifact upload")

        socket = tracking_socket(load_settings(folder / "mlgate.yaml").home, ENV)
        transport = httpx.HTTPTransport(uds=str(socket))
        clients["direct"] = httpx.Client(transport=transport, base_url=f"http://{pseudo_host(ENV)}", timeout=120)
        kinds = calls(run["run_id"], artifact)
        for side, client in clients.items():  # both sides read the same file
            if kinds["GET artifact (1 MiB)"](client, 0).content != content:
                raise SystemExit(f"the artifact read {side} is not the one uploaded")
        print(f"direct: {socket}, Host {pseudo_host(ENV)}")

        timings = measure(clients, kinds, args.calls, args.warmup)
        report(timings, kinds, args.calls)
        return 0
    finally:
        for client in clients.values():
            client.close()
        if process is not None:
            subprocess.run([MLGATE, "stop"], cwd=folder, env=env, capture_output=True, timeout=60, check=False)
            serving_bench.stop(process)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
