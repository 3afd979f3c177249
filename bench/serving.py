"""Benchmark: the mlgate serving host against `mlflow models serve` on the diabetes model version 1.

    .venv/bin/python bench/serving.py [--duration 10] [--connections 8,64]

Builds the models with the diabetes example's own code (examples/diabetes), as mlgate's demo does: its data
generator writes the patients, its training script fits and logs the model to a throwaway MLflow store
(sqlite, in a temporary folder), and the logged model folder is downloaded and placed under
root/serving/<digest>/ as the control plane would. Blue is the diabetes model version 1: the demo's data
(10,000 patients, seed 0) and the training command of the example's mlgate.yaml (`--reg-rate 0.01`); green
is a retrained candidate (other patients, seed 1, `--reg-rate 0.1`). Serves them with (1) the mlgate host
(key on, traffic split 50/50 across the two slots), (2) `mlflow models serve --env-manager local` (version 1)
(3) a hello-world ASGI app under the same uvicorn (the HTTP stack's ceiling here) and (4) a second mlgate
host that records every request in its monitoring store (collection at 100% against collection off), loads
each with `wrk` (1-row requests: the first patient of the model's saved input example) and prints one table.
Not part of the tests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ADMIN = "bench-admin-token-0123456789abcdef"
KEY = "bench-endpoint-key-0123456789abcdef"
METRICS = "bench-metrics-token-0123456789abcdef"  # /metrics answers the holder of a metrics token only
VENV_BIN = Path(sys.executable).parent
EXAMPLE_SRC = Path(__file__).resolve().parents[1] / "examples" / "diabetes" / "src"
PATIENTS = 10_000
# slot -> (the data generator's seed, the training script's --reg-rate); blue is version 1 as the demo makes it.
SLOTS = {"blue": (0, 0.01), "green": (1, 0.1)}
HELLO_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"predictions": [0]}'})
"""


def free_port() -> int:
    from mlgate.ports import free_port as pick

    return pick()


