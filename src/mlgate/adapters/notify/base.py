"""The notification seam: a channel sends one delivery (an outbox row) to its receiver, or raises.

    Channel.send(delivery)
      returns                 the receiver took it (SMTP accepted the message, the webhook answered 2xx)
      raises BackendError     it did not (refused, unreachable, non-2xx): the worker retries later
      raises ConfigError      the server's configuration stops it (a secret variable not set): retried too,
                              since a restart with the variable set delivers it
      raises UndeliverableError  it never can under this configuration (its channel or webhook is gone)

Channels never see the database; the delivery worker (`services.notifications.delivery`) claims rows and records
what happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mlgate.errors import ConfigError

EMAIL = "email"
WEBHOOK = "webhook"
INBOX = "inbox"
OUTBOUND = (EMAIL, WEBHOOK)  # the channels the worker sends; inbox rows are delivered by being written


@dataclass(frozen=True)
class Delivery:
    """One message to one receiver: `delivery_id` is the same on every attempt, so receivers can de-duplicate."""

    delivery_id: str
    event: str
    channel: str
    recipient: str  # an email address, or a webhook's name
    payload: Mapping[str, Any]


class UndeliverableError(ConfigError):
    """The delivery can never succeed under the server's configuration: no point in trying again."""


class Channel(Protocol):
    name: str

    def send(self, delivery: Delivery) -> None:
        """Deliver once; raises (see the module docstring) when the receiver did not take it."""
        ...

    def close(self) -> None: ...
