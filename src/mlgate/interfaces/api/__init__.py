"""The REST API under /api/v1 and the MLflow door under /mlflow/<env>/."""
