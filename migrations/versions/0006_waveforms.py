"""Every page's 12-lead waveform and its measurements.

`waveforms` holds one row per page and lead (float32 samples, how well the lead was read); `waveform_readings`
one row per page (how its waveform was got, the calipers' measurements, its trace image and WFDB files). New
tables only: `pages` and its triggers are left as they are.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "waveforms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("page_id", sa.Integer(), nullable=False),
        sa.Column("lead", sa.String(length=8), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("fs", sa.Integer(), nullable=False),
        sa.Column("samples", sa.LargeBinary(), nullable=False),
        sa.Column("read_share", sa.Float(), nullable=False),
        sa.Column("quality", sa.String(length=16), nullable=False),
        sa.Column("layout", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["page_id"], ["pages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("page_id", "lead"),
    )
    op.create_index("ix_waveforms_page_id", "waveforms", ["page_id"], unique=False)
    op.create_table(
        "waveform_readings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("page_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("layout", sa.String(length=16), nullable=True),
        sa.Column("heart_rate", sa.Float(), nullable=True),
        sa.Column("pr_ms", sa.Float(), nullable=True),
        sa.Column("qrs_ms", sa.Float(), nullable=True),
        sa.Column("qt_ms", sa.Float(), nullable=True),
        sa.Column("qtc_ms", sa.Float(), nullable=True),
        sa.Column("axis_deg", sa.Float(), nullable=True),
        sa.Column("beats", sa.Integer(), nullable=False),
        sa.Column("trace_path", sa.Text(), nullable=True),
        sa.Column("wfdb_path", sa.Text(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["page_id"], ["pages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("page_id"),
    )


def downgrade() -> None:
    op.drop_table("waveform_readings")
    op.drop_index("ix_waveforms_page_id", table_name="waveforms")
    op.drop_table("waveforms")
