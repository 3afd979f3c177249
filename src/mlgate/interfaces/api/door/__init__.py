"""The MLflow door's parts: who is calling, what the request is, what it may not touch, how it is forwarded.

The route itself is `interfaces.api.routes.mlflow_door`; the allow-list is `domain.mlflow_operations`.
"""
