"""Who made a model, whose token decides, and an audit log that does not rest on the database.

- `mlflow_creations`: who created each run and logged model through an environment's MLflow door,
  recorded by mlgate from the caller's token at creation (never from the tags a client sets).
- `model_versions.authors`, `promotion_requests.authors`: everyone who made the model.
- `api_tokens.issued_by`: who created the token; a gate decision needs a token its holder created.
- `audit_events.payload` (the event's details, so that history can be replayed) and `mac` (the event
  authenticated with a key kept outside the database).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mlflow_creations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("environment", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),  # run | logged-model
        sa.Column("object_id", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("environment", "kind", "object_id"),
    )
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("authors", sa.JSON, nullable=True))
    with op.batch_alter_table("promotion_requests") as batch:
        batch.add_column(sa.Column("authors", sa.JSON, nullable=True))
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("issued_by", sa.String(64), nullable=True))
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("payload", sa.JSON, nullable=True))
        batch.add_column(sa.Column("mac", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("mac")
        batch.drop_column("payload")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("issued_by")
    with op.batch_alter_table("promotion_requests") as batch:
        batch.drop_column("authors")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("authors")
    op.drop_table("mlflow_creations")
