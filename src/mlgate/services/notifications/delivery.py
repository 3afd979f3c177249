"""The delivery worker: a server thread that sends the outbox's pending email and webhook messages,
retries failures with exponential backoff, and records every outcome on the row (the delivery log).

One delivery at a time is claimed in a write transaction that also moves its `next_attempt_at` a
lease ahead and counts the attempt; it is sent outside any transaction; the outcome is recorded in a
second one. So a second worker (or tick) never picks up a row being sent, a server killed mid-send
tries again once the lease has run out, and an outcome is written only by the attempt that claimed
it. Delivery is at least once: a receiver that took a message whose outcome was never recorded (the
server died in between) gets it again with the same delivery id, which is what receivers de-duplicate
on.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from mlgate.adapters.notify.base import OUTBOUND, Channel, Delivery, UndeliverableError
from mlgate.adapters.notify.channels import channels
from mlgate.adapters.sql.database import Database
from mlgate.adapters.sql.models import Notification, utcnow
from mlgate.config import Settings
from mlgate.errors import MlgateError
from mlgate.services.worker import Worker

log = logging.getLogger(__name__)

TICK_S = 0.5
# Longer than any one send can take (SMTP and HTTP time out within a minute or so): a row is claimed
# again only after the attempt that claimed it must have ended.
LEASE = timedelta(minutes=5)
MAX_PER_TICK = 50  # then the loop checks for a stop request and sleeps a tick
JITTER = 0.2  # +-20%: workers that failed together do not all come back at the same instant
MAX_ERROR_CHARS = 2000
STOP_WAIT_S = 10.0

PENDING, SENT, FAILED = "pending", "sent", "failed"


def backoff_seconds(attempt: int, *, base_s: float, cap_s: float, jitter: float = JITTER, rng: random.Random) -> float:
    """The wait after the `attempt`-th failed attempt: base, 2 x base, 4 x base, ... capped, +- jitter."""
    nominal = min(cap_s, base_s * 2.0 ** min(attempt - 1, 64))
    return nominal * rng.uniform(1.0 - jitter, 1.0 + jitter)


@dataclass(frozen=True)
class _Claim:
    row_id: int
    attempt: int
    delivery: Delivery


class DeliveryWorker(Worker):
    """Sends the outbox's pending messages; a send in flight at stop finishes if it ends soon, and unsent
    rows wait for the next start."""

    name = "delivery-worker"
    interval_s = TICK_S
    stop_wait_s = STOP_WAIT_S

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        channels_by_name: Mapping[str, Channel] | None = None,
        lease: timedelta = LEASE,
        rng: random.Random | None = None,
    ) -> None:
        policy = settings.raw.notifications
        self.db = db
        self.base_s = policy.retry_base_seconds
        self.cap_s = policy.retry_max_seconds
        self.max_attempts = policy.max_attempts
        self.lease = lease
        self._channels = dict(channels_by_name) if channels_by_name is not None else channels(policy)
        self._rng = rng or random.Random()  # jitter, not a secret
        super().__init__()

    # -- lifecycle -----------------------------------------------------------------------------

    def stopped(self) -> None:
        for channel in self._channels.values():
            channel.close()

    # -- one pass ------------------------------------------------------------------------------

    def tick(self) -> int:
        """Send what is due, one claimed row at a time; returns how many attempts were made."""
        attempts = 0
        while attempts < MAX_PER_TICK and not self._stop.is_set():
            claim = self._claim()
            if claim is None:
                break
            self._attempt(claim)
            attempts += 1
        return attempts

    def _claim(self) -> _Claim | None:
        now = utcnow()
        with self.db.write() as session:
            row = session.execute(
                select(Notification)
                .where(
                    Notification.state == PENDING,
                    Notification.channel.in_(OUTBOUND),
                    Notification.next_attempt_at <= now,
                )
                .order_by(Notification.next_attempt_at, Notification.id)
                .limit(1)
            ).scalar_one_or_none()
            if row is None:
                return None
            # Write transactions are serialized (see adapters.sql.database): the next claimer reads this.
            row.attempts += 1
            row.next_attempt_at = now + self.lease
            return _Claim(
                row_id=row.id,
                attempt=row.attempts,
                delivery=Delivery(
                    delivery_id=row.delivery_id,
                    event=row.event,
                    channel=row.channel,
                    recipient=row.recipient,
                    payload=dict(row.payload),
                ),
            )

    def _attempt(self, claim: _Claim) -> None:
        delivery = claim.delivery
        channel = self._channels.get(delivery.channel)
        try:
            if channel is None:
                raise UndeliverableError(f"no {delivery.channel} channel is configured (notifications.smtp)")
            channel.send(delivery)
        except UndeliverableError as exc:
            self._record(claim, error=exc.message, final=True)
        except MlgateError as exc:
            self._record(claim, error=exc.message)
        except Exception as exc:  # a channel's bug must not strand the row in its lease
            log.exception("delivery %s: unexpected error", delivery.delivery_id)
            self._record(claim, error=f"{type(exc).__name__}: {exc}")
        else:
            self._record(claim, error=None)

    def _record(self, claim: _Claim, *, error: str | None, final: bool = False) -> None:
        delivery = claim.delivery
        with self.db.write() as session:
            row = session.get(Notification, claim.row_id, populate_existing=True)
            if row is None or row.state != PENDING or row.attempts != claim.attempt:
                # Only when this attempt outlived its lease and another claimed the row meanwhile.
                log.warning("delivery %s: attempt %d outlived its lease", delivery.delivery_id, claim.attempt)
                return
            now = utcnow()
            if error is None:
                row.state, row.sent_at = SENT, now
                return
            row.last_error = error[:MAX_ERROR_CHARS]
            if final or row.attempts >= self.max_attempts:
                row.state = FAILED
                log.warning(
                    "delivery %s (%s %s to %s) failed for good after %d attempt(s): %s",
                    delivery.delivery_id,
                    delivery.event,
                    delivery.channel,
                    delivery.recipient,
                    row.attempts,
                    error,
                )
                return
            wait = backoff_seconds(row.attempts, base_s=self.base_s, cap_s=self.cap_s, rng=self._rng)
            row.next_attempt_at = now + timedelta(seconds=wait)
            log.info(
                "delivery %s (%s to %s) attempt %d failed, next in %.1fs: %s",
                delivery.delivery_id,
                delivery.channel,
                delivery.recipient,
                row.attempts,
                wait,
                error,
            )
