"""`mlgate monitor`: monitors on endpoints, their latest values against thresholds, the per-feature drift
report, running one now, and sending ground truth in bulk."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated, Any

import typer

from mlgate.errors import ValidationError
from mlgate.interfaces.cli.output import JsonOption, TokenOption, UrlOption, console, emit_json, table
from mlgate.interfaces.sdk.client import Client

monitor_app = typer.Typer(
    help="Monitors: drift, data quality, performance; alerts and retraining.", no_args_is_help=True
)

EnvOption = Annotated[str, typer.Option("--env", "-e", help="The environment (default: the last one).")]
DEFAULT_ENV = "production"

# Per signal: (the figure in the latest values, the threshold it is held against, True if a ceiling).
HEADLINES: dict[str, list[tuple[str, str, bool]]] = {
    "data-drift": [("share", "drift_share", True)],
    "prediction-drift": [("share", "drift_share", True)],
    "data-quality": [
        ("null_rate", "null_rate", True),
        ("type_error_rate", "type_error_rate", True),
        ("out_of_range_rate", "out_of_range_rate", True),
    ],
    "model-performance": [("accuracy", "min_accuracy", False), ("auc", "min_auc", False), ("rmse", "max_rmse", True)],
    "endpoint-performance": [("error_rate", "max_error_rate", True), ("p95_ms", "max_p95_ms", True)],
}


def _number(value: Any) -> str:
    return "-" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))


def _breached(value: Any, threshold: Any, ceiling: bool) -> str:
    if value is None or threshold is None:
        return ""
    return "BREACH" if (value > threshold if ceiling else value < threshold) else "ok"


def status_rows(monitor: dict[str, Any]) -> list[list[Any]]:
    last = monitor.get("last")
    if not last:
        return [[monitor["name"], "-", "-", "-", "-", "never run"]]
    rows = []
    for signal, values in last["values"].items():
        for key, limit, ceiling in HEADLINES.get(signal, []):
            if key not in values:
                continue
            value, threshold = values.get(key), monitor["thresholds"].get(limit)
            rows.append(
                [monitor["name"], signal, key, _number(value), _number(threshold), _breached(value, threshold, ceiling)]
            )
        if values.get("status") and not any(key in values for key, _, _ in HEADLINES.get(signal, [])):
            rows.append([monitor["name"], signal, "-", "-", "-", values["status"]])
    return rows


@monitor_app.command("list")
def list_monitors(
    env: EnvOption = DEFAULT_ENV, url: UrlOption = None, token: TokenOption = None, json_out: JsonOption = False
) -> None:
    """The environment's monitors: endpoint, signals, schedule, action, alert state, last verdict."""
    with Client.discover(url, token) as client:
        rows = client.monitors(env)
    if json_out:
        emit_json(rows)
        return
    table(
        f"monitors in {env}",
        ["name", "endpoint", "signals", "window", "schedule", "action", "alert", "last run", "verdict"],
        [
            [
                m["name"],
                m["endpoint"],
                ", ".join(m["spec"]["signals"]),
                m["spec"]["window"],
                m["spec"]["schedule"],
                m["spec"]["action"],
                "FIRING" if m["firing"] else "-",
                m["last_run_at"] or "never",
                (m["last"] or {}).get("verdict", "-"),
            ]
            for m in rows
        ],
    )


