"""The notification channels the policy configures, by name (`email`, `webhook`)."""

from __future__ import annotations

from mlgate.adapters.notify.base import EMAIL, WEBHOOK, Channel
from mlgate.adapters.notify.smtp import SmtpChannel
from mlgate.adapters.notify.webhook import WebhookChannel
from mlgate.config import NotificationsConfig


def channels(config: NotificationsConfig) -> dict[str, Channel]:
    """`email` with an `smtp` section, `webhook` always (a delivery names its webhook, which must still be
    configured when it is sent)."""
    found: dict[str, Channel] = {
        WEBHOOK: WebhookChannel(config.webhooks, private_networks=config.webhook_private_networks)
    }
    if config.smtp is not None:
        found[EMAIL] = SmtpChannel(config.smtp)
    return found
