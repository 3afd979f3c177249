"""Receivers and events for the notification tests: real receivers on loopback and the outbox filled
the way the promotion service fills it.

`SmtpSink` (behind `smtp_server`, an aiosmtpd server) keeps every message it accepts; `WebhookReceiver`
is an HTTP server that checks each request's signature and keeps what it got. `configure` writes a
notifications policy into a project's config; `open_request` creates a version in dev and its gate A
request in the control database, then emits events about it with `outbox.emit`, each in its own write
transaction; `rows_of` reads a request's outbox rows back.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select

from mlgate.adapters.notify.webhook import verify_signature
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import ModelVersion, Notification, PromotionRequest, utcnow
from mlgate.config import Settings, load_settings
from mlgate.ports import free_port
from mlgate.services.notifications import outbox
from tests.support.project import Project

WAIT_S = 20.0


def wait_for(what: str, predicate: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------------
# Receivers


class SmtpSink:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.messages.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def about(self, request_id: int) -> list[tuple[list[str], EmailMessage]]:
        with self._lock:
            return [(to, m) for to, m in self.messages if f"(request {request_id})" in str(m["Subject"])]


def smtp_server(sink: SmtpSink, **options: Any) -> Controller:
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    return controller


@dataclass(frozen=True)
class Received:
    delivery_id: str
    event: str
    valid: bool
    body: dict[str, Any]
    host: str = ""  # the Host header it came with


class WebhookReceiver:
    """An HTTP server that checks each request's signature with the secret and keeps what it got."""

    def __init__(self, secret: str, port: int = 0) -> None:
        self.secret = secret
        self.port = port or free_port()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                valid = verify_signature(
                    receiver.secret,
                    self.headers.get("X-Mlgate-Timestamp", ""),
                    raw,
                    self.headers.get("X-Mlgate-Signature", ""),
                )
                with receiver._lock:
                    receiver.received.append(
                        Received(
                            delivery_id=self.headers.get("X-Mlgate-Delivery", ""),
                            event=self.headers.get("X-Mlgate-Event", ""),
                            valid=valid,
                            body=json.loads(raw),
                            host=self.headers.get("Host", ""),
                        )
                    )
                self.send_response(204 if valid else 401)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, name=f"webhook-{self.port}", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def about(self, request_id: int) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.body["request"]["id"] == request_id]

    def delivery_ids(self) -> list[str]:
        with self._lock:
            return [r.delivery_id for r in self.received]


# ---------------------------------------------------------------------------------------------------
# Events, as the promotion service writes them


def configure(project: Project, notifications: dict[str, Any], *, public_url: str | None = None) -> Settings:
    data = yaml.safe_load(project.config.read_text())
    data["notifications"] = notifications
    if public_url:
        data["server"]["public_url"] = public_url
    project.config.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_settings(project.config)


def open_request(
    db: Database,
    settings: Settings,
    *,
    model: str,
    base_url: str,
    events: tuple[str, ...] = ("request.opened",),
    author: str = "dana",
) -> tuple[int, list[Notification]]:
    """A version of `model` in dev and its gate A request, then `events` about it, each in its transaction."""
    with db.write() as session:
        version = ModelVersion(
            environment="dev",
            name=model,
            version=1,
            digest="ab" * 32,
            model_uri=f"models:/{model}/1",
            signature={},
            lineage={"metrics": {"rmse": 52.5}},
            card=f"# {model}",
            created_by=author,
            created_at=utcnow(),
        )
        session.add(version)
        session.flush()
        request = PromotionRequest(
            gate="A",
            model_version_id=version.id,
            model_name=model,
            source_env="dev",
            source_version=1,
            target_env="staging",
            state="open",
            requested_by=author,
            author=author,
            required_approvals=1,
            approver_role="lead-data-scientist",
            required_checks=[],
            evidence={"digest": version.digest, "metrics": {"rmse": 52.5}, "comparison": None},
            created_at=utcnow(),
        )
        session.add(request)
        session.flush()
        request_id = request.id
    rows: list[Notification] = []
    for event in events:
        with db.write() as session:
            row = session.get(PromotionRequest, request_id)
            assert row is not None
            if event == "request.opened":
                recipients = outbox.approvers(
                    session, role=row.approver_role, environment=row.target_env, exclude={author}
                )
            else:
                row.state, row.target_version = event.removeprefix("request."), 1
                recipients = {row.requested_by, row.author}
            rows += outbox.emit(session, settings, event=event, request=row, recipients=recipients, base_url=base_url)
    return request_id, rows


def rows_of(db: Database, request_id: int) -> list[Notification]:
    with db.read() as session:
        return list(session.execute(select(Notification).where(Notification.request_id == request_id)).scalars())
