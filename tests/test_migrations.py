"""Alembic is the only way the schema is made, and it makes exactly what the models describe."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from worker.db.migrate import current_revision, head_revision, upgrade
from worker.db.models import POSTGRES_ONLY_INDEXES, Base


def _diff_and_tables(url: str) -> tuple[list, dict[str, set[str]]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            opts = {"compare_type": True,
                    "include_object": lambda obj, name, kind, *_: name not in POSTGRES_ONLY_INDEXES}
            diff = compare_metadata(MigrationContext.configure(connection, opts=opts), Base.metadata)
            inspector = inspect(connection)
            tables = {name: {c["name"] for c in inspector.get_columns(name)}
                      for name in inspector.get_table_names() if name != "alembic_version"}
    finally:
        engine.dispose()
    return diff, tables


def test_upgrade_from_empty_matches_models_on_sqlite_and_postgres(tmp_path: Path, postgres_url: str) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    results = {}
    for url in (sqlite_url, postgres_url):
        assert current_revision(url) is None
        upgrade(url)
        upgrade(url)  # a second upgrade is a no-op
        assert current_revision(url) == head_revision()
        results[url] = _diff_and_tables(url)
    expected = {t.name: {c.name for c in t.columns} for t in Base.metadata.sorted_tables}
    for url, (diff, tables) in results.items():
        assert diff == [], f"{url}: schema differs from models: {diff}"
        assert tables == expected


def test_review_sessions_revision_downgrades_and_upgrades_again(tmp_path: Path, postgres_url: str) -> None:
    """0005 adds `sessions` and `login_failures` only (no batch copy of `pages`, whose triggers must survive)."""
    from alembic import command

    from worker.db.migrate import alembic_config

    for url in (f"sqlite:///{tmp_path / 'db.sqlite'}", postgres_url):
        upgrade(url)
        command.downgrade(alembic_config(url), "0004")
        assert current_revision(url) == "0004"
        assert not {"sessions", "login_failures"} & set(_diff_and_tables(url)[1])
        upgrade(url)
        diff, tables = _diff_and_tables(url)
        assert current_revision(url) == head_revision() and diff == [] and {"sessions", "login_failures"} <= set(tables)


def test_waveforms_revision_downgrades_and_upgrades_again(tmp_path: Path, postgres_url: str) -> None:
    """0006 adds `waveforms` and `waveform_readings` only, and takes them away again."""
    from alembic import command

    from worker.db.migrate import alembic_config

    for url in (f"sqlite:///{tmp_path / 'db.sqlite'}", postgres_url):
        upgrade(url)
        command.downgrade(alembic_config(url), "0005")
        assert not {"waveforms", "waveform_readings"} & set(_diff_and_tables(url)[1])
        upgrade(url)
        diff, tables = _diff_and_tables(url)
        assert diff == [] and {"waveforms", "waveform_readings"} <= set(tables)
