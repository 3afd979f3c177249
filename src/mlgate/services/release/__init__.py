"""Continuous deployment: endpoints and their keys, the serving hosts kept in step, and production rollouts."""
