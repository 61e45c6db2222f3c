"""Logging for every `ecg-intake` command, set up once in `main()`: `text` or `json` (ECG_INTAKE_LOG_FORMAT).

`text` (the default) is Rich lines on the shared console, for a person at a terminal. `json` is one JSON object
per line on stderr, for a log collector: time (ISO 8601, UTC), level, logger, message, pid, `document` (the
correlation id of `ingest.correlation`, when work on a document is in hand) and `exception` when there is one.
Text lines do not repeat the correlation id: the messages about a document already name it, so the extra column
would only push the message right.

Under `json`, what the commands print on the console (start-up notes, warnings, tables, summaries) goes through
logging too, as the message of an `ecg_intake.console` line, so a service's stderr holds only JSON lines; what
logging never sees stays plain: output of C libraries and child programs written straight to the descriptor,
and a crash's traceback printed before logging could take it.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from ingest.correlation import current_document

if TYPE_CHECKING:
    from rich.console import Console

LogFormat = Literal["text", "json"]
QUIET_LIBRARIES = ("celery", "kombu", "alembic")  # their INFO chatter says nothing an operator needs
CONSOLE_LOGGER = "ecg_intake.console"


class JsonFormatter(logging.Formatter):
    """One record as one line of JSON; the message is formatted (arguments filled in) and never split."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        document = getattr(record, "document", None) or current_document()
        if document:
            entry["document"] = document
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _ConsoleLines(io.TextIOBase):
    """A file for the Rich console that turns what one `print` writes (Rich writes it whole, then flushes) into
    one log record: a table or a panel stays one message, its lines joined by newlines."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._pending = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        self._pending += text
        if text.endswith("\n"):
            self.flush()
        return len(text)

    def flush(self) -> None:
        from rich.text import Text

        printed, self._pending = self._pending, ""
        lines = [Text.from_ansi(line).plain.rstrip() for line in printed.splitlines()]  # colours of a terminal
        message = "\n".join(lines).strip("\n")
        if message.strip():
            self._logger.info(message)


def setup_logging(log_format: LogFormat, console: Console) -> None:
    """Configure the root logger of this process (`console`: the one the commands print on); children started
    by `run` read the same settings and do the same. Levels are the commands' business (ECG_INTAKE_LOG_LEVEL);
    libraries stay at WARNING."""
    if log_format == "json":
        _json_logging(console)
    else:
        from rich.logging import RichHandler

        logging.basicConfig(level=logging.INFO, format="%(message)s", datefmt="[%X]",
                            handlers=[RichHandler(console=console, show_path=False)])
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


def _json_logging(console: Console) -> None:
    """JSON lines on stderr; Celery keeps its hands off the root logger and its task logger, uvicorn is given
    no configuration of its own (`uvicorn_log_config`), warnings become records, the console a logger."""
    from celery.signals import setup_logging as celery_setup_logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.captureWarnings(True)
    celery_setup_logging.connect(_leave_to_us, weak=False)  # a receiver: Celery then configures no logging
    logging.getLogger(CONSOLE_LOGGER).setLevel(logging.INFO)  # what `text` prints, whatever the level
    console.file = _ConsoleLines(logging.getLogger(CONSOLE_LOGGER))
    console.is_interactive = False  # progress bars: the finished bar once, not a record per refresh


def _leave_to_us(**_: object) -> None:
    """Celery's `setup_logging` signal: with a receiver connected, Celery leaves logging as configured."""


def uvicorn_log_config(log_format: LogFormat) -> dict | None:
    """uvicorn's own handlers under `text` (as it always ran); none under `json`, so its loggers propagate to
    the root's JSON handler."""
    if log_format == "json":
        return None
    from uvicorn.config import LOGGING_CONFIG

    return LOGGING_CONFIG
