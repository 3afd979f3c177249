"""Notifications: the outbox written with each change, its delivery by email and webhook, and each person's inbox."""
