"""Promotion requests and their decisions, check records (evidence), the notification outbox.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "promotion_requests",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("gate", sa.String(64), nullable=False),
        sa.Column("model_version_id", sa.Integer(), sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("source_env", sa.String(32), nullable=False),
        sa.Column("source_version", sa.Integer(), nullable=False),
        sa.Column("target_env", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("required_approvals", sa.Integer(), nullable=False),
        sa.Column("approver_role", sa.String(32), nullable=False),
        sa.Column("required_checks", sa.JSON(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        _when("created_at", nullable=False),
        _when("expires_at"),
        _when("decided_at"),
        sa.Column("target_version", sa.Integer()),
        sa.Column("target_version_id", sa.Integer(), sa.ForeignKey("model_versions.id")),
        sa.Column("failure", sa.Text()),
    )
    op.create_index("ix_promotion_requests_model_version_id", "promotion_requests", ["model_version_id"])
    op.create_index("ix_promotion_requests_target_env", "promotion_requests", ["target_env"])
    op.create_index("ix_promotion_requests_state", "promotion_requests", ["state"])
    op.create_table(
        "request_decisions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "request_id",
            sa.Integer(),
            sa.ForeignKey("promotion_requests.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("comment", sa.Text()),
        _when("at", nullable=False),
        sa.UniqueConstraint("request_id", "actor"),
    )
    op.create_index("ix_request_decisions_request_id", "request_decisions", ["request_id"])
    op.create_table(
        "check_records",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_version_id", sa.Integer(), sa.ForeignKey("model_versions.id"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("log_excerpt", sa.Text(), nullable=False),
        sa.Column("artifacts", sa.JSON(), nullable=False),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("jobs.id")),
        _when("started_at", nullable=False),
        _when("finished_at"),
    )
    op.create_index("ix_check_records_model_version_id", "check_records", ["model_version_id"])
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("delivery_id", sa.String(36), nullable=False, unique=True),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(512), nullable=False),
        sa.Column("request_id", sa.Integer(), sa.ForeignKey("promotion_requests.id")),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _when("next_attempt_at", nullable=False),
        sa.Column("last_error", sa.Text()),
        _when("created_at", nullable=False),
        _when("sent_at"),
        _when("read_at"),
    )
    op.create_index("ix_notifications_event", "notifications", ["event"])
    op.create_index("ix_notifications_request_id", "notifications", ["request_id"])
    op.create_index("ix_notifications_state", "notifications", ["state"])


def downgrade() -> None:
    op.drop_table("notifications")
    op.drop_table("check_records")
    op.drop_table("request_decisions")
    op.drop_table("promotion_requests")
