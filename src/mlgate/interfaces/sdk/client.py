"""`Client`: the REST API from Python. Errors come back as `ApiError` with the server's code and message."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from mlgate.errors import MlgateError

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
# Registration downloads, digests and profiles the model on the server: allow it longer.
REGISTER_TIMEOUT = httpx.Timeout(600.0, connect=5.0)


class ApiError(MlgateError):
    """The server answered with an error."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.status_code = status
        self.error_code = code


class ServerNotFoundError(MlgateError):
    """No server address was given and none is recorded in the project's home."""


def discover_url(start: Path | None = None) -> str | None:
    """The address of the server recorded in the home of the nearest mlgate.yaml, if it runs."""
    from mlgate.config import load_settings
    from mlgate.errors import ConfigError
    from mlgate.runtime import running_server

    try:
        settings = load_settings(None if start is None else start / "mlgate.yaml")
    except ConfigError:
        return None
    record = running_server(settings)
    return record.url if record else None


class Client:
    def __init__(self, url: str, token: str | None = None, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    @classmethod
    def discover(cls, url: str | None = None, token: str | None = None) -> Client:
        """Address from the argument, `MLGATE_URL`, or the running server of this project; token likewise."""
        url = url or os.environ.get("MLGATE_URL") or discover_url()
        if not url:
            raise ServerNotFoundError(
                "no mlgate server found: pass --url, set MLGATE_URL, or start one with `mlgate server`"
            )
        return cls(url, token or os.environ.get("MLGATE_TOKEN"))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise MlgateError(f"cannot reach the mlgate server at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            self._raise_for(response)
        return response.json() if response.content else None

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        try:
            error = response.json()["error"]
            raise ApiError(response.status_code, error["code"], error["message"], error.get("details"))
        except (ValueError, KeyError, TypeError):
            raise ApiError(response.status_code, "http_error", response.text[:500]) from None

    # system
    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/api/v1/health")
        return result

    def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/api/v1/whoami")
        return result

    # environments
    def environments(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/api/v1/environments")["data"]
        return result

    def environment(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/v1/environments/{name}")
        return result

    # users and tokens
    def users(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/api/v1/users")["data"]
        return result

    def create_user(
        self, name: str, *, roles: list[str], environments: list[str], email: str | None = None
    ) -> dict[str, Any]:
        body = {"name": name, "roles": roles, "environments": environments, "email": email}
        result: dict[str, Any] = self.request("POST", "/api/v1/users", json=body)
        return result

    def grant(self, name: str, *, roles: list[str], environments: list[str]) -> dict[str, Any]:
        body = {"roles": roles, "environments": environments}
        result: dict[str, Any] = self.request("POST", f"/api/v1/users/{name}/roles", json=body)
        return result

    def revoke_roles(self, name: str, *, roles: list[str], environments: list[str]) -> dict[str, Any]:
        body = {"roles": roles, "environments": environments}
        result: dict[str, Any] = self.request("POST", f"/api/v1/users/{name}/roles/revoke", json=body)
        return result

    def tokens(self, *, user: str | None = None, mine: bool = False) -> list[dict[str, Any]]:
        if mine:
            result: list[dict[str, Any]] = self.request("GET", "/api/v1/me/tokens")["data"]
        else:
            result = self.request("GET", "/api/v1/tokens", params={"user": user} if user else None)["data"]
        return result

    def create_token(
        self, *, user: str | None = None, name: str = "cli", expires_in_days: float | None = None
    ) -> dict[str, Any]:
        path = f"/api/v1/users/{user}/tokens" if user else "/api/v1/me/tokens"
        body = {"name": name, "expires_in_days": expires_in_days}
        result: dict[str, Any] = self.request("POST", path, json=body)
        return result

    def revoke_token(self, token_id: int, *, mine: bool = False) -> dict[str, Any]:
        path = f"/api/v1/me/tokens/{token_id}" if mine else f"/api/v1/tokens/{token_id}"
        result: dict[str, Any] = self.request("DELETE", path)
        return result

    # audit
    def audit(self, **filters: Any) -> list[dict[str, Any]]:
        params = {k: v for k, v in filters.items() if v is not None}
        result: list[dict[str, Any]] = self.request("GET", "/api/v1/audit", params=params)["data"]
        return result

    def verify_audit(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/api/v1/audit/verify")
        return result

    def audit_checkpoint(self) -> dict[str, Any]:
        """Sign a checkpoint of the audit chain's head now (when it moved since the last one)."""
        result: dict[str, Any] = self.request("POST", "/api/v1/audit/checkpoints")
        return result

    def export_audit(self, out: BinaryIO) -> int:
        """Stream the audit bundle (a zip) into `out`; returns its size in bytes."""
        try:
            with self._http.stream("GET", "/api/v1/audit/export") as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(response)
                size = 0
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    size += len(chunk)
        except httpx.HTTPError as exc:
            raise MlgateError(f"cannot reach the mlgate server at {self.url}: {exc}") from exc
        return size

    def audit_at(self, environment: str, time: datetime | str | None = None) -> dict[str, Any]:
        """What served in `environment` at `time` (a datetime or ISO 8601; naive: UTC; None: now): each
        endpoint slot's version and weight, and who approved it, replayed from the audit log (admins)."""
        params = {"env": environment}
        if time is not None:
            params["time"] = time.isoformat() if isinstance(time, datetime) else time
        result: dict[str, Any] = self.request("GET", "/api/v1/audit/at", params=params)
        return result

    # code snapshots and jobs
    def upload_snapshot(self, env: str, data: bytes, *, git_commit: str | None, git_dirty: bool) -> dict[str, Any]:
        headers = {"Content-Type": "application/gzip", "X-Mlgate-Git-Dirty": "true" if git_dirty else "false"}
        if git_commit:
            headers["X-Mlgate-Git-Commit"] = git_commit
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/environments/{env}/snapshots", content=data, headers=headers
        )
        return result

    def submit_job(self, env: str, *, snapshot: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/environments/{env}/jobs", json={"snapshot": snapshot, "kind": "train"}
        )
        return result

    def jobs(self, env: str, *, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit} | ({"state": state} if state else {})
        result: list[dict[str, Any]] = self.request("GET", f"/api/v1/environments/{env}/jobs", params=params)["data"]
        return result

    def job(self, env: str, job_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/v1/environments/{env}/jobs/{job_id}")
        return result

    def job_log(self, env: str, job_id: int, *, offset: int = 0, tail: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"offset": offset} | ({"tail": tail} if tail else {})
        result: dict[str, Any] = self.request("GET", f"/api/v1/environments/{env}/jobs/{job_id}/logs", params=params)
        return result

    def cancel_job(self, env: str, job_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/api/v1/environments/{env}/jobs/{job_id}/cancel")
        return result

    # data assets
    def register_data(self, env: str, name: str, archive: bytes, *, source: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "PUT",
            f"/api/v1/environments/{env}/data/{name}",
            content=archive,
            params={"source": source} if source else None,
            headers={"Content-Type": "application/gzip"},
        )
        return result

    def data_assets(self, env: str, *, name: str | None = None) -> list[dict[str, Any]]:
        params = {"name": name} if name else None
        result: list[dict[str, Any]] = self.request("GET", f"/api/v1/environments/{env}/data", params=params)["data"]
        return result

    def data_asset(self, env: str, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/v1/environments/{env}/data/{ref}")
        return result

    # model versions
    def register_model(
        self,
        env: str,
        *,
        name: str,
        run_id: str | None = None,
        model: str = "model",
        model_uri: str | None = None,
        data: str | None = None,
        label: str | None = None,
    ) -> dict[str, Any]:
        """Register a run's logged model (or a models:/m-... URI); `created` is false for one already registered."""
        body = {"name": name, "run_id": run_id, "model": model, "model_uri": model_uri, "data": data, "label": label}
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/environments/{env}/models", json=body, timeout=REGISTER_TIMEOUT
        )
        return result

    def models(self, env: str, *, name: str | None = None) -> list[dict[str, Any]]:
        params = {"name": name} if name else None
        result: list[dict[str, Any]] = self.request("GET", f"/api/v1/environments/{env}/models", params=params)["data"]
        return result

    def model_version(self, env: str, name: str, version: int) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/v1/environments/{env}/models/{name}/versions/{version}")
        return result

    def delete_model_version(self, env: str, name: str, version: int) -> dict[str, Any]:
        """Delete a development version (never promoted, no active request); its record stays, marked deleted."""
        path = f"/api/v1/environments/{env}/models/{name}/versions/{version}"
        result: dict[str, Any] = self.request("DELETE", path)
        return result

    # promotion requests
    def open_request(self, env: str, *, name: str, version: int, to: str | None = None) -> dict[str, Any]:
        body = {"name": name, "version": version, "to": to}
        result: dict[str, Any] = self.request("POST", f"/api/v1/environments/{env}/requests", json=body)
        return result

    def requests(self, env: str, *, state: str | None = None) -> list[dict[str, Any]]:
        params = {"state": state} if state else None
        result: list[dict[str, Any]] = self.request("GET", f"/api/v1/environments/{env}/requests", params=params)[
            "data"
        ]
        return result

    def locate_request(self, request_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/v1/requests/{request_id}/location")
        return result

    def promotion_request(self, request_id: int, *, env: str | None = None) -> dict[str, Any]:
        env = env or self.locate_request(request_id)["target_env"]
        result: dict[str, Any] = self.request("GET", f"/api/v1/environments/{env}/requests/{request_id}")
        return result

    def decide(self, request_id: int, *, approve: bool, comment: str | None = None) -> dict[str, Any]:
        env = self.locate_request(request_id)["target_env"]
        verb = "approve" if approve else "reject"
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/environments/{env}/requests/{request_id}/{verb}", json={"comment": comment}
        )
        return result

    def waiting_requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/api/v1/requests/waiting")["data"]
        return result

    # notifications
    def notifications(
        self,
        *,
        state: str | None = None,
        event: str | None = None,
        channel: str | None = None,
        request_id: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The delivery log (admins): every message, its state, attempts and last error."""
        filters = {"state": state, "event": event, "channel": channel, "request_id": request_id}
        params: dict[str, Any] = {"limit": limit} | {k: v for k, v in filters.items() if v is not None}
        result: list[dict[str, Any]] = self.request("GET", "/api/v1/notifications", params=params)["data"]
        return result

    def notifications_inbox(self, *, unread: bool = False, limit: int = 100) -> dict[str, Any]:
        """The caller's in-app notifications (`data`, unread first) and how many are `unread`."""
        params: dict[str, Any] = {"limit": limit} | ({"unread": "true"} if unread else {})
        result: dict[str, Any] = self.request("GET", "/api/v1/inbox", params=params)
        return result

    def mark_notification_read(self, notification_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/api/v1/inbox/{notification_id}/read")
        return result

    # endpoints and serving
    def serving_host(self, env: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/v1/environments/{env}/serving")
        return result

    def endpoints(self, env: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"/api/v1/environments/{env}/endpoints")["data"]
        return result

    def endpoint(self, env: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/v1/environments/{env}/endpoints/{name}")
        return result

    def create_endpoint(self, env: str, name: str, *, description: str = "") -> dict[str, Any]:
        """The new endpoint, with its two keys under `keys` (shown only here)."""
        body = {"name": name, "description": description}
        result: dict[str, Any] = self.request("POST", f"/api/v1/environments/{env}/endpoints", json=body)
        return result

    def deploy(
        self,
        env: str,
        endpoint: str,
        *,
        model: str,
        version: int,
        slot: str,
        traffic: int | None = None,
        mirror: float | None = None,
    ) -> dict[str, Any]:
        body = {"model": model, "version": version, "slot": slot, "traffic": traffic, "mirror": mirror}
        path = f"/api/v1/environments/{env}/endpoints/{endpoint}/deployments"
        result: dict[str, Any] = self.request("POST", path, json=body)
        return result

    def set_traffic(
        self,
        env: str,
        endpoint: str,
        weights: dict[str, int],
        *,
        mirror: tuple[str, float] | None = None,
        clear_mirror: bool = False,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"weights": weights, "clear_mirror": clear_mirror}
        if mirror is not None:
            body["mirror"] = {"slot": mirror[0], "percent": mirror[1]}
        path = f"/api/v1/environments/{env}/endpoints/{endpoint}/traffic"
        result: dict[str, Any] = self.request("PUT", path, json=body)
        return result

    def rollback_endpoint(self, env: str, endpoint: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/api/v1/environments/{env}/endpoints/{endpoint}/rollback")
        return result

    def rotate_key(self, env: str, endpoint: str, which: str) -> dict[str, Any]:
        """The new key under `key` (shown only here)."""
        path = f"/api/v1/environments/{env}/endpoints/{endpoint}/keys/{which}"
        result: dict[str, Any] = self.request("POST", path)
        return result

    def score(
        self, env: str, endpoint: str, body: bytes, *, content_type: str = "application/json", slot: str | None = None
    ) -> httpx.Response:
        """The serving host's answer to an MLflow scoring request, through the API (any status: the body
        is in the host's error shape, `error_code` and `message`)."""
        headers = {"content-type": content_type} | ({"mlgate-deployment": slot} if slot else {})
        try:
            return self._http.post(
                f"/api/v1/environments/{env}/endpoints/{endpoint}/invocations", content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            raise MlgateError(f"cannot reach the mlgate server at {self.url}: {exc}") from exc

    def run_checks(self, env: str, name: str, version: int, *, only: list[str] | None = None) -> list[dict[str, Any]]:
        """Ask for the version's checks (all configured, or `only` these); their `running` records."""
        path = f"/api/v1/environments/{env}/models/{name}/versions/{version}/checks"
        result: list[dict[str, Any]] = self.request("POST", path, json={"only": only})["data"]
        return result

    def checks(self, env: str, name: str, version: int) -> list[dict[str, Any]]:
        """Every check record of the version, oldest first."""
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/v1/environments/{env}/models/{name}/versions/{version}/checks"
        )["data"]
        return result

    def rollouts(self, env: str, *, endpoint: str | None = None) -> list[dict[str, Any]]:
        """The environment's rollouts, newest first."""
        params = {"endpoint": endpoint} if endpoint else None
        result: list[dict[str, Any]] = self.request("GET", f"/api/v1/environments/{env}/rollouts", params=params)[
            "data"
        ]
        return result

    def rollout(self, env: str, rollout_id: int) -> dict[str, Any]:
        """One rollout: its steps (traffic, timings, observed figures, outcome) and how it ended."""
        result: dict[str, Any] = self.request("GET", f"/api/v1/environments/{env}/rollouts/{rollout_id}")
        return result

    # monitors
    def monitors(self, env: str) -> list[dict[str, Any]]:
        """The environment's monitors, each with its latest result."""
        result: list[dict[str, Any]] = self.request("GET", f"/api/v1/environments/{env}/monitors")["data"]
        return result

    def create_monitor(self, env: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Create a monitor: `spec` as a `monitors` entry of mlgate.yaml (name, endpoint, signals, ...)."""
        result: dict[str, Any] = self.request("POST", f"/api/v1/environments/{env}/monitors", json=spec)
        return result

    def monitor(self, env: str, name: str) -> dict[str, Any]:
        """One monitor: spec, effective thresholds, latest result, recent alerts."""
        result: dict[str, Any] = self.request("GET", f"/api/v1/environments/{env}/monitors/{name}")
        return result

    def run_monitor(self, env: str, name: str) -> dict[str, Any]:
        """Evaluate the monitor's window now: {result, change, alert}."""
        result: dict[str, Any] = self.request("POST", f"/api/v1/environments/{env}/monitors/{name}/run")
        return result

    def monitor_results(self, env: str, name: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """The monitor's results over time, newest first."""
        path = f"/api/v1/environments/{env}/monitors/{name}/results"
        result: list[dict[str, Any]] = self.request("GET", path, params={"limit": limit})["data"]
        return result

    def monitor_alerts(self, env: str, name: str) -> list[dict[str, Any]]:
        """The monitor's alerts, newest first, with the retraining each started."""
        result: list[dict[str, Any]] = self.request("GET", f"/api/v1/environments/{env}/monitors/{name}/alerts")
        return result

    def send_feedback(self, env: str, endpoint: str, request_ids: list[str], labels: list[float]) -> dict[str, Any]:
        """Ground truth for the endpoint's requests: {accepted, unknown (ids it never answered)}."""
        body = {"request_ids": request_ids, "labels": labels}
        result: dict[str, Any] = self.request(
            "POST", f"/api/v1/environments/{env}/endpoints/{endpoint}/feedback", json=body
        )
        return result
