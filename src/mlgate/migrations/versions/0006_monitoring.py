"""Monitoring: monitors on endpoints, their results over time, and their alerts (with retraining).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitors",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("environment", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("firing", sa.Boolean(), nullable=False),
        sa.Column("breaching", sa.Integer(), nullable=False),
        sa.Column("clean", sa.Integer(), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True)),
        sa.Column("last_retrain_at", sa.DateTime(timezone=True)),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("environment", "name"),
    )
    op.create_index("ix_monitors_environment", "monitors", ["environment"])
    op.create_table(
        "monitor_results",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("monitor_id", sa.Integer(), sa.ForeignKey("monitors.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True)),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(256)),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("breaches", sa.JSON(), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
    )
    op.create_index("ix_monitor_results_monitor_id", "monitor_results", ["monitor_id"])
    op.create_table(
        "monitor_alerts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("monitor_id", sa.Integer(), sa.ForeignKey("monitors.id", ondelete="CASCADE"), nullable=False),
        sa.Column("environment", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("opened_result_id", sa.Integer(), sa.ForeignKey("monitor_results.id")),
        sa.Column("resolved_result_id", sa.Integer(), sa.ForeignKey("monitor_results.id")),
        sa.Column("breaches", sa.JSON(), nullable=False),
        sa.Column("retrain_state", sa.String(16), nullable=False),
        sa.Column("retrain_job_id", sa.Integer(), sa.ForeignKey("jobs.id")),
        sa.Column("retrain_data", sa.String(128)),
        sa.Column("candidate_version", sa.Integer()),
        sa.Column("request_id", sa.Integer(), sa.ForeignKey("promotion_requests.id")),
        sa.Column("retrain_note", sa.Text()),
    )
    op.create_index("ix_monitor_alerts_monitor_id", "monitor_alerts", ["monitor_id"])
    op.create_index("ix_monitor_alerts_environment", "monitor_alerts", ["environment"])
    op.create_index("ix_monitor_alerts_state", "monitor_alerts", ["state"])


def downgrade() -> None:
    op.drop_table("monitor_alerts")
    op.drop_table("monitor_results")
    op.drop_table("monitors")
