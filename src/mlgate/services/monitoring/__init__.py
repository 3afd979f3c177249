"""Monitoring: monitors run on schedule over the serving records, their alerts, and the retraining an alert starts."""
