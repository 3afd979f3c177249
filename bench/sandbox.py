"""Benchmark: what the sandbox costs a job's start, side by side with no sandbox, in one run.

    .venv/bin/python bench/sandbox.py [--runs 40]

A job is launched as the `local` execution backend launches it (the shell that records the exit status,
around the command) with `execution.sandbox: none` and with `bwrap` (the policy's default limits), for
two commands: `true` (the launch alone) and `python -c "import mlgate"` (an interpreter start inside the
sandbox, as every training job has). Each launch is timed from `Popen` to the exit status file; the
table gives the median and the 90th percentile of `--runs` launches per row, interleaved so that
the machine's load falls on both alike, and what the sandbox adds. Target: under 100 ms added.

Then serving: two serving hosts started by the product's own `LocalServingBackend`, one per home, one
with `execution.sandbox: none` and one with `bwrap`, each serving the diabetes model version 1 (built
as bench/serving.py builds it) behind a key, loaded by `wrk` with 1-row requests at each connection
count, alternately, `--rounds` times each (the order swapped every round); the table gives the median
and every run, so the machine's noise shows beside the difference. Target: the sandboxed host within 3%.
`--skip-serving` leaves that part out. Not part of the tests.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mlgate.adapters.execution.base import JobLaunch
from mlgate.adapters.execution.local import LocalBackend
from mlgate.config import LimitsConfig, default_config_text, load_settings
from mlgate.sandbox import Limits, Sandbox

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving as serving_bench  # bench/serving.py: the models and wrk

COMMANDS = {"true": "true", "python -c 'import mlgate'": f"{sys.executable} -c 'import mlgate'"}


def launch_once(backend: LocalBackend, sandbox: Sandbox, command: str, folder: Path, job_id: int) -> float:
    work = folder / str(job_id) / "work"
    work.mkdir(parents=True)
    launch = JobLaunch(
        job_id=job_id,
        command=command,
        workdir=work,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
        log_path=work.parent / "job.log",
        sandbox=sandbox,
    )
    started = time.perf_counter()
    handle = backend.submit(launch)
    while backend.poll(handle).running:
        time.sleep(0.0005)
    elapsed = time.perf_counter() - started
    if not launch.exit_status_path.exists() or launch.exit_status_path.read_text().strip() != "0":
        raise SystemExit(f"{command!r} failed in {sandbox.mode}: {launch.log_path.read_text()[-2000:]}")
    return elapsed


def job_starts(runs: int) -> None:
    defaults = LimitsConfig()
    limits = Limits(
        cpu_seconds=defaults.cpu_seconds,
        memory_bytes=(defaults.memory_mb or 0) * 1024 * 1024 or None,
        processes=defaults.processes,
    )
    sandboxes = {"none": Sandbox("none"), "bwrap": Sandbox("bwrap", limits=limits)}
    sandboxes["bwrap"].check()
    backend = LocalBackend()
    timings: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="mlgate-bench-sandbox-") as tmp:
        job_id = 0
        for _ in range(runs + 2):  # the first two rounds warm the page cache; not counted
            for label, command in COMMANDS.items():
                for mode, sandbox in sandboxes.items():
                    job_id += 1
                    elapsed = launch_once(backend, sandbox, command, Path(tmp), job_id)
                    if job_id > 2 * len(COMMANDS) * len(sandboxes):
                        timings.setdefault((label, mode), []).append(elapsed)
    print(f"job start, {runs} launches per row (ms)\n")
    print("| command | sandbox | median | p90 | added by the sandbox (median) |")
    print("|---|---|---:|---:|---:|")
    for label in COMMANDS:
        base = statistics.median(timings[(label, "none")])
        for mode in sandboxes:
            values = sorted(timings[(label, mode)])
            median, p90 = statistics.median(values), values[int(0.9 * (len(values) - 1))]
            added = "" if mode == "none" else f"{(median - base) * 1000:+.1f}"
            print(f"| {label} | {mode} | {median * 1000:.1f} | {p90 * 1000:.1f} | {added} |")


def serving_host(root: Path, mode: str, model: tuple[Path, str]) -> tuple[Any, str]:
    """A home whose policy says `execution.sandbox: MODE`, its dev serving host started by the product's
    backend and serving `model` behind KEY; returns (backend, the endpoint's URL)."""
    from mlgate.adapters.serving.local import LocalServingBackend

    home = root / f"home-{mode}"
    home.mkdir()
    config = home / "mlgate.yaml"
    config.write_text(default_config_text().replace("  sandbox: bwrap", f"  sandbox: {mode}"))
    settings = load_settings(config)
    env = settings.environment("dev")
    folder, digest = model
    placed = env.serving_dir / digest
    shutil.copytree(folder, placed)
    backend = LocalServingBackend(settings)
    backend.ensure(env)
    key_hash = hashlib.sha256(serving_bench.KEY.encode()).hexdigest()
    slots = {"blue": {"model_dir": str(placed), "digest": digest, "traffic": 100}}
    backend.push("dev", {"endpoints": {"diabetes": {"key_hashes": [key_hash], "slots": slots}}})
    return backend, f"{backend.url('dev')}/endpoints/diabetes/invocations"


def serving(connections: list[int], duration: int, rounds: int) -> None:
    from mlgate.adapters.serving.local import stop_hosts

    root = Path(tempfile.mkdtemp(prefix="mlgate-bench-sandbox-serving-"))
    env = {"PATH": f"{serving_bench.VENV_BIN}:/usr/bin:/bin"}
    homes = []
    try:
        print("building the diabetes model version 1 with examples/diabetes ...", flush=True)
        model = serving_bench.build_models(root, env)["blue"]
        script = serving_bench.lua(
            root / "keyed.lua",
            serving_bench.first_patient(model[0]),
            {"Content-Type": "application/json", "Authorization": f"Bearer {serving_bench.KEY}"},
        )
        urls = {}
        for mode in ("none", "bwrap"):
            backend, urls[mode] = serving_host(root, mode, model)
            homes.append(backend._settings)
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for c in connections:
            for round_ in range(rounds):  # alternating, the order swapped every round
                for mode in ("none", "bwrap") if round_ % 2 == 0 else ("bwrap", "none"):
                    serving_bench.wrk(urls[mode], script, c, 1)  # warm-up
                    print(f"loading the host with sandbox {mode} at {c} connections for {duration} s ...", flush=True)
                    runs.setdefault((mode, c), []).append(serving_bench.wrk(urls[mode], script, c, duration))
        print(f"\nserving throughput, diabetes v1, 1-row requests with a key (median of {rounds} runs each)\n")
        print("| sandbox | connections | req/s (median) | req/s (runs) | p50 ms | p99 ms | non-2xx | sandboxed / not |")
        print("|---|---:|---:|---|---:|---:|---:|---:|")
        for c in connections:
            medians = {mode: statistics.median(r["rps"] for r in runs[(mode, c)]) for mode in ("none", "bwrap")}
            for mode in ("none", "bwrap"):
                middle = sorted(runs[(mode, c)], key=lambda r: r["rps"])[len(runs[(mode, c)]) // 2]
                each = ", ".join(f"{r['rps']:.0f}" for r in runs[(mode, c)])
                errors = sum(r["non2xx"] + r["socket"] for r in runs[(mode, c)])
                ratio = "" if mode == "none" else f"{100 * medians['bwrap'] / max(medians['none'], 1e-9):.1f}%"
                print(
                    f"| {mode} | {c} | {medians[mode]:.0f} | {each} | {middle['p50']:.2f} | {middle['p99']:.2f} "
                    f"| {errors} | {ratio} |"
                )
    finally:
        for settings in homes:
            stop_hosts(settings)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40, help="job launches per row")
    parser.add_argument("--duration", type=int, default=8, help="seconds of load per serving run")
    parser.add_argument("--rounds", type=int, default=5, help="serving runs per host and connection count")
    parser.add_argument("--connections", default="8,64", help="comma-separated connection counts")
    parser.add_argument("--skip-serving", action="store_true")
    args = parser.parse_args()
    job_starts(args.runs)
    if not args.skip_serving:
        if shutil.which("wrk") is None:
            print("wrk is not installed; install it with:  apt-get install -y wrk", file=sys.stderr)
            return 1
        print()
        serving([int(c) for c in args.connections.split(",")], args.duration, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
