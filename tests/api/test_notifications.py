"""Notifications: the outbox delivered by the server's worker to real receivers on loopback (an aiosmtpd
SMTP server, an HTTP webhook receiver that checks signatures), retried while a receiver is down, never
delivered twice; the delivery log and the inbox through the CLI, REST and SDK.

Events are written the way the promotion service writes them, `outbox.emit` inside a write transaction,
about promotion requests created directly in the control database.
"""

from __future__ import annotations

import email
import email.policy
import json
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from sqlalchemy import select

from mlgate.adapters.notify.base import Delivery
from mlgate.adapters.notify.fake import FakeChannel
from mlgate.adapters.notify.smtp import send_email
from mlgate.adapters.notify.webhook import sign, verify_signature
from mlgate.adapters.sql import migrate
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import ModelVersion, Notification, PromotionRequest, utcnow
from mlgate.config import Settings, SmtpConfig, load_settings, parse_config
from mlgate.errors import BackendError, ConfigError
from mlgate.interfaces.sdk.client import ApiError, Client
from mlgate.ports import free_port
from mlgate.services.identity import accounts
from mlgate.services.notifications import outbox
from mlgate.services.notifications.delivery import DeliveryWorker, backoff_seconds
from tests.support.postgres import postgres_cluster, postgres_url
from tests.support.project import LiveServer, Project, start_server, stop_server

__all__ = ["postgres_cluster", "postgres_url"]  # fixtures, imported for pytest to find

PUBLIC_URL = "https://mlgate.example.test"
OPS_SECRET = "ops-signing-secret"
LATE_SECRET = "late-signing-secret"
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


# ---------------------------------------------------------------------------------------------------
# Against a real server


@dataclass
class Stage:
    server: LiveServer
    db: Database
    settings: Settings
    sink: SmtpSink
    ops: WebhookReceiver
    late: WebhookReceiver  # configured, but not listening until a test starts it


