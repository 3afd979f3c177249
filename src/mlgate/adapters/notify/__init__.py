"""Notification channels: email over SMTP and signed webhooks, chosen from the `notifications` policy."""
