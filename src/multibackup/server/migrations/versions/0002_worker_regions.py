"""worker regions: plans and migrations name a region, runs carry it and a heartbeat

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 00:30:00
"""

import sqlalchemy as sa
from alembic import op

import multibackup.server.models

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("plans", "migrations"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("region", sa.String(length=64), nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("region", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column(
            "heartbeat_at", multibackup.server.models.UTCDateTime(timezone=True),
            nullable=True))
        batch.create_index("ix_runs_region", ["region"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_region")
        batch.drop_column("heartbeat_at")
        batch.drop_column("region")
    for table in ("plans", "migrations"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("region")