@pytest.fixture(scope="module")
def stage(project_template: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    folder = tmp_path_factory.mktemp("notify") / "project"
    project = project_template.copy(folder)
    sink = SmtpSink()
    controller = smtp_server(sink)
    ops = WebhookReceiver(OPS_SECRET).start()
    late = WebhookReceiver(LATE_SECRET)
    settings = configure(
        project,
        {
            "smtp": {"host": "127.0.0.1", "port": controller.port, "sender": "mlgate <mlgate@example.test>"},
            "webhooks": [
                {"name": "ops", "url": ops.url, "secret_env": "NOTIFY_OPS_SECRET"},
                {"name": "late", "url": late.url, "secret_env": "NOTIFY_LATE_SECRET", "events": ["request.promoted"]},
            ],
            # Seconds, not minutes, between retries, so that a test sees several; and enough of them.
            "retry_base_seconds": 0.3,
            "retry_max_seconds": 1.0,
            "max_attempts": 100,
        },
        public_url=PUBLIC_URL,
    )
    db = project.db()
    # An approver without an email address: an inbox row, no email.
    bindings = accounts.parse_bindings(["lead-data-scientist"], ["staging"], settings.env_names)
    _, issued = accounts.create_user(db, actor="admin", name="lou", bindings=bindings)
    project.tokens["lou"] = issued.value
    try:
        server = start_server(project, env={"NOTIFY_OPS_SECRET": OPS_SECRET, "NOTIFY_LATE_SECRET": LATE_SECRET})
        try:
            yield Stage(server, db, settings, sink, ops, late)
        finally:
            stop_server(server)
    finally:
        db.dispose()
        late.stop()
        ops.stop()
        controller.stop()
    # Over the whole module: no receiver saw a delivery id twice, and every webhook came signed.
    for receiver in (ops, late):
        assert all(r.valid for r in receiver.received)
        assert not [d for d, n in Counter(receiver.delivery_ids()).items() if n > 1]
    sent_ids = [str(m["X-Mlgate-Delivery-Id"]) for _, m in sink.messages]
    assert len(sent_ids) == len(set(sent_ids))


def test_email_reaches_the_approvers_with_an_address_and_a_signed_webhook_arrives(stage: Stage) -> None:
    request_id, rows = open_request(stage.db, stage.settings, model="risk-mail", base_url=stage.server.url)
    link = f"{PUBLIC_URL}/requests/{request_id}"
    by_channel = Counter(r.channel for r in rows)
    assert by_channel == {"inbox": 2, "email": 1, "webhook": 1}  # lee and lou; only lee has an address
    email_row = next(r for r in rows if r.channel == "email")

    mails = wait_for("the email", lambda: stage.sink.about(request_id))
    [(to, message)] = mails
    assert to == ["lee@example.com"]
    assert message["To"] == "lee@example.com"
    assert message["From"] == "mlgate <mlgate@example.test>"
    assert message["Subject"] == f"[mlgate] Approval needed: risk-mail:1 dev -> staging (request {request_id})"
    assert message["X-Mlgate-Delivery-Id"] == email_row.delivery_id
    assert message["Message-ID"] == f"<{email_row.delivery_id}@example.test>"
    text = message.get_content()
    assert f"Request:  {link}" in text
    assert f"{PUBLIC_URL}/models/dev/risk-mail/1" in text
    assert "digest:      " + "ab" * 32 in text and "rmse 52.5" in text

    [hook] = wait_for("the webhook", lambda: stage.ops.about(request_id))
    assert hook.valid and hook.event == "request.opened"
    webhook_row = next(r for r in rows if r.channel == "webhook")
    assert hook.delivery_id == hook.body["delivery_id"] == webhook_row.delivery_id
    body = hook.body
    assert body["event"] == "request.opened"
    assert body["request"]["id"] == request_id and body["request"]["state"] == "open"
    assert body["request"]["source_env"] == "dev" and body["request"]["target_env"] == "staging"
    assert body["model"] == {"name": "risk-mail", "version": 1, "digest": "ab" * 32}
    assert body["links"]["request"] == link
    assert body["text"].startswith(f"Promotion request {request_id} waits for your decision: risk-mail:1")
    assert link in body["text"]  # Slack shows `text` as the message, links and all

    wait_for("both sent", lambda: all(r.state == "sent" for r in rows_of(stage.db, request_id)))
    assert {r.attempts for r in rows_of(stage.db, request_id) if r.channel != "inbox"} == {1}
    assert not stage.late.about(request_id)  # `late` takes only request.promoted


def test_a_receiver_that_is_down_gets_the_message_once_it_is_back(stage: Stage) -> None:
    project = stage.server.project
    admin = project.tokens["admin"]
    request_id, rows = open_request(
        stage.db, stage.settings, model="risk-late", base_url=stage.server.url, events=("request.promoted",)
    )
    late_row = next(r for r in rows if r.channel == "webhook" and r.recipient == "late")

    def late_attempts() -> dict[str, Any] | None:
        listed = project.run(
            "notifications", "list", "--request", str(request_id), "--json", token=admin, url=stage.server.url
        )
        assert listed.returncode == 0, listed.stderr
        row = next(r for r in json.loads(listed.stdout) if r["delivery_id"] == late_row.delivery_id)
        return row if row["attempts"] >= 3 else None

    failing = wait_for("three failed attempts", late_attempts)
    assert failing["state"] == "pending" and failing["recipient"] == "late"
    assert "webhook 'late' at http://127.0.0.1:" in failing["last_error"] and "unreachable" in failing["last_error"]
    assert failing["next_attempt_at"] is not None
    table = project.run("notifications", "list", "--state", "pending", token=admin, url=stage.server.url)
    assert table.returncode == 0, table.stderr
    assert "late" in table.stdout and "unreachable" in table.stdout and late_row.delivery_id in table.stdout

    stage.late.start()
    [hook] = wait_for("the late webhook", lambda: stage.late.about(request_id))
    assert hook.valid and hook.event == "request.promoted" and hook.delivery_id == late_row.delivery_id
    sent = wait_for(
        "the late delivery recorded",
        lambda: [r for r in rows_of(stage.db, request_id) if r.id == late_row.id and r.state == "sent"],
    )
    assert sent[0].attempts >= 4 and sent[0].last_error  # the attempts and the error of the last failure stay
    time.sleep(1.5)  # longer than the longest backoff: nothing is sent again
    assert len(stage.late.about(request_id)) == 1

    listed = project.run(
        "notifications",
        "list",
        "--state",
        "sent",
        "--event",
        "request.promoted",
        "--json",
        token=admin,
        url=stage.server.url,
    )
    assert late_row.delivery_id in {r["delivery_id"] for r in json.loads(listed.stdout)}
    refused = project.run("notifications", "list", token=project.tokens["lee"], url=stage.server.url)
    assert refused.returncode == 1 and "403" in refused.stderr and "administer" in refused.stderr


def test_the_inbox_shows_a_person_their_notifications_unread_first(stage: Stage) -> None:
    project = stage.server.project
    first, _ = open_request(stage.db, stage.settings, model="risk-inbox-1", base_url=stage.server.url)
    second, _ = open_request(stage.db, stage.settings, model="risk-inbox-2", base_url=stage.server.url)
    with Client(stage.server.url, project.tokens["lou"]) as lou:
        inbox = lou.notifications_inbox()
        mine = [n for n in inbox["data"] if n["request_id"] in (first, second)]
        assert [n["request_id"] for n in mine] == [second, first]  # newest first
        assert all(n["read_at"] is None and n["event"] == "request.opened" for n in mine)
        assert mine[1]["links"]["request"] == f"{PUBLIC_URL}/requests/{first}"
        assert mine[1]["text"].startswith(f"Promotion request {first} waits for your decision")
        unread = inbox["unread"]

        read = lou.mark_notification_read(mine[0]["id"])
        assert read["read_at"] is not None
        assert lou.mark_notification_read(mine[0]["id"])["read_at"] == read["read_at"]  # read once, kept
        after = lou.notifications_inbox()
        assert after["unread"] == unread - 1
        order = [n["id"] for n in after["data"]]
        assert order.index(mine[1]["id"]) < order.index(mine[0]["id"])  # unread before read
        assert mine[0]["id"] not in [n["id"] for n in lou.notifications_inbox(unread=True)["data"]]

    with Client(stage.server.url, project.tokens["sam"]) as sam:  # not an approver into staging
        assert not [n for n in sam.notifications_inbox()["data"] if n["request_id"] in (first, second)]
        with pytest.raises(ApiError) as refused:  # someone else's notification is no business of sam's
            sam.mark_notification_read(mine[1]["id"])
        assert refused.value.status_code == 404

    listed = project.run("notifications", "inbox", "--unread", "--json", token=project.tokens["lee"])
    assert listed.returncode == 0, listed.stderr
    assert {first, second} <= {n["request_id"] for n in json.loads(listed.stdout)["data"]}
    shown = project.run("notifications", "inbox", token=project.tokens["lee"])
    assert shown.returncode == 0 and "unread" in shown.stdout and f"Promotion request {first}" in shown.stdout


# ---------------------------------------------------------------------------------------------------
# The worker, in-process against one control database


def _settings(project: Project, *, hooks: int = 3, **policy: Any) -> Settings:
    """Webhooks the fake channel stands in for (port 9 would refuse them all)."""
    webhooks = [{"name": f"hook-{i}", "url": f"http://127.0.0.1:9/{i}"} for i in range(hooks)]
    return configure(project, {"webhooks": webhooks, **policy})


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def control_url(request: pytest.FixtureRequest, project: Project) -> str:
    """The project's SQLite control database, or a migrated one on PostgreSQL."""
    if request.param == "sqlite":
        return project.settings.database_url
    url = str(request.getfixturevalue("postgres_url"))
    database = Database(url)
    migrate.upgrade(database)
    database.dispose()
    return url


def test_two_workers_ticking_at_once_never_send_a_delivery_twice(project: Project, control_url: str) -> None:
    settings = _settings(project)
    db = Database(control_url)
    events = ("request.opened", "request.approved", "request.promoted", "request.failed")
    _, rows = open_request(db, settings, model="risk-race", base_url="http://x", events=events)
    outbound = {r.delivery_id for r in rows if r.channel == "webhook"}
    assert len(outbound) == 12
    receiver = FakeChannel("webhook", delay_s=0.02)
    databases = [Database(control_url), Database(control_url)]  # two servers' connections to the one database
    workers = [DeliveryWorker(settings=settings, db=d, channels_by_name={"webhook": receiver}) for d in databases]
    start = threading.Barrier(len(workers))

    def run(worker: DeliveryWorker) -> None:
        start.wait()
        for _ in range(5):
            worker.tick()

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent = [d.delivery_id for d in receiver.sent]
    assert sorted(sent) == sorted(outbound)  # each once
    assert receiver.attempts == 12
    assert {(r.state, r.attempts) for r in rows_of(db, rows[0].request_id or 0) if r.channel == "webhook"} == {
        ("sent", 1)
    }
    for d in (db, *databases):
        d.dispose()


def test_failed_attempts_back_off_and_end_failed_after_the_last(project: Project) -> None:
    settings = _settings(project, hooks=1, retry_base_seconds=0.2, retry_max_seconds=0.3, max_attempts=3)
    db = project.db()
    request_id, _ = open_request(db, settings, model="risk-down", base_url="http://x", events=("request.failed",))
    receiver = FakeChannel("webhook")
    receiver.down = True
    worker = DeliveryWorker(settings=settings, db=db, channels_by_name={"webhook": receiver})

    before = datetime.now(UTC)
    assert worker.tick() == 1
    assert worker.tick() == 0  # not due yet
    [row] = [r for r in rows_of(db, request_id) if r.channel == "webhook"]
    assert (row.state, row.attempts, row.last_error) == ("pending", 1, "fake webhook receiver is down")
    wait = row.next_attempt_at.replace(tzinfo=UTC) - before
    assert timedelta(seconds=0.2 * 0.8) <= wait <= timedelta(seconds=0.2 * 1.2 + 1)

    for attempt in (2, 3):
        wait_for(f"attempt {attempt}", lambda: worker.tick() == 1, timeout_s=5)
    [row] = [r for r in rows_of(db, request_id) if r.channel == "webhook"]
    assert (row.state, row.attempts) == ("failed", 3)
    receiver.down = False
    time.sleep(0.5)
    assert worker.tick() == 0 and not receiver.sent  # failed for good: no more attempts
    db.dispose()


def test_a_send_cut_short_is_retried_after_its_lease_and_not_before(project: Project) -> None:
    settings = _settings(project)
    db = project.db()
    request_id, _ = open_request(db, settings, model="risk-lease", base_url="http://x", events=("request.expired",))
    receiver = FakeChannel("webhook")
    crashed = DeliveryWorker(settings=settings, db=db, channels_by_name={}, lease=timedelta(seconds=1))
    claims = [crashed._claim() for _ in range(3)]  # claimed, then the server "died" before sending
    assert all(claims)
    survivor = DeliveryWorker(settings=settings, db=db, channels_by_name={"webhook": receiver})
    assert survivor.tick() == 0  # leased: not another worker's to send
    time.sleep(1.1)
    assert survivor.tick() == 3
    assert sorted(d.delivery_id for d in receiver.sent) == sorted(c.delivery.delivery_id for c in claims if c)
    assert {(r.state, r.attempts) for r in rows_of(db, request_id) if r.channel == "webhook"} == {("sent", 2)}
    db.dispose()


def test_an_undeliverable_message_fails_at_once(project: Project) -> None:
    settings = _settings(project)
    db = project.db()
    request_id, _ = open_request(db, settings, model="risk-gone", base_url="http://x", events=("request.rejected",))
    # The server restarted with a config that no longer names these webhooks.
    worker = DeliveryWorker(settings=_settings(project, hooks=0), db=db)
    assert worker.tick() == 3
    rows = [r for r in rows_of(db, request_id) if r.channel == "webhook"]
    assert {(r.state, r.attempts) for r in rows} == {("failed", 1)}
    assert {r.last_error for r in rows} == {
        f"no webhook named '{r.recipient}' in notifications.webhooks any more" for r in rows
    }
    db.dispose()


def test_backoff_doubles_from_the_base_up_to_the_cap_with_jitter() -> None:
    import random

    rng = random.Random(7)
    for attempt, nominal in [(1, 2), (2, 4), (3, 8), (9, 512), (10, 600), (40, 600)]:
        waits = [backoff_seconds(attempt, base_s=2, cap_s=600, rng=rng) for _ in range(50)]
        assert all(nominal * 0.8 <= w <= nominal * 1.2 for w in waits), (attempt, min(waits), max(waits))
        assert len(set(waits)) > 1  # jittered


# ---------------------------------------------------------------------------------------------------
# The adapters


def test_verify_signature_accepts_the_genuine_and_refuses_the_rest() -> None:
    body = b'{"event":"request.opened","delivery_id":"d-1"}'
    now = time.time()
    stamp = str(int(now))
    header = sign("s3cret", stamp, body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify_signature("s3cret", stamp, body, header)
    assert verify_signature("s3cret", stamp, body.decode(), header)
    assert not verify_signature("other", stamp, body, header)
    assert not verify_signature("s3cret", stamp, body.replace(b"opened", b"closed"), header)
    assert not verify_signature("s3cret", str(int(now) + 1), body, header)  # the timestamp is signed too
    assert not verify_signature("s3cret", stamp, body, header.removeprefix("sha256="))
    assert not verify_signature("s3cret", "yesterday", body, header)
    old = str(int(now) - 301)
    assert not verify_signature("s3cret", old, body, sign("s3cret", old, body))  # a replay, too late
    assert verify_signature("s3cret", old, body, sign("s3cret", old, body), tolerance_s=400)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_smtp_with_starttls_and_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts our test certificate, as a system CA

    def authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"mlgate", b"pa55word")
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535 on a failure

    sink = SmtpSink()
    controller = smtp_server(
        sink, tls_context=context, require_starttls=True, authenticator=authenticate, auth_required=True
    )
    config = SmtpConfig(
        host="127.0.0.1",
        port=controller.port,
        sender="mlgate@example.test",
        starttls=True,
        username="mlgate",
        password_env="NOTIFY_SMTP_PASSWORD",
    )
    delivery = Delivery(
        delivery_id="0d2c-test",
        event="request.approved",
        channel="email",
        recipient="lee@example.com",
        payload={
            "request": {"id": 7, "source_env": "dev", "target_env": "staging"},
            "model": {"name": "risk", "version": 3},
            "links": {"request": "http://x/requests/7"},
            "text": "Promotion request 7 approved",
        },
    )
    try:
        with pytest.raises(ConfigError, match="NOTIFY_SMTP_PASSWORD"):
            send_email(config, delivery)
        monkeypatch.setenv("NOTIFY_SMTP_PASSWORD", "wrong")
        with pytest.raises(BackendError, match="refused the login of mlgate"):
            send_email(config, delivery)
        monkeypatch.setenv("NOTIFY_SMTP_PASSWORD", "pa55word")
        send_email(config, delivery)
        [(to, message)] = sink.messages
        assert to == ["lee@example.com"]
        assert message["Subject"] == "[mlgate] Approved: risk:3 dev -> staging (request 7)"
        assert message["X-Mlgate-Delivery-Id"] == "0d2c-test"
        assert "http://x/requests/7" in message.get_content()
        plain = SmtpConfig(host="127.0.0.1", port=controller.port, sender="mlgate@example.test")
        with pytest.raises(BackendError, match=r"answered 530"):  # the server insists on STARTTLS
            send_email(plain, delivery)
    finally:
        controller.stop()
    with pytest.raises(BackendError, match="unreachable"):
        send_email(plain, delivery)


def test_the_notifications_policy_is_validated() -> None:
    hook = {"name": "ops", "url": "http://127.0.0.1:1/"}
    with pytest.raises(
        ConfigError, match=r"notifications\.webhooks: expected unique names, got duplicate name\(s\) ops"
    ):
        parse_config(yaml.safe_dump({"notifications": {"webhooks": [hook, hook]}}))
    with pytest.raises(ConfigError, match=r"notifications\.retry_base_seconds: Input should be greater than 0"):
        parse_config(yaml.safe_dump({"notifications": {"retry_base_seconds": 0}}))
    with pytest.raises(ConfigError, match=r"notifications\.retries: unknown key"):
        parse_config(yaml.safe_dump({"notifications": {"retries": 3}}))
    policy = parse_config("notifications: {}").notifications
    assert (policy.retry_base_seconds, policy.retry_max_seconds, policy.max_attempts) == (2.0, 600.0, 12)
