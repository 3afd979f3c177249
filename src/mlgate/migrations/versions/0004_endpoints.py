"""Endpoints (keys stored as SHA-256) and their revisions: which version serves in which slot, with what
traffic weight and mirror, each change a new row so rollback restores the one before.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "endpoints",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("environment", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("primary_key_hash", sa.String(64), nullable=False),
        sa.Column("primary_key_prefix", sa.String(16), nullable=False),
        sa.Column("secondary_key_hash", sa.String(64), nullable=False),
        sa.Column("secondary_key_prefix", sa.String(16), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("environment", "name"),
    )
    op.create_table(
        "endpoint_revisions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("endpoint_id", sa.Integer(), sa.ForeignKey("endpoints.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("slots", sa.JSON(), nullable=False),
        sa.Column("mirror", sa.JSON()),
        sa.Column("parent_number", sa.Integer()),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("endpoint_id", "number"),
    )
    op.create_index("ix_endpoint_revisions_endpoint_id", "endpoint_revisions", ["endpoint_id"])


def downgrade() -> None:
    op.drop_table("endpoint_revisions")
    op.drop_table("endpoints")
