"""The demo's outer loop and continuous deployment: staging checks, gate B, production rollouts, and a
simulated web application calling the production endpoint while a second version rolls out."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from mlgate.demo import monitoring
from mlgate.demo.webapp import WebApp, until
from mlgate.errors import MlgateError
from mlgate.interfaces.cli.output import console, table

if TYPE_CHECKING:
    from mlgate.demo.session import Demo

PRODUCTION_ENDPOINT = "web"
FINAL_CHECK_STATES = ("passed", "failed", "error")
FINAL_ROLLOUT_STATES = ("succeeded", "failed", "rolled-back")


def gate_b_request(demo: Demo, staged_version: int) -> dict[str, Any]:
    """The gate B request mlgate opened when the version arrived in staging, once its checks have run."""
    with demo.client("sam") as sam:

        def opened() -> dict[str, Any] | None:
            for request in sam.requests("staging"):
                if (
                    request["source_env"] == "staging"
                    and request["model_name"] == "diabetes"
                    and request["source_version"] == staged_version
                ):
                    return request
            return None

        request = until(f"the gate B request of diabetes v{staged_version}", opened)

        def checked() -> list[dict[str, Any]] | None:
            latest = {r["name"]: r for r in sam.checks("staging", "diabetes", staged_version)}
            done = [latest.get(name) for name in request["required_checks"]]
            if all(r is not None and r["status"] in FINAL_CHECK_STATES for r in done):
                return [r for r in done if r is not None]
            return None

        records = until("the staging checks", checked)
        request = sam.promotion_request(request["id"])
    table(
        f"staging checks of diabetes v{staged_version} (gate B request {request['id']})",
        ["check", "status", "summary"],
        [[r["name"], r["status"], r["summary"][:90]] for r in records],
    )
    failed = [r["name"] for r in records if r["status"] != "passed"]
    if failed:
        raise MlgateError(f"staging checks failed: {', '.join(failed)}")
    return request


def _approve(demo: Demo, who: str, request_id: int, comment: str) -> int:
    """`who` approves the request and waits for its promotion; returns the version it made."""
    with demo.client(who) as client:
        client.decide(request_id, approve=True, comment=comment)

        def promoted() -> dict[str, Any] | None:
            request = client.promotion_request(request_id)
            if request["state"] in ("failed", "rejected", "expired"):
                raise MlgateError(f"request {request_id} ended {request['state']}: {request['failure']}")
            return request if request["state"] == "promoted" else None

        request = until(f"request {request_id} to be promoted", promoted)
    return int(request["target_version"])


def approve_gate_b(demo: Demo, request_id: int) -> int:
    """sam approves; returns the version promotion made in production."""
    version = _approve(demo, "sam", request_id, "every staging check passed")
    console.print(f"  sam approved; diabetes v{version} is in production's registry")
    return version


def rollout(demo: Demo, version: int) -> dict[str, Any]:
    """Wait for the production rollout of `version` to end, print its steps; it must have succeeded."""
    with demo.client("olu") as olu:

        def ended() -> dict[str, Any] | None:
            for found in olu.rollouts("production", endpoint=PRODUCTION_ENDPOINT):
                if found["version"] == version and found["state"] in FINAL_ROLLOUT_STATES:
                    return found
            return None

        done = until(f"the rollout of diabetes v{version}", ended)
        endpoint = olu.endpoint("production", PRODUCTION_ENDPOINT)
    rows = [
        [
            f"{step['traffic']}%",
            step.get("outcome") or "",
            step.get("requests") if step.get("requests") is not None else "",
            f"{100 * step['error_rate']:.1f}%" if step.get("error_rate") is not None else "",
            f"{step['p95_ms']:.1f}" if step.get("p95_ms") is not None else "",
        ]
        for step in done["steps"]
    ]
    table(
        f"rollout {done['id']}: diabetes v{version} -> slot {done['to_slot']} ({done['strategy']}), {done['state']}",
        ["traffic", "outcome", "requests", "errors", "p95 ms"],
        rows,
    )
    if done["state"] != "succeeded":
        raise MlgateError(f"the rollout of diabetes v{version} ended {done['state']}: {done['reason']}")
    weights = ", ".join(f"{s['slot']} v{s['version']} {s['traffic']}%" for s in endpoint["slots"])
    console.print(f"  production endpoint {PRODUCTION_ENDPOINT}: {weights}; champion = v{version}")
    return endpoint


def approve_gate_a(demo: Demo) -> int:
    """lee approves the registered version's gate A request; returns its version in staging."""
    request_id = demo.version["request_id"]
    version = _approve(demo, "lee", request_id, "better regularised, metrics hold")
    console.print(f"  lee approved request {request_id}; diabetes v{version} is in staging")
    return version


def run(demo: Demo) -> None:
    """From the first version in staging to the second one serving production under live calls."""
    staged = int(demo.version["staged"])
    demo.step(f"Outer loop: diabetes v{staged} arrived in staging; mlgate opened gate B and ran the checks")
    request = gate_b_request(demo, staged)
    demo.step("Gate B: sam, a software developer, sees every check passed and approves")
    produced = approve_gate_b(demo, request["id"])
    demo.step("Continuous deployment: the first rollout puts it in slot blue of production's endpoint")
    endpoint = rollout(demo, produced)

    demo.step("The clinic's web app starts calling the production endpoint")
    with demo.client("olu") as olu:
        key = olu.rotate_key("production", PRODUCTION_ENDPOINT, "primary")["key"]
        example = olu.model_version("production", "diabetes", produced)["input_example"]
    columns, rows = demo.patients(drift=False)
    if columns != example["columns"]:
        raise MlgateError(f"the generator's columns {columns} are not the model's {example['columns']}")
    web = WebApp(endpoint["url"], key, columns, rows)
    web.start()
    console.print(f"  POST {endpoint['url']} (endpoint key from `mlgate endpoints rotate-key`)")
    try:
        demo.step("Retraining: dana changes reg_rate and trains version 2 in dev")
        config = demo.project / "mlgate.yaml"
        config.write_text(config.read_text().replace("--reg-rate 0.01", "--reg-rate 0.1"))
        demo.commit("train with reg_rate 0.1")
        demo.train()
        demo.register()
        demo.step("Gate A for version 2: lee approves; the copy lands in staging")
        staged = approve_gate_a(demo)
        demo.step(f"Outer loop for diabetes v{staged}: gate B opened, checks run")
        request = gate_b_request(demo, staged)
        demo.step("Gate B: sam approves version 2")
        produced = approve_gate_b(demo, request["id"])
        demo.step("Continuous deployment: a canary rollout (10% -> 50% -> 100%) while the web app calls")
        endpoint = rollout(demo, produced)
        time.sleep(1)
        demo.step("The web app's view of the rollout")
        slots = ", ".join(f"{slot} {n}" for slot, n in sorted(web.slots.items()))
        console.print(f"  calls answered: {web.ok} (by slot: {slots}); failed: {web.failed}")
        console.print(f"  production endpoint: {endpoint['url']}")
        if web.failed:
            raise MlgateError(f"{web.failed} web-app calls failed during the rollout: {web.errors[:3]}")
        demo.production_url = endpoint["url"]
        monitoring.run(demo, web)
    finally:
        web.stop()
