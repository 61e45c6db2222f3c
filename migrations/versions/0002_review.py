"""Reviewing: the `page_results` view, a read-only role for analysts, disabled users, worklist indexes.

Each page points at its newest prediction and review (`pages.prediction_id`, `pages.review_id`), kept
by triggers, so the view joins by key instead of searching the newest row for every page.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LABELS = ("MI", "AF", "STTC", "CD", "HYP")  # fixed here: a migration must not change when the code does
READER_ROLE = "ecg_intake_reader"
MI_INDEX = "ix_predictions_mi_probability"


def _view_sql(dialect: str) -> str:
    """One row per page (or per page-less quarantined document) with its newest prediction and review."""
    if dialect == "postgresql":
        probability = "(pr.probabilities ->> '{label}')::float"
        meta = "d.source_metadata ->> '{key}'"
        disagree = "pr.labels <> rv.labels"
    else:
        probability = "json_extract(pr.probabilities, '$.{label}')"
        meta = "json_extract(d.source_metadata, '$.{key}')"
        disagree = "json(pr.labels) <> json(rv.labels)"
    probabilities = ",\n           ".join(f"{probability.format(label=label)} AS p_{label.lower()}"
                                         for label in LABELS)
    return f"""
    CREATE VIEW page_results AS
    SELECT d.id AS document_id, d.sha256, d.path, d.source, d.status, d.reason, d.file_type,
           d.received_at, d.processed_at,
           {meta.format(key="patient_id")} AS patient_id,
           {meta.format(key="accession_number")} AS accession_number,
           pg.id AS page_id, pg.page_no, pg.image_path, pg.thumbnail_path,
           pr.id AS prediction_id, mv.name AS model_version, pr.created_at AS predicted_at,
           pr.labels AS model_labels,
           {probabilities},
           rv.id AS review_id, rv.labels AS review_labels, rv.comment AS review_comment,
           u.name AS reviewer, rv.created_at AS reviewed_at,
           CASE WHEN rv.id IS NULL OR pr.id IS NULL THEN NULL WHEN {disagree} THEN 1 ELSE 0 END AS disagreement
    FROM documents d
    LEFT JOIN pages pg ON pg.document_id = d.id
    LEFT JOIN predictions pr ON pr.id = pg.prediction_id
    LEFT JOIN model_versions mv ON mv.id = pr.model_version_id
    LEFT JOIN reviews rv ON rv.id = pg.review_id
    LEFT JOIN users u ON u.id = rv.reviewer_id
    """


def _newest_triggers(dialect: str) -> list[str]:
    """After each insert into predictions or reviews, point the page at the row if it is its newest."""
    statements = []
    for table, column in (("predictions", "prediction_id"), ("reviews", "review_id")):
        newer = (f"(pages.{column} IS NULL OR (SELECT created_at FROM {table} WHERE id = pages.{column}) "
                 f"<= NEW.created_at)")
        update = f"UPDATE pages SET {column} = NEW.id WHERE id = NEW.page_id AND {newer}"
        if dialect == "postgresql":
            statements += [
                f"CREATE FUNCTION {table}_newest() RETURNS trigger AS $$ BEGIN {update}; RETURN NULL; END $$ "
                "LANGUAGE plpgsql",
                f"CREATE TRIGGER {table}_newest AFTER INSERT ON {table} FOR EACH ROW "
                f"EXECUTE FUNCTION {table}_newest()"]
        else:
            statements.append(f"CREATE TRIGGER {table}_newest AFTER INSERT ON {table} BEGIN {update}; END")
        statements.append(
            f"UPDATE pages SET {column} = (SELECT x.id FROM {table} x WHERE x.page_id = pages.id "
            "ORDER BY x.created_at DESC, x.id DESC LIMIT 1)")
    return statements


def upgrade() -> None:
    with op.batch_alter_table("pages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prediction_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("review_id", sa.Integer(), nullable=True))
        batch_op.create_index("ix_pages_prediction_id", ["prediction_id"], unique=False)
        batch_op.create_index("ix_pages_review_id", ["review_id"], unique=False)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.create_index("ix_documents_received_at", ["received_at"], unique=False)
        batch_op.create_index("ix_documents_source", ["source"], unique=False)
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index("ix_predictions_page_id_created_at", ["page_id", "created_at"], unique=False)
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.create_index("ix_reviews_page_id_created_at", ["page_id", "created_at"], unique=False)
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_page_id", ["page_id"], unique=False)

    dialect = op.get_bind().dialect.name
    for statement in _newest_triggers(dialect):
        op.execute(statement)
    op.execute(_view_sql(dialect))
    if dialect == "postgresql":
        # The worklist's first sort key: the newest predictions' MI probability, read from this index top-down.
        op.execute(f"CREATE INDEX {MI_INDEX} ON predictions (((probabilities ->> 'MI')::float) DESC NULLS LAST)")
        # A role without login for analysts: grant it to their own login roles. Creating it needs CREATEROLE;
        # without that the view still exists and the notice says what to run.
        op.execute(f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
                CREATE ROLE {READER_ROLE} NOLOGIN;
            END IF;
            EXECUTE format('GRANT CONNECT ON DATABASE %I TO {READER_ROLE}', current_database());
            GRANT USAGE ON SCHEMA public TO {READER_ROLE};
            GRANT SELECT ON page_results TO {READER_ROLE};
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'no privilege to create role {READER_ROLE}; ask a superuser to create it and run: '
                         'GRANT SELECT ON page_results TO {READER_ROLE}';
        END $$;
        """)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
                REVOKE SELECT ON page_results FROM {READER_ROLE};
            END IF;
        END $$;
        """)
    op.execute("DROP VIEW page_results")
    if dialect == "postgresql":
        op.execute(f"DROP INDEX {MI_INDEX}")
    for table in ("predictions", "reviews"):
        op.execute(f"DROP TRIGGER {table}_newest" + (f" ON {table}" if dialect == "postgresql" else ""))
        if dialect == "postgresql":
            op.execute(f"DROP FUNCTION {table}_newest()")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_page_id")
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.drop_index("ix_reviews_page_id_created_at")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_predictions_page_id_created_at")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index("ix_documents_source")
        batch_op.drop_index("ix_documents_received_at")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("disabled")
    with op.batch_alter_table("pages", schema=None) as batch_op:
        batch_op.drop_index("ix_pages_review_id")
        batch_op.drop_index("ix_pages_prediction_id")
        batch_op.drop_column("review_id")
        batch_op.drop_column("prediction_id")
