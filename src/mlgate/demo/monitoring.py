"""The demo's monitoring: production's population drifts, the monitor fires, and retraining sends a new
candidate back to gate A, where it waits for a person."""

from __future__ import annotations

import email
import time
from typing import TYPE_CHECKING, Any

from mlgate.demo.policy import MONITOR
from mlgate.demo.webapp import WebApp, until
from mlgate.errors import MlgateError
from mlgate.interfaces.cli import monitor_commands
from mlgate.interfaces.cli.output import console

if TYPE_CHECKING:
    from mlgate.demo.session import Demo

ENV = "production"


def run(demo: Demo, web: WebApp) -> None:
    demo.step(f"Monitoring: the monitor {MONITOR} watches production's endpoint (last 500 rows, every 3 s)")
    with demo.client("olu") as olu:
        result = olu.run_monitor(ENV, MONITOR)["result"]
    console.print(f"  on the usual patients: verdict {result['verdict']} over the last {result['rows']} rows")
    if result["verdict"] == "breach":
        raise MlgateError(f"the monitor found drift in the usual patients: {result['breaches']}")

    demo.step("The clinic's population changes: the web app now sends older, higher-glucose patients")
    _, drifted = demo.patients(drift=True)
    web.patients(drifted)

    def fired() -> dict[str, Any] | None:
        with demo.client("olu") as olu:
            alerts = olu.monitor_alerts(ENV, MONITOR)
        return next((a for a in alerts if a.get("state") == "firing"), None)

    alert = until("the drift alert", fired, timeout_s=180)
    console.print(f"  alert {alert['id']} fired at {alert.get('opened_at')} after two drifted windows in a row")
    monitor_commands.report(MONITOR, ENV, url=demo.url, token=demo.tokens["olu"], json_out=False)

    demo.step("The alert, as olu the operator received it")
    raw = demo.mail.wait_for("olu@example.com", timeout_s=60, subject_contains="lert")
    message = email.message_from_string(raw)
    body = message.get_payload(decode=True)
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(message.get_payload())
    for line in [f"Subject: {message['Subject']}", "", *text.splitlines()[:14]]:
        console.print(f"    | {line}", markup=False, highlight=False)

    demo.step("Action retrain: a training job in dev, a new candidate registered, gate A opened for lee")

    def candidate() -> dict[str, Any] | None:
        with demo.client("lee") as lee:
            for request in lee.waiting_requests():
                if request["model_name"] == "diabetes" and request["source_env"] == "dev":
                    return request
        return None

    request = until("the retrained candidate's gate A request", candidate, timeout_s=300)
    with demo.client("lee") as lee:
        version = lee.model_version("dev", "diabetes", request["source_version"])
    notes = "; ".join(version.get("notes") or []) or "-"
    console.print(
        f"  diabetes v{version['version']} in dev, trained by job {version['lineage'].get('job_id', '-')} "
        f"(run {version['run_id']})"
    )
    console.print(f"  lineage: {notes}")
    console.print(
        f"  gate A request {request['id']} waits for lee: {demo.url}/requests/{request['id']} "
        "(people still decide what reaches production)"
    )
    time.sleep(0.1)
