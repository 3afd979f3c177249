"""Notification delivery without a server: the delivery worker in-process against one control database
(SQLite, PostgreSQL), with a fake channel standing in for the receivers, and the channel adapters.

Two workers ticking at once never send a delivery twice; failed attempts back off, with jitter, and end
failed after the last; a send cut short is retried after its lease and not before; a message for a
webhook the config no longer names fails at once. Webhook signatures are verified, email goes out over
SMTP with STARTTLS and a login, and the notifications policy is validated. Events are written as the
promotion service writes them (tests/support/notify.py).
"""

from __future__ import annotations

import ssl
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mlgate.adapters.notify.base import Delivery, UndeliverableError
from mlgate.adapters.notify.fake import FakeChannel
from mlgate.adapters.notify.smtp import send_email
from mlgate.adapters.notify.webhook import WebhookChannel, sign, verify_signature
from mlgate.adapters.sql import migrate
from mlgate.config import Settings, SmtpConfig, WebhookConfig, parse_config
from mlgate.errors import BackendError, ConfigError
from mlgate.services.notifications.delivery import DeliveryWorker, backoff_seconds
from tests.support.notify import SmtpSink, WebhookReceiver, configure, open_request, rows_of, smtp_server, wait_for
from tests.support.postgres import postgres_cluster, postgres_url
from tests.support.project import Project

__all__ = ["postgres_cluster", "postgres_url"]  # fixtures, imported for pytest to find


# ---------------------------------------------------------------------------------------------------
# The worker, in-process against one control database


def _settings(project: Project, *, hooks: int = 3, **policy: Any) -> Settings:
    """Webhooks the fake channel stands in for (port 9 would refuse them all)."""
    webhooks = [{"name": f"hook-{i}", "url": f"http://127.0.0.1:9/{i}"} for i in range(hooks)]
    return configure(project, {"webhooks": webhooks, "webhook_private_networks": ["127.0.0.1"], **policy})


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def control_url(request: pytest.FixtureRequest, project: Project) -> str:
    """The project's SQLite control database, or a migrated one on PostgreSQL."""
    if request.param == "sqlite":
        return project.settings.database_url
    url = str(request.getfixturevalue("postgres_url"))
    database = project.db(url)
    migrate.upgrade(database)
    database.dispose()
    return url


def test_two_workers_ticking_at_once_never_send_a_delivery_twice(project: Project, control_url: str) -> None:
    settings = _settings(project)
    db = project.db(control_url)
    events = ("request.opened", "request.approved", "request.promoted", "request.failed")
    _, rows = open_request(db, settings, model="risk-race", base_url="http://x", events=events)
    outbound = {r.delivery_id for r in rows if r.channel == "webhook"}
    assert len(outbound) == 12
    receiver = FakeChannel("webhook", delay_s=0.02)
    databases = [project.db(control_url), project.db(control_url)]  # two servers' connections to the one database
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


PRIVATE_TARGETS = (
    "http://127.0.0.1:9/",
    "http://localhost/hook",
    "http://[::1]/",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://10.0.0.5/",
    "http://[::ffff:192.168.1.1]/",  # an IPv4 private address in IPv6 clothing
    "http://100.64.0.1/",  # shared address space
    "http://0.0.0.0/",
)


def test_webhooks_reach_public_addresses_and_only_the_private_networks_the_policy_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for url in PRIVATE_TARGETS:
        policy = {"notifications": {"webhooks": [{"name": "ops", "url": url}]}}
        with pytest.raises(ConfigError, match=r"webhook 'ops' targets .*is not a public address"):
            parse_config(yaml.safe_dump(policy))
    allowed = {"webhooks": [{"name": "ops", "url": "http://10.0.0.5/"}], "webhook_private_networks": ["10.0.0.0/24"]}
    assert parse_config(yaml.safe_dump({"notifications": allowed})).notifications.webhook_private_networks
    with pytest.raises(ConfigError, match=r"'ten' is not an IP address or network"):
        parse_config(yaml.safe_dump({"notifications": {"webhook_private_networks": ["ten"]}}))

    # A name is judged by what it resolves to when the delivery is sent, and the request goes there.
    receiver = WebhookReceiver("hook-secret").start()
    try:
        monkeypatch.setenv("NOTIFY_HOOK_SECRET", "hook-secret")
        url = receiver.url.replace("127.0.0.1", "localhost")
        hook = WebhookConfig(name="ops", url=url, secret_env="NOTIFY_HOOK_SECRET")
        delivery = Delivery(delivery_id="d-1", event="request.opened", channel="webhook", recipient="ops", payload={})
        with pytest.raises(UndeliverableError, match=r"webhook 'ops' refused: localhost resolves to 127\.0\.0\.1"):
            WebhookChannel([hook]).send(delivery)
        assert receiver.received == []
        WebhookChannel([hook], private_networks=["127.0.0.0/8", "::1"]).send(delivery)
        [got] = receiver.received
        assert (got.delivery_id, got.valid, got.host) == ("d-1", True, f"localhost:{receiver.port}")
    finally:
        receiver.stop()
