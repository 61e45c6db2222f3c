"""The model registry: when each version became champion, and a lock table for jobs that must run alone.

`model_versions.promoted_at` orders champions so a rollback knows which one came before. `job_locks`
holds one row per running exclusive job (the nightly retraining); a row whose `expires_at` has passed
belongs to a job that died and may be taken over.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_model_versions_status", ["status"], unique=False)
    # Versions registered before this revision: the champion counts as promoted when it was registered.
    op.execute("UPDATE model_versions SET promoted_at = created_at WHERE status = 'champion'")
    op.create_table(
        "job_locks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("job_locks")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_model_versions_status")
        batch_op.drop_column("promoted_at")
