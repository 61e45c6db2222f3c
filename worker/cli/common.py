"""What the parts of `ecg-intake` share: the consoles and `--json` output (the training side's, so logs,
progress bars and tables go through one pair of consoles), the logger, and how a command that reads or
writes the database gets it ready and names who acts."""

from __future__ import annotations

import getpass
import logging

import typer

from model_training.cli import console, out, save_json
from worker.settings import Settings, get_settings

__all__ = ["cli_actor", "console", "log", "out", "ready_settings", "save_json", "schema_ready"]

log = logging.getLogger("ecg_intake")


def schema_ready(settings: Settings) -> None:
    """Folders, and the schema at head: the embedded database is upgraded, a server one must be already."""
    from worker.db.migrate import SchemaBehind, ensure_schema

    settings.ensure_dirs()
    try:
        ensure_schema(settings.sqlalchemy_url)
    except SchemaBehind as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(2) from exc


def ready_settings() -> Settings:
    """The settings, once the database they name is ready for a command to use."""
    settings = get_settings()
    schema_ready(settings)
    return settings


def cli_actor() -> str:
    """Who changed something, for the audit log: the operating-system user behind the command."""
    try:
        return f"cli:{getpass.getuser()}"[:128]
    except (KeyError, OSError):
        return "cli"
