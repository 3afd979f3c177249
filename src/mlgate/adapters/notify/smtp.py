"""Email over SMTP: one message per delivery, with optional STARTTLS and login.

The password is read from the server's environment (`smtp.password_env` names the variable) when a
message is sent, never from the config file. The delivery id travels in the `Message-ID` and
`X-Mlgate-Delivery-Id` headers so that a receiver (or a person reading headers) can tell a retried
message from a new one.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any

from mlgate.adapters.notify.base import EMAIL, Delivery
from mlgate.config import SmtpConfig
from mlgate.errors import BackendError, ConfigError

DEFAULT_TIMEOUT_S = 30.0  # per socket operation: a stalled server must not hold the worker for long

SUBJECTS = {
    "request.opened": "Approval needed",
    "request.approved": "Approved",
    "request.rejected": "Rejected",
    "request.promoted": "Promoted",
    "request.failed": "Promotion failed",
    "request.expired": "Expired",
    "request.checks-failed": "Check failed",
    "rollout.succeeded": "Rolled out",
    "rollout.failed": "Rollout failed",
    "monitor.alert": "Monitor alert",
    "monitor.resolved": "Monitor resolved",
}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def subject(event: str, payload: Mapping[str, Any]) -> str:
    request, model = _mapping(payload.get("request")), _mapping(payload.get("model"))
    label = SUBJECTS.get(event, event)
    alert = _mapping(payload.get("alert"))
    if alert:
        what = f"{alert.get('monitor')} on {alert.get('environment')}/{alert.get('endpoint')}"
        return f"[mlgate] {label}: {what} (alert {alert.get('id')})"
    rollout = _mapping(payload.get("rollout"))
    if rollout:
        what = (
            f"{rollout.get('model')}:{rollout.get('version')} -> {rollout.get('environment')}/{rollout.get('endpoint')}"
        )
        return f"[mlgate] {label}: {what} (rollout {rollout.get('id')})"
    what = f"{model.get('name')}:{model.get('version')} {request.get('source_env')} -> {request.get('target_env')}"
    return f"[mlgate] {label}: {what} (request {request.get('id')})"


def _evidence_lines(evidence: Mapping[str, Any]) -> list[str]:
    lines = []
    if evidence.get("digest"):
        lines.append(f"  digest:      {evidence['digest']}")
    checks = _mapping(evidence.get("checks"))
    if checks:
        lines.append("  checks:      " + ", ".join(f"{name} {status}" for name, status in checks.items()))
    metrics = _mapping(evidence.get("metrics"))
    if metrics:
        lines.append("  metrics:     " + ", ".join(f"{name} {value:.4g}" for name, value in metrics.items()))
    if evidence.get("champion"):
        deltas = _mapping(evidence.get("deltas"))
        shown = ", ".join(f"{name} {delta:+.4g}" for name, delta in deltas.items())
        lines.append(f"  compared to: {evidence['champion']}" + (f" ({shown})" if shown else ""))
    if evidence.get("approver_role"):
        lines.append(f"  approvals:   {evidence.get('approvals', 1)} x {evidence['approver_role']}")
    return lines


def body(delivery: Delivery) -> str:
    payload = delivery.payload
    links = _mapping(payload.get("links"))
    lines = [str(payload.get("text", delivery.event)), ""]
    lines += [f"{name.capitalize() + ':':9} {url}" for name, url in links.items()]
    evidence = _evidence_lines(_mapping(payload.get("evidence")))
    if evidence:
        lines += ["", "Evidence", *evidence]
    if payload.get("note"):
        lines += ["", f"Note: {payload['note']}"]
    lines += ["", "--", f"Sent by mlgate. Delivery {delivery.delivery_id} (the same id on every retry)."]
    return "\n".join(lines) + "\n"


def build_message(config: SmtpConfig, delivery: Delivery) -> EmailMessage:
    message = EmailMessage()
    domain = parseaddr(config.sender)[1].rpartition("@")[2] or "mlgate.invalid"
    message["From"] = config.sender
    message["To"] = delivery.recipient
    message["Subject"] = subject(delivery.event, delivery.payload)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = f"<{delivery.delivery_id}@{domain}>"
    message["X-Mlgate-Delivery-Id"] = delivery.delivery_id
    message["X-Mlgate-Event"] = delivery.event
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a machine
    message.set_content(body(delivery))
    return message


def _password(config: SmtpConfig) -> str:
    if config.password_env is None:
        raise ConfigError("notifications.smtp.username is set but password_env (the password's variable) is not")
    password = os.environ.get(config.password_env)
    if not password:
        raise ConfigError(
            f"notifications.smtp.password_env names {config.password_env}, which is not set in the server's environment"
        )
    return password


def send_email(config: SmtpConfig, delivery: Delivery, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Hand one message to the SMTP server; raises BackendError unless it accepted it for the recipient."""
    message = build_message(config, delivery)
    password = _password(config) if config.username else None
    where = f"{config.host}:{config.port}"
    try:
        with smtplib.SMTP(config.host, config.port, timeout=timeout_s) as smtp:
            if config.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if config.username and password is not None:
                smtp.login(config.username, password)
            refused = smtp.send_message(message, from_addr=parseaddr(config.sender)[1], to_addrs=[delivery.recipient])
    except smtplib.SMTPAuthenticationError as exc:
        raise BackendError(f"SMTP server {where} refused the login of {config.username}: {exc.smtp_code}") from exc
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        raise BackendError(f"SMTP server {where} answered {exc.smtp_code} {text}") from exc
    except smtplib.SMTPRecipientsRefused as exc:
        raise BackendError(f"SMTP server {where} refused the recipient {delivery.recipient}") from exc
    except (smtplib.SMTPException, OSError) as exc:  # OSError: refused, unreachable, timed out, TLS failed
        raise BackendError(f"SMTP server {where} unreachable or failed: {type(exc).__name__}: {exc}") from exc
    if refused:
        raise BackendError(f"SMTP server {where} refused the recipient {delivery.recipient}: {refused}")


class SmtpChannel:
    name = EMAIL

    def __init__(self, config: SmtpConfig, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.config = config
        self.timeout_s = timeout_s

    def send(self, delivery: Delivery) -> None:
        send_email(self.config, delivery, timeout_s=self.timeout_s)

    def close(self) -> None:
        """Nothing held between messages: each one opens its own connection."""
