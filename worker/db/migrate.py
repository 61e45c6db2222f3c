"""Run the Alembic migrations from code, so `ecg-intake db upgrade` works from any directory.

Only the embedded SQLite default upgrades itself on start; a server database is upgraded by an
operator with `ecg-intake db upgrade`, never as a side effect of starting a worker.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def is_embedded(url: str) -> bool:
    return url.startswith("sqlite")


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


class SchemaBehind(RuntimeError):
    """A server database whose schema is not the one this code needs."""


def ensure_schema(url: str) -> None:
    """Upgrade the embedded database; refuse a server database that is not at the newest revision."""
    if is_embedded(url):
        upgrade(url)
        return
    current, head = current_revision(url), head_revision()
    if current != head:
        raise SchemaBehind(f"the database schema is at {current or 'empty'}, this code needs {head}; "
                           "run `ecg-intake db upgrade` first (server databases are never migrated implicitly)")


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from worker.db.session import get_engine

    with get_engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
