"""Continuous integration: a run's model registered in dev with its digest, lineage, baseline profile and card."""
