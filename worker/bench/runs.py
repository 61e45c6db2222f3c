"""What the service benchmarks (`bench pipeline`, `bench soak`, `bench review`) share about one measured run:
its settings, a database of its own, and reading its timestamps back."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from worker.db.session import get_engine


def bench_env(work: Path, home: Path, bundle_dir: Path, engine: dict, **extra: str) -> dict[str, str]:
    """Settings for one measured setup: its own home, the engine measured best, a shared engine cache; none of
    the caller's own ECG_INTAKE_* settings leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECG_INTAKE_")}
    env.update({"ECG_INTAKE_HOME": str(home), "ECG_INTAKE_BUNDLE": str(bundle_dir),
                "ECG_INTAKE_ENGINE_CACHE": str(work / "engines"),
                "ECG_INTAKE_ENGINE": engine["engine"], "ECG_INTAKE_BATCH_SIZE": str(engine["batch_size"]),
                "PYTHONUNBUFFERED": "1", **extra})
    return env


@contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """An empty database on the given server for one measurement, dropped afterwards (its connections too)."""
    name = f"ecg_bench_{uuid.uuid4().hex[:8]}"
    admin = get_engine(server_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def utc_seconds(moment: datetime) -> float:
    """SQLite hands back naive datetimes; every timestamp here is written in UTC."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
