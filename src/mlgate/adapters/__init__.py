"""Implementations of mlgate's backend seams: SQL, MLflow, execution, serving, notifications."""
