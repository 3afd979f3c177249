"""The MLflow adapter: the only package of mlgate that imports `mlflow`, and only inside functions."""
