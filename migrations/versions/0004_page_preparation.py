"""Each stored page names the preparation (preprocessing version, input size, cleaning steps) it was made with,
so a page made for one model is never fed to a model of another geometry.

Pages stored before this revision have none and are prepared again before they are classified.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("pages", sa.Column("preparation", sa.String(length=255), nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite 3.35+): a batch copy of `pages` would break the triggers that name it.
    op.execute("ALTER TABLE pages DROP COLUMN preparation")
