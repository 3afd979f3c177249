"""Jobs and their code snapshots, data assets, model version records, job-scoped tokens.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "snapshots",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("environment", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("git_commit", sa.String(64)),
        sa.Column("git_dirty", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        _when("created_at", nullable=False),
        sa.UniqueConstraint("environment", "sha256"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("environment", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("snapshot_id", sa.Integer(), sa.ForeignKey("snapshots.id")),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("data_versions", sa.JSON(), nullable=False),
        sa.Column("run_ids", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        _when("created_at", nullable=False),
        _when("started_at"),
        _when("finished_at"),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("exit_code", sa.Integer()),
        sa.Column("error", sa.Text()),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("handle", sa.String(128)),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_jobs_environment", "jobs", ["environment"])
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_table(
        "data_assets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("environment", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(1024)),
        sa.Column("created_by", sa.String(64), nullable=False),
        _when("created_at", nullable=False),
        sa.UniqueConstraint("environment", "name", "version"),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("environment", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("model_uri", sa.String(512), nullable=False),
        sa.Column("signature", sa.JSON(), nullable=False),
        sa.Column("input_example", sa.JSON()),
        sa.Column("lineage", sa.JSON(), nullable=False),
        sa.Column("profile", sa.JSON()),
        sa.Column("card", sa.Text(), nullable=False),
        sa.Column("source_id", sa.Integer(), sa.ForeignKey("model_versions.id")),
        sa.Column("created_by", sa.String(64), nullable=False),
        _when("created_at", nullable=False),
        sa.UniqueConstraint("environment", "name", "version"),
    )
    op.create_index("ix_model_versions_environment", "model_versions", ["environment"])
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id", name="fk_api_tokens_job_id")))
        batch.add_column(sa.Column("scope", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("scope")
        batch.drop_column("job_id")
    op.drop_table("model_versions")
    op.drop_table("data_assets")
    op.drop_table("jobs")
    op.drop_table("snapshots")