def run(command: list[str], *, env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    return done.stdout


def build_models(root: Path, env: dict[str, str]) -> dict[str, tuple[Path, str]]:
    """The example's data generator and training script, run as its README says, once per slot; each logged
    model is downloaded and placed under root/serving/<digest>/. Returns slot -> (folder, digest)."""
    from mlgate.domain.digest import tree_digest

    example_env = {
        **env,
        "PYTHONPATH": str(EXAMPLE_SRC),
        "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ in the example's folder
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    placed = {}
    for slot, (seed, reg_rate) in SLOTS.items():
        data = root / "data" / f"{slot}.csv"
        generate = ["diabetes.data", "--rows", str(PATIENTS), "--seed", str(seed), "--out", str(data)]
        run([sys.executable, "-m", *generate], env=example_env, cwd=root)
        train = ["diabetes.train", "--data", str(data), "--reg-rate", str(reg_rate), "--run-name", slot]
        trained = run([sys.executable, "-m", *train, "--experiment", "bench"], env=example_env, cwd=root).strip()
        print(f"  {slot} (seed {seed}, reg-rate {reg_rate}): {trained}", flush=True)
        model_id = re.search(r"\bmodel (\S+)", trained)
        if model_id is None:
            raise SystemExit(f"the training script printed no model id: {trained}")
        staging = root / f"build-{slot}"
        download = ["artifacts", "download", "-u", f"models:/{model_id.group(1)}", "-d", str(staging)]
        run([str(VENV_BIN / "mlflow"), *download], env=example_env, cwd=root)
        digest = tree_digest(staging)
        shutil.copytree(staging, root / "serving" / digest)
        placed[slot] = (root / "serving" / digest, digest)
    return placed


def first_patient(model_dir: Path) -> dict[str, Any]:
    """A 1-row `dataframe_split` body: the first patient of the input example saved with the model."""
    example = json.loads((model_dir / "input_example.json").read_text())
    return {"dataframe_split": {"columns": example["columns"], "data": example["data"][:1]}}


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:  # noqa: S310 - loopback only
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def _metrics(port: int) -> list[str]:
    """The lines of a host's /metrics (loopback), read with the metrics token."""
    import httpx

    answer = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {METRICS}"}, timeout=10)
    answer.raise_for_status()
    return answer.text.splitlines()


def push(admin_socket: Path, spec: dict[str, Any]) -> None:
    """PUT the spec to a host's admin API, which answers on its Unix socket only."""
    import httpx

    transport = httpx.HTTPTransport(uds=str(admin_socket))
    with httpx.Client(transport=transport, base_url="http://host", timeout=120) as admin:
        answer = admin.put("/admin/spec", json=spec, headers={"Authorization": f"Bearer {ADMIN}"})
    if answer.status_code != 200:
        raise SystemExit(f"the host refused the spec ({answer.status_code}): {answer.text[:500]}")


def wrk(url: str, script: Path, connections: int, duration: int) -> dict[str, Any]:
    threads = min(2, connections)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            return float("nan")
        return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50": latency("50"),
        "p99": latency("99"),
        "requests": int(total.group(1)) if total else 0,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,  # wrk counts statuses above 399
        "socket": sum(map(int, socket.groups())) if socket else 0,  # connect, read, write, timeout
    }


def lua(path: Path, body: dict[str, Any], headers: dict[str, str]) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(body))}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per target and connection count")
    parser.add_argument("--connections", default="8,64", help="comma-separated connection counts (default 8,64)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of the mlgate host")
    parser.add_argument("--max-wait-ms", type=float, default=0.0, help="the mlgate host's micro-batching wait")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed; install it with:  apt-get install -y wrk", file=sys.stderr)
        return 1
    connections = [int(c) for c in args.connections.split(",")]
    root = Path(tempfile.mkdtemp(prefix="mlgate-bench-"))
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        print("building the models with examples/diabetes ...", flush=True)
        models = build_models(root, env)
        (blue, blue_digest), (green, green_digest) = models["blue"], models["green"]
        body = first_patient(blue)
        plain = lua(root / "plain.lua", body, {"Content-Type": "application/json"})
        keyed = lua(root / "keyed.lua", body, {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})

        mlgate_port, mlflow_port, hello_port = free_port(), free_port(), free_port()
        monitored_port = free_port()
        host_env = {**env, "MLGATE_HOST_ADMIN_TOKEN": ADMIN}
        for port, extra, name in (
            (mlgate_port, [], "mlgate"),
            (monitored_port, ["--monitoring-dir", str(root / "monitoring")], "mlgate-monitored"),
        ):
            host_cmd = [sys.executable, "-m", "mlgate.serving", "--state-dir", str(root / f"state-{name}")]
            host_cmd += ["--port", str(port), "--workers", str(args.workers), "--max-wait-ms", str(args.max_wait_ms)]
            host_cmd += ["--admin-socket", str(root / f"admin-{port}.sock")]  # the admin API: a Unix socket only
            processes.append(start([*host_cmd, *extra], host_env, root / f"{name}.log"))
        mlflow_env = {**env, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}
        mlflow_cmd = ["mlflow", "models", "serve", "-m", str(blue), "--env-manager", "local"]
        mlflow_cmd += ["-h", "127.0.0.1", "-p", str(mlflow_port)]
        processes.append(start(mlflow_cmd, mlflow_env, root / "mlflow.log"))
        (root / "hello.py").write_text(HELLO_APP)
        hello_cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(root), "hello:app", "--port", str(hello_port)]
        processes.append(start([*hello_cmd, "--log-level", "warning", "--no-access-log"], env, root / "hello.log"))

        wait_http(f"http://127.0.0.1:{mlgate_port}/v2/health/live")
        wait_http(f"http://127.0.0.1:{monitored_port}/v2/health/live")
        key_hash = hashlib.sha256(KEY.encode()).hexdigest()
        spec = {
            "endpoints": {
                "diabetes": {
                    "key_hashes": [key_hash],
                    "slots": {
                        "blue": {"model_dir": str(blue), "digest": blue_digest, "traffic": 50},
                        "green": {"model_dir": str(green), "digest": green_digest, "traffic": 50},
                    },
                }
            }
        }
        spec["endpoints"]["diabetes"]["sample_rate"] = 1.0  # the monitored host records every request
        spec["metrics_token_hashes"] = [hashlib.sha256(METRICS.encode()).hexdigest()]
        for port in (mlgate_port, monitored_port):
            push(root / f"admin-{port}.sock", spec)
        wait_http(f"http://127.0.0.1:{mlflow_port}/ping")
        wait_http(f"http://127.0.0.1:{hello_port}/")

        targets = [
            ("mlgate (key, 50/50 blue/green)", f"http://127.0.0.1:{mlgate_port}/endpoints/diabetes/invocations", keyed),
            ("mlflow models serve", f"http://127.0.0.1:{mlflow_port}/invocations", plain),
            ("hello-world ASGI (ceiling)", f"http://127.0.0.1:{hello_port}/", plain),
            ("mlgate, monitoring at 100%", f"http://127.0.0.1:{monitored_port}/endpoints/diabetes/invocations", keyed),
        ]
        results: dict[tuple[str, int], dict[str, Any]] = {}
        paired = {targets[0][0], targets[3][0]}  # the host with and without monitoring: compared closely
        for c in connections:
            for name, url, script in targets:
                wrk(url, script, c, 2)  # warm-up
                print(f"loading {name} with {c} connections for {args.duration} s ...", flush=True)
                results[(name, c)] = wrk(url, script, c, args.duration)
            # On a shared machine the load of a run varies: measure the pair again in the other order and
            # keep each one's better run.
            for name, url, script in reversed([t for t in targets if t[0] in paired]):
                print(f"loading {name} with {c} connections for {args.duration} s (again) ...", flush=True)
                again = wrk(url, script, c, args.duration)
                if again["rps"] > results[(name, c)]["rps"]:
                    results[(name, c)] = again
        print()
        print(f"{'target':34} {'conns':>5} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'socket':>7}")
        for c in connections:
            for name, _, _ in targets:
                r = results[(name, c)]
                figures = f"{r['rps']:>10.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['non2xx']:>8} {r['socket']:>7}"
                print(f"{name:34} {c:>5} {figures}")
            mlgate, mlflow, hello, monitored = (results[(t[0], c)] for t in targets)
            print(
                f"  at {c} connections: mlgate / mlflow = {mlgate['rps'] / max(mlflow['rps'], 1e-9):.1f}x throughput, "
                f"mlgate / hello-world = {100 * mlgate['rps'] / max(hello['rps'], 1e-9):.0f}%, "
                f"monitoring at 100% costs {100 * (1 - monitored['rps'] / max(mlgate['rps'], 1e-9)):.1f}% of throughput"
            )
        batches = [line for line in _metrics(mlgate_port) if "batch_size_" in line]
        print("mlgate batch sizes:", " ".join(line.rsplit(" ", 1)[1] for line in batches))
        kept = [line for line in _metrics(monitored_port) if line.startswith("mlgate_serving_monitoring")]
        print("monitoring:", "; ".join(kept))
        return 0
    finally:
        for process in processes:
            stop(process)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