def _thresholds(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ValidationError(f"--threshold expects NAME=NUMBER, got {item!r}")
    return out


@monitor_app.command("create")
def create_monitor(
    name: str,
    endpoint: Annotated[str, typer.Option("--endpoint", help="The endpoint to watch.")],
    env: EnvOption = DEFAULT_ENV,
    signals: Annotated[
        str | None, typer.Option("--signals", help="Comma-separated: data-drift, prediction-drift, ...")
    ] = None,
    threshold: Annotated[list[str] | None, typer.Option("--threshold", help="NAME=NUMBER, repeatable.")] = None,
    window: Annotated[str, typer.Option("--window", help="Lookback: 30m, 1h, 1d or '5000 rows'.")] = "1h",
    schedule: Annotated[str, typer.Option("--schedule", help="An interval (5m) or a cron expression.")] = "5m",
    min_rows: Annotated[int, typer.Option("--min-rows", help="Fewer rows in a window: no verdict.")] = 100,
    consecutive: Annotated[int, typer.Option("--consecutive", help="K windows to fire, K to resolve.")] = 2,
    action: Annotated[str, typer.Option("--action", help="notify or retrain.")] = "notify",
    retrain_data: Annotated[
        str | None, typer.Option("--retrain-data", help="The dev data asset to retrain on.")
    ] = None,
    no_production_window: Annotated[
        bool, typer.Option("--no-production-window", help="Retrain on the configured data alone.")
    ] = False,
    cooldown_hours: Annotated[float, typer.Option("--cooldown-hours", help="At most one retraining per.")] = 24.0,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create a monitor on an endpoint (as a `monitors` entry of mlgate.yaml would)."""
    spec: dict[str, Any] = {
        "name": name,
        "endpoint": endpoint,
        "thresholds": _thresholds(threshold or []),
        "window": window,
        "schedule": schedule,
        "min_rows": min_rows,
        "consecutive": consecutive,
        "action": action,
        "retrain": {
            "data": retrain_data,
            "include_production_window": not no_production_window,
            "cooldown_hours": cooldown_hours,
        },
    }
    if signals:
        spec["signals"] = [s.strip() for s in signals.split(",") if s.strip()]
    with Client.discover(url, token) as client:
        made = client.create_monitor(env, spec)
    if json_out:
        emit_json(made)
        return
    console.print(f"monitor {made['name']} on {env}/{made['endpoint']}: {', '.join(made['spec']['signals'])}")


@monitor_app.command("run")
def run_monitor(
    name: str,
    env: EnvOption = DEFAULT_ENV,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Evaluate the monitor's window now: the verdict, what breached, and any alert fired or resolved."""
    with Client.discover(url, token) as client:
        outcome = client.run_monitor(env, name)
    if json_out:
        emit_json(outcome)
        return
    result = outcome["result"]
    console.print(f"{name}: {result['verdict']} over {result['rows']} rows ({result['model'] or 'no model'})")
    for breach in result["breaches"]:
        if breach.get("counted", True):
            console.print(
                f"  {breach['signal']} {breach['metric']} {_number(breach['value'])} (threshold {breach['threshold']})"
            )
    if outcome["change"] == "fire":
        console.print(f"alert {outcome['alert']['id']} FIRING")
    elif outcome["change"] == "resolve":
        console.print(f"alert {outcome['alert']['id']} resolved")


@monitor_app.command("status")
def status(
    env: EnvOption = DEFAULT_ENV,
    name: Annotated[str | None, typer.Option("--name", help="Only this monitor.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Each monitor's latest values against its thresholds."""
    with Client.discover(url, token) as client:
        found = [m for m in client.monitors(env) if name is None or m["name"] == name]
    if json_out:
        emit_json(found)
        return
    for monitor in found:
        last = monitor.get("last") or {}
        state = "FIRING" if monitor["firing"] else "clear"
        console.print(
            f"{monitor['name']} on {env}/{monitor['endpoint']}: alert {state}; last {last.get('verdict', 'never run')}"
            + (f" over {last['rows']} rows at {last['at']} ({last.get('model') or 'no model'})" if last else "")
        )
    table(
        f"monitor status in {env}",
        ["monitor", "signal", "figure", "value", "threshold", ""],
        [row for monitor in found for row in status_rows(monitor)],
    )


@monitor_app.command("report")
def report(
    name: str,
    env: EnvOption = DEFAULT_ENV,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """The per-feature drift table of the monitor's latest result."""
    with Client.discover(url, token) as client:
        monitor = client.monitor(env, name)
    last = monitor.get("last")
    drift = ((last or {}).get("values") or {}).get("data-drift")
    if json_out:
        emit_json(drift)
        return
    if not last or not drift or "features" not in drift:
        console.print(f"{name}: no drift results yet" + (f" ({drift.get('status')})" if drift else ""))
        return
    table(
        f"{name}: feature drift over {last['rows']} rows at {last['at']} (model {last.get('model') or '-'})",
        ["feature", "kind", "measure", "value", "threshold", "drifted", "psi", "status"],
        [
            [
                feature,
                row.get("kind"),
                row.get("measure"),
                _number(row.get("value")),
                _number(row.get("threshold")),
                {True: "DRIFTED", False: "no", None: "-"}[row.get("drifted")],
                _number(row.get("psi")),
                row.get("status"),
            ]
            for feature, row in drift["features"].items()
        ],
    )
    share = drift.get("share")
    verdict = {True: "DRIFT", False: "none", None: "-"}[drift.get("dataset_drift")]
    console.print(
        f"dataset drift: {drift['drifted']} of {drift['judged']} features drifted"
        + (f" (share {share:.2f}, threshold {drift['threshold']})" if share is not None else "")
        + f"; verdict {verdict}"
    )


def _read_feedback(path: Path) -> tuple[list[str], list[float]]:
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"request_id", "label"} <= set(reader.fieldnames):
                raise ValidationError(f"{path}: expected the columns request_id,label; got {reader.fieldnames}")
            ids, labels = [], []
            for line, row in enumerate(reader, start=2):
                try:
                    labels.append(float(row["label"]))
                except (TypeError, ValueError):
                    raise ValidationError(f"{path}:{line}: label {row['label']!r} is not a number") from None
                ids.append(str(row["request_id"]).strip())
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}") from exc
    if not ids:
        raise ValidationError(f"{path}: no rows")
    return ids, labels


@monitor_app.command("feedback")
def feedback(
    file: Path,
    endpoint: Annotated[str, typer.Option("--endpoint", help="The endpoint that answered the requests.")],
    env: EnvOption = DEFAULT_ENV,
    url: UrlOption = None,
    token: TokenOption = None,
    json_out: JsonOption = False,
) -> None:
    """Send ground truth in bulk from a CSV with the columns request_id,label; unknown ids are listed."""
    ids, labels = _read_feedback(file)
    with Client.discover(url, token) as client:
        outcome = client.send_feedback(env, endpoint, ids, labels)
    if json_out:
        emit_json(outcome)
        return
    console.print(f"{outcome['accepted']} label(s) stored for {env}/{endpoint}")
    if outcome["unknown"]:
        console.print(f"{len(outcome['unknown'])} unknown request id(s), not stored: {', '.join(outcome['unknown'])}")
