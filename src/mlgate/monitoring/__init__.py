"""Monitoring: what production scored, its ground truth, and the signals computed from them."""
