"""Notifications through a real server: the outbox delivered by the server's worker to real receivers on
loopback (an aiosmtpd SMTP server, an HTTP webhook receiver that checks signatures), retried while a
receiver is down, never delivered twice; the delivery log and the inbox through the CLI, REST and SDK.

Events are written the way the promotion service writes them, `outbox.emit` inside a write transaction,
about promotion requests created directly in the control database (tests/support/notify.py). The
delivery worker in-process and the channel adapters are tested in test_notification_delivery.py.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from mlgate.adapters.sql.database import Database
from mlgate.config import Settings
from mlgate.interfaces.sdk.client import ApiError, Client
from mlgate.services.identity import accounts
from tests.support.notify import SmtpSink, WebhookReceiver, configure, open_request, rows_of, smtp_server, wait_for
from tests.support.project import LiveServer, Project, start_server, stop_server

PUBLIC_URL = "https://mlgate.example.test"
OPS_SECRET = "ops-signing-secret"
LATE_SECRET = "late-signing-secret"


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
            "webhook_private_networks": ["127.0.0.1"],  # the receivers listen on loopback
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
