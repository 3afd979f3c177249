"""Pure rules of mlgate: no FastAPI, SQLAlchemy or MLflow here."""
