"""What the parts of `ecg-intake` share: the consoles and `--json` output (the training side's, so logs,
progress bars and tables go through one pair of consoles), the logger, and how a command that reads or
writes the database gets it ready and names who acts."""

from __future__ import annotations

import getpass
import logging

import typer
from rich.markup import escape

from model_training.cli import console, out, save_json
from worker.settings import Settings, get_settings

__all__ = ["cli_actor", "console", "log", "observe", "out", "ready_settings", "save_json", "schema_ready"]

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


def observe(settings: Settings, service: str, serve: bool = True, tasks: bool = False) -> None:
    """Metrics for this process tree (worker/metrics.py); with `tasks`, the installation faults Celery tasks meet
    counted; when `metrics_port` is set and `serve`, /metrics, /healthz and /readyz (the doctor's checks of
    `service`, worker/health.py) on that port. A taken port stops the command before it does any work."""
    from worker import health, metrics

    metrics.configure(settings)
    if tasks:
        metrics.count_task_faults()
    if not serve or not settings.metrics_port:
        return
    try:
        health.serve(settings, service, queue_depth=service != "receive")
    except OSError as exc:
        console.print(f"[red]cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: "
                      f"{escape(str(exc))}; set ECG_INTAKE_METRICS_PORT to a free port, or 0")
        raise typer.Exit(2) from exc
